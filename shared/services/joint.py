"""联合审批 (joint approval) with 超时默认 (deemed consent), and 审管互动 (pushes to the supervisor).

No Flask here. All of it happens at the node that decides the case (the hub for city items,
the township for items delegated to it); nothing here travels between nodes.

联合审批: when the deciding office accepts a case whose catalog item lists
``joint_departments``, one opinion request per department is opened for that department's
office at the deciding node (hub: ``<hub id>-<dept>``, township: ``<township id>-<dept>``),
due ``OPINION_WD`` working days after the acceptance day. An account of that office answers
同意/不同意 (a 不同意 must give reasons). The lead office cannot 准予 while any request is still
open; approving over a 不同意 needs a comment saying how it was resolved. Where the item has
``deemed_consent``, the scheduled pass (:func:`run_scheduled`) records every request still
open after its deadline day as ``deemed`` (视为同意, by ``system``, with the time), and the case
moves on: the lead may decide.

审管互动: at the hub, a case that reaches APPROVED or CONCLUDED (whichever comes first) is
pushed once to its supervising department's office (the item's ``supervising_department``
if it has one, else its own department: ``<hub id>-<dept>``). An account of that office
claims (认领) it, once, with optional feedback; a push not claimed within ``CLAIM_WD`` working
days is flagged (stored by the scheduled pass, and shown as overdue on every read).
"""

from __future__ import annotations

import sqlite3
from datetime import date

from shared.core.clock import CN_TZ, iso, parse_iso
from shared.core.errors import Forbidden, NotFound, RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import states
from shared.rules.catalog import DEPARTMENTS
from shared.services import accounts

#: Working days a joint department has to answer, counted from the acceptance day. The
#: statute gives joint handling 45 working days in all (行政许可法 Art. 42); the local 联审
#: rules we follow (沈阳 Art. 16) leave the department's share to the lead; 5 working days
#: keeps the opinions inside the shortest promised limit of a joint item in the seed (15 WD).
OPINION_WD = 5
#: Working days the supervising department has to claim a pushed case (东营/襄阳 practice).
CLAIM_WD = 2

OPINION_LABELS = {None: "待回复", "agree": "同意", "disagree": "不同意", "deemed": "超时视为同意"}
#: Statuses that push a case to its supervisor (first one reached).
PUSH_STATUSES = frozenset({"APPROVED", "CONCLUDED"})
#: Roles that answer for a department or claim for it (any working account of the office).
DEPARTMENT_ROLES = ("window", "chief", "head", "clerk", "supervisor")
SYSTEM = "system"


def _cn_day(iso_time: str) -> date:
    return parse_iso(iso_time).astimezone(CN_TZ).date()


def _deciding_prefix(node) -> str:
    """Offices at this node are ``<node id>-<dept>`` (hub: county code, township: its code)."""
    return node.node_id


def item_of(conn: sqlite3.Connection, node, item_code: str, version: int | None = None) -> dict | None:
    """The catalog item of a case: the version it was filed under where this node still has
    it, else the catalog this node goes by now."""
    return node.catalog_item(conn, item_code, version)


def on_event(conn: sqlite3.Connection, node, row, event: dict) -> None:
    """Called by the deciding node's emit for every event it applies (inside its transaction):
    opens the opinion requests on 受理 of a joint item."""
    action = event["action"]
    if action in ("accept", "accept_deficient"):
        item = item_of(conn, node, row["item_code"], row["catalog_version"])
        if item and item.get("joint_departments"):
            open_requests(conn, node, row["case_id"], item, event["at"])


# ------------------------------------------------------------------ 联合审批


def open_requests(conn: sqlite3.Connection, node, case_id: str, item: dict, accepted_at: str) -> int:
    """Open one request per joint department (idempotent); returns how many are new."""
    deadline = node.calendar.add_working_days(_cn_day(accepted_at), OPINION_WD).isoformat()
    prefix = _deciding_prefix(node)
    made = 0
    for dept in item["joint_departments"]:
        cur = conn.execute(
            "INSERT INTO joint_opinions(case_id, department_code, office, requested_at, deadline, deemed_consent)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (case_id, dept, f"{prefix}-{dept}", accepted_at, deadline, int(bool(item.get("deemed_consent")))),
        )
        made += cur.rowcount
    return made


