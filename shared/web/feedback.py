"""好差评, 回访 and 投诉 pages and API on every node (rules in :mod:`shared.services.feedback`)."""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from shared.core.errors import Forbidden, LiandongError
from shared.core.storage import write_transaction
from shared.rules.catalog import DEPARTMENTS
from shared.services import accounts, casework, feedback
from shared.web import access
from shared.web.cases import office_label
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome
from shared.web.limits import json_object

bp = Blueprint("feedback", __name__)


def _audit(action: str, target: str | None, detail: str | None = None) -> None:
    conn = get_db()
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], action, target, detail, current_node().now())


def _may_rate(row) -> bool:
    node = current_node()
    return (row["origin"] == node.node_id and g.account["role"] in feedback.RATING_ROLES
            and row["status"] in feedback.RATEABLE_STATES)


def _visible_complaint(complaint_id: str) -> dict:
    complaint = feedback.get_complaint(get_db(), current_node(), complaint_id)
    if not feedback.may_see_complaint(g.account, complaint, current_node().kind.supervises):
        raise Forbidden("无权查看该投诉")
    _audit("complaint.read", complaint_id)  # the complainant's name and phone are personal data
    return complaint


def _hub_office_filter() -> str | None:
    """At the hub, supervisors and admins see everything; office accounts their office."""
    if not current_node().kind.supervises or g.account["role"] in ("supervisor", "admin"):
        return None
    return g.account["office"] or ""


# ----------------------------------------------------------------------------- API


@bp.post("/api/v1/cases/<case_id>/rating")
def api_rate(case_id: str):
    """好差评: one rating per case (``{"level": 1..5, "comment"}``); 409 once rated."""
    level, comment = feedback.validate_rating(json_object())
    conn = get_db()
    with write_transaction(conn):
        rating = feedback.rate(conn, current_node(), case_id, level, comment, g.account)
        accounts.audit(conn, g.account["username"], "case.rate", case_id, str(level), current_node().now())
    return jsonify(rating), 201


@bp.get("/api/v1/cases/<case_id>/rating")
def api_rating(case_id: str):
    """The case's rating (and 回访 at the hub), or ``{"rating": null}``."""
    casework.get_row(get_db(), case_id)
    return jsonify({"case_id": case_id, "rating": feedback.rating_of(get_db(), case_id)})


@bp.get("/api/v1/followups")
def api_followups():
    """Open 回访 (``?all=1`` with closed ones), overdue marked."""
    rows = feedback.followups(get_db(), current_node(), _hub_office_filter(), open_only=request.args.get("all") != "1")
    access.audit_list("followups", [r["case_id"] for r in rows])  # applicants' names and phones
    return jsonify({"followups": rows})


@bp.post("/api/v1/followups/<followup_id>/outcome")
def api_followup_outcome(followup_id: str):
    """Record a 回访's outcome (整改情况): ``{"outcome": "..."}``."""
    body = json_object()
    conn = get_db()
    with write_transaction(conn):
        followup = feedback.record_outcome(conn, current_node(), followup_id, body, g.account)
        accounts.audit(conn, g.account["username"], "followup.close", followup["case_id"], followup_id,
                       current_node().now())
    return jsonify(followup)


@bp.post("/api/v1/complaints")
def api_take_complaint():
    """投诉 about a case or an office: ``{"case_id"?, "office"?, "complainant": {"name","phone"}, "content"}``."""
    body = json_object()
    conn = get_db()
    with write_transaction(conn):
        complaint = feedback.take_complaint(conn, current_node(), body, g.account)
        accounts.audit(conn, g.account["username"], "complaint.take", complaint["complaint_id"],
                       complaint["case_id"], current_node().now())
    return jsonify(complaint), 201


@bp.get("/api/v1/complaints")
def api_complaints():
    """Complaints held here (the hub's queue: open ones by deadline first)."""
    rows = feedback.complaints(get_db(), current_node(), _hub_office_filter(),
                               open_only=request.args.get("open") == "1")
    _audit("complaint.list", None, str(len(rows)))
    return jsonify({"complaints": rows})


