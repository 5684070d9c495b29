"""联合审批 with 超时默认, and 审管互动: the hub's rules on the service tier (``tests/service.py``),
a township's over a real network.

The seed's 困难残疾人两项补贴 (130926-MZ-0005) is led by 民政 at the hub with 残联 as joint
department (deemed consent); 农村宅基地申请 (130926-XZ-0001) is decided by the township with
自然资源 and 农业农村 as joint departments.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from network import TOWNSHIP_ID, case_payload, catalog

from shared.core.clock import Clock, FixedClock
from shared.services import joint

JOINT_CITY = "130926-MZ-0005"
JOINT_TOWNSHIP = "130926-XZ-0001"
LEAD = "130926-mz"
DEPT = "130926-cl"


def _hub(hub, office, role="chief"):
    """The API token of ``role`` in ``office`` at a hub (in-process or a network's)."""
    return hub.account(f"{role}_{office}", role, office)


def _act(handle, token, case_id, **body):
    return handle.api("POST", f"/api/v1/cases/{case_id}/actions", token, json=body)


def _run(handle, days_later: int) -> dict:
    node = handle.node
    node.clock = FixedClock(node.now() + timedelta(days=days_later))
    try:
        rules = dict(node.kind.scheduled_rules(node))  # 超时默认 everywhere; 审管 pushes at the hub
        done = dict(rules["joint"](handle.conn))
        if "regulation" in rules:
            done.update(rules["regulation"](handle.conn))
        return done
    finally:
        node.clock = Clock()


# ----------------------------------------------------------------------------- at the hub (service tier)


def _accepted_city_case(service):
    case_id = service.received_case(JOINT_CITY)
    r = _act(service, _hub(service, LEAD), case_id, action="accept", comment="")
    assert r.status_code == 200, r.text
    return case_id, r.json["case"]


def test_accepting_a_joint_item_asks_each_department_and_blocks_approval(service):
    case_id, case = _accepted_city_case(service)
    [opinion] = case["joint_opinions"]
    assert opinion["office"] == DEPT and opinion["opinion"] is None and opinion["deemed_consent"] is True
    expected = service.node.calendar.add_working_days(service.node.clock.today_cn(), joint.OPINION_WD)
    assert opinion["deadline"] == expected.isoformat()
    # The department sees it in its queue (API and page).
    mine = service.api("GET", "/api/v1/joint/opinions", _hub(service, DEPT)).json["opinions"]
    assert case_id in [o["case_id"] for o in mine]
    s = service.login(f"chief_{DEPT}")
    assert case_id in s.get("/joint/opinions").text
    # The lead cannot approve while the opinion is open.
    refused = _act(service, _hub(service, LEAD), case_id, action="approve", comment="")
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "joint_opinions_pending"
    assert "残疾人联合会" in refused.json["error"]["message"]
    assert service.api("GET", f"/api/v1/cases/{case_id}", _hub(service, LEAD)).json["status"] == "ACCEPTED"
    # A non-joint item is not affected.
    plain = service.received_case("130926-RS-0001")
    office = "130926-rs"
    assert _act(service, _hub(service, office), plain, action="accept", comment="").json["case"]["joint_opinions"] == []
    assert _act(service, _hub(service, office), plain, action="approve", comment="").status_code == 200


def test_a_department_that_never_answers_is_deemed_to_consent(service):
    """超时默认 is the deciding node's own rule: tested on one hub in-process (tests/service.py)."""
    lead = service.account(f"chief_{LEAD}", "chief", LEAD)
    dept = service.account(f"chief_{DEPT}", "chief", DEPT)
    case_id = service.received_case(JOINT_CITY)
    assert service.act(lead, case_id, action="accept", comment="").status_code == 200

    def deemed(days_later: int) -> int:
        with service.days_later(days_later):
            return joint.run_scheduled(service.conn, service.node, service.node.emit)["deemed_consent"]

    assert deemed(1) == 0
    assert service.act(lead, case_id, action="approve", comment="").status_code == 409
    assert deemed(14) >= 1
    answer = service.client.get(f"/api/v1/cases/{case_id}/opinions", headers={"Authorization": f"Bearer {lead}"})
    [opinion] = answer.get_json()["opinions"]
    assert opinion["opinion"] == "deemed" and opinion["opinion_label"] == "超时视为同意"
    assert opinion["answered_by"] == "system" and opinion["answered_at"]
    # A late answer is refused: the record stands.
    late = service.client.post(f"/api/v1/cases/{case_id}/opinions", json={"opinion": "disagree", "comment": "迟到"},
                               headers={"Authorization": f"Bearer {dept}"})
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "already_answered"
    approved = service.act(lead, case_id, action="approve", comment="")
    assert approved.status_code == 200, approved.get_data(as_text=True)


def test_a_disagreeing_opinion_is_shown_to_the_lead(service):
    case_id, _ = _accepted_city_case(service)
    url = f"/api/v1/cases/{case_id}/opinions"
    no_reason = service.api("POST", url, _hub(service, DEPT), json={"opinion": "disagree", "comment": " "})
    assert no_reason.status_code == 400 and no_reason.json["error"]["field"] == "comment"
    stranger = service.api("POST", url, _hub(service, "130926-ly"), json={"opinion": "agree"})
    assert stranger.status_code == 403
    given = service.api("POST", url, _hub(service, DEPT, "chief"), json={"opinion": "disagree",
                                                                     "comment": "残疾等级与证件不符"})
    assert given.status_code == 200, given.text
    again = service.api("POST", url, _hub(service, DEPT), json={"opinion": "agree"})
    assert again.status_code == 409
    case = service.api("GET", f"/api/v1/cases/{case_id}", _hub(service, LEAD)).json
    [opinion] = case["joint_opinions"]
    assert (opinion["opinion"], opinion["comment"], opinion["answered_by"]) == (
        "disagree", "残疾等级与证件不符", f"chief_{DEPT}")
    page = service.login(f"chief_{LEAD}").get(f"/cases/{case_id}").text
    assert "联办部门意见" in page and "残疾等级与证件不符" in page and "不同意" in page
    # Approving over a 不同意 needs the resolution in writing.
    bare = _act(service, _hub(service, LEAD), case_id, action="approve", comment="")
    assert bare.status_code == 409 and bare.json["error"]["code"] == "joint_disagreement"
    assert _act(service, _hub(service, LEAD), case_id, action="approve",
                comment="经协调，残联复核后确认等级无误").status_code == 200


def test_opinion_by_form_on_the_case_page(service):
    case_id, _ = _accepted_city_case(service)
    s = service.login(f"chief_{DEPT}")
    page = s.get(f"/cases/{case_id}").text
    assert 'name="opinion" value="agree"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"/cases/{case_id}/opinions", data={"opinion": "agree", "comment": "同意", "csrf_token": token},
               follow_redirects=True)
    assert r.status_code == 200 and "已提交联办意见" in r.text
    assert service.scalar("SELECT opinion FROM joint_opinions WHERE case_id = ?", (case_id,)) == "agree"
    assert _act(service, _hub(service, LEAD), case_id, action="approve", comment="").status_code == 200


