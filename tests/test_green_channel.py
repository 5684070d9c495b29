"""重点项目 绿色通道 (seed 002 §6) and 超时默认 for 亿元以上 projects (seed 004 §8): the rules, the
hub's own steps on the service tier, and the hub, township and village over a real network."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from network import catalog, create_case
from test_projects import credit_code

from city_hub import projects
from shared.core.clock import Clock, FixedClock
from shared.core.errors import RuleError, ValidationError
from shared.rules import catalog as catalog_rules
from shared.rules import green_channel

# --- the pure rules --------------------------------------------------------------------------


def test_the_green_limit_is_used_only_where_the_catalog_gives_a_shorter_one():
    assert green_channel.green_limit({"green_channel_limit_wd": 8}, 15) == 8
    assert green_channel.green_limit({}, 15) == 15
    assert green_channel.green_limit({"green_channel_limit_wd": 8}, 5) == 5


def test_the_catalog_refuses_a_green_limit_not_shorter_than_the_committed_one():
    item = next(i for i in catalog_rules.load_seed() if i["code"] == "130926-LY-0001")
    assert item["green_channel_limit_wd"] == 8
    raw = {**item, "green_channel_limit_wd": item["promise_limit_wd"]}
    with pytest.raises(ValidationError) as bad:
        catalog_rules.validate_item(raw)
    assert bad.value.field == "green_channel_limit_wd"


def test_deemed_done_applies_from_one_hundred_million_yuan():
    assert green_channel.deemed_done_applies(10_000)
    assert not green_channel.deemed_done_applies(9_999)
    assert not green_channel.deemed_done_applies(None)
    with pytest.raises(ValidationError):
        green_channel.check_investment("一亿")
    assert green_channel.check_investment("20000") == 20_000


def test_a_case_is_deemed_done_once_past_its_limit_while_its_clock_runs():
    assert green_channel.due_for_deemed_done("IN_REVIEW", -1, ["accept"])
    assert not green_channel.due_for_deemed_done("IN_REVIEW", 0, ["accept"])
    assert not green_channel.due_for_deemed_done("SUSPENDED", -3, ["accept", "suspend"])  # clock stopped by law
    assert not green_channel.due_for_deemed_done("IN_REVIEW", -5, ["accept", "deemed_done"])  # once


def test_no_refusal_for_lack_of_a_prerequisite_deemed_done():
    deemed = [{"item_name": "林木采伐许可证核发", "result_name": "林木采伐许可证", "office": "130926-ly"}]
    with pytest.raises(RuleError) as refused:
        green_channel.check_not_refused_for_deemed("request_correction", "", ["请提交林木采伐许可证"], deemed)
    assert refused.value.code == "deemed_done_prerequisite" and "130926-ly" in refused.value.message
    green_channel.check_not_refused_for_deemed("request_correction", "", ["请提交营业执照"], deemed)
    green_channel.check_not_refused_for_deemed("approve", "林木采伐许可证已默认", None, deemed)


def test_green_cases_sort_first_then_by_deadline():
    cases = [{"case_id": "a", "remaining_working_days": 1, "submitted_at": "1"},
             {"case_id": "b", "remaining_working_days": None, "submitted_at": "2", "green_channel": True},
             {"case_id": "c", "remaining_working_days": 5, "submitted_at": "0", "green_channel": True}]
    assert [c["case_id"] for c in sorted(cases, key=green_channel.queue_order)] == ["c", "b", "a"]


# --- at the hub (the service tier, tests/service.py) -----------------------------------------


def test_no_person_may_record_a_deemed_done(service):
    case_id = service.received_case("130926-LY-0001")
    chief = service.account("chief_130926-ly", "chief", "130926-ly")
    service.act(chief, case_id, action="accept")
    refused = service.act(chief, case_id, action="deemed_done", comment="手工默认")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_entitled_role"


def test_the_admin_marks_a_key_project_from_its_page(service):
    agent = service.account("xmdb", "project_agent", None, "项目代办员甲")
    service.account("admin", "admin", None, "管理员")
    project = service.api("POST", "/api/v1/projects", agent, json={
        "enterprise_name": "肃宁县某公司", "credit_code": credit_code(), "project_name": "仓储物流项目",
        "location": "肃宁县", "investment_wan": 500}).json
    url = f"/projects/{project['project_id']}"
    session = service.login("admin")
    page = session.get(url).text
    assert "标记为重点项目" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = session.post(url + "/key", data={"csrf_token": csrf, "key_agent": "admin", "investment_wan": ""},
                       follow_redirects=True)
    assert "未能标记重点项目" in bad.text
    done = session.post(url + "/key", data={"csrf_token": csrf, "key_agent": "xmdb", "investment_wan": "500"},
                        follow_redirects=True)
    assert "已标记为重点项目" in done.text and "重点项目·绿色通道" in done.text
    assert "（亿元以上：实行超时默认）" not in done.text  # 500 万元: below 1 亿元


# --- over a real network ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(net):  # the project agent (net is conftest's default network)
    return net.hub.account("xmdb", "project_agent", None, "项目代办员甲")


@pytest.fixture(scope="module")
def admin(net):
    return net.hub.account("admin", "admin", None, "管理员")


@pytest.fixture(scope="module")
def villager(village):
    return village.account("agent", "agent", village.node_id)


def _village_case(net, villager, code):
    item = next(i for i in catalog(net.village(), villager) if i["code"] == code)
    receipt = create_case(net.village(), villager, item)
    net.sync_all()
    return receipt


def _chief(net, office):
    return net.hub.account(f"chief_{office}", "chief", office)


def _act(net, case_id, office, **body):
    return net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", _chief(net, office), json=body)


@pytest.fixture(scope="module")
def key_project(net, agent, admin, villager):
    """A 2 亿元 project with a county case (林木采伐, 绿色通道 limit 8 WD) and a township case."""
    body = {"enterprise_name": "肃宁县绿源农产品加工有限公司", "credit_code": credit_code(),
            "project_name": "年产5000吨果蔬深加工项目", "location": "肃宁县城关镇工业园区", "investment_wan": 20000}
    project = net.hub.api("POST", "/api/v1/projects", agent, json=body).json()
    plain = _village_case(net, villager, "130926-LY-0001")  # an ordinary case of the same office, first
    assert _act(net, plain["case_id"], "130926-ly", action="accept").status_code == 200
    county = _village_case(net, villager, "130926-LY-0001")
    township = _village_case(net, villager, "130926-XZ-0001")
    for case in (county, township):
        r = net.hub.api("POST", f"/api/v1/projects/{project['project_id']}/cases", agent,
                        json={"case_id": case["case_id"]})
        assert r.status_code == 201, r.text
    return {"project": project, "plain": plain, "county": county, "township": township}


def test_only_an_admin_marks_a_key_project_and_names_a_project_agent(net, agent, admin, key_project):
    pid = key_project["project"]["project_id"]
    assert net.hub.api("POST", f"/api/v1/projects/{pid}/key", agent, json={"key_agent": "xmdb"}).status_code == 403
    nobody = net.hub.api("POST", f"/api/v1/projects/{pid}/key", admin, json={"key_agent": "admin"})
    assert nobody.status_code == 400 and nobody.json()["error"]["field"] == "key_agent"
    marked = net.hub.api("POST", f"/api/v1/projects/{pid}/key", admin, json={"key_agent": "xmdb"})
    assert marked.status_code == 200, marked.text
    answer = marked.json()
    assert answer["marked_cases"] == 2
    assert answer["project"]["key_project"] and answer["project"]["key_agent"] == "xmdb"
    assert answer["project"]["deemed_done_applies"] is True
    assert all(c["green_channel"] for c in answer["project"]["cases"])


def test_a_key_projects_case_uses_the_shorter_limit_and_comes_first_in_the_hub_queue(net, key_project):
    county = key_project["county"]["case_id"]
    assert net.hub.scalar("SELECT limit_wd FROM cases WHERE case_id = ?", (county,)) == 8
    page = net.hub.api("GET", "/queue", _chief(net, "130926-ly")).text
    receipts = re.findall(r">(\d{12}-\d{8}-\d{4})</a>", page)
    assert receipts.index(key_project["county"]["receipt_no"]) < receipts.index(key_project["plain"]["receipt_no"])
    assert "绿色通道" in page
    case = net.hub.api("GET", f"/api/v1/cases/{county}", _chief(net, "130926-ly")).json()
    assert case["green_channel"] is True


def test_the_mark_reaches_the_deciding_township_and_the_village(net, key_project):
    net.sync_all()
    township_case = key_project["township"]["case_id"]
    assert net.township.scalar("SELECT green_channel FROM cases WHERE case_id = ?", (township_case,)) == 1
    county = key_project["county"]["case_id"]
    assert net.village().scalar("SELECT green_channel, limit_wd FROM cases WHERE case_id = ?", (county,)) == 1
    assert net.village().scalar("SELECT limit_wd FROM cases WHERE case_id = ?", (county,)) == 8
    clerk = net.township.account("clerk", "clerk", net.township.node_id)
    page = net.township.api("GET", "/queue", clerk).text
    assert "绿色通道" in page and key_project["township"]["receipt_no"] in page


def _run_rule(net, days_later):
    node = net.hub.node
    node.clock = FixedClock(node.now() + timedelta(days=days_later))
    try:
        return projects.run_deemed_done(net.hub.conn, node)
    finally:
        node.clock = Clock()


def test_past_its_limit_a_case_of_a_big_project_is_deemed_done_the_late_office_responsible(net, agent, key_project,
                                                                                           villager):
    county = key_project["county"]["case_id"]
    assert _act(net, county, "130926-ly", action="accept").status_code == 200
    assert _run_rule(net, 3) == 0  # still within its 8 working days
    assert _run_rule(net, 30) == 1
    assert _run_rule(net, 31) == 0  # once
    event = net.hub.query("SELECT * FROM case_events WHERE case_id = ? AND action = 'deemed_done'", (county,))[0]
    assert event["actor"] == "system" and json.loads(event["detail"])["responsible_office"] == "130926-ly"
    project = net.hub.api("GET", f"/api/v1/projects/{key_project['project']['project_id']}", agent).json()
    mine = next(c for c in project["cases"] if c["case_id"] == county)
    assert mine["state"] == "deemed_done" and mine["deemed_done"]["responsible_office"] == "130926-ly"
    net.sync_all()
    at_village = net.village().api("GET", f"/api/v1/cases/{county}", villager).json()
    assert "deemed_done" in [h["action"] for h in at_village["history"]]
    assert at_village["status"] == "ACCEPTED"  # the office still owes its decision


def test_the_next_step_may_not_refuse_for_lack_of_the_deemed_prerequisite(net, agent, key_project, villager):
    later = _village_case(net, villager, "130926-NYNC-0001")
    pid = key_project["project"]["project_id"]
    net.hub.api("POST", f"/api/v1/projects/{pid}/cases", agent, json={"case_id": later["case_id"]})
    refused = _act(net, later["case_id"], "130926-nync", action="request_correction",
                   missing_items=["林木采伐许可证（前置审批未办结）"])
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "deemed_done_prerequisite"
    fine = _act(net, later["case_id"], "130926-nync", action="request_correction", missing_items=["农机购置发票"])
    assert fine.status_code == 200, fine.text
