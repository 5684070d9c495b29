"""The audit log: who did what, when. One writer for every layer; append-only and hash-chained.

Append-only *in fact*: triggers refuse UPDATE and DELETE, and an INSERT that reuses an id (an
``INSERT OR REPLACE`` would otherwise delete the old row without firing the DELETE trigger).
Tamper-evident: each row stores the hash of the row before it (``prev_hash``) and its own
``row_hash`` = SHA-256 over its id, content and ``prev_hash``; a trigger refuses a row that
does not link to the current last one. Someone who edits the database file around the
triggers cannot fix the chain without rewriting every later row, and :func:`verify_chain`
(``liandong audit verify``) reports the first row where it breaks. Cutting rows off the *end*
leaves a shorter valid chain: compare the head it prints with one noted earlier.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

from shared.core.clock import iso
from shared.core.storage import write_transaction

#: The ``prev_hash`` of the first chained row.
GENESIS = "0" * 64


def row_hash(row_id: int, at: str, actor: str, action: str, target, detail, prev_hash: str) -> str:
    """The hash a row stores: SHA-256 of its fields as a JSON array (ASCII, no spaces)."""
    content = json.dumps([row_id, at, actor, action, target, detail, prev_hash], ensure_ascii=True,
                         separators=(",", ":"))
    return hashlib.sha256(content.encode("ascii")).hexdigest()


def audit(conn: sqlite3.Connection, actor: str, action: str, target: str | None, detail: str | None, now) -> None:
    """Append to the audit log, chained to the last row (joins the caller's write transaction)."""
    with write_transaction(conn):  # the last row cannot change between reading it and linking to it
        last = conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        row_id = (last[0] + 1) if last else 1
        prev = (last[1] if last else None) or GENESIS
        at = iso(now)
        conn.execute(
            "INSERT INTO audit_log(id, at, actor, action, target, detail, prev_hash, row_hash)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (row_id, at, actor, action, target, detail, prev,
             row_hash(row_id, at, actor, action, target, detail, prev)),
        )


@dataclass(frozen=True)
class ChainReport:
    """The result of :func:`verify_chain`."""

    rows: int  # rows checked
    unchained: int  # rows written before the chain existed (schema before the audit chain)
    head: str  # the hash of the last row (GENESIS for an empty log)
    broken_id: int | None = None  # the first row where the chain breaks
    problem: str | None = None  # why, in English

    @property
    def ok(self) -> bool:
        return self.broken_id is None


def verify_chain(conn: sqlite3.Connection) -> ChainReport:
    """Walk the audit log in id order and report the first row whose hash or link is wrong.

    Rows from before the chain (no hashes) are allowed only before the first chained row.
    """
    expected_prev, rows, unchained, chained = GENESIS, 0, 0, False
    for r in conn.execute("SELECT id, at, actor, action, target, detail, prev_hash, row_hash FROM audit_log"
                          " ORDER BY id"):
        rows += 1
        if r[7] is None and not chained:
            unchained += 1
            continue
        chained = True
        problem = None
        if r[7] is None:
            problem = "row has no hash after the chain began (hash removed)"
        elif r[6] != expected_prev:
            problem = "prev_hash does not match the row before it (a row before it was deleted, inserted or changed)"
        elif row_hash(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) != r[7]:
            problem = "row content does not match its hash (the row was edited)"
        if problem:
            return ChainReport(rows, unchained, expected_prev, r[0], problem)
        expected_prev = r[7]
    return ChainReport(rows, unchained, expected_prev)
