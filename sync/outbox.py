"""The origin side: number envelopes 1, 2, 3… chained by hash, and track what the hub holds.

An envelope is appended in the same SQLite transaction as the change it reports (the case and
its outbox row commit together or not at all), so a kill -9 can neither lose a submitted case
nor send one that was never saved. Rows move ``pending`` → ``custody`` (a township signed a
custody receipt) → ``acked`` (a hub-signed cumulative acknowledgement covers them). Nothing is
deleted before ``acked``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

from shared.core.clock import iso
from shared.core.crypto import SigningKey
from sync import envelope, formats

GENESIS = "0" * 64


def _meta(conn: sqlite3.Connection, key: str, default: str) -> str:
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO node_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def append(
    conn: sqlite3.Connection,
    key: SigningKey,
    origin: str,
    kind: str,
    body: dict,
    hlc: str,
    now,
    case_id: str | None = None,
    attachments: list[dict] | None = None,
    version: int | None = None,
) -> tuple[int, str, dict]:
    """Sign and queue the next envelope of this origin. Call inside a write transaction.

    ``version``: the envelope version (``None``: the one the parent takes, sync/formats.py); a
    ``case.submit`` body must already be in that version's form (shared/services/submission.py).
    :returns: ``(seq, envelope_id, document)``
    """
    version = version or formats.uplink_version(conn)
    seq = int(_meta(conn, "outbox_seq", "0")) + 1
    prev = _meta(conn, "outbox_head", GENESIS)
    payload = {
        "v": version,
        "origin": origin,
        "seq": seq,
        "prev": prev,
        "hlc": hlc,
        "kind": kind,
        "body": body,
        "attachments": attachments or [],
    }
    document = envelope.sign(key, envelope.ENVELOPE_V2 if version == 2 else envelope.ENVELOPE, payload)
    envelope_id = envelope.document_id(document)
    conn.execute(
        "INSERT INTO outbox(seq, envelope_id, prev, kind, case_id, document, attachments, created_at)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (seq, envelope_id, prev, kind, case_id, envelope.to_bytes(document), json.dumps(attachments or []), iso(now)),
    )
    _set_meta(conn, "outbox_seq", str(seq))
    _set_meta(conn, "outbox_head", envelope_id)
    return seq, envelope_id, document


RESEND_CUSTODY_AFTER = timedelta(minutes=10)
#: How often a node looks for envelopes whose acknowledgement is overdue, while it finds none.
REOFFER_CHECK_EVERY = timedelta(minutes=1)


def to_send(conn: sqlite3.Connection, limit: int, now=None) -> list[sqlite3.Row]:
    """Envelopes to offer the parent, oldest first: every pending one, and (given ``now``) those
    in custody whose acknowledgement is overdue (re-offering is idempotent and covers a township
    that lost its disk); the acknowledgement itself comes back with the next pull.

    The overdue walk reads every row in custody (``custody_at`` has no index), so a caller that
    looked a moment ago passes ``now=None``: pending rows only, a walk that stops at ``limit``.
    """
    # Two walks of the (state, seq) index: one query with OR made SQLite read every pending row
    # (or every row) and sort them, each round.
    columns = "SELECT seq, envelope_id, document, state FROM outbox"
    rows = conn.execute(f"{columns} WHERE state = 'pending' ORDER BY seq LIMIT ?", (limit,)).fetchall()
    if now is not None:
        rows += conn.execute(f"{columns} WHERE state = 'custody' AND custody_at < ? ORDER BY seq LIMIT ?",
                             (iso(now - RESEND_CUSTODY_AFTER), limit)).fetchall()
    return sorted(rows, key=lambda r: r["seq"])[:limit]


def pending_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[sqlite3.Row]:
    """Up to ``limit`` pending envelopes numbered after ``seq``, oldest first (the next push while
    the one up to ``seq`` is still in flight, ``sync.node_sync._pushes_in_flight``)."""
    return conn.execute("SELECT seq, envelope_id, document, state, attachments FROM outbox"
                        " WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()


def unacked(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every envelope the hub has not acknowledged, oldest first (USB bundles carry them all)."""
    return conn.execute("SELECT seq, envelope_id, document, state FROM outbox WHERE state != 'acked' ORDER BY seq").fetchall()


def acked_through(conn: sqlite3.Connection) -> int:
    """The highest seq the hub acknowledged (0 if none); every row up to it is acknowledged,
    since acknowledgements are cumulative (one index probe, ``outbox_state``)."""
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE state = 'acked'").fetchone()[0]


def unacked_attachments(conn: sqlite3.Connection, after_seq: int | None = None, limit: int = -1,
                        through: int | None = None) -> list[dict]:
    """Material files named by envelopes the hub does not hold yet, oldest first.

    ``after_seq``: only envelopes after it (the caller knows every earlier file is delivered);
    the rows are read by primary key from there, never the whole unacknowledged backlog.
    ``through``: only envelopes up to that seq; ``limit``: of at most that many envelopes.
    """
    start = max(acked_through(conn), after_seq or 0)
    end = MAX_SEQ if through is None else through
    return [{**a, "seq": row["seq"]} for row in conn.execute(
        "SELECT seq, attachments FROM outbox WHERE seq > ? AND seq <= ? AND attachments != '[]' ORDER BY seq LIMIT ?",
        (start, end, limit)) for a in json.loads(row["attachments"])]


