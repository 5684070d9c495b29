"""The deciding node's rules at work over a real network: 秒批, deemed acceptance (Art. 32),
容缺 termination, 电子监察 cards, and the case JSON's clock fields."""

from __future__ import annotations

from datetime import timedelta

import pytest
from network import case_payload, catalog

from shared.core.clock import Clock, FixedClock
from shared.services import supervision
from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def agent(net):
    return net.village().account("agent", "agent", net.village().node_id)


def _item(net, agent, code):
    return next(i for i in catalog(net.village(), agent) if i["code"] == code)


def _file(net, agent, code, **form):
    item = _item(net, agent, code)
    payload = case_payload(item)
    payload["form"].update(form)
    response = net.village().api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 201, response.text
    net.sync_all()
    return response.json()["case_id"], item


def _hub_case(net, case_id, office):
    token = net.hub.account(f"w_{office}", "chief", office)
    return net.hub.api("GET", f"/api/v1/cases/{case_id}", token).json()


def _act(net, case_id, office, **body):
    token = net.hub.account(f"w_{office}", "chief", office)
    response = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json=body)
    assert response.status_code == 200, response.text
    return response.json()["case"]


def _run_rules(net, days_later: int):
    node = net.hub.node
    node.clock = FixedClock(node.now() + timedelta(days=days_later))
    try:
        return supervision.run(net.hub.conn, node, node.emit)
    finally:
        node.clock = Clock()


def test_instant_approval_when_the_rule_holds(net, agent):
    # 高龄津贴: 80 or older with local 户籍 is checkable mechanically (秒批).
    case_id, item = _file(net, agent, "130926-MZ-0004", age=85, local_hukou="是")
    office = f"130926-{item['department_code']}"
    at_hub = _hub_case(net, case_id, office)
    assert at_hub["status"] == "APPROVED"
    assert [h["action"] for h in at_hub["history"]] == ["submit", "receive", "accept", "approve"]
    assert at_hub["history"][-1]["actor"] == "system"
    village = net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()
    assert village["status"] == "APPROVED" and village["decision"]["result"] == "approve"
    # One signed message down (authority.rides_with_next_step): the 准予 carries the 接件 and the
    # 受理 in ``earlier`` and the 受理通知书 with the decision's documents.
    [message] = _downlinks(net.hub, net.village().node_id, case_id)
    assert message["event"]["action"] == "approve"
    assert [e["action"] for e in message["earlier"]] == ["receive", "accept"]
    assert [envelope.peek(d)["kind"] for d in message["documents"]] == ["accept", "approve"]
    assert [h["action"] for h in village["history"]] == ["submit", "receive", "accept", "approve"]
    assert net.village().scalar("SELECT COUNT(*) FROM documents WHERE case_id = ? AND kind IN ('accept', 'approve')",
                                (case_id,)) == 2


def _downlinks(handle, dest: str, case_id: str) -> list[dict]:
    """The bodies of the downlink messages ``handle`` issued to ``dest`` about ``case_id``."""
    bodies = [envelope.peek(envelope.from_bytes(r["document"]))["body"] for r in handle.query(
        "SELECT document FROM downlink WHERE issuer = ? AND dest = ? ORDER BY seq", (handle.node_id, dest))]
    return [b for b in bodies if b.get("case_id") == case_id]


def test_a_township_instant_approval_is_one_message_each_way(net, agent):
    """生育登记 is delegated to the township and 秒批 when both parents are named: one signed
    ``case.event`` up and one downlink message, each with 接件, 受理 and 准予 and both documents."""
    case_id, _ = _file(net, agent, "130926-WJ-0001", child_order="第一个子女")
    township, village = net.township, net.village()
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "APPROVED"
    [down] = _downlinks(township, village.node_id, case_id)
    up = [envelope.peek(envelope.from_bytes(r["document"]))["body"] for r in township.query(
        "SELECT document FROM outbox WHERE case_id = ? AND kind = 'case.event'", (case_id,))]
    assert up == [down]
    assert [e["action"] for e in down["earlier"]] == ["receive", "accept"] and down["event"]["action"] == "approve"
    assert [envelope.peek(d)["kind"] for d in down["documents"]] == ["accept", "approve"]
    net.sync_all()
    for handle in (net.hub, village):
        assert handle.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "APPROVED"
        assert [r["action"] for r in handle.query("SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid",
                                                  (case_id,))] == ["submit", "receive", "accept", "approve"]
        assert handle.scalar("SELECT COUNT(*) FROM documents WHERE case_id = ? AND kind IN ('accept', 'approve')",
                             (case_id,)) == 2


