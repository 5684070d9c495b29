"""审管认领: the supervising departments' pages and API at the hub (rules: :mod:`city_hub.regulation`)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for

from city_hub import regulation
from shared.core.errors import ValidationError
from shared.core.storage import write_transaction
from shared.services import joint
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome

bp = Blueprint("regulation", __name__)


def _today():
    return current_node().clock.today_cn()


@bp.get("/api/v1/supervision/pushes")
def api_my_pushes():
    """Decided cases pushed to the account's office for 事中事后监管 (审管互动)."""
    return jsonify({"office": g.account["office"],
                    "pushes": regulation.pushes_for_office(get_db(), g.account["office"] or "", _today())})


@bp.post("/api/v1/cases/<case_id>/claim")
def api_claim(case_id: str):
    """认领 a pushed case: ``{"feedback"?}``."""
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    conn = get_db()
    with write_transaction(conn):
        claimed = regulation.claim(conn, case_id, g.account, body.get("feedback", ""), current_node().now())
    return jsonify({"push": claimed})


@bp.get("/supervision/pushes")
def pushes_page():
    """审管互动: the supervising office's pushed cases, to claim."""
    office = g.account["office"] or ""
    return render_template("regulation/pushes.html", office=office, claim_wd=joint.CLAIM_WD,
                           pushes=regulation.pushes_for_office(get_db(), office, _today()))


@bp.post("/cases/<case_id>/claim")
def claim_form(case_id: str):
    """The 认领 button of the supervision queue."""
    with form_outcome("未能认领", "已认领"), write_transaction(get_db()):
        regulation.claim(get_db(), case_id, g.account, request.form.get("feedback", ""), current_node().now())
    return redirect(url_for("regulation.pushes_page"))