def opinions(conn: sqlite3.Connection, case_id: str, today: date | None = None) -> list[dict]:
    """The opinion requests of a case as the API shows them (empty for a non-joint case)."""
    rows = conn.execute("SELECT * FROM joint_opinions WHERE case_id = ? ORDER BY rowid", (case_id,)).fetchall()
    return [_opinion_json(r, today) for r in rows]


def _opinion_json(r, today: date | None) -> dict:

    result = {
        "department_code": r["department_code"],
        "department": DEPARTMENTS.get(r["department_code"], r["department_code"]),
        "office": r["office"],
        "requested_at": r["requested_at"],
        "deadline": r["deadline"],
        "deemed_consent": bool(r["deemed_consent"]),
        "opinion": r["opinion"],
        "opinion_label": OPINION_LABELS.get(r["opinion"], r["opinion"]),
        "comment": r["comment"],
        "answered_by": r["answered_by"],
        "answered_at": r["answered_at"],
    }
    if today is not None:
        result["overdue"] = r["opinion"] is None and r["deadline"] < today.isoformat()
    return result


def pending_for_office(conn: sqlite3.Connection, office: str, today: date | None = None) -> list[dict]:
    """Open requests addressed to ``office``, earliest deadline first, with their case."""
    rows = conn.execute(
        "SELECT o.*, c.receipt_no, c.item_name, c.route_office, c.status FROM joint_opinions o"
        " JOIN cases c ON c.case_id = o.case_id WHERE o.office = ? AND o.opinion IS NULL"
        " ORDER BY o.deadline, o.requested_at LIMIT 500", (office,)).fetchall()
    return [{**_opinion_json(r, today), "case_id": r["case_id"], "receipt_no": r["receipt_no"],
             "item_name": r["item_name"], "lead_office": r["route_office"], "status": r["status"]} for r in rows]


