"""Messages down the tree: numbered per (issuer, destination), signed by the issuer.

The hub issues to every node; a township issues decisions on items delegated to it. Relays
store and serve the exact documents. A receiver applies each issuer's messages strictly in
sequence and never applies a number at or below its cursor again (no replay, no rollback).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from shared.core.clock import iso
from shared.core.crypto import SignatureError, SigningKey
from sync import envelope
from sync.trust import TrustStore


def issue(conn: sqlite3.Connection, key: SigningKey, issuer: str, dest: str, kind: str, body: dict, now) -> dict:
    """Sign and queue the next message from ``issuer`` to ``dest``. Call inside a write transaction."""
    seq = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM downlink WHERE issuer = ? AND dest = ?", (issuer, dest)
    ).fetchone()[0]
    document = envelope.sign(
        key,
        envelope.DOWNLINK,
        {"v": 1, "issuer": issuer, "dest": dest, "seq": seq, "kind": kind, "created_at": iso(now), "body": body},
    )
    conn.execute(
        "INSERT INTO downlink(issuer, dest, seq, message_id, document, created_at) VALUES (?,?,?,?,?,?)",
        (issuer, dest, seq, envelope.document_id(document), envelope.to_bytes(document), iso(now)),
    )
    return document


def cursor_key(issuer: str, dest: str) -> str:
    """The key of a downlink cursor in a pull request."""
    return f"{issuer}>{dest}"


def messages_for(conn: sqlite3.Connection, dests: set[str], cursors: dict[str, int], limit: int = 500) -> list[dict]:
    """Stored messages for ``dests`` after the caller's cursors, in (issuer, dest, seq) order."""
    out: list[dict] = []
    rows = conn.execute(
        f"SELECT DISTINCT issuer, dest FROM downlink WHERE dest IN ({','.join('?' * len(dests))})", sorted(dests)
    ).fetchall()
    for row in rows:
        after = int(cursors.get(cursor_key(row["issuer"], row["dest"]), 0))
        for msg in conn.execute(
            "SELECT document FROM downlink WHERE issuer = ? AND dest = ? AND seq > ? ORDER BY seq LIMIT ?",
            (row["issuer"], row["dest"], after, limit - len(out)),
        ):
            out.append(envelope.from_bytes(msg["document"]))
        if len(out) >= limit:
            break
    return out


def store_relayed(conn: sqlite3.Connection, trust: TrustStore, document: dict) -> envelope.Opened:
    """Keep a message from above for a node below (township mirror); idempotent."""
    opened = envelope.open_signed(document, envelope.DOWNLINK, trust.signer_key)
    body = opened.body
    conn.execute(
        "INSERT INTO downlink(issuer, dest, seq, message_id, document, created_at) VALUES (?,?,?,?,?,?)"
        " ON CONFLICT DO NOTHING",
        (body["issuer"], body["dest"], body["seq"], opened.doc_id, envelope.to_bytes(document), body["created_at"]),
    )
    return opened


def apply_in_order(
    conn: sqlite3.Connection,
    trust: TrustStore,
    me: str,
    documents: list[dict],
    handle: Callable[[sqlite3.Connection, dict], None],
) -> int:
    """Verify and apply messages addressed to ``me``; returns how many were applied.

    Each issuer's messages apply strictly as cursor + 1; anything older is a replay and is
    skipped, anything further ahead waits for the gap to be filled on a later pull.
    """
    pending: dict[str, dict[int, envelope.Opened]] = {}
    for document in documents:
        try:
            opened = envelope.open_signed(document, envelope.DOWNLINK, trust.signer_key)
        except SignatureError:
            continue
        body = opened.body
        if body.get("dest") != me:
            continue
        signer = trust.node_of_key(opened.kid)
        if signer is not None and signer.node_id != body.get("issuer"):
            continue  # a township may only speak for itself
        pending.setdefault(body["issuer"], {})[body["seq"]] = opened
    applied = 0
    for issuer, by_seq in pending.items():
        row = conn.execute("SELECT seq FROM downlink_cursors WHERE issuer = ?", (issuer,)).fetchone()
        cursor = row["seq"] if row else 0
        while cursor + 1 in by_seq:
            cursor += 1
            handle(conn, by_seq[cursor].body)
            applied += 1
        conn.execute(
            "INSERT INTO downlink_cursors(issuer, seq) VALUES (?, ?) ON CONFLICT(issuer) DO UPDATE SET seq = excluded.seq",
            (issuer, cursor),
        )
    return applied


def cursors(conn: sqlite3.Connection, me: str) -> dict[str, int]:
    """This node's downlink cursors, keyed as in a pull request."""
    return {cursor_key(r["issuer"], me): r["seq"] for r in conn.execute("SELECT issuer, seq FROM downlink_cursors")}
