"""好差评, 回访 and 投诉 (国办发〔2019〕51号) over a real network: a rating recorded at the village
reaches the hub once, a bad one opens a 回访 due in 15 working days, a complaint taken at the
village reaches the supervisor and the answer comes back down."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import requests
from network import PASSWORD, catalog, create_case, pick_item

from city_hub.db import MIGRATIONS as HUB_MIGRATIONS
from shared.core import storage
from shared.core.clock import FixedClock, iso
from shared.rules.deadlines import cn_day
from shared.rules.workdays import WorkCalendar
from shared.services import casework, feedback
from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def people(net):
    village, hub = net.village(), net.hub
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    office = f"130926-{item['department_code']}"
    return {
        "agent": agent, "item": item, "office": office,
        "clerk": net.township.account("clerk", "clerk", net.township.node_id),
        "window": hub.account("window", "chief", office),
        "other_window": hub.account("other", "window", "130926-XX"),
        "supervisor": hub.account("supervisor", "supervisor", None, "电子监察员"),
    }


def _decided_case(net, people) -> str:
    """A city case taken at the village, accepted and approved at the hub, known back at the village."""
    village = net.village()
    receipt = create_case(village, people["agent"], people["item"])
    net.sync_all()
    for action in ("accept", "approve"):
        r = net.hub.api("POST", f"/api/v1/cases/{receipt['case_id']}/actions", people["window"],
                        json={"action": action, "comment": "符合条件"})
        assert r.status_code == 200, r.text
    net.sync_all()
    assert village.api("GET", f"/api/v1/cases/{receipt['case_id']}", people["agent"]).json()["status"] == "APPROVED"
    return receipt["case_id"]


def _login(handle, username: str, landing: str = "/feedback") -> requests.Session:
    """A signed-in session that lands on ``landing`` (not on the role's home page)."""
    s = requests.Session()
    token = _csrf(s, handle.url + "/login")
    r = s.post(f"{handle.url}/login?next={landing}", data={"username": username, "password": PASSWORD,
                                                           "csrf_token": token}, timeout=10)
    assert r.status_code == 200 and "/login" not in r.url, r.text[:300]
    return s


def _csrf(session, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', session.get(url, timeout=10).text).group(1)


# ----------------------------------------------------------------------------- access and input


def test_unauthenticated_requests_are_refused(net, people):
    case_id = "0" * 32
    for handle, method, path in [
        (net.village(), "POST", f"/api/v1/cases/{case_id}/rating"),
        (net.village(), "POST", "/api/v1/complaints"),
        (net.hub, "GET", "/api/v1/complaints"),
        (net.hub, "POST", f"/api/v1/complaints/{case_id}/answer"),
        (net.hub, "POST", f"/api/v1/followups/{case_id}/outcome"),
    ]:
        r = handle.api(method, path, json={"level": 5, "answer": "x", "outcome": "x"})
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["error"]["code"] == "unauthorized"
    page = net.village().api("GET", "/feedback", allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")


def test_rating_input_errors_name_the_field(net, people):
    village = net.village()
    case_id = _decided_case(net, people)
    for body, field in [({}, "level"), ({"level": 0}, "level"), ({"level": 6}, "level"), ({"level": "好"}, "level"),
                        ({"level": True}, "level"), ({"level": 4, "comment": 12}, "comment"),
                        ({"level": 4, "comment": "长" * 501}, "comment")]:
        r = village.api("POST", f"/api/v1/cases/{case_id}/rating", people["agent"], json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["field"] == field, body
    assert village.scalar("SELECT COUNT(*) FROM case_ratings WHERE case_id = ?", (case_id,)) == 0


def test_an_undecided_case_cannot_be_rated_and_only_the_origin_rates(net, people):
    village = net.village()
    open_case = create_case(village, people["agent"], people["item"])["case_id"]
    r = village.api("POST", f"/api/v1/cases/{open_case}/rating", people["agent"], json={"level": 5})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_decided"
    net.sync_all()
    # The hub holds the case but did not take the application: it records no rating for it.
    r = net.hub.api("POST", f"/api/v1/cases/{open_case}/rating", people["window"], json={"level": 5})
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_origin"


# ----------------------------------------------------------------------------- 好差评


def test_a_rating_at_the_village_reaches_the_hub_exactly_once(net, people):
    village, hub = net.village(), net.hub
    case_id = _decided_case(net, people)
    r = village.api("POST", f"/api/v1/cases/{case_id}/rating", people["agent"],
                    json={"level": 5, "comment": "代办员服务周到"})
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "非常满意" and r.json()["channel"] == "village"
    again = village.api("POST", f"/api/v1/cases/{case_id}/rating", people["agent"], json={"level": 1})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_rated"
    assert village.scalar("SELECT level FROM case_ratings WHERE case_id = ?", (case_id,)) == 5

    net.sync_all()
    case = hub.api("GET", f"/api/v1/cases/{case_id}", people["window"]).json()
    assert case["rating"]["level"] == 5 and case["rating"]["comment"] == "代办员服务周到"
    assert case["rating"]["office"] == people["office"] and "followup" not in case["rating"]
    assert hub.api("GET", f"/api/v1/cases/{case_id}/rating", people["window"]).json()["rating"]["label"] == "非常满意"
    assert hub.scalar("SELECT COUNT(*) FROM followups WHERE case_id = ?", (case_id,)) == 0

    # Replayed: the same envelope again through the township is a duplicate, and applying it twice
    # does nothing.
    row = village.query("SELECT document FROM outbox WHERE kind = 'case.rating' AND case_id = ?", (case_id,))[0]
    document = envelope.from_bytes(row["document"])
    answer = net.township.client_to_parent().push([document])
    assert [res["status"] for res in answer["results"]] == ["duplicate"]
    applier = hub.app.extensions["liandong_sync"].appliers["case.rating"]
    with storage.write_transaction(hub.conn):
        applier(hub.conn, envelope.open_signed(document, envelope.ENVELOPE_TYPES, lambda kid: village.node.key.public_b64))
    # A second, different rating envelope for the same case (a restored village backup): still one.
    from sync import outbox

    with storage.write_transaction(village.conn):
        outbox.append(village.conn, village.node.key, village.node_id, "case.rating",
                      {**envelope.peek(document)["body"], "level": 1, "comment": "第二次"},
                      str(village.node.hlc.now()), village.node.now(), case_id=case_id)
    net.sync_all()
    rows = hub.query("SELECT level, comment FROM case_ratings WHERE case_id = ?", (case_id,))
    assert [(r["level"], r["comment"]) for r in rows] == [(5, "代办员服务周到")]
    assert hub.scalar("SELECT COUNT(*) FROM followups WHERE case_id = ?", (case_id,)) == 0
    assert hub.scalar("SELECT COUNT(*) FROM quarantine") == 0


def test_a_bad_rating_opens_a_followup_due_in_15_working_days(net, people):
    village, hub = net.village(), net.hub
    case_id = _decided_case(net, people)
    # Through the rating page, as the agent records it with the villager.
    s = _login(village, "agent")
    url = f"{village.url}/cases/{case_id}/rating"
    assert "登记申请人评价" in s.get(url, timeout=10).text
    r = s.post(url, data={"level": "2", "comment": "等了很久", "csrf_token": _csrf(s, url)}, timeout=10)
    assert r.status_code == 200 and "评价已登记" in r.text and "不满意" in r.text
    assert "登记申请人评价" not in r.text  # one rating per case: the form is gone
    net.sync_all()

    followups = hub.api("GET", "/api/v1/followups", people["supervisor"]).json()["followups"]
    mine = [f for f in followups if f["case_id"] == case_id]
    assert len(mine) == 1
    followup = mine[0]
    rated_at = hub.scalar("SELECT rated_at FROM case_ratings WHERE case_id = ?", (case_id,))
    calendar = hub.node.calendar
    assert followup["deadline"] == calendar.add_working_days(cn_day(rated_at), 15).isoformat()
    assert followup["remaining_working_days"] == 15 and followup["overdue"] is False
    assert followup["office"] == people["office"] and followup["level"] == 2
    # The office sees it; another office does not.
    assert case_id in {f["case_id"] for f in hub.api("GET", "/api/v1/followups", people["window"]).json()["followups"]}
    assert case_id not in {f["case_id"] for f in
                           hub.api("GET", "/api/v1/followups", people["other_window"]).json()["followups"]}
    page = _login(hub, "window").get(f"{hub.url}/cases/{case_id}", timeout=10).text
    assert "好差评：不满意" in page

    # Overdue: it shows on the supervisor's list with its mark.
    with storage.write_transaction(hub.conn):
        hub.conn.execute("UPDATE followups SET deadline = '2020-01-02' WHERE case_id = ?", (case_id,))
    listed = hub.api("GET", "/api/v1/followups", people["supervisor"]).json()["followups"]
    assert next(f for f in listed if f["case_id"] == case_id)["overdue"] is True
    supervisor_page = _login(hub, "supervisor").get(f"{hub.url}/feedback", timeout=10).text
    assert "已逾期" in supervisor_page and "等了很久" in supervisor_page

    # The outcome (整改情况): validated, only by the office or a supervisor, once.
    path = f"/api/v1/followups/{followup['followup_id']}/outcome"
    r = hub.api("POST", path, people["window"], json={"outcome": "  "})
    assert r.status_code == 400 and r.json()["error"]["field"] == "outcome"
    r = hub.api("POST", path, people["other_window"], json={"outcome": "已整改"})
    assert r.status_code == 403
    r = hub.api("POST", path, people["window"], json={"outcome": "已电话回访申请人，窗口增设引导岗"})
    assert r.status_code == 200 and r.json()["status"] == "closed" and r.json()["overdue"] is False
    assert hub.api("POST", path, people["supervisor"], json={"outcome": "再次"}).status_code == 409
    assert hub.scalar("SELECT outcome FROM followups WHERE case_id = ?", (case_id,)) == "已电话回访申请人，窗口增设引导岗"


def test_followup_deadline_counts_working_days_across_national_day():
    """Rated on 2026-09-30: 国庆 Oct 1–7 are off, Sat Oct 10 is a 调休 working day → 2026-10-27."""
    conn = storage.connect(":memory:")
    storage.migrate(conn, HUB_MIGRATIONS)

    class Hub:
        tier, node_id = "hub", "130926"
        calendar = WorkCalendar()
        clock = FixedClock(datetime(2026, 9, 30, 2, 0, tzinfo=UTC))

        def now(self):
            return self.clock.now()

    hub = Hub()
    body = {"case_id": "c" * 32, "receipt_no": "130926100201-20260930-0001", "item_code": "X", "item_name": "测试",
            "catalog_version": 1, "route": {"level": "city", "office": "130926-MZ"},
            "applicant": {"name": "张三", "id_number": "130926198001011234", "phone": "13812345678"},
            "form": {}, "materials": [], "submitted_at": iso(hub.now())}
    with storage.write_transaction(conn):
        casework.insert_case(conn, body, origin="130926100201", status="CONCLUDED")
        rating = {"case_id": "c" * 32, "level": 1, "comment": "", "channel": "village", "node": "130926100201",
                  "recorded_by": "agent", "rated_at": iso(hub.now())}
        assert feedback.apply_rating(conn, hub, "130926100201", rating) is True
        assert feedback.apply_rating(conn, hub, "130926100201", rating) is False
        with pytest.raises(Exception, match="评价只能来自"):
            feedback.apply_rating(conn, hub, "130926100202", {**rating, "node": "130926100202"})
    [followup] = feedback.followups(conn, hub)
    assert followup["deadline"] == "2026-10-27"
    assert followup["remaining_working_days"] == 15
    hub.clock.set(datetime(2026, 10, 27, 2, 0, tzinfo=UTC))
    assert feedback.followups(conn, hub)[0]["overdue"] is False
    hub.clock.set(datetime(2026, 10, 28, 2, 0, tzinfo=UTC))
    late = feedback.followups(conn, hub)[0]
    assert late["overdue"] is True and late["remaining_working_days"] == -1
    conn.close()


# ----------------------------------------------------------------------------- 投诉


def test_complaint_input_errors_name_the_field(net, people):
    village = net.village()
    good = {"office": people["office"], "complainant": {"name": "李四", "phone": "13912345678"}, "content": "态度差"}
    for change, field in [({"complainant": None}, "complainant"),
                          ({"complainant": {"name": "", "phone": "13912345678"}}, "complainant.name"),
                          ({"complainant": {"name": "李四", "phone": "123"}}, "complainant.phone"),
                          ({"office": None}, "office"),
                          ({"case_id": "f" * 32}, "case_id"),
                          ({"content": "  "}, "content"),
                          ({"content": "长" * 2001}, "content")]:
        r = village.api("POST", "/api/v1/complaints", people["agent"], json={**good, **change})
        assert r.status_code == 400, (change, r.text)
        assert r.json()["error"]["field"] == field, change
    assert village.scalar("SELECT COUNT(*) FROM complaints") == 0


def test_a_village_complaint_reaches_the_supervisor_and_the_answer_comes_back(net, people):
    village, hub = net.village(), net.hub
    case_id = _decided_case(net, people)
    r = village.api("POST", "/api/v1/complaints", people["agent"], json={
        "case_id": case_id, "complainant": {"name": "李四", "phone": "13912345678"},
        "content": "窗口要求重复提交材料"})
    assert r.status_code == 201, r.text
    complaint = r.json()
    assert complaint["status"] == "sent" and complaint["office"] == people["office"]  # the case's deciding office
    complaint_id = complaint["complaint_id"]

    net.sync_all()
    queue = hub.api("GET", "/api/v1/complaints?open=1", people["supervisor"]).json()["complaints"]
    at_hub = next(c for c in queue if c["complaint_id"] == complaint_id)
    taken_day = cn_day(complaint["taken_at"])
    assert at_hub["origin"] == village.node_id and at_hub["status"] == "open"
    assert at_hub["deadline"] == hub.node.calendar.add_working_days(taken_day, 10).isoformat()
    assert at_hub["remaining_working_days"] == 10 and at_hub["overdue"] is False
    assert at_hub["complainant"] == {"name": "李四", "phone": "13912345678"}
    assert hub.scalar("SELECT COUNT(*) FROM complaints WHERE complaint_id = ?", (complaint_id,)) == 1
    # Another office neither sees it nor answers it; only a supervisor answers.
    assert hub.api("GET", f"/api/v1/complaints/{complaint_id}", people["other_window"]).status_code == 403
    r = hub.api("POST", f"/api/v1/complaints/{complaint_id}/answer", people["window"], json={"answer": "已处理"})
    assert r.status_code == 403
    r = hub.api("POST", f"/api/v1/complaints/{complaint_id}/answer", people["supervisor"], json={"answer": ""})
    assert r.status_code == 400 and r.json()["error"]["field"] == "answer"

    # The supervisor answers from the page.
    s = _login(hub, "supervisor")
    assert "窗口要求重复提交材料" in s.get(f"{hub.url}/feedback", timeout=10).text
    page_url = f"{hub.url}/complaints/{complaint_id}"
    r = s.post(f"{page_url}/answer", data={"answer": "经核实，已对窗口人员批评教育，材料一次告知",
                                            "csrf_token": _csrf(s, page_url)}, timeout=10)
    assert r.status_code == 200 and "已答复" in r.text
    r = hub.api("POST", f"/api/v1/complaints/{complaint_id}/answer", people["supervisor"], json={"answer": "再答"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_answered"

    net.sync_all()
    back = village.api("GET", f"/api/v1/complaints/{complaint_id}", people["agent"]).json()
    assert back["status"] == "answered" and back["answer"] == "经核实，已对窗口人员批评教育，材料一次告知"
    assert back["answered_by"] == "supervisor"
    page = _login(village, "agent").get(f"{village.url}/complaints/{complaint_id}", timeout=10).text
    assert "经核实，已对窗口人员批评教育" in page
    assert village.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'complaint.read' AND target = ?",
                          (complaint_id,)) >= 2


def test_complaints_at_the_township_and_the_hub_window_reach_the_queue(net, people):
    township, hub = net.township, net.hub
    s = _login(township, "clerk")
    url = f"{township.url}/complaints/new"
    bad = s.post(url, data={"office": people["office"], "name": "王五", "phone": "1", "content": "x",
                            "csrf_token": _csrf(s, url)}, timeout=10)
    assert bad.status_code == 400 and "联系电话" in bad.text
    r = s.post(url, data={"office": people["office"], "name": "王五", "phone": "0310-1234567",
                          "content": "电话咨询无人接听", "csrf_token": _csrf(s, url)}, timeout=10)
    assert r.status_code == 200 and "投诉已登记" in r.text
    r = hub.api("POST", "/api/v1/complaints", people["window"], json={
        "office": "130926-XX", "complainant": {"name": "赵六", "phone": "13700001111"}, "content": "排队时间长"})
    assert r.status_code == 201 and r.json()["status"] == "open" and r.json()["deadline"]
    net.sync_all()
    queue = hub.api("GET", "/api/v1/complaints?open=1", people["supervisor"]).json()["complaints"]
    origins = {c["content"]: c["origin"] for c in queue}
    assert origins["电话咨询无人接听"] == township.node_id and origins["排队时间长"] == hub.node_id
