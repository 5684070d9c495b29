"""暂存: a half-filled application kept on this PC until the agent comes back to it. No Flask here.

A draft is not a case: it lives in its own table, has no 收件回执 number, no event and no outbox
envelope, so it is never sent, never counted in any figure and never seen by the township or the
hub. Submitting it goes through :func:`shared.services.intake.submit` like any application (all checks
then), after which the draft is deleted. Scans picked for a draft are already stored
content-addressed; the draft only refers to them by SHA-256.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

from shared.core.clock import iso
from shared.core.errors import NotFound, ValidationError
from shared.core.storage import write_transaction

#: Limits of what a draft may hold (it is typed by a person; anything larger is not a draft).
MAX_VALUE_CHARS = 2000
MAX_FIELDS = 200
MAX_DRAFTS = 500


def _clean_state(state: dict) -> dict:
    values = state.get("values") or {}
    kept = state.get("kept") or []
    if not isinstance(values, dict) or not isinstance(kept, list) or len(values) + len(kept) > MAX_FIELDS:
        raise ValidationError("draft", "暂存内容过多")
    clean_values = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 100:
            raise ValidationError("draft", "暂存内容有误")
        if len(value) > MAX_VALUE_CHARS:
            raise ValidationError("draft", f"「{key}」内容过长，无法暂存")
        if value:
            clean_values[key] = value
    if not all(isinstance(k, str) and len(k) <= 400 for k in kept):
        raise ValidationError("draft", "暂存内容有误")
    return {"values": clean_values, "kept": list(kept), "entrusted": bool(state.get("entrusted"))}


def save(conn: sqlite3.Connection, draft_id: str | None, item: dict, step: str, state: dict, agent: str, now) -> str:
    """Create or update a draft (``state``: ``values``, ``kept`` materials, ``entrusted``); its id."""
    clean = _clean_state(state)
    text = json.dumps(clean, ensure_ascii=False, sort_keys=True)
    applicant = clean["values"].get("applicant_name", "")[:50]
    with write_transaction(conn):
        if draft_id:
            cur = conn.execute(
                "UPDATE drafts SET step = ?, state = ?, applicant_name = ?, updated_at = ?"
                " WHERE draft_id = ? AND item_code = ?", (step, text, applicant, iso(now), draft_id, item["code"]))
            if cur.rowcount:
                return draft_id
        if conn.execute("SELECT COUNT(*) FROM drafts").fetchone()[0] >= MAX_DRAFTS:
            raise ValidationError("draft", f"暂存的办件已有 {MAX_DRAFTS} 件，请先提交或删除一些")
        draft_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO drafts(draft_id, item_code, item_name, applicant_name, step, state, agent, created_at,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (draft_id, item["code"], item["name"], applicant, step, text, agent, iso(now), iso(now)))
    return draft_id


def get(conn: sqlite3.Connection, draft_id: str) -> dict:
    """A draft with its decoded ``state``, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM drafts WHERE draft_id = ?", (draft_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该暂存的办件（可能已提交或删除）")
    return {**dict(row), "state": json.loads(row["state"])}


def listed(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every draft of this node, most recently touched first."""
    return conn.execute("SELECT draft_id, item_code, item_name, applicant_name, step, agent, created_at, updated_at"
                        " FROM drafts ORDER BY updated_at DESC").fetchall()


def delete(conn: sqlite3.Connection, draft_id: str) -> bool:
    """Remove a draft (after it was submitted, or when the agent discards it)."""
    with write_transaction(conn):
        return conn.execute("DELETE FROM drafts WHERE draft_id = ?", (draft_id,)).rowcount > 0
