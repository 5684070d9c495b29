"""Key rotation with an overlap (issue 3 item 5): a village rotates and loses nothing queued.

``liandong node rotate-key`` queues a ``node.rotate_key`` envelope signed by the current key
with a proof by the new one; the hub registers the new key and publishes the registry; the
village switches only once the registry it trusts lists the new key. Envelopes signed by the
old key (queued before the switch) are still accepted everywhere.
"""

from __future__ import annotations

from faults import city_item, cli, new_case, outbox_states

from shared.core.crypto import SigningKey
from sync import envelope
from sync.node import NODE_KEY_FILE
from sync.rotation import NEXT_KEY_FILE, OLD_KEY_FILE


def _signer(document_bytes: bytes) -> str:
    return envelope.from_bytes(document_bytes)["signatures"][0]["keyid"]


def _hub_registry_keys(hub, node_id: str) -> dict[str, str | None]:
    return {r["kid"]: r["retired_at"] for r in hub.query(
        "SELECT kid, retired_at FROM node_keys WHERE node_id = ?", (node_id,))}


def test_rotation_switches_keys_and_loses_nothing_queued(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    old_kid = village.node.key.kid
    receipts = [new_case(village, agent, item)[0] for _ in range(2)]  # queued, signed by the old key

    output = cli("node", "rotate-key", "--data", village.data_dir).output
    new_kid = SigningKey.load(village.data_dir / NEXT_KEY_FILE).kid
    assert new_kid[:16] in output and new_kid != old_kid
    assert village.scalar("SELECT kind FROM outbox WHERE seq = 3") == "node.rotate_key"
    assert {_signer(r[0]) for r in village.query("SELECT document FROM outbox")} == {old_kid}

    # Up to the hub: the old-key envelopes and the rotation request.
    village.sync()
    net.township.sync()
    keys = _hub_registry_keys(net.hub, village.node_id)
    assert set(keys) == {old_kid, new_kid}
    assert keys[old_kid] is not None and keys[new_kid] is None  # old retired, still listed
    published = net.hub.node.trust(net.hub.conn).nodes[village.node_id].keys
    assert set(published) == {old_kid, new_kid}
    # The hub applies the rotation after acknowledging it: the township hears of it next round.
    net.township.sync()

    # Before the village hears of it, it still signs with the old key: such a case still counts.
    receipts.append(new_case(village, agent, item)[0])
    assert _signer(village.scalar("SELECT document FROM outbox WHERE seq = 4")) == old_kid

    village.sync()  # pushes seq 4 (old key) and pulls the registry listing the new key: switch
    assert SigningKey.load(village.data_dir / NODE_KEY_FILE).kid == new_kid
    assert SigningKey.load(village.data_dir / OLD_KEY_FILE).kid == old_kid
    assert not (village.data_dir / NEXT_KEY_FILE).exists()
    assert village.node.key.kid == new_kid

    receipts.append(new_case(village, agent, item)[0])
    assert _signer(village.scalar("SELECT document FROM outbox WHERE seq = 5")) == new_kid
    net.sync_all()

    inbox = {r["seq"]: _signer(r["document"]) for r in net.hub.query(
        "SELECT seq, document FROM inbox WHERE origin = ?", (village.node_id,))}
    assert inbox == {1: old_kid, 2: old_kid, 3: old_kid, 4: old_kid, 5: new_kid}
    assert net.hub.scalar("SELECT COUNT(*) FROM quarantine WHERE origin = ?", (village.node_id,)) == 0
    at_hub = {r[0] for r in net.hub.query("SELECT case_id FROM cases WHERE origin = ?", (village.node_id,))}
    assert at_hub == {r["case_id"] for r in receipts}
    assert outbox_states(village) == dict.fromkeys(range(1, 6), "acked")

    # The new key authenticates the village's requests too (a further round succeeds).
    assert "error" not in village.sync()


def test_rotation_requested_twice_keeps_one_next_key(build_network):
    net = build_network(villages=1)
    village = net.village()
    cli("node", "rotate-key", "--data", village.data_dir)
    first = SigningKey.load(village.data_dir / NEXT_KEY_FILE).kid
    cli("node", "rotate-key", "--data", village.data_dir)
    assert SigningKey.load(village.data_dir / NEXT_KEY_FILE).kid == first
    net.sync_all()
    assert village.node.key.kid == first
    assert net.hub.scalar("SELECT COUNT(*) FROM node_keys WHERE node_id = ?", (village.node_id,)) == 2
    assert outbox_states(village) == {1: "acked", 2: "acked"}


def test_a_kill_in_the_middle_of_the_key_switch_leaves_a_working_node(build_network):
    net = build_network(villages=1)
    village = net.village()
    cli("node", "rotate-key", "--data", village.data_dir)
    village.sync()
    net.township.sync()  # the hub registered the new key; the village will switch on its next pull
    new_kid = SigningKey.load(village.data_dir / NEXT_KEY_FILE).kid
    village.close()
    # The state a SIGKILL leaves between the two steps of rotation.finish_if_registered: the old
    # key copied aside, the switch (one atomic rename of the next key) not yet done.
    (village.data_dir / OLD_KEY_FILE).write_bytes((village.data_dir / NODE_KEY_FILE).read_bytes())
    assert (village.data_dir / NEXT_KEY_FILE).exists()

    village.app = None
    village.serve()  # the PC is switched on again
    agent = village.account("agent2", "agent")
    new_case(village, agent, city_item(village, agent))
    assert "error" not in village.sync()
    net.township.sync()
    village.sync()
    assert village.node.key.kid == new_kid
    assert outbox_states(village) == {1: "acked", 2: "acked"}
