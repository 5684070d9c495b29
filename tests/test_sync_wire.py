"""The compact sync wire (issue 12): batched files, negotiated compression, acknowledgements
that touch only what they newly cover. Real nodes over real HTTP; the older routes and plain
bodies keep working for nodes not yet upgraded."""

from __future__ import annotations

import gzip
import os
from http.client import HTTPMessage

import pytest
import requests
from faults import WireSession, city_item, client_with, material_files, outbox_states, sha256
from network import catalog, create_case, pick_item

from shared.core import canonical
from sync import client as client_module
from sync import envelope, outbox, wire
from sync.blobs import CHUNK_BYTES
from sync.node_sync import SyncState, drain, run_round
from sync.nodeauth import sign_request
from sync.transport import Response


def _case_with_files(village, big_size: int = 0, tag: str = "w") -> tuple[list, bytes | None]:
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    files = material_files(item, tag)
    big = None
    if big_size:
        big = b"%PDF-1.4 " + os.urandom(big_size - 9)
        files[0] = (files[0][0], "scan.pdf", big)
    create_case(village, agent, item, files)
    return files, big


def _round(handle, session, state: SyncState | None = None) -> dict:
    return run_round(handle.conn, handle.node, state or SyncState(), client=client_with(handle, session), force=True)


class DroppingSession(WireSession):
    """Drops the link instead of sending the batch request after ``drop_after`` of them went through."""

    def __init__(self, drop_after: int):
        super().__init__()
        self.drop_after, self.batches = drop_after, 0

    def request(self, method, url, *args, **kwargs):
        if url.endswith("/sync/v1/blobs/batch"):
            if self.batches >= self.drop_after:
                raise ConnectionError("link dropped by the test")
            self.batches += 1
        return super().request(method, url, *args, **kwargs)