MAX_SEQ = 2**63 - 1


def receipted_through(conn: sqlite3.Connection) -> int:
    """The newest envelope a parent signed for (custody or ack): every one up to it was pushed."""
    return max(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE state = 'custody'").fetchone()[0],
               acked_through(conn))


def last_seq(conn: sqlite3.Connection) -> int:
    """The newest envelope's seq (0 if none): one probe of the primary key."""
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]


def mark_custody(conn: sqlite3.Connection, envelope_ids: list[str], now) -> None:
    """Record a verified custody receipt for these envelopes."""
    conn.executemany(
        "UPDATE outbox SET state = 'custody', custody_at = ? WHERE envelope_id = ? AND state = 'pending'",
        [(iso(now), eid) for eid in envelope_ids],
    )


def mark_acked(conn: sqlite3.Connection, acked_seq: int, acked_id: str, now) -> int:
    """Apply a verified cumulative acknowledgement; returns how many rows it newly covered.

    The acknowledged id must be the id this node gave that seq: an ack for another chain (a
    cloned key, a hub restored from an old backup) must not prune anything.
    """
    row = conn.execute("SELECT envelope_id FROM outbox WHERE seq = ?", (acked_seq,)).fetchone()
    if row is not None and row["envelope_id"] != acked_id:
        raise ValueError(f"acknowledgement for seq {acked_seq} names another envelope")
    # Only the newly covered range: rewriting every row acknowledged before was quadratic.
    cur = conn.execute(
        "UPDATE outbox SET state = 'acked', acked_at = ? WHERE seq > ? AND seq <= ?",
        (iso(now), acked_through(conn), acked_seq),
    )
    return cur.rowcount


def record_failure(conn: sqlite3.Connection, seqs: list[int], error: str) -> None:
    """Count a failed attempt on these envelopes (shown on the queue page)."""
    conn.executemany(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", [(error[:500], s) for s in seqs]
    )


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Envelopes per state."""
    result = {"pending": 0, "custody": 0, "acked": 0}
    for row in conn.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
        result[row["state"]] = row["n"]
    return result


RESTORED_AT_SEQ = "restored_at_seq"


def mark_restored(conn: sqlite3.Connection) -> int:
    """Remember where this outbox stood when the node was restored from a backup (``liandong
    restore``): envelopes numbered after it are new, those up to it the hub may hold already."""
    head = int(_meta(conn, "outbox_seq", "0"))
    _set_meta(conn, RESTORED_AT_SEQ, str(head))
    return head


def resume_after(conn: sqlite3.Connection, key: SigningKey, acked_seq: int, acked_id: str, now) -> dict:
    """Continue this origin's chain from the hub's acknowledged head (after a restore: ``liandong
    node resume``). Call inside a write transaction.

    Envelopes made before the restore (up to ``restored_at_seq``) are covered by the hub's ack
    when it is past them; envelopes made since are numbered again after ``acked_seq``, chained
    to ``acked_id`` and signed again with the same content. Nothing the hub does not hold is dropped.
    """
    restored = int(_meta(conn, RESTORED_AT_SEQ, _meta(conn, "outbox_seq", "0")))
    if acked_seq <= restored:
        return {"renumbered": [], "acked_seq": acked_seq, "restored_at_seq": restored}
    conn.execute("UPDATE outbox SET state = 'acked', acked_at = ? WHERE seq <= ? AND state != 'acked'",
                 (iso(now), restored))
    newer = conn.execute("DELETE FROM outbox WHERE seq > ? RETURNING *", (restored,)).fetchall()
    prev, renumbered = acked_id, []
    for seq, row in enumerate(sorted(newer, key=lambda r: r["seq"]), start=acked_seq + 1):
        original = envelope.from_bytes(row["document"])
        payload = {**envelope.peek(original), "seq": seq, "prev": prev}
        document = envelope.sign(key, original["payloadType"], payload)  # the version it was signed in
        envelope_id = envelope.document_id(document)
        conn.execute(
            "INSERT INTO outbox(seq, envelope_id, prev, kind, case_id, document, attachments, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (seq, envelope_id, prev, row["kind"], row["case_id"], envelope.to_bytes(document), row["attachments"],
             row["created_at"]),
        )
        renumbered.append({"from": row["seq"], "to": seq})
        prev = envelope_id
    _set_meta(conn, "outbox_seq", str(acked_seq + len(newer)))
    _set_meta(conn, "outbox_head", prev)
    _set_meta(conn, RESTORED_AT_SEQ, str(acked_seq + len(newer)))
    return {"renumbered": renumbered, "acked_seq": acked_seq, "restored_at_seq": restored}