def give_opinion(conn: sqlite3.Connection, case_id: str, account, opinion: str, comment: str, now) -> dict:
    """A department's answer. Call inside a write transaction.

    :raises ValidationError: unknown opinion, or 不同意 without reasons.
    :raises Forbidden: the account is not of a department asked about this case.
    :raises RuleError: ``already_answered`` (each department answers once), ``case_closed``.
    """
    if opinion not in ("agree", "disagree"):
        raise ValidationError("opinion", "意见只能是 agree（同意）或 disagree（不同意）")
    comment = (comment or "").strip() if isinstance(comment, str) else None
    if comment is None:
        raise ValidationError("comment", "comment 必须是文本")
    if opinion == "disagree" and not comment:
        raise ValidationError("comment", "不同意的意见必须说明理由", code="reason_required")
    case = conn.execute("SELECT status FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    if case is None:
        raise NotFound("未找到该办件")
    row = conn.execute("SELECT * FROM joint_opinions WHERE case_id = ? AND office = ?",
                       (case_id, account["office"] or "")).fetchone()
    if row is None or account["role"] not in DEPARTMENT_ROLES:
        raise Forbidden("只有被征求意见的联办部门人员可以对该办件提出意见")
    if row["opinion"] is not None:
        raise RuleError("already_answered", f"本部门已于{_cn_text(row['answered_at'])}提出意见"
                                            f"（{OPINION_LABELS[row['opinion']]}），不能重复提出")

    if case["status"] not in states.OPEN_STATES:
        raise RuleError("case_closed", f"办件已{states.status_label(case['status'])}，无需再提出意见")
    conn.execute(
        "UPDATE joint_opinions SET opinion = ?, comment = ?, answered_by = ?, answered_at = ?"
        " WHERE case_id = ? AND office = ?",
        (opinion, comment, account["username"], iso(now), case_id, row["office"]),
    )

    accounts.audit(conn, account["username"], "joint.opinion", case_id, f"{row['office']}:{opinion}", now)
    return _opinion_json(conn.execute("SELECT * FROM joint_opinions WHERE case_id = ? AND office = ?",
                                      (case_id, row["office"])).fetchone(), None)


def _cn_text(value: str | None) -> str:
    return parse_iso(value).astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M") if value else "—"


def check_action(conn: sqlite3.Connection, case_id: str, action: str, comment: str = "") -> None:
    """The lead office's guard before an action: no 准予 while opinions are open, and 准予 over
    a 不同意 only with a comment saying how it was resolved."""
    if action != "approve":
        return
    rows = conn.execute("SELECT office, department_code, opinion, deadline FROM joint_opinions WHERE case_id = ?",
                        (case_id,)).fetchall()
    waiting = [r for r in rows if r["opinion"] is None]
    if waiting:

        names = "、".join(f"{DEPARTMENTS.get(r['department_code'], r['office'])}（{r['deadline']}前）"
                         for r in waiting)
        raise RuleError("joint_opinions_pending", f"联办部门尚未回复意见，暂不能准予：{names}")
    if any(r["opinion"] == "disagree" for r in rows) and not (comment or "").strip():
        raise RuleError("joint_disagreement", "有联办部门不同意，准予前须在意见中写明协调处理结果")


def run_deemed_consent(conn: sqlite3.Connection, node, emit=None) -> int:
    """超时默认: requests of deemed-consent items still open after their deadline day become
    ``deemed`` (by ``system``, now). Only open cases of this node's offices are touched.
    ``emit`` is unused (no state changes; the lead decides next) and kept for the job's shape."""

    today = node.clock.today_cn().isoformat()
    prefix = _deciding_prefix(node) + "-%"
    open_states = tuple(states.OPEN_STATES)
    now = node.now()
    with write_transaction(conn):
        rows = conn.execute(
            "SELECT o.case_id, o.office FROM joint_opinions o JOIN cases c ON c.case_id = o.case_id"
            f" WHERE o.opinion IS NULL AND o.deemed_consent = 1 AND o.deadline < ? AND o.office LIKE ?"
            f" AND c.status IN ({','.join('?' * len(open_states))})",
            (today, prefix, *open_states)).fetchall()
        for r in rows:
            conn.execute(
                "UPDATE joint_opinions SET opinion = 'deemed', answered_by = ?, answered_at = ?, comment = ?"
                " WHERE case_id = ? AND office = ? AND opinion IS NULL",
                (SYSTEM, iso(now), "逾期未回复，依超时默认规则视为同意", r["case_id"], r["office"]))
            accounts.audit(conn, SYSTEM, "joint.deemed", r["case_id"], r["office"], now)
    return len(rows)


# ------------------------------------------------------------------ 审管互动 (read; the hub writes: city_hub/regulation.py)


def push_json(r, today: date | None) -> dict:
    result = {k: r[k] for k in ("case_id", "office", "item_code", "item_name", "trigger_status", "pushed_at",
                                "claim_due", "claimed_by", "claimed_at", "feedback", "flagged_at")}
    result["claimed"] = r["claimed_at"] is not None
    overdue = r["flagged_at"] is not None or (today is not None and r["claimed_at"] is None
                                               and r["claim_due"] < today.isoformat())
    result["overdue"] = bool(overdue and r["claimed_at"] is None)
    for extra in ("receipt_no", "status"):
        if extra in r.keys():
            result[extra] = r[extra]
    return result


def push_of(conn: sqlite3.Connection, case_id: str, today: date | None = None) -> dict | None:
    """The case's push to its supervisor, if any."""
    r = conn.execute("SELECT * FROM regulator_pushes WHERE case_id = ?", (case_id,)).fetchone()
    return push_json(r, today) if r else None


# ------------------------------------------------------------------ the scheduled pass


def run_scheduled(conn: sqlite3.Connection, node, emit=None) -> dict:
    """One pass at the deciding node: 超时默认 of the joint opinions."""
    return {"deemed_consent": run_deemed_consent(conn, node, emit)}
