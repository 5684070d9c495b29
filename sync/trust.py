"""Who is trusted to sign what: the pinned root, the hub's online keys, the node registry.

Chain of trust (``docs/sync-protocol.md`` §3): the hub's **root key** (kept offline where the
admin wishes) certifies the hub's online **signing keys**; a signing key signs node
certificates, acknowledgements, downlink and the versioned **metadata** (registry, catalog,
calendar). The registry lists every node's keys and revocations. A node pins the root key's
id at enrolment (it is part of the enrolment token) and from then on trusts nothing else.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from shared.core import canonical
from shared.core.clock import iso, parse_iso
from shared.core.crypto import SignatureError
from sync import envelope


class RollbackError(SignatureError):
    """Signed metadata older than the version already trusted (rollback attack or stale mirror)."""


@dataclass(frozen=True)
class NodeEntry:
    """One node of the registry."""

    node_id: str
    tier: str
    parent: str | None
    name: str
    status: str
    revoked_after_seq: int | None
    keys: dict[str, str]  # kid -> base64 public key (retired keys included: old envelopes verify)


@dataclass
class TrustStore:
    """The verified trust state of one node, resolved into key lookups."""

    hub_id: str
    root_public_key: str
    hub_keys: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, NodeEntry] = field(default_factory=dict)
    registry_version: int = 0

    def __post_init__(self) -> None:
        self._kid_to_node = {kid: n.node_id for n in self.nodes.values() for kid in n.keys}
        self._kids_by_prefix: dict[str, list[str]] = {}
        for kid in self._kid_to_node:
            self._kids_by_prefix.setdefault(kid[:envelope.SHORT_KID], []).append(kid)

    def hub_key(self, kid: str) -> str | None:
        """The public key of a hub signing key, if certified by the root."""
        return self.hub_keys.get(kid)

    def node_key(self, kid: str) -> str | None:
        """The public key of a registered node key (revocation is checked separately)."""
        node_id = self._kid_to_node.get(kid)
        return self.nodes[node_id].keys[kid] if node_id else None

    def node_keys_starting(self, prefix: str) -> dict[str, str]:
        """Registered node keys whose id starts with a short key id (docs/sync-protocol.md §2.1.2):
        full id → public key."""
        return {kid: self.node_key(kid) for kid in self._kids_by_prefix.get(prefix, ())}

    def node_of_key(self, kid: str) -> NodeEntry | None:
        """The node a key belongs to."""
        node_id = self._kid_to_node.get(kid)
        return self.nodes.get(node_id) if node_id else None

    def signer_key(self, kid: str) -> str | None:
        """Any key trusted to sign downlink: the hub's, or a township's (delegated decisions)."""
        key = self.hub_key(kid)
        if key is not None:
            return key
        node = self.node_of_key(kid)
        if node and node.parent == self.hub_id and node.status == "active":  # a township (a child of the hub)
            return node.keys[kid]
        return None

    def children_of(self, node_id: str) -> list[str]:
        """Nodes whose parent is ``node_id``."""
        return [n.node_id for n in self.nodes.values() if n.parent == node_id]

    def subtree(self, node_id: str) -> set[str]:
        """``node_id`` and every node below it."""
        result, frontier = {node_id}, [node_id]
        while frontier:
            children = self.children_of(frontier.pop())
            result.update(children)
            frontier.extend(children)
        return result


def hub_key_cert_body(hub_id: str, kid: str, public_key: str, not_before: str, not_after: str) -> dict:
    """The body of a root-signed certificate for one hub signing key."""
    return {
        "type": "hub-key",
        "hub": hub_id,
        "kid": kid,
        "public_key": public_key,
        "not_before": not_before,
        "not_after": not_after,
    }


def verify_hub_key_cert(document: dict, root_public_key: str, root_kid: str, hub_id: str) -> dict:
    """Verify a hub key certificate of ``hub_id`` against the pinned root; return its body."""
    opened = envelope.open_signed(
        document, envelope.CERT, lambda kid: root_public_key if kid == root_kid else None
    )
    body = opened.body
    if body.get("type") != "hub-key" or body.get("hub") != hub_id:
        raise SignatureError("not a key certificate of this hub")
    # Validity dates are not enforced: a village PC's clock may be wrong by days, and the
    # root is pinned; rotation replaces certificates through signed metadata instead.
    return body


def registry_body(nodes: list[NodeEntry]) -> dict:
    """The body of the registry metadata."""
    return {
        "nodes": [
            {
                "node_id": n.node_id,
                "tier": n.tier,
                "parent": n.parent,
                "name": n.name,
                "status": n.status,
                "revoked_after_seq": n.revoked_after_seq,
                "keys": [{"kid": kid, "public_key": pk} for kid, pk in sorted(n.keys.items())],
            }
            for n in nodes
        ]
    }


def parse_registry(body: dict) -> dict[str, NodeEntry]:
    """Registry metadata body -> node entries."""
    return {
        n["node_id"]: NodeEntry(
            node_id=n["node_id"],
            tier=n["tier"],
            parent=n.get("parent"),
            name=n.get("name", ""),
            status=n.get("status", "active"),
            revoked_after_seq=n.get("revoked_after_seq"),
            keys={k["kid"]: k["public_key"] for k in n.get("keys", [])},
        )
        for n in body.get("nodes", [])
    }


def metadata_body(role: str, version: int, hub_id: str, issued_at, expires, content: dict) -> dict:
    """The signed body of one version of one kind of metadata."""
    return {
        "role": role,
        "version": version,
        "hub": hub_id,
        "issued_at": iso(issued_at),
        "expires": iso(expires),
        "content": content,
    }


METADATA_ROLES = ("registry", "catalog", "calendar")


def open_metadata(document: dict, role: str, trust: TrustStore) -> envelope.Opened:
    """Verify hub-signed metadata of ``role``; only the roles nodes mirror are accepted."""
    if role not in METADATA_ROLES:
        raise SignatureError(f"{role!r} is not metadata a node accepts")
    opened = envelope.open_signed(document, envelope.METADATA, trust.hub_key)
    if opened.body.get("role") != role:
        raise SignatureError(f"expected {role} metadata")
    if opened.body.get("hub") != trust.hub_id:
        raise SignatureError("metadata of another hub")
    return opened


def accept_metadata(conn: sqlite3.Connection, document: dict, role: str, trust: TrustStore, now) -> bool:
    """Store newer hub-signed metadata; True if it changed what this node trusts.

    Older versions raise :class:`RollbackError`; the same version with other content is a
    mix-and-match attempt and is refused too. Call inside a write transaction.
    """
    opened = open_metadata(document, role, trust)
    if is_expired(opened.body.get("expires"), now):
        # TUF's freeze defence: an expired document is never installed (the node keeps
        # working on what it holds and shows it as stale).
        raise RollbackError(f"{role} version {opened.body['version']} expired at {opened.body['expires']}")
    version = opened.body["version"]
    row = conn.execute("SELECT version, document FROM trusted_metadata WHERE role = ?", (role,)).fetchone()
    if row is not None:
        if version < row["version"]:
            raise RollbackError(f"{role} version {version} is older than trusted {row['version']}")
        if version == row["version"]:
            held = envelope.document_id(envelope.from_bytes(row["document"]))
            if held != opened.doc_id:
                raise RollbackError(f"{role} version {version} differs from the trusted copy")
            return False
    conn.execute(
        "INSERT INTO trusted_metadata(role, version, expires, document, received_at) VALUES (?,?,?,?,?)"
        " ON CONFLICT(role) DO UPDATE SET version=excluded.version, expires=excluded.expires,"
        " document=excluded.document, received_at=excluded.received_at",
        (role, version, opened.body.get("expires"), envelope.to_bytes(document), iso(now)),
    )
    return True


def metadata_content(conn: sqlite3.Connection, role: str) -> tuple[int, dict | None, str | None]:
    """(version, content, expires) of the trusted metadata of ``role``; (0, None, None) if none."""
    row = conn.execute("SELECT version, document, expires FROM trusted_metadata WHERE role = ?", (role,)).fetchone()
    if row is None:
        return 0, None, None
    return row["version"], parsed_content(row["document"]), row["expires"]


_parsed: dict[bytes, dict] = {}


def _cache_key(document_bytes: bytes) -> bytes:
    # Stored documents end with their signature (sorted keys): length plus the tail names the
    # document without hashing tens of kilobytes of catalog on every case.
    return len(document_bytes).to_bytes(8, "big") + document_bytes[-160:]
_indexes: dict[bytes, dict] = {}


def catalog_index(document_bytes: bytes) -> dict[str, dict]:
    """``{code: item}`` of a stored catalog document, built once per distinct document."""
    key = _cache_key(document_bytes)
    index = _indexes.get(key)
    if index is None:
        index = {item["code"]: item for item in parsed_content(document_bytes).get("items", [])}
        if len(_indexes) > 64:
            _indexes.clear()
        _indexes[key] = index
    return index


def trusted_things(conn: sqlite3.Connection) -> dict[str, dict]:
    """``{code: thing}`` of the 一件事 bundles in the catalog this node trusts (none: ``{}``)."""
    row = conn.execute("SELECT document FROM trusted_metadata WHERE role = 'catalog'").fetchone()
    return {t["code"]: t for t in parsed_content(row["document"]).get("things", [])} if row else {}


def parsed_content(document_bytes: bytes) -> dict:
    """The content of a stored metadata document, parsed once per distinct document.

    The catalog is read on every intake and every ingested case; parsing it strictly each
    time dominated the hub's ingest profile. Callers must not mutate the result.
    """
    key = _cache_key(document_bytes)
    content = _parsed.get(key)
    if content is None:
        content = envelope.peek(envelope.from_bytes(document_bytes))["content"]
        if len(_parsed) > 64:
            _parsed.clear()
        _parsed[key] = content
    return content


def is_expired(expires: str | None, now) -> bool:
    """Whether metadata with this expiry is stale at ``now``."""
    return expires is not None and parse_iso(expires) < now


def load_node_trust(conn: sqlite3.Connection) -> TrustStore | None:
    """The trust store of an enrolled township or village, from its database."""
    anchor = conn.execute("SELECT document FROM trusted_metadata WHERE role = 'root'").fetchone()
    if anchor is None:
        return None
    root = canonical.loads(anchor["document"])
    hub_keys = {}
    for cert in root["hub_keys"]:
        body = verify_hub_key_cert(cert, root["public_key"], root["kid"], root["hub_id"])
        hub_keys[body["kid"]] = body["public_key"]
    trust = TrustStore(root["hub_id"], root["public_key"], hub_keys)
    version, content, _ = metadata_content(conn, "registry")
    if content is not None:
        trust = TrustStore(root["hub_id"], root["public_key"], hub_keys, parse_registry(content), version)
    return trust


def trusted_catalog(conn: sqlite3.Connection) -> tuple[int, dict[str, dict]]:
    """(version, {code: item}) of the catalog this node trusts (from the hub's signed metadata)."""
    row = conn.execute("SELECT version, document FROM trusted_metadata WHERE role = 'catalog'").fetchone()
    return (row["version"], catalog_index(row["document"])) if row else (0, {})
