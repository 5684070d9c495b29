"""首问负责 and 咨询登记 pages and API, on every node: record, answer or refer, close, turn into a
case (the intake wizard continues with the asker's details), and the month's statistics."""

from __future__ import annotations

import re

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from shared.core.clock import CN_TZ
from shared.core.errors import LiandongError, ValidationError
from shared.rules import inquiries as rules
from shared.services import inquiries
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.limits import json_object

bp = Blueprint("inquiries", __name__)

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def _month() -> str:
    month = request.args.get("month") or current_node().now().astimezone(CN_TZ).strftime("%Y-%m")
    if not _MONTH.fullmatch(month):
        raise ValidationError("month", "月份格式应为 YYYY-MM")
    return month


def _status() -> str | None:
    status = request.args.get("status") or None
    if status not in (None, "open", "closed"):
        raise ValidationError("status", "status 只能是 open 或 closed")
    return status


def _close_body(source: dict) -> dict:
    return {"outcome": source.get("outcome"), "answer": source.get("answer"),
            "referred_to": source.get("referred_to"), "_role": g.account["role"]}


@bp.get("/api/v1/inquiries")
def api_list():
    """This node's inquiries, newest first (``?status=open|closed``)."""
    return jsonify({"inquiries": inquiries.listed(get_db(), _status())})


@bp.post("/api/v1/inquiries")
def api_record():
    """咨询登记: the calling account is the 首问负责人."""
    return jsonify(inquiries.record(get_db(), current_node(), json_object(), g.account["username"])), 201


@bp.get("/api/v1/inquiries/stats")
def api_stats():
    """The month's inquiries at this node: answered, referred, consultations (by item), cases."""
    return jsonify(inquiries.statistics(get_db(), current_node(), _month()))


@bp.get("/api/v1/inquiries/<inquiry_id>")
def api_get(inquiry_id: str):
    """One inquiry."""
    return jsonify(inquiries.get(get_db(), inquiry_id))


@bp.post("/api/v1/inquiries/<inquiry_id>/close")
def api_close(inquiry_id: str):
    """Answer (``answered`` + ``answer``) or refer (``referred`` + ``referred_to``), and close."""
    return jsonify(inquiries.close(get_db(), current_node(), inquiry_id, g.account["username"],
                                   _close_body(json_object())))


@bp.post("/api/v1/inquiries/<inquiry_id>/case")
def api_to_case(inquiry_id: str):
    """Turn the inquiry into an application: a prefilled draft the intake wizard continues."""
    done = inquiries.to_case(get_db(), current_node(), inquiry_id, g.account["username"], g.account["role"])
    done["wizard_url"] = url_for("intake.new_case", code=done["item_code"], draft=done["draft_id"])
    return jsonify(done), 201


@bp.get("/inquiries")
def overview():
    """咨询登记: the form, open inquiries first, and the month's figures."""
    conn = get_db()
    _, items = current_node().catalog(conn)
    return render_template("inquiries/overview.html", open_rows=inquiries.listed(conn, "open"),
                           closed_rows=inquiries.listed(conn, "closed", limit=50),
                           items=sorted(items.values(), key=lambda i: i["code"]),
                           stats=inquiries.statistics(conn, current_node(), _month()), outcomes=rules.OUTCOMES)


@bp.post("/inquiries")
def record_form():
    """The 咨询登记 form."""
    try:
        done = inquiries.record(get_db(), current_node(), request.form.to_dict(), g.account["username"])
    except LiandongError as exc:
        flash(f"未能登记：{exc.message}")
        return redirect(url_for("inquiries.overview"))
    return redirect(url_for("inquiries.detail", inquiry_id=done["inquiry_id"]))


@bp.get("/inquiries/<inquiry_id>")
def detail(inquiry_id: str):
    """One inquiry: answer, refer, or turn into a case."""
    conn = get_db()
    inquiry = inquiries.get(conn, inquiry_id)
    item = current_node().catalog(conn)[1].get(inquiry["item_code"]) if inquiry["item_code"] else None
    return render_template("inquiries/detail.html", inquiry=inquiry, item=item, outcomes=rules.OUTCOMES,
                           statuses=rules.STATUS_LABELS, suggested=rules.suggested_answer(item),
                           takes_applications=current_node().kind.takes_applications)


@bp.post("/inquiries/<inquiry_id>/close")
def close_form(inquiry_id: str):
    """The answer / referral form."""
    try:
        inquiries.close(get_db(), current_node(), inquiry_id, g.account["username"], _close_body(request.form))
    except LiandongError as exc:
        flash(f"未能办结：{exc.message}")
    else:
        flash("咨询已办结")
    return redirect(url_for("inquiries.detail", inquiry_id=inquiry_id))


@bp.post("/inquiries/<inquiry_id>/case")
def to_case_form(inquiry_id: str):
    """转为办件: on to the intake wizard with the asker's details filled in."""
    try:
        done = inquiries.to_case(get_db(), current_node(), inquiry_id, g.account["username"], g.account["role"])
    except LiandongError as exc:
        flash(f"未能转为办件：{exc.message}")
        return redirect(url_for("inquiries.detail", inquiry_id=inquiry_id))
    return redirect(url_for("intake.new_case", code=done["item_code"], draft=done["draft_id"]))
