"""Which envelope version a node signs towards its parent, and which it tells its children.

An envelope is signed once, when the change it reports is recorded (``sync.outbox.append``), and
travels unchanged to the hub, possibly days later and through a township. So a node signs the
``v=2`` form (docs/sync-protocol.md §2.1.1) only after its parent said, in a pull answer, that it
takes it; and a township says so only once its own parent (the hub) said so, since it forwards
the bytes as they are. The node where envelopes end (the hub, ``Tier.ingests``) takes every
version it can verify and apply. What the parent said is kept in ``node_meta``, so a node that
restarts offline still signs what its parent takes. An answer without the field (an older
parent) sets it back to ``v=1``; envelopes already queued keep the form they were signed in.
The same answer says whether the parent reads key ids cut short in pushes (``keyids``): that
changes only how a push spells its envelopes, never what was signed.
"""

from __future__ import annotations

import sqlite3

#: Envelope versions this code can verify, relay and apply.
KNOWN = (1, 2)
_META = "uplink_envelope_version"
#: A pull answer's ``keyids`` member: this node reads envelopes pushed to it with their key ids
#: cut short (``envelope.shorten_keyids``, docs/sync-protocol.md §2.1.2). Every node of this
#: release does, whatever its parent reads: it restores the full ids before storing anything.
SHORT_KEYIDS = "short"
_KEYIDS_META = "uplink_keyids"


def uplink_version(conn: sqlite3.Connection) -> int:
    """The envelope version to sign new envelopes in: the highest the parent takes (1 until it says)."""
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (_META,)).fetchone()
    return int(row["value"]) if row else 1


def advertised(conn: sqlite3.Connection, node) -> list[int]:
    """The envelope versions this node takes from the nodes below it (``envelope_versions`` of a
    pull answer): all it knows where envelopes end, else those its own parent takes too."""
    if node.kind.ingests:
        return list(KNOWN)
    return [v for v in KNOWN if v <= uplink_version(conn)]


def record_parent(conn: sqlite3.Connection, versions, keyids=None) -> int:
    """Remember what a pull answer's ``envelope_versions`` and ``keyids`` say (call inside a
    write transaction).

    Anything but a list of integers (an older parent sends nothing) means ``v=1``; anything but
    ``"short"`` means full key ids in pushes. Returns the version new envelopes are signed in
    from now on.
    """
    taken = [v for v in versions if type(v) is int and v in KNOWN] if isinstance(versions, list) else []
    version = max(taken, default=1)
    said = {_META: str(version), _KEYIDS_META: SHORT_KEYIDS if keyids == SHORT_KEYIDS else "full"}
    held = {_META: "1", _KEYIDS_META: "full",  # what a node assumes until its parent says otherwise
            **dict(conn.execute("SELECT key, value FROM node_meta WHERE key IN (?, ?)", (_META, _KEYIDS_META)))}
    for key, value in said.items():
        if held[key] != value:
            conn.execute("INSERT INTO node_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                         " SET value = excluded.value", (key, value))
    return version


def short_keyids(conn: sqlite3.Connection) -> bool:
    """Whether the parent said it reads short key ids in pushed envelopes."""
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (_KEYIDS_META,)).fetchone()
    return row is not None and row["value"] == SHORT_KEYIDS
