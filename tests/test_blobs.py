"""Material files on the wire (issue 3 item 3): resumable, verified by hash, limited, acked last.

Blobs go village → township → hub in chunks of ``CHUNK_BYTES``; a sender asks what arrived
and sends only the rest; a blob counts only once its bytes hash to its name; the hub's
acknowledgement never covers an envelope whose files have not all arrived.
"""

from __future__ import annotations

import os

import pytest
from faults import WireSession, city_item, client_with, material_files, outbox_states, sha256
from network import create_case

from sync import envelope
from sync.blobs import CHUNK_BYTES
from sync.client import SyncUnavailable
from sync.node_sync import SyncState, run_round


def _case_with_big_file(village, size: int) -> tuple[dict, bytes]:
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    files = material_files(item, "blob")
    big = b"%PDF-1.4 " + os.urandom(size - 9)  # a PDF by its first bytes (materials are checked by content)
    files[0] = (files[0][0], "scan.pdf", big)
    return create_case(village, agent, item, files), big


def _round(handle, session) -> dict:
    return run_round(handle.conn, handle.node, SyncState(), client=client_with(handle, session), force=True)


def test_an_interrupted_blob_resumes_where_it_stopped(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    size = 4 * CHUNK_BYTES + 1000  # five chunks
    _, big = _case_with_big_file(village, size)
    sha = sha256(big)

    # The single-file route of an older parent (the batch route: tests/test_blob_batch.py).
    dropping = WireSession(drop_after_puts=2, batch_route=False)
    assert "error" in _round(village, dropping)  # the link dies after two chunks of the big file
    # (the small files may or may not have gone first: count only the big one from here on)
    assert township.node.blobs.received(sha) == 2 * CHUNK_BYTES
    assert not township.node.blobs.has(sha)
    have, complete = client_with(village, WireSession()).blob_status([sha])
    assert have == {sha: 2 * CHUNK_BYTES} and complete == set()

    counting = WireSession(batch_route=False)
    assert "error" not in _round(village, counting)
    big_puts = [(url, n) for method, url, n in counting.requests if method == "PUT" and sha in url]
    assert [n for _, n in big_puts] == [CHUNK_BYTES, CHUNK_BYTES, 1000]  # only the rest, once
    assert "offset=524288" in big_puts[0][0]
    assert township.node.blobs.has(sha) and township.node.blobs.read(sha) == big

    # Nothing is sent twice on the next round, and the hub gets the file whole.
    again = WireSession(batch_route=False)
    _round(village, again)
    assert again.puts == 0
    net.township.sync()
    assert net.hub.node.blobs.read(sha) == big
    net.sync_all()
    assert outbox_states(village) == {1: "acked"}


def test_a_blob_whose_bytes_do_not_match_its_hash_is_refused_and_does_not_count(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    _, big = _case_with_big_file(village, CHUNK_BYTES + 10)
    sha = sha256(big)
    village.sync()  # custody and the files at the township
    forged = bytearray(big)
    forged[-1] ^= 0xFF
    client = client_with(township, WireSession())
    client.push([envelope.from_bytes(r["document"]) for r in township.query("SELECT document FROM custody")])
    with pytest.raises(SyncUnavailable) as refused:
        client.send_blob(sha, bytes(forged), 0)
    assert "HTTP 409" in str(refused.value) and "blob_rejected" in str(refused.value)
    hub = net.hub
    assert not hub.node.blobs.has(sha)
    assert hub.node.blobs.received(sha) == 0  # the bad bytes were discarded: the sender starts again
    assert hub.scalar("SELECT COUNT(*) FROM blobs WHERE sha256 = ?", (sha,)) == 0
    assert hub.scalar("SELECT blobs_pending FROM inbox WHERE origin = ? AND seq = 1", (village.node_id,)) >= 1
    assert hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) is None
    # The real bytes then count.
    net.sync_all()
    assert hub.node.blobs.read(sha) == big
    assert outbox_states(village) == {1: "acked"}


def test_the_hub_acknowledges_an_envelope_only_once_its_files_arrived(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    files = material_files(item, "ack")
    create_case(village, agent, item, files)  # seq 1, with files
    create_case(village, agent, item, [])  # seq 2, without
    village.sync()

    client = client_with(township, WireSession())
    answer = client.push([envelope.from_bytes(r["document"]) for r in township.query(
        "SELECT document FROM custody ORDER BY seq")])
    by_seq = {r["seq"]: r for r in answer["results"] if r.get("origin") == village.node_id}
    assert by_seq[1]["status"] == by_seq[2]["status"] == "accepted"
    assert sorted(by_seq[1]["missing_blobs"]) == sorted(sha256(d) for _, _, d in files)
    assert hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) is None
    assert [a for a in answer["acks"] if a] == []  # no acknowledgement yet: seq 1 waits for its files

    last = None
    for i, (_, _, data) in enumerate(files):
        reply = client.send_blob(sha256(data), data, 0)
        acked = hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,))
        if i < len(files) - 1:
            assert acked is None  # still a file missing
        last = reply
    assert hub.scalar("SELECT acked_seq FROM origin_heads WHERE origin = ?", (village.node_id,)) == 2
    acks = [envelope.peek(a) for a in last["acks"]]
    assert [(a["origin"], a["acked_seq"]) for a in acks] == [(village.node_id, 2)]


