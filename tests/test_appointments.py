"""预约 (seeds 002 §二(一)4, 003 §四 五): the hub's windows publish slots on working days, village
agents book offline, the hub decides in the order it receives requests with no double booking
(duplicated and reordered deliveries included), answers come back, the window keeps its day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from network import clock_at, login

from shared.core.errors import RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import appointments as rules
from shared.rules.workdays import WorkCalendar
from sync import envelope

# ----------------------------------------------------------------------------- the rules


def test_slots_are_published_on_working_days_only():
    days = rules.slot_days(date(2026, 9, 28), date(2026, 10, 11), WorkCalendar(), today=date(2026, 9, 1))
    assert date(2026, 10, 1) not in days and date(2026, 10, 7) not in days  # 国庆
    assert date(2026, 10, 10) in days  # 调休: a Saturday that is a working day
    assert date(2026, 10, 11) not in days and date(2026, 9, 28) in days
    with pytest.raises(ValidationError):
        rules.slot_days(date(2026, 8, 1), date(2026, 8, 2), WorkCalendar(), today=date(2026, 9, 1))  # past


def test_requests_are_refused_on_holidays_and_decided_by_seat():
    body = {"office": "130926-rs", "day": "2026-10-02", "start": "09:00", "villager_name": "张三",
            "villager_phone": "13812345678"}
    with pytest.raises(RuleError) as err:
        rules.clean_request(body, WorkCalendar(), date(2026, 9, 1))
    assert err.value.code == "not_a_working_day"
    slot = {"capacity": 2}
    assert rules.decide(slot, set(), False) == ("confirmed", 1, "")
    assert rules.decide(slot, {1}, False) == ("confirmed", 2, "")
    assert rules.decide(slot, {1, 2}, False)[0:2] == ("refused", None)
    assert rules.decide(slot, {1}, True)[0] == "refused"  # the villager holds a seat already
    assert rules.decide(None, set(), False)[2].startswith("该时段未开放")
    with pytest.raises(RuleError):
        rules.check_transition("confirmed", "arrive", date(2026, 10, 9), date(2026, 10, 8))  # not yet
    assert rules.check_transition("confirmed", "arrive", date(2026, 10, 9), date(2026, 10, 9)) == "arrived"
    with pytest.raises(RuleError):
        rules.check_transition("refused", "cancel", date(2026, 10, 9), date(2026, 10, 8))


# ----------------------------------------------------------------------------- over a real network


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=2)


@pytest.fixture(scope="module")
def people(net):
    hub = net.hub
    today = hub.node.clock.today_cn()
    day = today + timedelta(days=1)
    while not hub.node.calendar.is_working_day(day):
        day += timedelta(days=1)
    return {"day": day.isoformat(), "window": hub.account("window", "window", "130926-rs"),
            "agents": [v.account("agent", "agent", v.node_id) for v in (net.village(0), net.village(1))]}


def _book(net, people, index: int, start: str, name: str, phone: str = "13812345678") -> dict:
    r = net.village(index).api("POST", "/api/v1/appointment-requests", people["agents"][index], json={
        "office": "130926-rs", "day": people["day"], "start": start, "villager_name": name, "villager_phone": phone,
        "item_code": "130926-RS-0001"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    return r.json()


def _status(handle, token, request_id) -> dict:
    rows = handle.api("GET", "/api/v1/appointment-requests", token).json()["requests"]
    return next(r for r in rows if r["request_id"] == request_id)


def test_the_first_request_received_gets_the_last_seat_and_duplicates_change_nothing(net, people):
    hub, township = net.hub, net.township
    published = hub.api("POST", "/api/v1/appointment-slots", people["window"], json={
        "first_day": people["day"], "last_day": people["day"], "times": ["09:00", "10:00"], "capacity": 1})
    assert published.status_code == 201 and published.json()["added"] == 2

    zhang = _book(net, people, 0, "09:00", "张三")  # made first, offline at village 0
    li = _book(net, people, 1, "09:00", "李四", "13912345678")
    net.village(1).sync()  # but village 1's request reaches the hub first
    township.sync()
    net.village(0).sync()
    township.sync()
    net.sync_all()

    assert _status(net.village(1), people["agents"][1], li["request_id"])["status"] == "confirmed"
    refused = _status(net.village(0), people["agents"][0], zhang["request_id"])
    assert refused["status"] == "refused" and "约满" in refused["reason"]
    assert hub.scalar("SELECT COUNT(*) FROM appointments WHERE seat IS NOT NULL AND start = '09:00'") == 1

    # The same request delivered again (a relay retry, a USB bundle): still one decision, one answer.
    document = envelope.from_bytes(net.village(0).query(
        "SELECT document FROM outbox WHERE kind = 'appointment.request' ORDER BY seq LIMIT 1")[0]["document"])
    answers = hub.scalar("SELECT COUNT(*) FROM downlink WHERE dest = ?", (net.village(0).node_id,))
    assert [res["status"] for res in township.client_to_parent().push([document])["results"]] == ["duplicate"]
    applier = hub.app.extensions["liandong_sync"].appliers["appointment.request"]
    with write_transaction(hub.conn):
        applier(hub.conn, envelope.open_signed(document, envelope.ENVELOPE_TYPES, lambda kid: net.village(0).node.key.public_b64))
    assert hub.scalar("SELECT COUNT(*) FROM downlink WHERE dest = ?", (net.village(0).node_id,)) == answers
    assert hub.scalar("SELECT COUNT(*) FROM appointments WHERE start = '09:00'") == 2


def test_reordered_requests_are_decided_in_the_order_they_were_made(net, people):
    hub, village = net.hub, net.village(0)
    first = _book(net, people, 0, "10:00", "王五", "13700000001")
    second = _book(net, people, 0, "10:00", "赵六", "13700000002")
    rows = village.query("SELECT document FROM outbox WHERE kind = 'appointment.request' AND state = 'pending'"
                         " ORDER BY seq")
    a, b = (envelope.from_bytes(r["document"]) for r in rows)
    client = net.township.client_to_parent()
    assert [r["status"] for r in client.push([b])["results"]] != ["accepted"]  # held: the earlier one is missing
    client.push([a])
    net.sync_all()
    assert _status(village, people["agents"][0], first["request_id"])["status"] == "confirmed"
    assert _status(village, people["agents"][0], second["request_id"])["status"] == "refused"
    assert hub.scalar("SELECT COUNT(*) FROM appointments WHERE seat IS NOT NULL AND start = '10:00'") == 1


def test_the_window_day_list_arrivals_no_shows_and_cancellations(net, people):
    hub = net.hub
    day_list = hub.api("GET", f"/api/v1/appointments?day={people['day']}", people["window"]).json()["appointments"]
    li = next(b for b in day_list if b["villager_name"] == "李四")
    wang = next(b for b in day_list if b["villager_name"] == "王五")
    url = "/api/v1/appointments/{}/status"
    early = hub.api("POST", url.format(li["request_id"]), people["window"], json={"action": "arrive"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_yet"
    with clock_at(hub, datetime.fromisoformat(people["day"]).replace(hour=2, tzinfo=UTC)):
        assert hub.api("POST", url.format(li["request_id"]), people["window"],
                       json={"action": "arrive"}).json()["status"] == "arrived"
    other = hub.account("mz", "window", "130926-mz")
    assert hub.api("POST", url.format(wang["request_id"]), other, json={"action": "cancel"}).status_code == 403
    # The agent cancels 王五: the seat frees when the message reaches the hub.
    r = net.village(0).api("POST", f"/api/v1/appointment-requests/{wang['request_id']}/cancel", people["agents"][0])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    net.sync_all()
    assert hub.scalar("SELECT status FROM appointments WHERE request_id = ?", (wang["request_id"],)) == "cancelled"
    assert hub.scalar("SELECT COUNT(*) FROM appointments WHERE seat IS NOT NULL AND start = '10:00'") == 0
    net.sync_all()
    assert _status(net.village(1), people["agents"][1], li["request_id"])["status"] == "arrived"


def test_the_agent_prints_the_slip_and_the_pages_render(net, people):
    village = net.village(0)
    row = net.village(0).api("GET", "/api/v1/appointment-requests", people["agents"][0]).json()["requests"][0]
    s = login(village, "agent")
    slip = s.get(f"{village.url}/appointments/{row['request_id']}/slip", timeout=10)
    assert slip.status_code == 200 and "预约单" in slip.text and "请携带" in slip.text and "居民身份证" in slip.text
    assert "为村民预约窗口" in s.get(f"{village.url}/appointments", timeout=10).text


def test_the_township_window_decides_its_own_bookings_as_custody_takes_them(net, people):
    township, hub, village = net.township, net.hub, net.village(0)
    clerk = township.account("clerk", "clerk", township.node_id)
    r = township.api("POST", "/api/v1/appointment-slots", clerk, json={
        "first_day": people["day"], "last_day": people["day"], "times": ["14:00"], "capacity": 1})
    assert r.status_code == 201, r.text
    first = village.api("POST", "/api/v1/appointment-requests", people["agents"][0], json={
        "office": township.node_id, "day": people["day"], "start": "14:00", "villager_name": "孙七",
        "villager_phone": "13600000001"}).json()
    second = village.api("POST", "/api/v1/appointment-requests", people["agents"][0], json={
        "office": township.node_id, "day": people["day"], "start": "14:00", "villager_name": "周八",
        "villager_phone": "13600000002"}).json()
    assert first["owner"] == township.node_id
    documents = [envelope.from_bytes(r["document"]) for r in village.query(
        "SELECT document FROM outbox WHERE kind = 'appointment.request' AND state = 'pending' ORDER BY seq")]
    client = village.client_to_parent()
    client.push(documents)
    client.push(documents)  # delivered twice: custody takes them once
    net.sync_all()
    assert _status(village, people["agents"][0], first["request_id"])["status"] == "confirmed"
    assert _status(village, people["agents"][0], second["request_id"])["status"] == "refused"
    assert township.scalar("SELECT COUNT(*) FROM appointments WHERE seat IS NOT NULL AND start = '14:00'") == 1
    assert hub.scalar("SELECT COUNT(*) FROM appointments WHERE start = '14:00'") == 0  # the hub leaves them be
    day_list = township.api("GET", f"/api/v1/appointments?day={people['day']}", clerk).json()["appointments"]
    assert [b["villager_name"] for b in day_list] == ["孙七"]
