"""Hub ingest over HTTP: idempotency, signatures, request nonces, forks and ordering.

Envelopes are real ones, made by a village's API and read from its outbox; they are pushed to
the hub's ``/sync/v1/push`` by the township (as relays do) with node-signed requests.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests
from network import HUB_ID, catalog, create_case, pick_item

from shared.core import canonical
from shared.core.crypto import SigningKey
from sync import envelope
from sync.client import ParentClient, SyncUnavailable
from sync.nodeauth import sign_request


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=4)


@pytest.fixture(scope="module")
def item(net):
    village = net.village(0)
    return pick_item(catalog(village, village.account("agent", "agent", village.node_id)), "city")


def new_envelope(village, item) -> tuple[dict, str]:
    """A fresh case at ``village``: its signed outbox envelope and the case id."""
    token = village.account("agent", "agent", village.node_id)
    receipt = create_case(village, token, item, [])  # no files: the ack does not wait for any
    row = village.query("SELECT document FROM outbox WHERE case_id = ?", (receipt["case_id"],))[0]
    return envelope.from_bytes(row["document"]), receipt["case_id"]


def relay(net) -> ParentClient:
    """The township's node-signed client towards the hub."""
    return net.township.client_to_parent()


def hub_cases(net, case_id: str) -> int:
    return net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,))


def acked_seq(answer: dict, origin: str) -> int:
    return max([envelope.peek(a)["acked_seq"] for a in answer["acks"] if a and envelope.peek(a)["origin"] == origin],
               default=0)


def test_the_same_envelope_twice_is_ingested_once_with_the_same_ack(net, item):
    village = net.village(0)
    document, case_id = new_envelope(village, item)
    first = relay(net).push([document])
    second = relay(net).push([document])
    assert first["results"][0]["status"] == "accepted"
    assert second["results"][0]["status"] == "duplicate"
    assert first["acks"] == second["acks"]
    assert acked_seq(second, village.node_id) == 1
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1
    assert hub_cases(net, case_id) == 1
    assert net.hub.scalar("SELECT COUNT(*) FROM case_events WHERE case_id = ? AND action = 'submit'",
                          (case_id,)) == 1


def test_an_envelope_with_one_byte_changed_is_quarantined_and_creates_nothing(net, item):
    village = net.village(0)
    document, case_id = new_envelope(village, item)
    payload = base64.b64decode(document["payload"])
    position = payload.index(case_id.encode())
    flipped = b"0" if payload[position:position + 1] != b"0" else b"1"
    tampered_payload = payload[:position] + flipped + payload[position + 1:]
    assert len(tampered_payload) == len(payload) and tampered_payload != payload
    tampered = dict(document, payload=base64.b64encode(tampered_payload).decode("ascii"))
    tampered_case_id = json.loads(tampered_payload)["body"]["case_id"]

    answer = relay(net).push([tampered])
    assert answer["results"][0]["status"] == "quarantined"
    assert answer["results"][0]["reason"] == "bad_signature"
    reasons = [r["reason"] for r in net.hub.query(
        "SELECT reason FROM quarantine WHERE envelope_id = ?", (envelope.document_id(tampered),))]
    assert reasons == ["bad_signature"]
    assert hub_cases(net, case_id) == 0 and hub_cases(net, tampered_case_id) == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE envelope_id = ?", (envelope.document_id(tampered),)) == 0

    # The genuine envelope still goes in: the forgery did not poison the chain.
    assert relay(net).push([document])["results"][0]["status"] == "accepted"
    assert hub_cases(net, case_id) == 1


def test_an_envelope_signed_by_a_key_never_enrolled_is_refused(net, item):
    village = net.village(0)
    genuine, case_id = new_envelope(village, item)
    impostor = SigningKey.generate()
    forged = envelope.sign(impostor, envelope.ENVELOPE, envelope.peek(genuine))
    answer = relay(net).push([forged])
    assert answer["results"][0]["status"] == "quarantined"
    assert answer["results"][0]["reason"] == "bad_signature"
    assert hub_cases(net, case_id) == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE envelope_id = ?", (envelope.document_id(forged),)) == 0


