"""A case as every node shows it: its JSON view (the API and the pages) and the 七步法 progress.

It gathers what the other case services hold about a case (联办 opinions, 好差评), so it sits
above them: :mod:`shared.services.casework` itself knows nothing of them.
"""

from __future__ import annotations

import json
import sqlite3

from shared.rules import states
from shared.rules.deadlines import LEVEL_LABELS, case_clock
from shared.rules.idcard import mask_id_number
from shared.rules.workdays import fallback_warning
from shared.services import casework, feedback, fees, joint

SEVEN_STEPS = ("委托", "受理", "办理", "送达", "归档", "上报", "回访")


def seven_steps(case: dict) -> list[dict]:
    """The 为民代办 七步法 (卢龙) of a case taken by an agent, from its history.

    委托: taken under a recorded 委托; 受理/办理/送达: the events; 归档: concluded and the hub
    holds the 送达 (acked); 上报: counted in the hub's statistics once concluded there; 回访: a
    rating or follow-up recorded (when the feedback module provides one).
    """
    actions = {h["action"] for h in case["history"]}
    entrusted = any(h["action"] == "submit" and (h.get("detail") or {}).get("entrustment") for h in case["history"])
    concluded = case["status"] == "CONCLUDED"
    done = {
        "委托": entrusted,
        "受理": bool(actions & {"accept", "accept_deficient", "reject"}),
        "办理": bool(actions & {"approve", "deny", "reject"}),
        "送达": "deliver" in actions,
        "归档": concluded and case.get("sync_state") in ("acked", "hub"),
        "上报": concluded and case.get("sync_state") in ("acked", "hub"),
        "回访": bool(case.get("rating") or case.get("follow_up")),
    }
    return [{"step": name, "done": done[name]} for name in SEVEN_STEPS]


def to_json(conn: sqlite3.Connection, case_id: str, calendar=None, today=None, mask: bool = True) -> dict:
    """The case as the API shows it at this node (``GET /api/v1/cases/<id>``)."""
    row = casework.get_row(conn, case_id)
    events = conn.execute("SELECT * FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,)).fetchall()
    history = [
        {
            "at": e["at"], "node": e["node"], "actor": e["actor"], "action": e["action"],
            "action_label": states.ACTION_LABELS.get(e["action"], "提交" if e["action"] == "submit" else e["action"]),
            "from_status": e["from_status"], "status": e["to_status"],
            "status_label": states.status_label(e["to_status"]), "comment": e["comment"],
            "detail": json.loads(e["detail"] or "{}"),
        }
        for e in events
    ]
    materials = [dict(m) for m in conn.execute(
        "SELECT code, filename, sha256, size FROM case_materials WHERE case_id = ? ORDER BY code", (case_id,))]
    result = {
        "case_id": row["case_id"],
        "receipt_no": row["receipt_no"],
        "item_code": row["item_code"],
        "item_name": row["item_name"],
        "catalog_version": row["catalog_version"],
        "origin": row["origin"],
        "status": row["status"],
        "status_label": states.status_label(row["status"]),
        "route": {"level": row["route_level"], "office": row["route_office"]},
        "applicant": {
            "name": row["applicant_name"],
            "id_number": mask_id_number(row["id_number"]) if mask else row["id_number"],
            "phone": row["phone"],
        },
        "form": json.loads(row["form"]),
        "materials": materials,
        "submitted_at": row["submitted_at"],
        "updated_at": row["updated_at"],
        "accepted_at": row["accepted_at"],
        "deadline": None,
        "remaining_working_days": None,
        "supervision": "none",
        "sync_state": row["sync_state"],
        "history": history,
        "decision": json.loads(row["decision"]) if row["decision"] else None,
        "green_channel": bool(row["green_channel"]),
        "purged_at": row["purged_at"],
    }
    # 补齐补正 / 容缺 materials the origin sent: fields before/after and new materials, for the office.
    result["supplements"] = [h for h in history if h["action"] == "supplement"]
    result["joint_opinions"] = joint.opinions(conn, case_id, today)
    result["rating"] = feedback.rating_of(conn, case_id)
    result["fees"] = fees.charged_summary(conn, case_id)  # 规范收费: what was charged at this node
    if calendar is not None and today is not None:
        clock = case_clock(events, row["limit_wd"], row["status"], calendar, today)
        result.update({k: clock[k] for k in ("deadline", "remaining_working_days", "supervision")})
        result["accepted_at"] = clock["accepted_at"] or row["accepted_at"]
        result["supervision_label"] = LEVEL_LABELS[result["supervision"]]
        if calendar.used_fallback:
            result["calendar_warning"] = fallback_warning(sorted(calendar.used_fallback))
    return result