@bp.get("/api/v1/complaints/<complaint_id>")
def api_complaint(complaint_id: str):
    """One complaint."""
    return jsonify(_visible_complaint(complaint_id))


@bp.post("/api/v1/complaints/<complaint_id>/answer")
def api_answer(complaint_id: str):
    """The supervisor's answer (``{"answer": "..."}``), sent down to the node that took it."""
    body = json_object()
    conn = get_db()
    with write_transaction(conn):
        complaint = feedback.answer_complaint(conn, current_node(), complaint_id, body, g.account)
        accounts.audit(conn, g.account["username"], "complaint.answer", complaint_id, None, current_node().now())
    return jsonify(complaint)


# ----------------------------------------------------------------------------- pages


@bp.route("/cases/<case_id>/rating", methods=["GET", "POST"])
def rating_page(case_id: str):
    """The case's rating, and the form to record it at the node that took the application."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    if request.method == "POST":
        try:
            level, comment = feedback.validate_rating(
                {"level": request.form.get("level", ""), "comment": request.form.get("comment", "")})
            with write_transaction(conn):
                feedback.rate(conn, current_node(), case_id, level, comment, g.account)
                accounts.audit(conn, g.account["username"], "case.rate", case_id, str(level), current_node().now())
        except LiandongError as exc:
            if exc.status == 403:
                raise
            flash(f"未能登记评价：{exc.message}")
        else:
            flash("评价已登记" + ("，差评将由市（县）政务服务中心回访整改" if level in feedback.BAD_LEVELS else ""))
        return redirect(url_for("feedback.rating_page", case_id=case_id))
    rating = feedback.rating_of(conn, case_id)
    return render_template("feedback/rating.html", row=row, rating=rating, levels=feedback.LEVELS,
                           may_rate=rating is None and _may_rate(row))


@bp.get("/feedback")
def overview():
    """好差评与投诉: at the hub the supervisor's list of 回访 and 投诉 with deadlines; elsewhere the
    complaints taken here and the ratings recorded here."""
    conn = get_db()
    node = current_node()
    office = _hub_office_filter()
    followups = feedback.followups(conn, node, office, open_only=False) if node.kind.supervises else []
    complaints = feedback.complaints(conn, node, office)
    ratings = conn.execute(
        "SELECT r.case_id, r.level, r.comment, r.rated_at, r.office, c.receipt_no, c.item_name FROM case_ratings r"
        " JOIN cases c ON c.case_id = r.case_id ORDER BY r.rated_at DESC LIMIT 50").fetchall()
    _audit("complaint.list", None, str(len(complaints)))
    if followups:
        access.audit_list("followups", [f["case_id"] for f in followups])  # applicants' names and phones
    return render_template(
        "feedback/overview.html", followups=followups, complaints=complaints, ratings=ratings,
        levels=feedback.LEVELS, followup_wd=feedback.FOLLOWUP_WD, complaint_wd=feedback.COMPLAINT_WD,
        open_followups=[f for f in followups if f["status"] == "open"],
        open_complaints=[c for c in complaints if c["status"] == "open"])


@bp.route("/complaints/new", methods=["GET", "POST"])
def new_complaint():
    """Take a complaint (投诉) about a case or an office."""
    values = {"case_id": request.values.get("case_id", "").strip(), "office": request.values.get("office", "").strip(),
              "receipt_no": request.values.get("receipt_no", "").strip(),
              "name": request.form.get("name", ""), "phone": request.form.get("phone", ""),
              "content": request.form.get("content", "")}
    if values["case_id"] and not values["receipt_no"]:  # from a case's page: show its 收件编号
        row = get_db().execute("SELECT receipt_no FROM cases WHERE case_id = ?", (values["case_id"],)).fetchone()
        values["receipt_no"] = row["receipt_no"] if row else ""
    if values["receipt_no"]:
        values["case_id"] = ""  # the number typed (or shown) names the case
    error = None
    if request.method == "POST":
        payload = {"case_id": values["case_id"], "office": values["office"], "receipt_no": values["receipt_no"],
                   "complainant": {"name": values["name"], "phone": values["phone"]}, "content": values["content"]}
        conn = get_db()
        try:
            with write_transaction(conn):
                complaint = feedback.take_complaint(conn, current_node(), payload, g.account)
                accounts.audit(conn, g.account["username"], "complaint.take", complaint["complaint_id"],
                               complaint["case_id"], current_node().now())
        except LiandongError as exc:
            if exc.status == 403:
                raise
            error = exc
        else:
            flash("投诉已登记" + ("" if current_node().kind.supervises else "，将报送市（县）政务服务中心监察员处理"))
            return redirect(url_for("feedback.complaint_page", complaint_id=complaint["complaint_id"]))
    return render_template("feedback/complaint_new.html", values=values, error=error,
                           offices=complaint_offices()), 400 if error else 200


def complaint_offices() -> list[tuple[str, str]]:
    """``(office code, name)`` a complaint may name: the county's departments and the townships."""
    node, conn = current_node(), get_db()
    trust = node.trust(conn)
    hub_id = trust.hub_id if trust is not None else node.config.get("HUB_ID")
    offices = [(f"{hub_id}-{code}", office_label(f"{hub_id}-{code}")) for code in DEPARTMENTS if code != "xz"]
    townships = sorted(n.node_id for n in (trust.nodes.values() if trust is not None else ())
                       if n.parent == hub_id and n.status == "active")  # the hub's children: its townships
    return offices + [(t, office_label(t)) for t in townships]