def test_an_oversized_material_file_is_refused_with_a_clear_message(build_network):
    net = build_network(villages=1)
    village = net.village()
    village.node.config["MAX_ATTACHMENT_BYTES"] = 1024 * 1024
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    files = material_files(item, "big")
    files[0] = (files[0][0], "huge.pdf", os.urandom(1024 * 1024 + 1))
    from network import case_payload

    response = village.api("POST", "/api/v1/cases", agent, json=case_payload(item, files))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "materials[0]"
    assert "不能超过 1 MB" in error["message"]
    assert village.scalar("SELECT COUNT(*) FROM cases") == 0
    assert village.scalar("SELECT COUNT(*) FROM outbox") == 0


def test_an_oversized_blob_is_refused_by_the_receiver(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    township.node.config["MAX_ATTACHMENT_BYTES"] = 1000
    data = os.urandom(1001)
    with pytest.raises(SyncUnavailable) as refused:
        client_with(village, WireSession()).send_blob(sha256(data), data, 0)
    assert "HTTP 409" in str(refused.value) and "exceeds the limit of 1000" in str(refused.value)
    assert township.node.blobs.received(sha256(data)) == 0


# --------------------------------------------------------------- crash windows
#
# The disk state a SIGKILL leaves at two points of receiving a blob, reproduced exactly;
# the network must then finish the transfer by itself.


def _hub_waits_for(net, village) -> int:
    return net.hub.scalar("SELECT COUNT(*) FROM inbox_blobs WHERE origin = ?", (village.node_id,))


def test_a_kill_after_the_last_chunk_before_promotion_heals(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    _, big = _case_with_big_file(village, 2 * CHUNK_BYTES)
    sha = sha256(big)
    # The township's process wrote and fsynced the last chunk, then died before hashing/renaming.
    partial = township.data_dir / "blobs" / "partial" / sha
    partial.write_bytes(big)
    for _ in range(3):
        net.sync_all()
    assert township.node.blobs.has(sha)
    assert net.hub.node.blobs.read(sha) == big
    assert outbox_states(village) == {1: "acked"}


def test_a_kill_after_promotion_before_the_hub_records_it_heals(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    _, big = _case_with_big_file(village, CHUNK_BYTES + 5)
    village.sync()
    client_with(township, WireSession()).push(
        [envelope.from_bytes(r["document"]) for r in township.query("SELECT document FROM custody")])
    assert _hub_waits_for(net, village) > 0
    # The hub's process renamed the verified file into place, then died before blob_complete committed.
    net.hub.node.blobs.put(big)
    for _ in range(3):
        net.sync_all()
    assert _hub_waits_for(net, village) == 0
    assert outbox_states(village) == {1: "acked"}
