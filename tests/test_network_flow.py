"""The three tiers end to end, over real HTTP between real servers on loopback."""

from __future__ import annotations

import os

import pytest
from network import HUB_ID, catalog, create_case, pick_item, sha256_hex

from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def agent(net):
    village = net.village()
    return village.account("agent", "agent", village.node_id, "村代办员")


def acked_seq_in(acks: list, origin: str) -> int:
    """The sequence number a list of hub acknowledgements covers for ``origin`` (0 if none)."""
    covered = 0
    for ack in acks:
        if ack and envelope.peek(ack)["origin"] == origin:
            covered = max(covered, envelope.peek(ack)["acked_seq"])
    return covered


def test_city_item_travels_village_township_hub_and_the_decision_comes_back(net, agent):
    village, township, hub = net.village(), net.township, net.hub
    item = pick_item(catalog(village, agent), "city")
    office = f"{HUB_ID}-{item['department_code']}"
    material = item["materials"][0]["code"]
    data = b"\xff\xd8\xff\xe0" + os.urandom(300 * 1024)  # a JPEG of more than one 256 KiB chunk
    sha = sha256_hex(data)

    # One scan for every required material (one blob): the office may accept only a complete case.
    receipt = create_case(village, agent, item, [(m["code"], "扫描件.jpg", data) for m in item["materials"]
                                                 if m["required"] or m["code"] == material])
    case_id = receipt["case_id"]
    assert receipt["status"] == "SUBMITTED"
    assert receipt["route"] == {"level": "city", "office": office}

    def outbox_state():
        return village.scalar("SELECT state FROM outbox WHERE case_id = ?", (case_id,))

    assert outbox_state() == "pending"

    # Village -> township: the township verifies, stores and signs a custody receipt.
    assert "error" not in village.sync()
    assert outbox_state() == "custody"
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE origin = ?", (village.node_id,)) == 1
    assert township.node.blobs.read(sha) == data
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 0

    # The township forwards the envelope but not yet the file: the hub holds the case, but its
    # acknowledgement must not cover an envelope whose material file has not arrived.
    document = envelope.from_bytes(township.scalar("SELECT document FROM custody WHERE origin = ?",
                                                   (village.node_id,)))
    answer = township.client_to_parent().push([document])
    assert answer["results"][0]["status"] == "accepted"
    assert answer["results"][0]["missing_blobs"] == [sha]
    assert acked_seq_in(answer["acks"], village.node_id) == 0
    assert hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) is None
    assert hub.scalar("SELECT route_office FROM cases WHERE case_id = ?", (case_id,)) == office
    assert not hub.node.blobs.has(sha)

    # A township round sends the file; now the hub acknowledges, and the village hears of it.
    assert "error" not in township.sync()
    assert hub.node.blobs.has(sha)
    assert sha256_hex(hub.node.blobs.read(sha)) == sha
    assert hub.node.blobs.read(sha) == data
    assert hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) == 1
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE origin = ?", (village.node_id,)) == 0
    assert outbox_state() == "custody"
    village.sync()
    assert outbox_state() == "acked"

    # The hub window of the deciding office takes it; another office may not.
    window = hub.account(f"{item['department_code']}_chief", "chief", office)
    other = hub.account("other_window", "window", f"{HUB_ID}-zz")
    at_hub = hub.api("GET", f"/api/v1/cases/{case_id}", window).json()
    assert at_hub["status"] == "RECEIVED"
    assert at_hub["route"] == {"level": "city", "office": office}
    assert {m["sha256"] for m in at_hub["materials"]} == {sha}
    refused = hub.api("POST", f"/api/v1/cases/{case_id}/actions", other, json={"action": "accept"})
    assert refused.status_code == 403
    accepted = hub.api("POST", f"/api/v1/cases/{case_id}/actions", window, json={"action": "accept", "comment": ""})
    assert accepted.status_code == 200, accepted.text
    approved = hub.api("POST", f"/api/v1/cases/{case_id}/actions", window,
                       json={"action": "approve", "comment": "符合条件，准予登记"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["case"]["status"] == "APPROVED"

    before = village.api("GET", f"/api/v1/cases/{case_id}", agent).json()
    assert before["status"] == "RECEIVED"  # 接件 came down with the ack; the decision not yet
    assert before["decision"] is None

    net.sync_all()
    seen = village.api("GET", f"/api/v1/cases/{case_id}", agent).json()
    assert seen["status"] == "APPROVED"
    assert seen["decision"]["result"] == "approve"
    assert seen["decision"]["office"] == office
    assert seen["decision"]["comment"] == "符合条件，准予登记"
    assert [h["action"] for h in seen["history"]] == ["submit", "receive", "accept", "approve"]
    assert [h["status"] for h in seen["history"]] == ["SUBMITTED", "RECEIVED", "ACCEPTED", "APPROVED"]
    assert seen["history"][-1]["node"] == HUB_ID
    # The township follows its villages' cases.
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "APPROVED"


def test_township_decides_its_item_while_the_hub_is_down(net, agent):
    village, township, hub = net.village(), net.township, net.hub
    clerk = township.account("clerk", "clerk", township.node_id, "便民服务站站员")
    item = pick_item(catalog(village, agent), "township")
    receipt = create_case(village, agent, item)
    case_id = receipt["case_id"]
    assert receipt["route"] == {"level": "township", "office": township.node_id}

    hub.stop()
    try:
        assert "error" not in village.sync()
        at_township = township.api("GET", f"/api/v1/cases/{case_id}", clerk).json()
        assert at_township["status"] == "RECEIVED"
        for action, comment in (("accept", ""), ("approve", "经审核，准予")):
            response = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk,
                                    json={"action": action, "comment": comment})
            assert response.status_code == 200, response.text
        assert "error" in township.sync()  # the hub is unreachable
        village.sync()
        seen = village.api("GET", f"/api/v1/cases/{case_id}", agent).json()
        assert seen["status"] == "APPROVED"
        assert seen["decision"]["office"] == township.node_id
        assert [h["action"] for h in seen["history"]] == ["submit", "receive", "accept", "approve"]
        assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 0
        assert township.scalar("SELECT COUNT(*) FROM outbox WHERE case_id = ? AND state = 'pending'",
                               (case_id,)) == 2  # accept (the 接件 riding with it) and approve wait
    finally:
        hub.start()

    assert "error" not in township.sync()
    at_hub = hub.query("SELECT status, route_office FROM cases WHERE case_id = ?", (case_id,))
    assert [tuple(r) for r in at_hub] == [("APPROVED", township.node_id)]
    actions = [r["action"] for r in hub.query(
        "SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,))]
    assert actions == ["submit", "receive", "accept", "approve"]
    assert hub.scalar("SELECT COUNT(*) FROM quarantine") == 0
    township.sync()
    assert township.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0


def test_the_hubs_receipt_is_one_event_at_the_village_recorded_by_the_state_machine(net, agent):
    """The village marks a city case 已接件 from the hub's ack by the state machine, with an event
    under the id of the hub's own 接件 event; when the hub's event arrives, it is the same event,
    now with the hub's time (no second 接件, no status written without an event)."""
    village, hub = net.village(), net.hub
    item = pick_item(catalog(village, agent), "city")
    case_id = create_case(village, agent, item)["case_id"]
    net.sync_all()
    assert village.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "RECEIVED"
    assert village.scalar("SELECT sync_state FROM cases WHERE case_id = ?", (case_id,)) == "acked"  # 已到市中心
    provisional = village.query("SELECT event_id, at FROM case_events WHERE case_id = ? AND action = 'receive'",
                                (case_id,))
    at_hub = hub.query("SELECT event_id, at FROM case_events WHERE case_id = ? AND action = 'receive'", (case_id,))
    assert len(provisional) == 1 and provisional[0]["event_id"] == at_hub[0]["event_id"]
    window = hub.account("w_receive", "window", f"{HUB_ID}-{item['department_code']}")
    assert hub.api("POST", f"/api/v1/cases/{case_id}/actions", window, json={"action": "accept"}).status_code == 200
    net.sync_all()
    after = village.query("SELECT event_id, at FROM case_events WHERE case_id = ? AND action = 'receive'", (case_id,))
    assert len(after) == 1 and after[0]["at"] == at_hub[0]["at"]  # the hub's time stands
    assert village.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "ACCEPTED"
