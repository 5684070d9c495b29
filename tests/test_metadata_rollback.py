"""Downlink trust (issue 3 item 4): signed, versioned hub metadata; no rollback, no forgery.

A pull answer (over HTTP or in a USB answer bundle) offers registry/catalog documents; the
node keeps the newest hub-signed version and refuses an older one, the same version with other
content, and anything not signed by a certified hub key, while it keeps what it had.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from faults import city_item

from city_hub import registry
from shared.core.crypto import SignatureError, SigningKey
from shared.core.storage import write_transaction
from sync import envelope, node_sync
from sync.trust import RollbackError, accept_metadata, metadata_body


def _hub_documents(hub, role: str) -> dict[int, dict]:
    return {r["version"]: envelope.from_bytes(r["document"]) for r in hub.query(
        "SELECT version, document FROM metadata WHERE role = ?", (role,))}


def _trusted(node_handle, role: str) -> tuple[int, str]:
    row = node_handle.query("SELECT version, document FROM trusted_metadata WHERE role = ?", (role,))[0]
    return row["version"], envelope.document_id(envelope.from_bytes(row["document"]))


def _offer(node_handle, *documents) -> dict:
    """A pull answer carrying ``documents``, applied as the node applies its parent's answer."""
    return node_sync.apply_pull_answer(node_handle.conn, node_handle.node, {"metadata": list(documents)})


def _sign_metadata(key: SigningKey, hub_id: str, role: str, version: int, content: dict, now, expires=None) -> dict:
    body = metadata_body(role, version, hub_id, now, expires or now + timedelta(days=30), content)
    return envelope.sign(key, envelope.METADATA, body)


@pytest.fixture(scope="module")
def network_with_history(build_network):
    """A village holding registry version > 1 and catalog version 2 (at least: one test publishes a
    newer catalog). One network for the module: every test offers documents the nodes must refuse
    and reads what they hold against what they held just before, so none depends on another."""
    net = build_network(villages=2)
    hub = net.hub
    with write_transaction(hub.conn):
        _, content = registry.latest(hub.conn, "catalog")
        registry.publish(hub.conn, hub.node, "catalog", envelope.peek(content)["content"])
    net.sync_all()
    village = net.village(0)
    assert _trusted(village, "catalog")[0] == 2
    assert _trusted(village, "registry")[0] > 1
    return net, village


@pytest.mark.parametrize("role", ["registry", "catalog"])
def test_an_older_document_is_refused_and_the_newer_kept(network_with_history, role):
    net, village = network_with_history
    current = _trusted(village, role)
    oldest = _hub_documents(net.hub, role)[1]
    assert _offer(village, oldest)["metadata"] == 0
    assert _trusted(village, role) == current
    with pytest.raises(RollbackError), write_transaction(village.conn):
        accept_metadata(village.conn, oldest, role, village.node.trust(village.conn), village.node.now())
    # The same holds at the township.
    township_current = _trusted(net.township, role)
    assert _offer(net.township, oldest)["metadata"] == 0
    assert _trusted(net.township, role) == township_current


def test_the_same_version_with_other_content_is_refused(network_with_history):
    net, village = network_with_history
    version, held = _trusted(village, "catalog")
    _, content = registry.latest(net.hub.conn, "catalog")
    items = envelope.peek(content)["content"]["items"]
    other = _sign_metadata(net.hub.node.key, net.hub.node_id, "catalog", version, {"items": items[:1]},
                           net.hub.node.now())
    assert _offer(village, other)["metadata"] == 0
    assert _trusted(village, "catalog") == (version, held)
    with pytest.raises(RollbackError), write_transaction(village.conn):
        accept_metadata(village.conn, other, "catalog", village.node.trust(village.conn), village.node.now())
    # The agent still sees the whole catalog.
    agent = village.account("agent", "agent")
    assert city_item(village, agent)
    response = village.api("GET", "/api/v1/catalog", agent).json()
    assert response["version"] == version and len(response["items"]) == len(items)


@pytest.mark.parametrize("signer", ["township", "village", "stranger"])
def test_metadata_signed_by_a_non_hub_key_is_refused(network_with_history, signer):
    net, village = network_with_history
    key = {"township": net.township.node.key, "village": village.node.key, "stranger": SigningKey.generate()}[signer]
    version, held = _trusted(village, "registry")
    forged = _sign_metadata(key, net.hub.node_id, "registry", version + 1, {"nodes": []}, net.hub.node.now())
    assert _offer(village, forged)["metadata"] == 0
    assert _trusted(village, "registry") == (version, held)
    with pytest.raises(SignatureError), write_transaction(village.conn):
        accept_metadata(village.conn, forged, "registry", village.node.trust(village.conn), village.node.now())
    # The village still knows every node (a forged empty registry would have cut it off).
    assert net.township.node_id in village.node.trust(village.conn).nodes


def test_a_newer_genuine_document_is_still_taken_after_refusals(network_with_history):
    net, village = network_with_history
    _offer(village, _hub_documents(net.hub, "catalog")[1])
    with write_transaction(net.hub.conn):
        _, content = registry.latest(net.hub.conn, "catalog")
        registry.publish(net.hub.conn, net.hub.node, "catalog", envelope.peek(content)["content"])
    net.sync_all()
    assert _trusted(village, "catalog")[0] == 3


def test_an_expired_document_is_not_installed(network_with_history):
    net, village = network_with_history
    version, held = _trusted(village, "catalog")
    _, content = registry.latest(net.hub.conn, "catalog")
    now = net.hub.node.now()
    expired = _sign_metadata(net.hub.node.key, net.hub.node_id, "catalog", version + 1,
                             envelope.peek(content)["content"], now - timedelta(days=40),
                             expires=now - timedelta(days=10))
    _offer(village, expired)
    assert _trusted(village, "catalog") == (version, held)