def test_requests_signed_by_an_unknown_key_or_with_a_replayed_nonce_get_401(net):
    township, hub = net.township, net.hub
    body = canonical.dumps({"cursors": {}, "metadata": {}})
    nonce = township.node.nonces.next()
    headers = sign_request(township.node.key, township.node_id, HUB_ID, "POST", "/sync/v1/pull", body, nonce)
    headers["Content-Type"] = "application/json"
    first = requests.post(hub.url + "/sync/v1/pull", data=body, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    replay = requests.post(hub.url + "/sync/v1/pull", data=body, headers=headers, timeout=10)
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "node_auth"
    older = sign_request(township.node.key, township.node_id, HUB_ID, "POST", "/sync/v1/pull", body, nonce - 1)
    assert requests.post(hub.url + "/sync/v1/pull", data=body, headers=older, timeout=10).status_code == 401

    stranger = SigningKey.generate()
    forged = sign_request(stranger, township.node_id, HUB_ID, "POST", "/sync/v1/pull", body,
                          township.node.nonces.next())
    refused = requests.post(hub.url + "/sync/v1/pull", data=body, headers=forged, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "node_auth"

    # A request signed for a township cannot be replayed to the hub (the receiver is signed).
    for_township = sign_request(township.node.key, township.node_id, "130926101", "POST", "/sync/v1/pull", body,
                                township.node.nonces.next())
    assert requests.post(hub.url + "/sync/v1/pull", data=body, headers=for_township, timeout=10).status_code == 401


def test_envelopes_out_of_order_are_held_until_the_gap_fills(net, item):
    village = net.village(1)
    (one, c1), (two, c2), (three, c3) = (new_envelope(village, item) for _ in range(3))
    assert relay(net).push([one])["results"][0]["status"] == "accepted"
    held = relay(net).push([three])
    assert held["results"][0]["status"] == "held"
    assert held["results"][0]["expected_seq"] == 2
    assert acked_seq(held, village.node_id) == 1
    assert hub_cases(net, c3) == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM held WHERE origin = ?", (village.node_id,)) == 1

    filled = relay(net).push([two])
    assert filled["results"][0]["status"] == "accepted"
    assert acked_seq(filled, village.node_id) == 3
    assert net.hub.scalar("SELECT COUNT(*) FROM held WHERE origin = ?", (village.node_id,)) == 0
    assert [r["seq"] for r in net.hub.query("SELECT seq FROM inbox WHERE origin = ? ORDER BY seq",
                                            (village.node_id,))] == [1, 2, 3]
    assert hub_cases(net, c2) == 1 and hub_cases(net, c3) == 1


def test_a_fork_quarantines_and_suspends_the_node(net, item):
    village, hub = net.village(2), net.hub
    genuine, _ = new_envelope(village, item)
    assert relay(net).push([genuine])["results"][0]["status"] == "accepted"

    body = envelope.peek(genuine)
    other = dict(body, body=dict(body["body"], agent="cloned-key"))
    fork = envelope.sign(village.node.key, envelope.ENVELOPE, other)  # the real village key
    assert envelope.document_id(fork) != envelope.document_id(genuine)
    answer = relay(net).push([fork])
    assert answer["results"][0]["status"] == "quarantined"
    assert answer["results"][0]["reason"] == "fork"
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "suspended"
    assert hub.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'node.suspended' AND target = ?",
                      (village.node_id,)) == 1
    assert hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1



def fork_village(net, village, item) -> None:
    """Get one genuine envelope of ``village`` in, then a fork of it signed by the real key."""
    genuine, _ = new_envelope(village, item)
    assert relay(net).push([genuine])["results"][0]["status"] == "accepted"
    body = envelope.peek(genuine)
    fork = envelope.sign(village.node.key, envelope.ENVELOPE, dict(body, body=dict(body["body"], agent="x")))
    assert relay(net).push([fork])["results"][0]["reason"] == "fork"


def test_nothing_more_from_a_suspended_node_is_applied(net, item):
    village, hub = net.village(3), net.hub
    fork_village(net, village, item)
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "suspended"
    later, later_case = new_envelope(village, item)
    result = relay(net).push([later])["results"][0]
    assert (result["status"], result.get("reason")) == ("quarantined", "suspended")
    assert hub_cases(net, later_case) == 0
    direct = ParentClient(hub.url, HUB_ID, village.node_id, village.node.key, village.node.nonces)
    with pytest.raises(SyncUnavailable, match="401"):
        direct.pull({}, {})
