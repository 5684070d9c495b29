"""预约 on a database: the owner's slots and decisions, the agent's requests and their answers.

No Flask here; the rules are :mod:`shared.rules.appointments`. The owner is the node whose tier
``publishes_appointments`` and whose window it is (:func:`owner_of`: a township's own window, else
the hub's). An agent's node (a village) records a request and queues it as an
``appointment.request`` envelope: it works offline, and the request travels like any other
signed message. The owner decides each request once, in the order it receives them (the hub as
it applies them, a township as it takes them into custody; per origin the order they were made:
the envelope chain), and answers
with an ``appointment.answer`` downlink message; every later change (cancelled, arrived, no-show)
is answered the same way. ``appointment.cancel`` carries an agent's cancellation up.
"""

from __future__ import annotations

import sqlite3
import uuid

from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.errors import Forbidden, NotFound
from shared.core.storage import write_transaction
from shared.rules import appointments as rules
from sync import downlink, outbox

REQUEST_KIND = "appointment.request"
CANCEL_KIND = "appointment.cancel"
ANSWER_KIND = "appointment.answer"


# ----------------------------------------------------------------------------- at the owner


def publish(conn: sqlite3.Connection, node, office: str, first, last, times, capacity, actor: str) -> dict:
    """Publish slots of ``office`` on the working days from ``first`` to ``last`` at ``times``;
    a slot already published keeps its capacity. Returns the days and how many slots were new."""
    today = node.clock.today_cn()
    days = rules.slot_days(rules.parse_day(first, "first_day"), rules.parse_day(last, "last_day"), node.calendar, today)
    times, capacity = rules.clean_times(times), rules.clean_capacity(capacity)
    now = node.now()
    added = 0
    with write_transaction(conn):
        for day in days:
            for start in times:
                added += conn.execute(
                    "INSERT INTO appointment_slots(slot_id, office, day, start, capacity, published_by, published_at)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT(office, day, start) DO NOTHING",
                    (uuid.uuid4().hex, office, day.isoformat(), start, capacity, actor, iso(now))).rowcount
        audit(conn, actor, "appointment.publish", office, f"{len(days)} days, {added} slots", now)
    return {"office": office, "days": [d.isoformat() for d in days], "times": times, "capacity": capacity,
            "added": added}


def slots(conn: sqlite3.Connection, office: str, day: str) -> list[dict]:
    """An office's slots of one day with the seats taken."""
    return [dict(r) for r in conn.execute(
        "SELECT s.slot_id, s.office, s.day, s.start, s.capacity, (SELECT COUNT(*) FROM appointments a"
        " WHERE a.slot_id = s.slot_id AND a.seat IS NOT NULL) AS taken FROM appointment_slots s"
        " WHERE s.office = ? AND s.day = ? ORDER BY s.start", (office, day))]


def decide_request(conn: sqlite3.Connection, node, origin: str, body: dict) -> dict | None:
    """The owner decides one request (inside the applying transaction): confirmed with a seat, or
    refused with the reason, answered down to ``origin``. A request decided before (the same
    request delivered again) changes nothing and is not answered twice. Returns the new row."""
    if body.get("owner") != node.node_id:
        return None  # another owner's request passing through
    request_id = body["request_id"]
    if conn.execute("SELECT 1 FROM appointments WHERE request_id = ?", (request_id,)).fetchone():
        return None
    slot = conn.execute("SELECT * FROM appointment_slots WHERE office = ? AND day = ? AND start = ?",
                        (body["office"], body["day"], body["start"])).fetchone()
    taken = {r["seat"] for r in conn.execute(
        "SELECT seat FROM appointments WHERE slot_id = ? AND seat IS NOT NULL", (slot["slot_id"],))} if slot else set()
    holder = slot is not None and conn.execute(
        "SELECT 1 FROM appointments WHERE slot_id = ? AND seat IS NOT NULL AND villager_name = ? AND villager_phone = ?",
        (slot["slot_id"], body["villager_name"], body["villager_phone"])).fetchone() is not None
    status, seat, reason = rules.decide(dict(slot) if slot else None, taken, holder)
    now = iso(node.now())

    def insert(status: str, seat: int | None, reason: str) -> None:
        conn.execute(
            "INSERT INTO appointments(request_id, slot_id, office, day, start, seat, origin, agent, villager_name,"
            " villager_phone, item_code, status, reason, requested_at, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (request_id, slot["slot_id"] if slot else None, body["office"], body["day"], body["start"], seat, origin,
             body["agent"], body["villager_name"], body["villager_phone"], body.get("item_code", ""), status, reason,
             body["requested_at"], now))

    conn.execute("SAVEPOINT appointment_seat")
    try:
        insert(status, seat, reason)
    except sqlite3.IntegrityError:
        # The seat (or this villager's seat in the slot) is held: the unique indexes, not the
        # check above, are what make a double booking impossible.
        conn.execute("ROLLBACK TO appointment_seat")
        insert("refused", None, "该时段已约满或该办事人已预约，请另选时段")
    conn.execute("RELEASE appointment_seat")
    row = _booking(conn, request_id)
    _answer(conn, node, row)
    return row


