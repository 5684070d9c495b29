"""为民代办: the villager's 委托 travels with the case, and 七步法 progress follows the events."""

from __future__ import annotations

import pytest
from network import case_payload, catalog, pick_item

from shared.services.case_view import seven_steps


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def test_an_entrustment_without_consent_is_refused_and_nothing_stored(net):
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    before = village.scalar("SELECT COUNT(*) FROM cases")
    r = village.api("POST", "/api/v1/cases", agent, json=case_payload(item, entrustment={"consent": False}))
    assert r.status_code == 400 and r.json()["error"]["field"] == "entrustment.consent"
    assert "委托书" in r.json()["error"]["message"]
    assert village.scalar("SELECT COUNT(*) FROM cases") == before


def test_the_entrustment_reaches_the_hub_and_the_seven_steps_progress(net):
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    r = village.api("POST", "/api/v1/cases", agent, json=case_payload(item, entrustment={"consent": True}))
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    net.sync_all()
    window = net.hub.account("w", "chief", f"130926-{item['department_code']}")
    hub_case = net.hub.api("GET", f"/api/v1/cases/{case_id}", window).json()
    submit = next(h for h in hub_case["history"] if h["action"] == "submit")
    assert submit["detail"]["entrustment"] == {"principal": "张三", "agent": "agent", "scope": item["name"],
                                               "consent": True}
    steps = {s["step"]: s["done"] for s in seven_steps(hub_case)}
    assert steps["委托"] and not steps["受理"]
    for action in ("accept", "approve"):
        assert net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", window,
                           json={"action": action, "comment": "符合"}).status_code == 200
    net.sync_all()
    at_village = village.api("GET", f"/api/v1/cases/{case_id}", agent).json()
    steps = {s["step"]: s["done"] for s in seven_steps(at_village)}
    assert steps["受理"] and steps["办理"] and not steps["送达"]