def test_no_instant_approval_when_the_rule_fails(net, agent):
    case_id, item = _file(net, agent, "130926-MZ-0004", age=70, local_hukou="是")
    assert _hub_case(net, case_id, f"130926-{item['department_code']}")["status"] == "RECEIVED"


# ----------------------------------------------------------------------------- the hub's rules alone
# (the service tier: one hub in-process, cases in its register, no network; tests/service.py)


def _chief(service, case_id: str) -> tuple[str, str]:
    """(office, token of its 首席审批员) of the case."""
    office = service.conn.execute("SELECT route_office FROM cases WHERE case_id = ?", (case_id,)).fetchone()[0]
    return office, service.account(f"chief_{office}", "chief", office)


def _rules(service, days_later: int) -> dict:
    with service.days_later(days_later):
        return supervision.run(service.conn, service.node, service.node.emit)


def _decided(service, token: str, case_id: str, **body) -> dict:
    response = service.act(token, case_id, **body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["case"]


def test_no_notice_within_five_working_days_means_accepted_on_receipt(service):
    case_id = service.received_case("130926-RS-0001")
    _, chief = _chief(service, case_id)
    received_at = service.case(chief, case_id)["history"][-1]["at"]
    _rules(service, 3)
    assert service.case(chief, case_id)["status"] == "RECEIVED"
    assert _rules(service, 12)["deemed_accepted"] >= 1
    case = service.case(chief, case_id)
    assert case["status"] == "ACCEPTED"
    assert case["accepted_at"] == received_at  # counted from receipt, not from the rule's run
    assert case["history"][-1]["actor"] == "system" and case["history"][-1]["detail"]["deemed"]


def test_deficiency_not_supplied_in_time_terminates(service):
    case_id = service.received_case("130926-RS-0002")
    _, chief = _chief(service, case_id)
    due = (service.node.clock.today_cn() + timedelta(days=2)).isoformat()
    case = _decided(service, chief, case_id, action="accept_deficient", comment="银行卡容缺",
                    owed_materials=["bank_card"], due_date=due)
    assert case["status"] == "ACCEPTED_DEFICIENT"
    assert _rules(service, 1)["terminated"] == 0
    assert _rules(service, 5)["terminated"] >= 1
    case = service.case(chief, case_id)
    assert case["status"] == "TERMINATED"
    assert "逾期" in case["history"][-1]["comment"]


def test_overdue_case_gets_yellow_then_red_card(service):
    case_id = service.received_case("130926-CL-0001")
    _, chief = _chief(service, case_id)
    case = _decided(service, chief, case_id, action="accept", comment="")
    assert case["deadline"] is not None and case["supervision"] == "none"
    limit = service.item("130926-CL-0001")["promise_limit_wd"]

    def levels() -> set:
        return {r[0] for r in service.conn.execute("SELECT level FROM supervision_alerts WHERE case_id = ?",
                                                   (case_id,))}

    _rules(service, limit * 2 + 6)
    assert "yellow" in levels() or "red" in levels()
    _rules(service, limit * 2 + 30)
    assert "red" in levels()


def test_extension_needs_a_reason_and_is_allowed_once(service):
    case_id = service.received_case("130926-LY-0001")
    office, chief = _chief(service, case_id)
    before = _decided(service, chief, case_id, action="accept", comment="")["deadline"]
    _decided(service, chief, case_id, action="extend_request", comment="需现场核查")
    head = service.account(f"head_{office}", "head", office)  # 延期 is the head's own step
    refused = service.act(head, case_id, action="extend", comment="")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "reason_required"
    approved = service.act(head, case_id, action="extend", comment="需现场核查")
    assert approved.status_code == 200, approved.get_data(as_text=True)
    assert approved.get_json()["case"]["deadline"] > before
    again = service.act(head, case_id, action="extend", comment="再延")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_extended"


def test_api_cannot_backdate_an_acceptance(service):
    case_id = service.received_case("130926-RS-0001")
    _, chief = _chief(service, case_id)
    case = _decided(service, chief, case_id, action="accept", comment="", effective_at="2020-01-01T00:00:00.000Z")
    assert not case["accepted_at"].startswith("2020")


# ----------------------------------------------------------------------------- over the network


def test_rules_touch_only_cases_this_node_decides(net, agent):
    before = net.hub.scalar("SELECT COUNT(*) FROM case_events")
    node = net.township.node
    node.clock = FixedClock(node.now() + timedelta(days=60))
    done = supervision.run(net.township.conn, node, node.emit)
    assert done["deemed_accepted"] == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM case_events") == before