@bp.get("/complaints/<complaint_id>")
def complaint_page(complaint_id: str):
    """One complaint; at the hub the supervisor answers it here."""
    complaint = _visible_complaint(complaint_id)
    may_answer = (current_node().kind.supervises and g.account["role"] == "supervisor"
                  and complaint["status"] != "answered")
    return render_template("feedback/complaint.html", c=complaint, may_answer=may_answer)


@bp.post("/complaints/<complaint_id>/answer")
def complaint_answer_form(complaint_id: str):
    """The supervisor's answer form."""
    conn = get_db()
    with form_outcome("未能答复", "已答复，答复将送回受理投诉的节点"), write_transaction(conn):
        feedback.answer_complaint(conn, current_node(), complaint_id,
                                  {"answer": request.form.get("answer", ""),
                                   "upheld": request.form.get("upheld") == "yes"}, g.account)
        accounts.audit(conn, g.account["username"], "complaint.answer", complaint_id, None, current_node().now())
    return redirect(url_for("feedback.complaint_page", complaint_id=complaint_id))


@bp.get("/followups/<followup_id>")
def followup_page(followup_id: str):
    """One 回访 of a bad rating, with the form for its outcome."""
    node = current_node()
    followup = feedback.get_followup(get_db(), node, followup_id)
    if g.account["role"] != "admin" and not feedback.may_handle_followup(g.account, followup["office"]):
        raise Forbidden("无权查看该回访")
    _audit("followup.read", followup["case_id"], followup_id)
    return render_template("feedback/followup.html", f=followup,
                           may_close=followup["status"] == "open" and feedback.may_handle_followup(
                               g.account, followup["office"]))


@bp.post("/followups/<followup_id>/outcome")
def followup_outcome_form(followup_id: str):
    """Record the 回访's outcome from its page."""
    conn = get_db()
    with form_outcome("未能登记", "回访结果已登记"), write_transaction(conn):
        followup = feedback.record_outcome(conn, current_node(), followup_id,
                                           {"outcome": request.form.get("outcome", "")}, g.account)
        accounts.audit(conn, g.account["username"], "followup.close", followup["case_id"], followup_id,
                       current_node().now())
    return redirect(url_for("feedback.followup_page", followup_id=followup_id))
