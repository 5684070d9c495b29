"""The case page and API on every node, and the deciding office's queue and actions.

Actions are allowed only at the node that decides the case (the hub for city items, the
township for items delegated to it), to an account of the case's office with a deciding role.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from shared import accounts, casework, states
from shared.errors import Forbidden, ValidationError
from shared.storage import write_transaction

from . import current_node
from .db import get_db

bp = Blueprint("cases", __name__)

API_ACTIONS = ("accept", "approve", "deny", "reject", "request_correction", "start_review", "withdraw")


def _case_json(case_id: str) -> dict:
    node = current_node()
    conn = get_db()
    result = casework.to_json(conn, case_id, node.calendar, node.clock.today_cn())
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "case.read", case_id, None, node.now())
    return result


def _may_decide(row) -> bool:
    node = current_node()
    if node.tier == "village" or g.account is None:
        return False
    deciding_here = (row["route_level"] == "city") == (node.tier == "hub")
    return deciding_here and g.account["role"] in accounts.DECIDING_ROLES and g.account["office"] == row["route_office"]


def act(case_id: str, action: str, comment: str, details: dict) -> dict:
    """Apply ``action`` for the current account and send the event on."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    if not _may_decide(row):
        raise Forbidden(f"只有承办机构（{row['route_office']}）的审批人员可以办理该办件")
    node = current_node()
    with write_transaction(conn):
        return casework.perform_action(conn, case_id, action, comment, g.account["username"], node.node_id,
                                       node.now(), current_app.extensions["liandong_emit"], **details)


@bp.get("/api/v1/cases/<case_id>")
def api_case(case_id: str):
    """The case as far as this node knows it."""
    return jsonify(_case_json(case_id))


@bp.post("/api/v1/cases/<case_id>/actions")
def api_action(case_id: str):
    """受理 / 准予 / 不予许可 / 不予受理 / 补齐补正 … at the deciding node."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    action = body.get("action")
    if action not in states.ACTION_LABELS:
        raise ValidationError("action", f"未知的操作，可选：{'、'.join(API_ACTIONS)}")
    comment = body.get("comment") or ""
    if not isinstance(comment, str):
        raise ValidationError("comment", "comment 必须是文本")
    details = {k: v for k, v in body.items() if k not in ("action", "comment")}
    if action == "request_correction" and "missing_items" not in details and comment.strip():
        details["missing_items"] = [comment.strip()]
    event = act(case_id, action, comment, details)
    return jsonify({"event": event, "case": _case_json(case_id)})


@bp.get("/cases/<case_id>")
def detail(case_id: str):
    """The case page: applicant, materials, history, decision, and the allowed actions."""
    case = _case_json(case_id)
    row = casework.get_row(get_db(), case_id)
    actions = states.allowed_actions(row["status"]) if _may_decide(row) else []
    return render_template("cases/detail.html", case=case, actions=actions, labels=states.ACTION_LABELS)


@bp.post("/cases/<case_id>/actions")
def form_action(case_id: str):
    """The action buttons of the case page."""
    action = request.form.get("action", "")
    if action not in states.ACTION_LABELS:
        abort(400)
    comment = request.form.get("comment", "")
    details = {}
    if action == "request_correction":
        details["missing_items"] = [x.strip() for x in comment.splitlines() if x.strip()]
    act(case_id, action, comment, details)
    flash(f"已{states.ACTION_LABELS[action]}")
    return redirect(url_for("cases.detail", case_id=case_id))


@bp.get("/cases/<case_id>/receipt")
def receipt(case_id: str):
    """The printable 收件回执."""
    return render_template("cases/receipt.html", case=_case_json(case_id), node=current_node())


@bp.get("/cases/<case_id>/materials/<sha256>")
def material(case_id: str, sha256: str):
    """One material file of a case (download logged)."""
    conn = get_db()
    found = conn.execute(
        "SELECT filename FROM case_materials WHERE case_id = ? AND sha256 = ?", (case_id, sha256)
    ).fetchone()
    node = current_node()
    if found is None or not node.blobs.has(sha256):
        abort(404)
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "material.read", case_id, sha256, node.now())
    return Response(node.blobs.read(sha256), mimetype="application/octet-stream",
                    headers={"Content-Disposition": "attachment; filename*=UTF-8''" + sha256})


@bp.get("/queue")
def queue():
    """The office's open cases, nearest deadline first."""
    office = g.account["office"]
    node = current_node()
    conn = get_db()
    open_states = tuple(states.OPEN_STATES)
    rows = conn.execute(
        f"SELECT case_id FROM cases WHERE route_office = ? AND status IN ({','.join('?' * len(open_states))})"
        " ORDER BY submitted_at LIMIT 500",
        (office, *open_states),
    ).fetchall()
    cases = [casework.to_json(conn, r["case_id"], node.calendar, node.clock.today_cn()) for r in rows]
    cases.sort(key=lambda c: (c["remaining_working_days"] is None, c["remaining_working_days"] or 0))
    return render_template("cases/queue.html", cases=cases, office=office)
