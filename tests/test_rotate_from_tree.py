"""轮换密钥 from the hub's node tree, over a real network (hub, township, village on loopback).

The admin clicks 轮换密钥 for a village: the hub queues a hub-signed ``node.rotate_key``
downlink; the township relays it; the village, applying it, starts its own rotation (a second
click while it is under way changes nothing); the new key travels up as today, the hub
registers it, the village switches once its registry lists it, and every case queued before,
during and after reaches the hub. Only an admin may click, only for an active non-hub node,
and only the hub may order it.
"""

from __future__ import annotations

import re

from faults import city_item, new_case, outbox_states
from network_session import session_for

from shared.core.crypto import SigningKey
from sync import envelope, rotation
from sync.rotation import NEXT_KEY_FILE


def _signer(document_bytes: bytes) -> str:
    return envelope.from_bytes(document_bytes)["signatures"][0]["keyid"]


def _click_rotate(session, hub, node_id: str):
    page = session.get(hub.url + "/admin/nodes", timeout=10).text
    row = page.split(f'id="node-{node_id}"')[1].split("</tr>")[0]
    assert "轮换密钥" in row
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return session.post(f"{hub.url}/admin/nodes/{node_id}/rotate-key", data={"csrf_token": token}, timeout=10)


def test_admin_rotates_a_village_key_from_the_node_tree(build_network):
    net = build_network(villages=1)
    hub, village = net.hub, net.village()
    hub.account("admin", "admin")
    hub.account("sup", "supervisor")
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    old_kid = village.node.key.kid
    receipts = [new_case(village, agent, item)[0] for _ in range(2)]  # queued under the old key

    session = session_for(hub, "admin")
    response = _click_rotate(session, hub, village.node_id)
    assert response.status_code == 200 and "已向节点" in response.text and "轮换密钥指令" in response.text
    row = response.text.split(f'id="node-{village.node_id}"')[1].split("</tr>")[0]
    assert "1 把" in row and "未轮换" in row and "已发送轮换指令" in row
    _click_rotate(session, hub, village.node_id)  # a second click before the village hears of it
    assert hub.scalar("SELECT COUNT(*) FROM downlink WHERE dest = ?", (village.node_id,)) == 2

    # The township relays the commands; the village applies both: one rotation only.
    net.township.sync()
    village.sync()
    next_kid = SigningKey.load(village.data_dir / NEXT_KEY_FILE).kid
    assert next_kid != old_kid and village.node.key.kid == old_kid  # not switched before registration
    kinds = [r[0] for r in village.query("SELECT kind FROM outbox ORDER BY seq")]
    assert kinds.count("node.rotate_key") == 1
    receipts.append(new_case(village, agent, item)[0])  # still signed with the old key

    net.sync_all(rounds=3)
    assert village.node.key.kid == next_kid and not (village.data_dir / NEXT_KEY_FILE).exists()
    keys = {r["kid"]: r["retired_at"] for r in hub.query("SELECT kid, retired_at FROM node_keys WHERE node_id = ?",
                                                         (village.node_id,))}
    assert set(keys) == {old_kid, next_kid} and keys[next_kid] is None and keys[old_kid] is not None

    receipts.append(new_case(village, agent, item)[0])
    net.sync_all()
    seqs = {r["seq"]: _signer(r["document"]) for r in village.query("SELECT seq, document FROM outbox")}
    assert seqs[max(seqs)] == next_kid and set(seqs.values()) == {old_kid, next_kid}
    assert outbox_states(village) == dict.fromkeys(seqs, "acked")
    at_hub = {r[0] for r in hub.query("SELECT case_id FROM cases WHERE origin = ?", (village.node_id,))}
    assert at_hub == {r["case_id"] for r in receipts}
    assert hub.scalar("SELECT COUNT(*) FROM quarantine WHERE origin = ?", (village.node_id,)) == 0

    page = session.get(hub.url + "/admin/nodes", timeout=10).text
    row = page.split(f'id="node-{village.node_id}"')[1].split("</tr>")[0]
    assert "2 把" in row and "最近轮换" in row and "已发送轮换指令" not in row
    assert "暂不支持轮换" in page.split(f'id="node-{hub.node_id}"')[1].split("</tr>")[0]

    # Supervisors see the tree but may not rotate; the hub itself and unknown nodes are refused.
    sup = session_for(hub, "sup")
    token = re.search(r'name="csrf_token" value="([^"]+)"', sup.get(hub.url + "/admin/nodes", timeout=10).text).group(1)
    assert sup.post(f"{hub.url}/admin/nodes/{village.node_id}/rotate-key", data={"csrf_token": token},
                    timeout=10).status_code == 403
    for target in (hub.node_id, "130926100299"):
        before = hub.scalar("SELECT COUNT(*) FROM downlink")
        answer = _click_rotate_raw(session, hub, target)
        assert "不能远程轮换密钥" in answer.text and hub.scalar("SELECT COUNT(*) FROM downlink") == before


def _click_rotate_raw(session, hub, node_id: str):
    page = session.get(hub.url + "/admin/nodes", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return session.post(f"{hub.url}/admin/nodes/{node_id}/rotate-key", data={"csrf_token": token}, timeout=10)


def test_only_the_hub_may_order_a_rotation(build_network):
    net = build_network(villages=1)
    village = net.village()
    forged = {"issuer": net.township.node_id, "dest": village.node_id, "kind": rotation.KIND, "body": {}}
    assert rotation.apply_command(village.conn, village.node, forged) is None
    assert not (village.data_dir / NEXT_KEY_FILE).exists()
    other = {"issuer": net.hub.node_id, "dest": "130926100299", "kind": rotation.KIND, "body": {}}
    assert rotation.apply_command(village.conn, village.node, other) is None
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'node.rotate_key'") == 0