def test_a_decided_case_is_pushed_to_its_supervisor_and_claimed_once(service):
    case_id, _ = _accepted_city_case(service)
    service.api("POST", f"/api/v1/cases/{case_id}/opinions", _hub(service, DEPT), json={"opinion": "agree"})
    assert service.scalar("SELECT COUNT(*) FROM regulator_pushes WHERE case_id = ?", (case_id,)) == 0
    assert _act(service, _hub(service, LEAD), case_id, action="approve", comment="").status_code == 200
    supervisor = _hub(service, LEAD, "head")
    pushes = service.api("GET", "/api/v1/supervision/pushes", supervisor).json["pushes"]
    [push] = [p for p in pushes if p["case_id"] == case_id]
    assert push["office"] == LEAD and push["trigger_status"] == "APPROVED" and not push["claimed"]
    assert service.api("POST", f"/api/v1/cases/{case_id}/claim", _hub(service, DEPT), json={}).status_code == 403
    claimed = service.api("POST", f"/api/v1/cases/{case_id}/claim", supervisor, json={"feedback": "纳入抽查"})
    assert claimed.status_code == 200 and claimed.json["push"]["claimed_by"] == f"head_{LEAD}"
    twice = service.api("POST", f"/api/v1/cases/{case_id}/claim", _hub(service, LEAD), json={})
    assert twice.status_code == 409 and twice.json["error"]["code"] == "already_claimed"


