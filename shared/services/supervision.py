"""The deciding node's scheduled rules: deemed acceptance, 容缺 termination, 电子监察 alerts.

Run by the scheduled job on the hub (city items) and on each township (items delegated to it); only
cases this node decides are touched, and every change is an ordinary case event sent on by
``emit``, so the village sees it like any other decision.
"""

from __future__ import annotations

import json
import sqlite3

from shared.core.clock import iso
from shared.core.storage import write_transaction
from shared.rules import states
from shared.rules.deadlines import case_clock, cn_day, notice_overdue
from shared.services import casework

SYSTEM = "system"


def run(conn: sqlite3.Connection, node, emit) -> dict:
    """One pass over the open cases this node decides (its tier's ``deciding_scope``); returns what it did."""
    level, office = node.kind.deciding_scope(node)
    today = node.clock.today_cn()
    done = {"deemed_accepted": 0, "terminated": 0, "alerts": 0}
    open_states = tuple(states.OPEN_STATES)
    rows = conn.execute(
        f"SELECT case_id, status, limit_wd, route_office FROM cases WHERE route_level = ? AND route_office LIKE ?"
        f" AND status IN ({','.join('?' * len(open_states))})",
        (level, office, *open_states),
    ).fetchall()
    for row in rows:
        events = conn.execute("SELECT action, at, detail FROM case_events WHERE case_id = ? ORDER BY at, rowid",
                              (row["case_id"],)).fetchall()
        with write_transaction(conn):
            if row["status"] == "RECEIVED":
                received = next((e["at"] for e in reversed(events) if e["action"] in ("receive", "resubmit")), None)
                if received and notice_overdue(received, node.calendar, today):
                    casework.perform_action(
                        conn, row["case_id"], "accept", "收到申请材料后五日内未一次性告知补正，依法自收到之日起即为受理",
                        SYSTEM, node.node_id, node.now(), emit, system={"effective_at": received, "deemed": True})
                    done["deemed_accepted"] += 1
                    continue
            if row["status"] == "ACCEPTED_DEFICIENT":
                due = _deficiency_due(events)
                if due is not None and due < today.isoformat():
                    casework.perform_action(conn, row["case_id"], "terminate", f"容缺材料逾期（{due}）未补齐，办件终止",
                                            SYSTEM, node.node_id, node.now(), emit)
                    done["terminated"] += 1
                    continue
            clock = case_clock(events, row["limit_wd"], row["status"], node.calendar, today)
            if clock["supervision"] != "none":
                cur = conn.execute(
                    "INSERT INTO supervision_alerts(case_id, level, office, deadline, at) VALUES (?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    (row["case_id"], clock["supervision"], row["route_office"], clock["deadline"], iso(node.now())),
                )
                done["alerts"] += cur.rowcount
    return done


def _deficiency_due(events) -> str | None:
    for e in reversed(events):
        if e["action"] == "accept_deficient":
            detail = json.loads(e["detail"] or "{}")
            due = detail.get("due_date")
            return str(due) if due else None
    return None


def received_day(events) -> str | None:
    """The China date the case was last received (for documents)."""
    for e in reversed(events):
        if e["action"] in ("receive", "resubmit"):
            return cn_day(e["at"]).isoformat()
    return None
