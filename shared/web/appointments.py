"""预约 pages and API. At an owner (a tier that ``publishes_appointments``: the hub, a township) a window
publishes slots and keeps its day's list (arrivals, no-shows, cancellations); at an agent's node
(village, township window) the agent books for a villager, offline too, and prints the 预约单."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for

from shared.core.errors import Forbidden, LiandongError, ValidationError
from shared.rules import appointments as rules
from shared.rules.catalog import DEPARTMENTS, required_materials
from shared.services import appointments
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.limits import json_object

bp = Blueprint("appointments", __name__)


def _owner() -> None:
    if not current_node().kind.publishes_appointments:
        abort(404)


def _requester() -> None:
    node = current_node()
    if node.kind.publishes_appointments or not node.kind.takes_applications:
        abort(404)


def _window_office() -> str:
    """The window's own office (an admin names one)."""
    if g.account["role"] == "admin":
        office = request.values.get("office") or (request.get_json(silent=True) or {}).get("office")
        if not isinstance(office, str) or not office:
            raise ValidationError("office", "请指定窗口（office）")
        return office
    if not g.account["office"]:
        raise Forbidden("只有窗口人员可以办理预约")
    return g.account["office"]


def _day() -> str:
    day = request.args.get("day") or current_node().clock.today_cn().isoformat()
    return rules.parse_day(day).isoformat()


def offices(node) -> dict[str, str]:
    """The hub's windows an agent may book: one per department of the catalog's city items."""
    _, items = node.catalog(get_db())
    windows = {f"{node.hub_id}-{i['department_code']}": DEPARTMENTS[i["department_code"]]
               for i in sorted(items.values(), key=lambda i: i["department_code"]) if i["decide_level"] == "city"}
    parent = node.config.get("PARENT_ID") or ""
    if appointments.owner_of(parent, node.hub_id) == parent:  # a village's own township window
        windows = {parent: "乡镇便民服务站窗口", **windows}
    return windows


# ----------------------------------------------------------------------------- the owner's API


@bp.post("/api/v1/appointment-slots")
def api_publish():
    """Publish the window's slots on the working days of a period."""
    _owner()
    body = json_object()
    done = appointments.publish(get_db(), current_node(), _window_office(), body.get("first_day"),
                                body.get("last_day"), body.get("times", list(rules.DEFAULT_TIMES)),
                                body.get("capacity"), g.account["username"])
    return jsonify(done), 201


@bp.get("/api/v1/appointment-slots")
def api_slots():
    """An office's slots of a day with the seats taken (``?office=&day=``)."""
    _owner()
    office = request.args.get("office") or _window_office()
    return jsonify({"office": office, "day": _day(), "slots": appointments.slots(get_db(), office, _day())})


@bp.get("/api/v1/appointments")
def api_day_list():
    """The window's bookings of a day (``?day=``)."""
    _owner()
    office = _window_office()
    return jsonify({"office": office, "day": _day(), "appointments": appointments.day_list(get_db(), office, _day())})


@bp.post("/api/v1/appointments/<request_id>/status")
def api_status(request_id: str):
    """Record an arrival (``arrive``) or a no-show (``no_show``), or cancel (``cancel``)."""
    _owner()
    action = json_object().get("action")
    return jsonify(appointments.change_status(get_db(), current_node(), request_id, action, g.account["username"],
                                              None if g.account["role"] == "admin" else _window_office()))


# ----------------------------------------------------------------------------- the agent's API


@bp.post("/api/v1/appointment-requests")
def api_request():
    """Book a slot for a villager: 待确认 until the owner's answer comes back."""
    _requester()
    return jsonify(appointments.request(get_db(), current_node(), json_object(), g.account["username"])), 201


@bp.get("/api/v1/appointment-requests")
def api_requests():
    """The requests made here and their answers."""
    _requester()
    return jsonify({"requests": appointments.requests_made(get_db())})


@bp.post("/api/v1/appointment-requests/<request_id>/cancel")
def api_cancel(request_id: str):
    """Cancel a request (the owner frees the seat when the message arrives)."""
    _requester()
    return jsonify(appointments.cancel_request(get_db(), current_node(), request_id, g.account["username"]))


# ----------------------------------------------------------------------------- pages


@bp.get("/appointments")
def overview():
    """预约: the window's day (owner) or the agent's bookings and form."""
    node = current_node()
    if node.kind.publishes_appointments:
        office = g.account["office"] if g.account["role"] != "admin" else request.args.get("office", "")
        day = _day()
        return render_template("appointments/window.html", office=office, day=day,
                               slots=appointments.slots(get_db(), office, day) if office else [],
                               bookings=appointments.day_list(get_db(), office, day) if office else [],
                               labels=rules.STATUS_LABELS, times=rules.DEFAULT_TIMES)
    _requester()
    return render_template("appointments/agent.html", rows=appointments.requests_made(get_db()),
                           offices=offices(node), labels=rules.STATUS_LABELS, times=rules.DEFAULT_TIMES,
                           today=node.clock.today_cn().isoformat())


@bp.post("/appointments/slots")
def publish_form():
    """The window's 发布预约时段 form."""
    _owner()
    form = request.form
    try:
        capacity = int(form.get("capacity", "")) if form.get("capacity", "").isdigit() else None
        done = appointments.publish(get_db(), current_node(), _window_office(), form.get("first_day"),
                                    form.get("last_day"), form.getlist("times"), capacity, g.account["username"])
    except LiandongError as exc:
        flash(f"未能发布：{exc.message}")
    else:
        flash(f"已发布 {len(done['days'])} 个工作日的预约时段（新增 {done['added']} 个，节假日已跳过）")
    return redirect(url_for("appointments.overview"))


@bp.post("/appointments/<request_id>/status")
def status_form(request_id: str):
    """到场 / 未到场 / 取消 at the window."""
    _owner()
    try:
        row = appointments.change_status(get_db(), current_node(), request_id, request.form.get("action"),
                                         g.account["username"], _window_office())
    except LiandongError as exc:
        flash(f"未能办理：{exc.message}")
        return redirect(url_for("appointments.overview"))
    flash(f"已登记：{rules.STATUS_LABELS[row['status']]}")
    return redirect(url_for("appointments.overview", day=row["day"]))


@bp.post("/appointments/request")
def request_form():
    """The agent's 预约 form."""
    _requester()
    try:
        row = appointments.request(get_db(), current_node(), request.form.to_dict(), g.account["username"])
    except LiandongError as exc:
        flash(f"未能预约：{exc.message}")
        return redirect(url_for("appointments.overview"))
    return redirect(url_for("appointments.slip", request_id=row["request_id"]))


@bp.post("/appointments/<request_id>/cancel")
def cancel_form(request_id: str):
    """The agent cancels a booking."""
    _requester()
    try:
        appointments.cancel_request(get_db(), current_node(), request_id, g.account["username"])
    except LiandongError as exc:
        flash(f"未能取消：{exc.message}")
    else:
        flash("已取消预约")
    return redirect(url_for("appointments.overview"))


@bp.get("/appointments/<request_id>/slip")
def slip(request_id: str):
    """The printable 预约单: time, window, what to bring, and whether it is confirmed yet."""
    _requester()
    node = current_node()
    row = appointments.get_request(get_db(), request_id)
    item = node.catalog(get_db())[1].get(row["item_code"]) if row["item_code"] else None
    return render_template("appointments/slip.html", row=row, item=item, labels=rules.STATUS_LABELS,
                           office_name=offices(node).get(row["office"], row["office"]),
                           bring=required_materials(item) if item else [])
