"""规范收费 pages and API at the window that serves a case (hub or township): what the item may
charge, payments, exemptions, refunds, and the office's daily fee report (page, JSON, CSV)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for

from shared.core.clock import CN_TZ
from shared.core.csv_export import to_csv
from shared.core.errors import Forbidden, LiandongError, NotFound, ValidationError
from shared.rules import fees as rules
from shared.services import casework, fees
from shared.web.cases import _may_decide
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.limits import json_object

bp = Blueprint("fees", __name__)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Roles that read any office's daily report (a window reads its own office's).
OVERSIGHT_ROLES = ("supervisor", "admin")


def _case_for_window(case_id: str):
    row = casework.get_row(get_db(), case_id)
    if not _may_decide(row):
        raise Forbidden(f"只有承办机构（{row['route_office']}）的窗口人员可以登记收费")
    return row


@bp.get("/api/v1/cases/<case_id>/fees")
def api_case_fees(case_id: str):
    """What the case's item may charge (legal basis, standard) and what was recorded."""
    return jsonify(fees.case_fees(get_db(), current_node(), case_id))


@bp.post("/api/v1/cases/<case_id>/fees")
def api_record(case_id: str):
    """Record a payment (amount_fen, receipt_no, payer) or an exemption (reason)."""
    _case_for_window(case_id)
    body = json_object()
    return jsonify(fees.record(get_db(), current_node(), case_id, g.account["username"], body)), 201


@bp.post("/api/v1/cases/<case_id>/fees/<record_id>/refund")
def api_refund(case_id: str, record_id: str):
    """Refund one payment in full, with its reason."""
    _case_for_window(case_id)
    reason = json_object().get("reason")
    return jsonify(fees.refund(get_db(), current_node(), case_id, record_id, g.account["username"], reason)), 201


@bp.get("/cases/<case_id>/fees")
def case_page(case_id: str):
    """The case's fee page: terms, records, and the window's forms."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    return render_template("fees/case.html", row=row, fees=fees.case_fees(conn, current_node(), case_id),
                           may_record=_may_decide(row), labels=rules.KIND_LABELS, yuan=rules.yuan)


@bp.post("/cases/<case_id>/fees")
def record_form(case_id: str):
    """The window's 收费 / 减免 form (amount typed in 元)."""
    _case_for_window(case_id)
    form = request.form
    body = {"kind": form.get("kind"), "receipt_no": form.get("receipt_no"), "payer": form.get("payer"),
            "reason": form.get("reason")}
    try:
        if body["kind"] == "payment":
            body["amount_fen"] = rules.parse_yuan(form.get("amount"))
        done = fees.record(get_db(), current_node(), case_id, g.account["username"], body)
    except LiandongError as exc:
        flash(f"未能登记：{exc.message}")
    else:
        flash(f"已登记{rules.KIND_LABELS[done['kind']]}" + (f" {rules.yuan(done['amount_fen'])} 元" if done["amount_fen"] else ""))
    return redirect(url_for("fees.case_page", case_id=case_id))


@bp.post("/cases/<case_id>/fees/<record_id>/refund")
def refund_form(case_id: str, record_id: str):
    """The window's 退费 form."""
    _case_for_window(case_id)
    try:
        done = fees.refund(get_db(), current_node(), case_id, record_id, g.account["username"],
                           request.form.get("reason"))
    except LiandongError as exc:
        flash(f"未能退费：{exc.message}")
    else:
        flash(f"已退费 {rules.yuan(done['amount_fen'])} 元")
    return redirect(url_for("fees.case_page", case_id=case_id))


def _report_args() -> tuple[str, str]:
    """(office, day) of a daily report: a window's own office; supervisors and admins name one."""
    day = request.args.get("day") or current_node().now().astimezone(CN_TZ).date().isoformat()
    if not _DAY.fullmatch(day):
        raise ValidationError("day", "日期格式应为 YYYY-MM-DD")
    if g.account["role"] in OVERSIGHT_ROLES:
        office = request.args.get("office") or ""
        if not office:
            raise ValidationError("office", "请指定机构（office）")
    elif g.account["office"]:
        office = g.account["office"]
    else:
        raise Forbidden("只有窗口人员、监察员或管理员可以查看收费日报")
    return office, day


@bp.get("/api/v1/fees/daily")
def api_daily():
    """The daily fee report of an office (JSON)."""
    office, day = _report_args()
    return jsonify(fees.daily_report(get_db(), office, day))


@bp.get("/fees/daily.<fmt>")
def daily_csv(fmt: str):
    """The daily fee report as CSV (Excel/WPS)."""
    if fmt != "csv":
        raise NotFound("导出格式只能是 csv")
    office, day = _report_args()
    rows = rules.daily_report_rows(fees.daily(get_db(), office, day))
    return Response(to_csv(rows), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=fees-{office}-{day}.csv"})


@bp.get("/fees/daily")
def daily_page():
    """收费日报: an office's payments, exemptions and refunds of one day, with totals."""
    if g.account["role"] in OVERSIGHT_ROLES and not request.args.get("office"):
        return render_template("fees/daily.html", report=None, labels=rules.KIND_LABELS, yuan=rules.yuan)
    office, day = _report_args()
    return render_template("fees/daily.html", report=fees.daily_report(get_db(), office, day),
                           labels=rules.KIND_LABELS, yuan=rules.yuan)