def test_a_case_concluded_at_the_village_is_pushed_and_unclaimed_pushes_are_flagged(service):
    # Denied at the hub (no push yet), then served at the village: CONCLUDED reaches the hub.
    case_id = service.received_case("130926-LY-0001")
    office = "130926-ly"
    _act(service, _hub(service, office), case_id, action="accept", comment="")
    assert _act(service, _hub(service, office), case_id, action="deny", comment="采伐地块不在林权证范围").status_code == 200
    assert service.scalar("SELECT COUNT(*) FROM regulator_pushes WHERE case_id = ?", (case_id,)) == 0
    service.village_event(case_id, "deliver", "本人领取", {"manner": "直接送达"})
    assert service.api("GET", f"/api/v1/cases/{case_id}", _hub(service, office)).json["status"] == "CONCLUDED"
    pushes = service.api("GET", "/api/v1/supervision/pushes", _hub(service, office)).json["pushes"]
    [push] = [p for p in pushes if p["case_id"] == case_id]
    assert push["trigger_status"] == "CONCLUDED" and not push["overdue"]
    # Two working days pass unclaimed: flagged, and shown so on the page.
    assert _run(service, 1)["push_flagged"] == 0
    assert _run(service, 7)["push_flagged"] >= 1
    assert service.scalar("SELECT flagged_at FROM regulator_pushes WHERE case_id = ?", (case_id,)) is not None
    s = service.login(f"chief_{office}")
    page = s.get("/supervision/pushes").text
    assert case_id in page and "逾期未认领" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"/cases/{case_id}/claim", data={"feedback": "", "csrf_token": token}, follow_redirects=True)
    assert r.status_code == 200 and "已认领" in r.text
    assert service.scalar("SELECT claimed_by FROM regulator_pushes WHERE case_id = ?", (case_id,)) == f"chief_{office}"


# ----------------------------------------------------------------------------- over a real network


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def agent(net):
    return net.village().account("agent", "agent", net.village().node_id)


def _file(net, agent, code):
    item = next(i for i in catalog(net.village(), agent) if i["code"] == code)
    response = net.village().api("POST", "/api/v1/cases", agent, json=case_payload(item))
    assert response.status_code == 201, response.text
    net.sync_all()
    return response.json()["case_id"]


def test_township_joint_item_asks_township_departments_and_reaches_the_supervisor(net, agent):
    township = net.township
    clerk = township.account("clerk_t", "clerk", TOWNSHIP_ID)
    case_id = _file(net, agent, JOINT_TOWNSHIP)
    r = _act(township, clerk, case_id, action="accept", comment="")
    assert r.status_code == 200, r.text
    offices = {o["office"] for o in r.json()["case"]["joint_opinions"]}
    assert offices == {f"{TOWNSHIP_ID}-zrzy", f"{TOWNSHIP_ID}-nync"}
    zrzy = township.account("zrzy_t", "clerk", f"{TOWNSHIP_ID}-zrzy")
    agreed = township.api("POST", f"/api/v1/cases/{case_id}/opinions", zrzy, json={"opinion": "agree",
                                                                                   "comment": "符合国土空间规划"})
    assert agreed.status_code == 200, agreed.text
    refused = _act(township, clerk, case_id, action="approve", comment="")
    assert refused.status_code == 409 and "农业农村局" in refused.json()["error"]["message"]
    assert _run(township, 14)["deemed_consent"] == 1  # 农业农村 never answered
    assert _act(township, clerk, case_id, action="approve", comment="").status_code == 200
    net.sync_all()
    assert net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()["status"] == "APPROVED"
    # The township's decision reached the hub as a case.event: pushed to the item's department there.
    assert net.hub.scalar("SELECT office FROM regulator_pushes WHERE case_id = ?", (case_id,)) == "130926-xz"