def test_many_files_go_in_one_request_and_reach_the_hub(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    files, _ = _case_with_files(village)
    assert len(files) >= 2
    session = WireSession()
    assert "error" not in _round(village, session)
    batches = [r for r in session.requests if r[1].endswith("/sync/v1/blobs/batch")]
    assert len(batches) == 1 and session.puts == 0  # every file in one request, no single-file PUT
    assert all(township.node.blobs.read(sha256(d)) == d for _, _, d in files)
    net.sync_all()
    assert all(hub.node.blobs.read(sha256(d)) == d for _, _, d in files)
    assert outbox_states(village) == {1: "acked"}


def test_an_interrupted_batch_resumes_at_the_offset_it_reached(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    monkeypatch.setattr(client_module, "BLOB_BATCH_BYTES", CHUNK_BYTES)  # one chunk of data per request
    _, big = _case_with_files(village, 3 * CHUNK_BYTES + 500)
    sha = sha256(big)
    assert "error" in _round(village, DroppingSession(drop_after=2))
    held = township.node.blobs.received(sha)
    assert 0 < held < len(big) and not township.node.blobs.has(sha)
    resumed, state = WireSession(), SyncState()
    assert "error" not in _round(village, resumed, state)
    sent = sum(n for method, url, n in resumed.requests if url.endswith("/sync/v1/blobs/batch"))
    assert sent < len(big) - held + 4096  # only the rest went (plus frame headers and small files)
    assert township.node.blobs.read(sha) == big
    again = WireSession()
    _round(village, again, state)  # nothing is sent twice, nor asked about again
    assert not [r for r in again.requests if "/blobs/" in r[1]]
    fresh = WireSession()
    _round(village, fresh)  # after a restart: asked about once, not sent
    assert [r[1].rsplit("/", 2)[-2:] for r in fresh.requests if "/blobs/" in r[1]] == [["blobs", "status"]]


def test_a_forged_frame_is_refused_for_its_file_only(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    files, _ = _case_with_files(village)
    client = client_with(village, WireSession())
    (_, _, good), (_, _, other) = files[0], files[1]
    forged = bytes([other[0] ^ 1]) + other[1:]
    answer = client.send_blob_batch([(sha256(good), good, 0), (sha256(other), forged, 0)])[0]
    assert answer["complete"] == [sha256(good)]
    assert sha256(other) in answer["rejected"]
    assert township.node.blobs.has(sha256(good)) and not township.node.blobs.has(sha256(other))
    assert township.node.blobs.received(sha256(other)) == 0  # discarded: the sender starts again


def test_a_replayed_batch_writes_nothing(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    files, _ = _case_with_files(village)
    (_, _, data) = files[0]
    body = wire.BLOB_BATCH_MAGIC + wire.blob_frame(sha256(data), len(data), 0, data)
    node = village.node
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/blobs/batch", body, 1)
    headers["Content-Type"] = wire.BLOB_BATCH_TYPE
    client_with(village, WireSession()).blob_status([sha256(data)])  # any call: the nonce moves past 1
    refused = requests.post(node.config["PARENT_URL"] + "/sync/v1/blobs/batch", data=body, headers=headers)
    assert refused.status_code == 401
    assert township.node.blobs.received(sha256(data)) == 0


def test_requests_are_compressed_once_the_parent_says_it_reads_gzip(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(5):
        create_case(village, agent, item)
    client_module._REQUEST_CODING.clear()
    client = client_with(village, WireSession())
    client.pull({}, {})  # an old-format (plain) request: the new parent answers and says what it reads
    assert client_module._REQUEST_CODING[client.base_url] in wire.CODINGS
    recorded = []

    class Recording(WireSession):
        def request(self, method, url, *args, data=None, headers=None, **kwargs):
            recorded.append((url, (headers or {}).get("Content-Encoding"), data))
            return super().request(method, url, *args, data=data, headers=headers, **kwargs)

    assert "error" not in _round(village, Recording())
    push = [r for r in recorded if r[0].endswith("/sync/v1/push")]
    assert push and push[0][1] in wire.CODINGS
    assert canonical.loads(wire.decode(push[0][2], push[0][1], 1 << 24))["envelopes"]
    assert township.scalar("SELECT COUNT(*) FROM custody") == 5


def test_a_plain_client_of_an_older_version_still_works_with_a_new_parent(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    files, _ = _case_with_files(village)
    client_module._REQUEST_CODING.clear()
    client = client_with(village, WireSession(batch_route=False))
    client._call = _plain(client._call)  # never compresses, never uses the batch route: the old client
    answer = client.push([envelope.from_bytes(r["document"]) for r in outbox.to_send(village.conn, 10)])
    assert answer["receipt"] is not None
    for _, _, data in files:
        assert client.send_blob(sha256(data), data, 0)["complete"]
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1


def _plain(call):
    def plain(method, path, body, content_type="application/json", compress=True):
        return call(method, path, body, content_type, compress=False)
    return plain


def test_the_signature_covers_the_compressed_bytes(build_network):
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    plain = canonical.dumps({"cursors": {}, "metadata": {}, "pad": "x" * 2000})
    packed = gzip.compress(plain)
    url = node.config["PARENT_URL"] + "/sync/v1/pull"
    # Signed over the decoded body but sent compressed: refused.
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull", plain,
                           node.nonces.next())
    headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert requests.post(url, data=packed, headers=headers).status_code == 401
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull", packed,
                           node.nonces.next())
    headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    answer = requests.post(url, data=packed, headers=headers)
    assert answer.status_code == 200 and "server" in answer.json()


@pytest.mark.parametrize("coding, body, status", [
    ("br", b"anything", 415),
    ("gzip", b"not gzip at all", 400),
    ("gzip", gzip.compress(b"{" + b" " * (2 * 1024 * 1024) + b"}"), 413),  # a bomb: 2 MB from ~2 KB
])
def test_bad_compressed_bodies_get_a_clear_error(build_network, coding, body, status):
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull", body,
                           node.nonces.next())
    headers.update({"Content-Type": "application/json", "Content-Encoding": coding})
    answer = requests.post(node.config["PARENT_URL"] + "/sync/v1/pull", data=body, headers=headers)
    assert answer.status_code == status and answer.json()["error"]["code"]


def test_a_parent_that_refuses_compressed_bodies_gets_plain_ones(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))

    class OldParent(WireSession):
        def request(self, method, url, *args, headers=None, **kwargs):
            if (headers or {}).get("Content-Encoding"):
                return Response(400, "Bad Request", HTTPMessage(), b'{"error": "malformed"}', 0, 22)
            return super().request(method, url, *args, headers=headers, **kwargs)

    client = client_with(village, OldParent())
    client_module._REQUEST_CODING[client.base_url] = "gzip"
    assert "error" not in _round(village, OldParent())
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1


def test_an_acknowledgement_reads_only_the_range_it_newly_covers(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(60):
        create_case(village, agent, item)
    net.sync_all()
    assert set(outbox_states(village).values()) == {"acked"}
    conn = village.conn
    steps = []

    def count_steps():
        steps.append(1)
        return 0

    create_case(village, agent, item)
    seq = conn.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
    eid = conn.execute("SELECT envelope_id FROM outbox WHERE seq = ?", (seq,)).fetchone()[0]
    conn.set_progress_handler(count_steps, 10)
    try:
        after = outbox.acked_through(conn)
        outbox.mark_acked(conn, seq, eid, village.node.now())
        village.node.kind.on_acked(conn, village.node, village.node_id, seq, after)
    finally:
        conn.set_progress_handler(None, 10)
    conn.commit()
    # ~60 earlier cases and envelopes: reading them all again costs thousands of VM steps.
    assert len(steps) < 60, len(steps)
    assert conn.execute("SELECT COUNT(*) FROM cases WHERE sync_state != 'acked'").fetchone()[0] == 0


def _forged(document: dict) -> dict:
    """The same payload (so the same envelope id) with its signature bytes altered."""
    sig = document["signatures"][0]["sig"]
    bad = ("B" if sig[0] != "B" else "C") + sig[1:]
    return {**document, "signatures": [{**document["signatures"][0], "sig": bad}]}


def _outbox_document(village, seq: int) -> dict:
    return envelope.from_bytes(village.conn.execute("SELECT document FROM outbox WHERE seq = ?", (seq,)).fetchone()[0])


def test_a_township_takes_a_villages_own_envelopes_on_its_request_signature(build_network):
    """Custody does not verify the caller's own envelopes again; the hub still does, end to end."""
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    forged = _forged(_outbox_document(village, 1))
    answer = client_with(village, WireSession()).push([forged])
    assert [r["status"] for r in answer["results"]] == ["custody"]  # held on the request's signature
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1
    township.sync()  # the hub verifies it and refuses it; the township stops forwarding it
    assert hub.scalar("SELECT COUNT(*) FROM inbox") == 0
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0
    net.sync_all()  # the village still holds the real one (its outbox row was never in custody)
    assert hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1


def test_an_envelope_of_another_node_is_still_verified_in_full(build_network):
    net = build_network(villages=2)
    first, second = net.village(0), net.village(1)
    agent = second.account("agent", "agent")
    create_case(second, agent, city_item(second, agent))
    forged = _forged(_outbox_document(second, 1))
    answer = client_with(first, WireSession()).push([forged])
    assert answer["results"][0]["status"] == "rejected" and answer["results"][0]["reason"] == "bad_signature"
    assert net.township.scalar("SELECT COUNT(*) FROM custody") == 0


def test_a_township_verifies_a_delegated_case_before_it_decides_it(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = pick_item(catalog(village, agent), "township")
    case_id = create_case(village, agent, item)["case_id"]
    client_with(village, WireSession()).push([_forged(_outbox_document(village, 1))])
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1
    assert township.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 0  # not taken up
    assert township.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'relay.not_followed'") == 1


def test_a_township_verifies_the_delegated_cases_of_a_push_by_the_hubs_rule_one_check_per_run(build_network,
                                                                                              monkeypatch):
    """Four delegated cases in one push: one Ed25519 check (the run's last envelope covers the
    others through their links, as at the hub); each is still refused alone when it is forged."""
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = pick_item(catalog(village, agent), "township")
    case_ids = [create_case(village, agent, item)["case_id"] for _ in range(4)]
    checks = []
    real = envelope.verify
    monkeypatch.setattr(envelope, "verify", lambda *a: checks.append(a) or real(*a))
    client_with(village, WireSession()).push([_outbox_document(village, s) for s in (1, 2, 3, 4)])
    monkeypatch.undo()
    assert len(checks) == 1
    assert township.scalar(f"SELECT COUNT(*) FROM cases WHERE case_id IN ({','.join('?' * 4)}) AND status != 'SUBMITTED'",
                           tuple(case_ids)) == 4  # each received (接件) by the station


def test_compact_results_give_routine_outcomes_as_ranges_and_list_the_rest():
    results = [{"origin": "a", "seq": s, "status": "accepted", "envelope_id": f"e{s}"} for s in (1, 2, 3, 5)]
    results += [{"origin": "a", "seq": 6, "status": "accepted", "missing_blobs": ["f"]},
                {"origin": "b", "seq": 9, "status": "duplicate"},
                {"envelope_id": "x", "status": "quarantined", "reason": "bad_signature"}]
    compact = wire.compact_results(results)
    assert compact["ok"] == {"a": [[1, 3], [5, 5]], "b": [[9, 9]]}
    assert [r.get("seq") for r in compact["results"]] == [6, None]


def test_a_push_asking_for_a_compact_answer_gets_ranges_and_exceptions(build_network):
    net = build_network(villages=2)
    first, second = net.village(0), net.village(1)
    for village in (first, second):
        agent = village.account("agent", "agent")
        for _ in range(3):
            create_case(village, agent, city_item(village, agent))
    documents = [_outbox_document(first, s) for s in (1, 2, 3)] + [_forged(_outbox_document(second, 1))]
    full = client_with(first, WireSession()).push(documents[:1])
    assert "ok" not in full and len(full["results"]) == 1  # an older client's answer is unchanged
    answer = client_with(first, WireSession()).push(documents, compact=True)
    assert answer["ok"] == {first.node_id: [[1, 3]]}
    assert [r["reason"] for r in answer["results"]] == ["bad_signature"]


def test_a_backlog_drains_back_to_back_and_an_idle_node_stops(build_network, monkeypatch):
    net = build_network(villages=1)
    village = net.village()
    monkeypatch.setitem(village.node.config, "SYNC_BATCH", 2)
    agent = village.account("agent", "agent")
    for _ in range(5):
        create_case(village, agent, city_item(village, agent))
    totals = drain(village.conn, village.node, SyncState(), force=True)
    assert totals["pushed"] == 5  # rounds of 2, 2, 1: the short one ends the drain
    assert outbox.counts(village.conn)["pending"] == 0
    assert drain(village.conn, village.node, SyncState(), force=True)["pushed"] == 0


def test_a_township_starts_forwarding_as_soon_as_a_village_pushes(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    kicks = []
    township.app.extensions["liandong_sync_kick"] = lambda: kicks.append(1)
    agent = village.account("agent", "agent")
    files = material_files(city_item(village, agent), "kick")
    create_case(village, agent, city_item(village, agent), files)
    _round(village, WireSession())
    assert len(kicks) == 2  # the push, then the batch of files
