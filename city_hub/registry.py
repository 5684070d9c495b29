"""The hub's registry of nodes and its signed metadata (registry, catalog, calendar).

The hub's own trust store is built from its tables; what it publishes to nodes is the same
information as versioned, hub-signed metadata (TUF-style: nodes refuse older versions).
"""

from __future__ import annotations

import sqlite3
from contextvars import ContextVar
from datetime import timedelta

from shared.core import canonical
from shared.core.clock import iso
from sync import envelope
from sync.trust import (
    NodeEntry,
    TrustStore,
    catalog_index,
    is_expired,
    metadata_body,
    parsed_content,
    registry_body,
)

METADATA_ROLES = ("registry", "catalog", "calendar")


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else None


def registry_version(conn: sqlite3.Connection) -> int:
    """Current published registry version (0 before the first)."""
    row = conn.execute("SELECT MAX(version) FROM metadata WHERE role = 'registry'").fetchone()
    return row[0] or 0


def root_anchor(conn: sqlite3.Connection) -> dict:
    """What a node pins at enrolment: hub id, root key and the root-signed hub key certificates."""
    return canonical.loads(_meta(conn, "root_anchor"))


def load_nodes(conn: sqlite3.Connection) -> list[NodeEntry]:
    """Every registered node with all its keys."""
    keys: dict[str, dict[str, str]] = {}
    for row in conn.execute("SELECT kid, node_id, public_key FROM node_keys"):
        keys.setdefault(row["node_id"], {})[row["kid"]] = row["public_key"]
    return [
        NodeEntry(r["node_id"], r["tier"], r["parent"], r["name"], r["status"], r["revoked_after_seq"],
                  keys.get(r["node_id"], {}))
        for r in conn.execute("SELECT * FROM nodes ORDER BY node_id")
    ]


def hub_trust(conn: sqlite3.Connection, node) -> TrustStore:
    """The hub's trust store from its own tables."""
    anchor = root_anchor(conn)
    hub_keys = {c["kid"]: c["public_key"] for c in (envelope.peek(d) for d in anchor["hub_keys"])}
    nodes = {n.node_id: n for n in load_nodes(conn)}
    return TrustStore(anchor["hub_id"], anchor["public_key"], hub_keys, nodes, registry_version(conn))


def publish(conn: sqlite3.Connection, node, role: str, content: dict) -> dict:
    """Sign and store the next version of ``role``. Call inside a write transaction."""
    version = (conn.execute("SELECT MAX(version) FROM metadata WHERE role = ?", (role,)).fetchone()[0] or 0) + 1
    now = node.now()
    expires = now + timedelta(days=int(node.config["METADATA_TTL_DAYS"]))
    document = envelope.sign(node.key, envelope.METADATA, metadata_body(role, version, node.node_id, now, expires, content))
    conn.execute(
        "INSERT INTO metadata(role, version, document, published_at) VALUES (?,?,?,?)",
        (role, version, envelope.to_bytes(document), iso(now)),
    )
    return document


def refresh_metadata(conn: sqlite3.Connection, node) -> list[str]:
    """Re-sign every kind of metadata whose expiry is less than half its lifetime away.

    Nodes refuse expired metadata (TUF's freeze defence), so an unchanged catalog must still be
    re-issued in time. Call inside a write transaction; returns the roles republished.
    """

    half = timedelta(days=int(node.config["METADATA_TTL_DAYS"]) / 2)
    renewed = []
    for role in METADATA_ROLES:
        _, document = latest(conn, role)
        if document is None:
            continue
        body = envelope.peek(document)
        if is_expired(body["expires"], node.now() + half):
            publish(conn, node, role, body["content"])
            renewed.append(role)
    return renewed


def publish_registry(conn: sqlite3.Connection, node) -> dict:
    """Publish the registry as it is in the tables now."""
    return publish(conn, node, "registry", registry_body(load_nodes(conn)))


def latest(conn: sqlite3.Connection, role: str) -> tuple[int, dict | None]:
    """(version, document) of the newest published ``role``."""
    row = conn.execute(
        "SELECT version, document FROM metadata WHERE role = ? ORDER BY version DESC LIMIT 1", (role,)
    ).fetchone()
    return (row["version"], envelope.from_bytes(row["document"])) if row else (0, None)


def newer_than(conn: sqlite3.Connection, have: dict) -> list[dict]:
    """The newest document of every role the caller holds an older version of."""
    out = []
    for role in METADATA_ROLES:
        version, document = latest(conn, role)
        if document is not None and version > int(have.get(role, 0) or 0):
            out.append(document)
    return out


def current_catalog(conn: sqlite3.Connection) -> tuple[int, dict]:
    """(version, {code: item}) of the published catalog."""
    memo = BATCH_MEMO.get()
    if memo is not None and "catalog" in memo:
        return memo["catalog"]
    version = conn.execute("SELECT MAX(version) FROM metadata WHERE role = 'catalog'").fetchone()[0]
    if version is None:
        return 0, {}
    key = (_db_name(conn), version)
    index = _catalogs.get(key)
    if index is None:
        document = conn.execute(
            "SELECT document FROM metadata WHERE role = 'catalog' AND version = ?", (version,)).fetchone()["document"]
        index = _catalogs[key] = catalog_index(document)
    if memo is not None:
        memo["catalog"] = (version, index)
    return version, index


def current_things(conn: sqlite3.Connection) -> dict[str, dict]:
    """``{code: thing}``: the 一件事 bundles of the published catalog."""
    version = conn.execute("SELECT MAX(version) FROM metadata WHERE role = 'catalog'").fetchone()[0]
    if version is None:
        return {}
    document = conn.execute(
        "SELECT document FROM metadata WHERE role = 'catalog' AND version = ?", (version,)).fetchone()["document"]
    return {t["code"]: t for t in parsed_content(document).get("things", [])}


# Within one ingest batch (one write transaction, this process the only writer) nothing else
# can publish a catalog, so the batch looks it up once; HubSync.push sets the memo.
BATCH_MEMO: ContextVar[dict | None] = ContextVar("liandong_batch_memo", default=None)

# Published versions never change, so (database file, version) names a catalog for good; the
# 60 KB document is read and parsed once per process instead of once per ingested case.
_catalogs: dict[tuple[str, int], dict] = {}


def _db_name(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2]


_published: dict[tuple[str, int], dict | None] = {}


def published_catalog(conn: sqlite3.Connection, version: int) -> dict | None:
    """``{code: item}`` of an older published catalog version (parsed once per process)."""
    key = (_db_name(conn), version)
    if key not in _published:
        row = conn.execute("SELECT document FROM metadata WHERE role = 'catalog' AND version = ?",
                           (version,)).fetchone()
        _published[key] = catalog_index(row["document"]) if row else None
    return _published[key]
