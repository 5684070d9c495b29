"""联合审批 with 超时默认, and 审管互动, over a real network.

The seed's 困难残疾人两项补贴 (130926-MZ-0005) is led by 民政 at the hub with 残联 as joint
department (deemed consent); 农村宅基地申请 (130926-XZ-0001) is decided by the township with
自然资源 and 农业农村 as joint departments.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from network import TOWNSHIP_ID, case_payload, catalog
from network_session import session_for

from shared.core.clock import Clock, FixedClock
from shared.services import joint

JOINT_CITY = "130926-MZ-0005"
JOINT_TOWNSHIP = "130926-XZ-0001"
LEAD = "130926-mz"
DEPT = "130926-cl"


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def agent(net):
    return net.village().account("agent", "agent", net.village().node_id)


def _hub(net, office, role="chief"):
    return net.hub.account(f"{role}_{office}", role, office)


def _file(net, agent, code):
    item = next(i for i in catalog(net.village(), agent) if i["code"] == code)
    response = net.village().api("POST", "/api/v1/cases", agent, json=case_payload(item))
    assert response.status_code == 201, response.text
    net.sync_all()
    return response.json()["case_id"]


def _act(handle, token, case_id, **body):
    return handle.api("POST", f"/api/v1/cases/{case_id}/actions", token, json=body)


def _accepted_city_case(net, agent):
    case_id = _file(net, agent, JOINT_CITY)
    r = _act(net.hub, _hub(net, LEAD), case_id, action="accept", comment="")
    assert r.status_code == 200, r.text
    return case_id, r.json()["case"]


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


def _csrf(session, url):
    return re.search(r'name="csrf_token" value="([^"]+)"', session.get(url, timeout=10).text).group(1)


def test_accepting_a_joint_item_asks_each_department_and_blocks_approval(net, agent):
    case_id, case = _accepted_city_case(net, agent)
    [opinion] = case["joint_opinions"]
    assert opinion["office"] == DEPT and opinion["opinion"] is None and opinion["deemed_consent"] is True
    expected = net.hub.node.calendar.add_working_days(net.hub.node.clock.today_cn(), joint.OPINION_WD)
    assert opinion["deadline"] == expected.isoformat()
    # The department sees it in its queue (API and page).
    mine = net.hub.api("GET", "/api/v1/joint/opinions", _hub(net, DEPT)).json()["opinions"]
    assert case_id in [o["case_id"] for o in mine]
    s = session_for(net.hub, f"chief_{DEPT}")
    assert case_id in s.get(net.hub.url + "/joint/opinions", timeout=10).text
    # The lead cannot approve while the opinion is open.
    refused = _act(net.hub, _hub(net, LEAD), case_id, action="approve", comment="")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "joint_opinions_pending"
    assert "残疾人联合会" in refused.json()["error"]["message"]
    assert net.hub.api("GET", f"/api/v1/cases/{case_id}", _hub(net, LEAD)).json()["status"] == "ACCEPTED"
    # A non-joint item is not affected.
    plain = _file(net, agent, "130926-RS-0001")
    office = "130926-rs"
    assert _act(net.hub, _hub(net, office), plain, action="accept", comment="").json()["case"]["joint_opinions"] == []
    assert _act(net.hub, _hub(net, office), plain, action="approve", comment="").status_code == 200


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


def test_a_disagreeing_opinion_is_shown_to_the_lead(net, agent):
    case_id, _ = _accepted_city_case(net, agent)
    url = f"/api/v1/cases/{case_id}/opinions"
    no_reason = net.hub.api("POST", url, _hub(net, DEPT), json={"opinion": "disagree", "comment": " "})
    assert no_reason.status_code == 400 and no_reason.json()["error"]["field"] == "comment"
    stranger = net.hub.api("POST", url, _hub(net, "130926-ly"), json={"opinion": "agree"})
    assert stranger.status_code == 403
    given = net.hub.api("POST", url, _hub(net, DEPT, "chief"), json={"opinion": "disagree",
                                                                     "comment": "残疾等级与证件不符"})
    assert given.status_code == 200, given.text
    again = net.hub.api("POST", url, _hub(net, DEPT), json={"opinion": "agree"})
    assert again.status_code == 409
    case = net.hub.api("GET", f"/api/v1/cases/{case_id}", _hub(net, LEAD)).json()
    [opinion] = case["joint_opinions"]
    assert (opinion["opinion"], opinion["comment"], opinion["answered_by"]) == (
        "disagree", "残疾等级与证件不符", f"chief_{DEPT}")
    page = session_for(net.hub, f"chief_{LEAD}").get(f"{net.hub.url}/cases/{case_id}", timeout=10).text
    assert "联办部门意见" in page and "残疾等级与证件不符" in page and "不同意" in page
    # Approving over a 不同意 needs the resolution in writing.
    bare = _act(net.hub, _hub(net, LEAD), case_id, action="approve", comment="")
    assert bare.status_code == 409 and bare.json()["error"]["code"] == "joint_disagreement"
    assert _act(net.hub, _hub(net, LEAD), case_id, action="approve",
                comment="经协调，残联复核后确认等级无误").status_code == 200


def test_opinion_by_form_on_the_case_page(net, agent):
    case_id, _ = _accepted_city_case(net, agent)
    s = session_for(net.hub, f"chief_{DEPT}")
    page = s.get(f"{net.hub.url}/cases/{case_id}", timeout=10).text
    assert 'name="opinion" value="agree"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{net.hub.url}/cases/{case_id}/opinions", data={"opinion": "agree", "comment": "同意",
                                                                 "csrf_token": token}, timeout=10)
    assert r.ok and "已提交联办意见" in r.text
    assert net.hub.scalar("SELECT opinion FROM joint_opinions WHERE case_id = ?", (case_id,)) == "agree"
    assert _act(net.hub, _hub(net, LEAD), case_id, action="approve", comment="").status_code == 200


def test_a_decided_case_is_pushed_to_its_supervisor_and_claimed_once(net, agent):
    case_id, _ = _accepted_city_case(net, agent)
    net.hub.api("POST", f"/api/v1/cases/{case_id}/opinions", _hub(net, DEPT), json={"opinion": "agree"})
    assert net.hub.scalar("SELECT COUNT(*) FROM regulator_pushes WHERE case_id = ?", (case_id,)) == 0
    assert _act(net.hub, _hub(net, LEAD), case_id, action="approve", comment="").status_code == 200
    supervisor = _hub(net, LEAD, "head")
    pushes = net.hub.api("GET", "/api/v1/supervision/pushes", supervisor).json()["pushes"]
    [push] = [p for p in pushes if p["case_id"] == case_id]
    assert push["office"] == LEAD and push["trigger_status"] == "APPROVED" and not push["claimed"]
    assert net.hub.api("POST", f"/api/v1/cases/{case_id}/claim", _hub(net, DEPT), json={}).status_code == 403
    claimed = net.hub.api("POST", f"/api/v1/cases/{case_id}/claim", supervisor, json={"feedback": "纳入抽查"})
    assert claimed.status_code == 200 and claimed.json()["push"]["claimed_by"] == f"head_{LEAD}"
    twice = net.hub.api("POST", f"/api/v1/cases/{case_id}/claim", _hub(net, LEAD), json={})
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_claimed"


def test_a_case_concluded_at_the_village_is_pushed_and_unclaimed_pushes_are_flagged(net, agent):
    # Denied at the hub (no push yet), then served at the village: CONCLUDED reaches the hub.
    case_id = _file(net, agent, "130926-LY-0001")
    office = "130926-ly"
    _act(net.hub, _hub(net, office), case_id, action="accept", comment="")
    assert _act(net.hub, _hub(net, office), case_id, action="deny", comment="采伐地块不在林权证范围").status_code == 200
    assert net.hub.scalar("SELECT COUNT(*) FROM regulator_pushes WHERE case_id = ?", (case_id,)) == 0
    net.sync_all()
    village = net.village()
    s = session_for(village, "agent")
    token = _csrf(s, f"{village.url}/cases/{case_id}")
    r = s.post(f"{village.url}/cases/{case_id}/deliver", data={"comment": "本人领取", "csrf_token": token},
               timeout=10)
    assert r.ok
    net.sync_all()
    assert net.hub.api("GET", f"/api/v1/cases/{case_id}", _hub(net, office)).json()["status"] == "CONCLUDED"
    pushes = net.hub.api("GET", "/api/v1/supervision/pushes", _hub(net, office)).json()["pushes"]
    [push] = [p for p in pushes if p["case_id"] == case_id]
    assert push["trigger_status"] == "CONCLUDED" and not push["overdue"]
    # Two working days pass unclaimed: flagged, and shown so on the page.
    assert _run(net.hub, 1)["push_flagged"] == 0
    assert _run(net.hub, 7)["push_flagged"] >= 1
    assert net.hub.scalar("SELECT flagged_at FROM regulator_pushes WHERE case_id = ?", (case_id,)) is not None
    s = session_for(net.hub, f"chief_{office}")
    page = s.get(f"{net.hub.url}/supervision/pushes", timeout=10).text
    assert case_id in page and "逾期未认领" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{net.hub.url}/cases/{case_id}/claim", data={"feedback": "", "csrf_token": token}, timeout=10)
    assert r.ok and "已认领" in r.text
    assert net.hub.scalar("SELECT claimed_by FROM regulator_pushes WHERE case_id = ?", (case_id,)) == f"chief_{office}"


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