def _booking(conn: sqlite3.Connection, request_id: str) -> dict:
    row = conn.execute("SELECT * FROM appointments WHERE request_id = ?", (request_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该预约")
    return dict(row)


def _answer(conn: sqlite3.Connection, node, row: dict) -> None:
    if row["origin"] == node.node_id:
        return
    downlink.issue(conn, node.key, node.node_id, row["origin"], ANSWER_KIND,
                   {k: row[k] for k in ("request_id", "status", "seat", "reason", "office", "day", "start")},
                   node.now())


def change_status(conn: sqlite3.Connection, node, request_id: str, action: str, actor: str,
                  office: str | None = None) -> dict:
    """The window records an arrival or a no-show, or cancels (``office``: the window's own only);
    the seat of a cancelled booking is free again. Answered down to the agent's node."""
    with write_transaction(conn):
        row = _booking(conn, request_id)
        if office is not None and row["office"] != office:
            raise Forbidden("只能办理本窗口的预约")
        new = rules.check_transition(row["status"], action, rules.parse_day(row["day"]), node.clock.today_cn())
        now = node.now()
        conn.execute("UPDATE appointments SET status = ?, seat = CASE WHEN ? = 'cancelled' THEN NULL ELSE seat END,"
                     " updated_by = ?, updated_at = ? WHERE request_id = ?", (new, new, actor, iso(now), request_id))
        audit(conn, actor, f"appointment.{action}", request_id, row["office"], now)
        row = _booking(conn, request_id)
        _answer(conn, node, row)
    return row


def day_list(conn: sqlite3.Connection, office: str, day: str) -> list[dict]:
    """A window's bookings of one day (refused requests left out), by time and seat."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM appointments WHERE office = ? AND day = ? AND status != 'refused' ORDER BY start, seat,"
        " decided_at", (office, day))]


def apply_message(conn: sqlite3.Connection, node, kind: str, origin: str, body: dict) -> None:
    """An agent's ``appointment.request`` or ``appointment.cancel`` from ``origin`` at an owner
    (the hub when it applies it; a township when it takes it into custody)."""
    if kind == REQUEST_KIND:
        decide_request(conn, node, origin, body)
        return
    row = conn.execute("SELECT origin, status FROM appointments WHERE request_id = ?", (body["request_id"],)).fetchone()
    if row is None or row["origin"] != origin or row["status"] != "confirmed":
        return  # not ours, not known here (another owner's, or refused), or already settled
    change_status(conn, node, body["request_id"], "cancel", f"{origin}:{body.get('agent', '')}")


def appliers(node) -> dict:
    """The hub's appliers of the envelopes agents send (``city_hub.ingest.make_appliers``)."""
    return {kind: (lambda conn, opened, kind=kind: apply_message(conn, node, kind, opened.body["origin"],
                                                                   opened.body["body"]))
            for kind in (REQUEST_KIND, CANCEL_KIND)}


def owner_of(office: str, hub_id: str) -> str:
    """Which node decides a window's bookings: a township's own window (its 9-digit code), else the hub."""
    return office if len(office) == 9 and office.isdigit() else hub_id


# ----------------------------------------------------------------------------- at the agent's node


def request(conn: sqlite3.Connection, node, body: dict, agent: str) -> dict:
    """An agent asks for a slot for a villager: recorded here as 待确认 and queued up (offline too)."""
    clean = rules.clean_request(body, node.calendar, node.clock.today_cn())
    now = node.now()
    message = {"request_id": uuid.uuid4().hex, "owner": owner_of(clean["office"], node.hub_id), **clean, "agent": agent,
               "requested_at": iso(now)}
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO appointment_requests(request_id, owner, office, day, start, villager_name, villager_phone,"
            " item_code, agent, status, requested_at) VALUES (?,?,?,?,?,?,?,?,?, 'pending', ?)",
            (message["request_id"], message["owner"], clean["office"], clean["day"], clean["start"],
             clean["villager_name"], clean["villager_phone"], clean["item_code"], agent, message["requested_at"]))
        outbox.append(conn, node.key, node.node_id, REQUEST_KIND, message, str(node.hlc.now()), now)
        audit(conn, agent, "appointment.request", message["request_id"], clean["office"], now)
    return get_request(conn, message["request_id"])


def get_request(conn: sqlite3.Connection, request_id: str) -> dict:
    """One request made here, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM appointment_requests WHERE request_id = ?", (request_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该预约")
    return dict(row)


def requests_made(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    """Requests made here, the coming days first."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM appointment_requests ORDER BY day DESC, start, requested_at DESC LIMIT ?", (limit,))]


def cancel_request(conn: sqlite3.Connection, node, request_id: str, agent: str) -> dict:
    """The agent cancels: 已取消 here at once, and the owner frees the seat when the message arrives."""
    with write_transaction(conn):
        row = get_request(conn, request_id)
        rules.check_transition(row["status"], "cancel", rules.parse_day(row["day"]), node.clock.today_cn())
        now = node.now()
        conn.execute("UPDATE appointment_requests SET status = 'cancelled' WHERE request_id = ?", (request_id,))
        outbox.append(conn, node.key, node.node_id, CANCEL_KIND, {"request_id": request_id, "agent": agent},
                      str(node.hlc.now()), now)
        audit(conn, agent, "appointment.cancel", request_id, row["office"], now)
    return get_request(conn, request_id)


def apply_answer(conn: sqlite3.Connection, body: dict, at: str) -> bool:
    """The owner's answer (``appointment.answer``, applied in the issuer's order, at ``at``). A
    request the agent cancelled here stays cancelled whatever answer was already on its way."""
    cur = conn.execute(
        "UPDATE appointment_requests SET status = ?, seat = ?, reason = ?, answered_at = ?"
        " WHERE request_id = ? AND status != 'cancelled'",
        (body["status"], body.get("seat"), body.get("reason", ""), at, body["request_id"]))
    return cur.rowcount > 0
