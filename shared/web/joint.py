"""联办意见: the pages and API of the joint departments.

The rules are in :mod:`shared.services.joint`; this layer only checks the input shape and renders.
Registered on the hub (city items) and on townships (their delegated items); the hub's
审管认领 pages are in :mod:`city_hub.regulation_pages`.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for

from shared.core.storage import write_transaction
from shared.services import casework, joint
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome
from shared.web.limits import json_object

bp = Blueprint("joint", __name__)


def _today():
    return current_node().clock.today_cn()


@bp.get("/api/v1/cases/<case_id>/opinions")
def api_opinions(case_id: str):
    """The 联办 opinions of a case (empty list for a non-joint case)."""
    conn = get_db()
    casework.get_row(conn, case_id)
    return jsonify({"case_id": case_id, "opinions": joint.opinions(conn, case_id, _today()),
                    "push": joint.push_of(conn, case_id, _today())})


@bp.post("/api/v1/cases/<case_id>/opinions")
def api_give_opinion(case_id: str):
    """A joint department's answer: ``{"opinion": "agree"|"disagree", "comment"}``."""
    body = json_object()
    conn = get_db()
    with write_transaction(conn):
        given = joint.give_opinion(conn, case_id, g.account, body.get("opinion"), body.get("comment", ""),
                                   current_node().now())
    return jsonify({"opinion": given, "opinions": joint.opinions(conn, case_id, _today())})


@bp.get("/api/v1/joint/opinions")
def api_my_opinions():
    """Open opinion requests addressed to the account's office."""
    return jsonify({"office": g.account["office"],
                    "opinions": joint.pending_for_office(get_db(), g.account["office"] or "", _today())})


@bp.get("/joint/opinions")
def opinions_page():
    """The department's queue of cases awaiting its 联办 opinion."""
    office = g.account["office"] or ""
    return render_template("joint/opinions.html", office=office,
                           pending=joint.pending_for_office(get_db(), office, _today()))


@bp.post("/cases/<case_id>/opinions")
def opinion_form(case_id: str):
    """The opinion form (queue page and case page)."""
    opinion = request.form.get("opinion", "")
    with form_outcome("未能提交意见", f"已提交联办意见：{joint.OPINION_LABELS.get(opinion, opinion)}"), \
            write_transaction(get_db()):
        joint.give_opinion(get_db(), case_id, g.account, opinion, request.form.get("comment", ""),
                           current_node().now())
    if request.form.get("next") == "queue":
        return redirect(url_for("joint.opinions_page"))
    return redirect(url_for("cases.detail", case_id=case_id))
