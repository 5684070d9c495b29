"""The 电子监察 board: open cases at 预警/黄牌/红牌 by department and office, and refusals.

No Flask here (the page is :mod:`city_hub.oversight.pages`); the per-case facts and their clocks
come from :mod:`city_hub.oversight.facts`, as for the statistics.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from datetime import date

from city_hub.oversight.facts import case_facts_where, item_departments
from city_hub.oversight.filters import group_label
from shared.rules import states
from shared.rules.catalog import DEPARTMENTS
from shared.rules.deadlines import LEVEL_LABELS as SUPERVISION_LABELS

REFUSALS = {"reject": "不予受理", "deny": "不予许可"}


def _reason(comment: str, detail: str | None) -> str:
    extra = json.loads(detail or "{}").get("reason") if detail else None
    return " ".join(part for part in ((comment or "").strip(), str(extra or "").strip()) if part)


def board(conn: sqlite3.Connection, hub_id: str, calendar, today: date, refusal_limit: int = 200) -> dict:
    """What the supervisor sees: open cases at 预警/黄牌/红牌 by department and office, refusals.

    :returns: ``alerts`` (cases, most overdue first), ``groups`` (department, office, counts per
        level), ``counts`` (per level), ``refusals`` (newest first, with their reasons and a flag
        when none was given) and ``refusal_counts`` (per kind, plus ``no_reason``).
    """
    open_states = tuple(states.OPEN_STATES)
    item_depts = item_departments(conn)
    names = {r["node_id"]: r["name"] for r in conn.execute("SELECT node_id, name FROM nodes")}
    where = f"c.status IN ({','.join('?' * len(open_states))}) AND c.accepted_at IS NOT NULL"
    facts = case_facts_where(conn, hub_id, calendar, today, where, open_states, item_depts)
    alerts = [f for f in facts if f.supervision != "none"]
    order = {"red": 0, "yellow": 1, "warning": 2}
    alerts.sort(key=lambda f: (order[f.supervision], f.remaining_working_days or 0, f.submitted_at))
    groups: dict[tuple[str, str], dict] = {}
    for f in alerts:
        group = groups.setdefault((f.department, f.office), {
            "department": f.department, "department_label": DEPARTMENTS.get(f.department, f.department),
            "office": f.office, "office_label": group_label(f.office, "office", names),
            "warning": 0, "yellow": 0, "red": 0})
        group[f.supervision] += 1
    refusals = []
    counts = {"reject": 0, "deny": 0, "no_reason": 0}
    for e in conn.execute(
        "SELECT e.case_id, e.at, e.node, e.actor, e.action, e.comment, e.detail, c.receipt_no, c.item_name,"
        " c.route_office FROM case_events e JOIN cases c ON c.case_id = e.case_id"
        " WHERE e.action IN ('reject', 'deny') ORDER BY e.at DESC, e.rowid DESC"
    ):
        reason = _reason(e["comment"], e["detail"])
        counts[e["action"]] += 1
        counts["no_reason"] += 0 if reason else 1
        if len(refusals) < refusal_limit:
            refusals.append({"case_id": e["case_id"], "receipt_no": e["receipt_no"], "item_name": e["item_name"],
                             "office": e["route_office"], "office_label": group_label(e["route_office"], "office", names),
                             "kind": e["action"], "kind_label": REFUSALS[e["action"]], "at": e["at"],
                             "actor": e["actor"], "reason": reason})
    return {
        "today": today.isoformat(),
        "alerts": [asdict(f) | {"cards": sorted(f.cards), "level_label": SUPERVISION_LABELS[f.supervision],
                                "office_label": group_label(f.office, "office", names),
                                "department_label": DEPARTMENTS.get(f.department, f.department)} for f in alerts],
        "groups": sorted(groups.values(), key=lambda g: (g["department"], g["office"])),
        "counts": {level: sum(1 for f in alerts if f.supervision == level) for level in ("warning", "yellow", "red")},
        "refusals": refusals,
        "refusal_counts": counts,
    }
