"""The audit log: who did what, when. One writer for every layer (append-only by trigger)."""

from __future__ import annotations

import sqlite3

from shared.core.clock import iso


def audit(conn: sqlite3.Connection, actor: str, action: str, target: str | None, detail: str | None, now) -> None:
    """Append to the audit log (append-only by trigger)."""
    conn.execute(
        "INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?,?,?,?,?)",
        (iso(now), actor, action, target, detail),
    )
