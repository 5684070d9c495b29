"""审管互动: at the hub, a decided case is pushed once to its supervising department, which claims it.

A case that reaches APPROVED or CONCLUDED (whichever comes first) is pushed to the office of
the item's ``supervising_department`` (else its own department: ``<hub id>-<dept>``). An account
of that office claims (认领) it, once, with optional feedback; a push not claimed within
``joint.CLAIM_WD`` working days is flagged by the scheduled pass. No Flask here.
"""

from __future__ import annotations

import sqlite3
from datetime import date

from shared.core.clock import iso
from shared.core.errors import Forbidden, NotFound, RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.services import accounts, joint


def on_case_status(conn: sqlite3.Connection, node, case_id: str, status: str | None) -> None:
    """Push a case that reached a pushing status (called for every event the hub applies)."""
    if status in joint.PUSH_STATUSES:
        push(conn, node, case_id)


def supervising_office(node, item: dict | None, fallback_office: str) -> str:
    """The office at the hub that supervises an item's cases."""
    if item is None:
        return fallback_office
    dept = item.get("supervising_department") or item["department_code"]
    return f"{node.node_id}-{dept}"


def push(conn: sqlite3.Connection, node, case_id: str) -> bool:
    """Push a decided case to its supervisor's queue at the hub, once; False if already pushed."""
    row = conn.execute("SELECT case_id, item_code, item_name, catalog_version, status, route_office FROM cases"
                       " WHERE case_id = ?", (case_id,)).fetchone()
    if row is None or row["status"] not in joint.PUSH_STATUSES:
        return False
    if conn.execute("SELECT 1 FROM regulator_pushes WHERE case_id = ?", (case_id,)).fetchone():
        return False
    item = joint.item_of(conn, node, row["item_code"], row["catalog_version"])
    office = supervising_office(node, item, row["route_office"])
    now = node.now()
    claim_due = node.calendar.add_working_days(node.clock.today_cn(), joint.CLAIM_WD).isoformat()
    conn.execute(
        "INSERT INTO regulator_pushes(case_id, office, item_code, item_name, trigger_status, pushed_at, claim_due)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        (case_id, office, row["item_code"], row["item_name"], row["status"], iso(now), claim_due))
    return True


def catch_up_pushes(conn: sqlite3.Connection, node) -> int:
    """Push decided cases the event hooks missed (e.g. a township decision that arrived before
    its case and was applied later)."""
    rows = conn.execute(
        "SELECT case_id FROM cases c WHERE status IN ('APPROVED', 'CONCLUDED')"
        " AND NOT EXISTS (SELECT 1 FROM regulator_pushes p WHERE p.case_id = c.case_id) LIMIT 1000").fetchall()
    return sum(push(conn, node, r["case_id"]) for r in rows)


def flag_unclaimed(conn: sqlite3.Connection, node) -> int:
    """Flag pushes still unclaimed after their claim deadline day."""
    cur = conn.execute(
        "UPDATE regulator_pushes SET flagged_at = ? WHERE claimed_at IS NULL AND flagged_at IS NULL"
        " AND claim_due < ?", (iso(node.now()), node.clock.today_cn().isoformat()))
    return cur.rowcount


def pushes_for_office(conn: sqlite3.Connection, office: str, today: date | None = None,
                      include_claimed: bool = True) -> list[dict]:
    """The supervising office's queue: unclaimed first (oldest first), then claimed."""
    where = "" if include_claimed else " AND p.claimed_at IS NULL"
    rows = conn.execute(
        "SELECT p.*, c.receipt_no, c.status FROM regulator_pushes p JOIN cases c ON c.case_id = p.case_id"
        f" WHERE p.office = ?{where} ORDER BY p.claimed_at IS NOT NULL, p.pushed_at LIMIT 500", (office,)).fetchall()
    return [joint.push_json(r, today) for r in rows]


def claim(conn: sqlite3.Connection, case_id: str, account, feedback: str, now) -> dict:
    """认领 by an account of the supervising office, once. Call inside a write transaction."""
    if feedback is not None and not isinstance(feedback, str):
        raise ValidationError("feedback", "feedback 必须是文本")
    row = conn.execute("SELECT * FROM regulator_pushes WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound("该办件未推送至监管部门")
    if account["office"] != row["office"] or account["role"] not in joint.DEPARTMENT_ROLES:
        raise Forbidden(f"只有监管部门（{row['office']}）的人员可以认领该办件")
    cur = conn.execute(
        "UPDATE regulator_pushes SET claimed_by = ?, claimed_at = ?, feedback = ? WHERE case_id = ?"
        " AND claimed_at IS NULL", (account["username"], iso(now), (feedback or "").strip(), case_id))
    if cur.rowcount == 0:
        raise RuleError("already_claimed", f"该办件已由{row['claimed_by']}于{joint._cn_text(row['claimed_at'])}认领")
    accounts.audit(conn, account["username"], "regulator.claim", case_id, row["office"], now)
    return joint.push_of(conn, case_id)


def run_scheduled(conn: sqlite3.Connection, node) -> dict:
    """Catch-up pushes and flags of unclaimed pushes (one pass of the hub's rules)."""
    with write_transaction(conn):
        return {"pushed": catch_up_pushes(conn, node), "push_flagged": flag_unclaimed(conn, node)}
