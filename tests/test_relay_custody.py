"""A village keeps taking applications while its township is down; custody and catch-up."""

from __future__ import annotations

import pytest
from network import catalog, create_case, pick_item

from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def agent(net):
    village = net.village()
    return village.account("agent", "agent", village.node_id)


def outbox_states(village) -> list[str]:
    return [r["state"] for r in village.query("SELECT state FROM outbox ORDER BY seq")]


def test_village_queues_while_the_township_is_down_and_catches_up_once(net, agent):
    village, township, hub = net.village(), net.township, net.hub
    item = pick_item(catalog(village, agent), "city")

    township.stop()
    try:
        receipts = [create_case(village, agent, item) for _ in range(3)]  # 201 each, offline
        assert len({r["receipt_no"] for r in receipts}) == 3
        assert outbox_states(village) == ["pending"] * 3
        for _ in range(2):
            assert "error" in village.sync()  # connection refused: nothing moves, nothing is lost
        assert outbox_states(village) == ["pending"] * 3
        cases = village.api("GET", f"/api/v1/cases/{receipts[0]['case_id']}", agent).json()
        assert cases["sync_state"] == "pending"
    finally:
        township.start()

    # Back online. Offer the queue twice before the hub has anything: custody is idempotent.
    assert "error" not in village.sync()
    assert outbox_states(village) == ["custody"] * 3
    village.sync()
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE origin = ?", (village.node_id,)) == 3
    assert township.scalar("SELECT COUNT(DISTINCT envelope_id) FROM custody") == 3

    net.sync_all()
    assert outbox_states(village) == ["acked"] * 3
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0  # released once the hub acknowledged
    for r in receipts:
        assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (r["case_id"],)) == 1
    seqs = [row["seq"] for row in hub.query("SELECT seq FROM inbox WHERE origin = ? ORDER BY seq",
                                            (village.node_id,))]
    assert seqs == [1, 2, 3]
    assert hub.scalar("SELECT COUNT(*) FROM quarantine") == 0
    assert village.api("GET", f"/api/v1/cases/{receipts[2]['case_id']}", agent).json()["sync_state"] == "acked"

    # A late retry of envelopes the hub already holds: answered, not stored again, not re-sent.
    documents = [envelope.from_bytes(r["document"]) for r in village.query("SELECT document FROM outbox ORDER BY seq")]
    answer = village.client_to_parent().push(documents)
    assert [x["status"] for x in answer["results"]] == ["custody"] * 3
    assert envelope.peek(answer["receipt"])["holder"] == township.node_id
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0
    township.sync()
    assert hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 3


def test_township_refuses_envelopes_of_a_village_not_below_it(net, agent, build_network):
    # A village of another network (same codes, other keys) is unknown to this township.
    stranger = build_network(villages=1).village()
    token = stranger.account("agent", "agent", stranger.node_id)
    create_case(stranger, token, pick_item(catalog(stranger, token), "city"))
    document = envelope.from_bytes(stranger.scalar("SELECT document FROM outbox WHERE seq = 1"))
    before = net.township.scalar("SELECT COUNT(*) FROM custody")
    answer = net.village().client_to_parent().push([document])
    assert answer["results"][0]["status"] == "rejected"
    assert answer["results"][0]["reason"] == "bad_signature"
    assert answer["receipt"] is None
    assert net.township.scalar("SELECT COUNT(*) FROM custody") == before
