"""Enrolment over HTTP: single-use, expiring, code-bound tokens, proof of possession, pinned root."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from network import HUB_ID, Network

from city_hub.enrolment_service import anchor_matches_token, proof_of_possession
from provisioning import nodes
from provisioning.nodes import ProvisioningError
from shared.core import canonical, storage
from shared.core.crypto import SigningKey
from shared.services.accounts import token_hash
from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(township=False)


def post_enrol(hub, document: dict) -> requests.Response:
    return requests.post(hub.url + "/enrol/v1", data=canonical.dumps(document),
                         headers={"Content-Type": "application/json"}, timeout=10)


def registered(net, node_id: str) -> int:
    return net.hub.scalar("SELECT COUNT(*) FROM node_keys WHERE node_id = ?", (node_id,))


def test_enrolment_registers_the_key_and_the_node_pins_the_root(net, tmp_path):
    token = net.issue_token("130926101", "甲镇")
    info = nodes.enrol_node(tmp_path / "n", token, net.hub.url, "甲镇")
    assert info["node_id"] == "130926101" and info["tier"] == "township" and info["parent"] == HUB_ID
    assert net.hub.scalar("SELECT kid FROM node_keys WHERE node_id = '130926101'") == info["kid"]
    assert SigningKey.load(tmp_path / "n" / "keys" / "node.pem").kid == info["kid"]
    conn = nodes.open_db(tmp_path / "n")
    try:
        pinned = canonical.loads(conn.execute("SELECT document FROM trusted_metadata WHERE role = 'root'")
                                 .fetchone()["document"])
        roles = {r["role"] for r in conn.execute("SELECT role FROM trusted_metadata")}
    finally:
        conn.close()
    hub_root = canonical.loads(net.hub.scalar("SELECT value FROM node_meta WHERE key = 'root_anchor'"))
    assert pinned["kid"] == hub_root["kid"] and pinned["public_key"] == hub_root["public_key"]
    assert {"root", "registry", "catalog"} <= roles


def test_a_used_token_is_refused(net, tmp_path):
    token = net.issue_token("130926102", "乙镇")
    nodes.enrol_node(tmp_path / "first", token, net.hub.url, "乙镇")
    with pytest.raises(ProvisioningError, match="409.*注册令牌已被使用"):
        nodes.enrol_node(tmp_path / "second", token, net.hub.url, "乙镇")
    assert not (tmp_path / "second" / "config.py").exists()
    response = post_enrol(net.hub, proof_of_possession(SigningKey.generate(), "130926102", token))
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "token_refused", "message": "注册令牌已被使用"}
    assert registered(net, "130926102") == 1


def test_an_expired_token_is_refused(net):
    token = net.issue_token("130926103", "丙镇", ttl=timedelta(hours=1),
                            now=net.hub.node.now() - timedelta(hours=2))
    response = post_enrol(net.hub, proof_of_possession(SigningKey.generate(), "130926103", token))
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "token_refused", "message": "注册令牌已过期"}
    assert registered(net, "130926103") == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM nodes WHERE node_id = '130926103'") == 0


def test_a_token_for_another_node_code_is_refused_and_not_consumed(net, tmp_path):
    token = net.issue_token("130926104", "丁镇")
    response = post_enrol(net.hub, proof_of_possession(SigningKey.generate(), "130926105", token))
    assert response.status_code == 409
    assert response.json()["error"] == {"code": "token_refused", "message": "注册令牌不属于该节点编码"}
    assert registered(net, "130926105") == 0 and registered(net, "130926104") == 0
    nodes.enrol_node(tmp_path / "n", token, net.hub.url, "丁镇")  # the rightful node still can
    assert registered(net, "130926104") == 1


def test_a_bad_proof_of_possession_is_refused_and_the_token_kept(net, tmp_path):
    token = net.issue_token("130926106", "戊镇")
    holder, claimed = SigningKey.generate(), SigningKey.generate()
    # Signed by one key while claiming another: the requester does not hold the claimed key.
    forged = envelope.sign(holder, envelope.ENROL,
                           {"node_id": "130926106", "public_key": claimed.public_b64, "token": token})
    response = post_enrol(net.hub, forged)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_proof"
    # A genuine proof with its signature damaged.
    genuine = proof_of_possession(holder, "130926106", token)
    sig = genuine["signatures"][0]["sig"]
    genuine["signatures"][0]["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert post_enrol(net.hub, genuine).status_code == 400
    assert registered(net, "130926106") == 0
    nodes.enrol_node(tmp_path / "n", token, net.hub.url, "戊镇")
    assert registered(net, "130926106") == 1


def test_a_hub_whose_root_does_not_match_the_token_is_not_trusted(net, tmp_path):
    token = net.issue_token("130926107", "己镇")
    # An impostor hub (its own root key) that would accept the token.
    impostor = Network(tmp_path / "impostor").add_hub(HUB_ID, "冒充的中心")
    try:
        conn = nodes.open_db(impostor.data_dir, "hub")
        try:
            with storage.write_transaction(conn):
                conn.execute("INSERT INTO enrol_tokens(token_hash, node_id, tier, parent, name, expires_at, created_at)"
                             " VALUES (?, '130926107', 'township', ?, '己镇', '2999-01-01T00:00:00Z',"
                             " '2000-01-01T00:00:00Z')", (token_hash(token), HUB_ID))
        finally:
            conn.close()
        with pytest.raises(ProvisioningError, match="根密钥与令牌不符"):
            nodes.enrol_node(tmp_path / "n", token, impostor.url, "己镇")
        assert not (tmp_path / "n" / "config.py").exists()
        assert not (tmp_path / "n" / "keys").exists()
        impostor_anchor = canonical.loads(impostor.scalar("SELECT value FROM node_meta WHERE key = 'root_anchor'"))
    finally:
        impostor.close()
    real_anchor = canonical.loads(net.hub.scalar("SELECT value FROM node_meta WHERE key = 'root_anchor'"))
    assert anchor_matches_token(real_anchor, token)
    assert not anchor_matches_token(impostor_anchor, token)
    # The right kid with another public key (a kid that is not the key's hash) is refused too.
    assert not anchor_matches_token(dict(real_anchor, public_key=impostor_anchor["public_key"]), token)
    # The real hub still enrols the node.
    nodes.enrol_node(tmp_path / "real", token, net.hub.url, "己镇")
    assert registered(net, "130926107") == 1
