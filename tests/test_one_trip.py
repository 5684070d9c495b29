"""One case alone, in as few requests as the guarantees allow (issue 12, the "single case" row):
a push carries the caller's pull, node signatures travel in one short header, and node-to-node
answers leave out the pages' headers. Real nodes over real HTTP; old clients and old parents
keep working (docs/sync-protocol.md §5.1, §5.1.3, §5.3.2)."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from faults import (
    WireSession,
    city_item,
    cli,
    client_with,
    last_json,
    material_files,
    outbox_states,
    sha256,
    village_cases,
)
from network import create_case

from shared.core import canonical
from shared.core.crypto import SignatureError, SigningKey
from sync import client as client_module
from sync import envelope, nodeauth, outbox, wire
from sync.node_sync import SyncState, run_round
from sync.nodeauth import AUTH_HEADER, sign_request


class Counting(WireSession):
    """Records each request's path, its node-auth header form and the answer's members."""

    def __init__(self, old_parent: bool = False):
        super().__init__()
        self.old_parent = old_parent  # act as a parent from before this change
        self.paths: list[str] = []
        self.forms: list[str] = []

    def request(self, method, url, *args, headers=None, **kwargs):
        headers = dict(headers or {})
        self.paths.append(url.split("/sync/v1", 1)[1])
        self.forms.append("compact" if AUTH_HEADER in headers else "long")
        if self.old_parent:
            headers.pop(AUTH_HEADER, None)  # an older parent reads only the long headers: 401
        response = super().request(method, url, *args, headers=headers, **kwargs)
        if self.old_parent and url.endswith("/sync/v1/push") and response.status_code == 200:
            answer = response.json()  # an older parent ignores the "pull" and "blobs" it is asked
            answer.pop("pull", None)
            answer.pop("blobs", None)
            try:  # the body is read decoded already, whichever HTTP stack the client has
                response.content = json.dumps(answer).encode()
            except AttributeError:  # requests: a read-only property over _content
                response._content = json.dumps(answer).encode()
        return response


def _round(handle, session, state: SyncState | None = None) -> dict:
    summary = run_round(handle.conn, handle.node, state or SyncState(), client=client_with(handle, session), force=True)
    assert "error" not in summary, summary
    return summary


@pytest.fixture(autouse=True)
def _fresh_negotiation():
    """What a client remembers of its parents lives for the process: each test starts anew."""
    client_module._LONG_AUTH.clear()
    yield
    client_module._LONG_AUTH.clear()


def test_one_case_with_its_scans_goes_up_and_its_decision_comes_down_in_three_requests_per_hop(build_network):
    """Up: the push (with the files' status and the pull asked in it) and the batch of files;
    down: the periodic pull. Before: push, /blobs/status, batch, pull, then the pull down."""
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent")
    case_id = create_case(village, agent, city_item(village, agent))["case_id"]
    up_v, up_t, down_t, down_v = Counting(), Counting(), Counting(), Counting()
    v_state, t_state = SyncState(), SyncState()  # each node's, kept between its rounds as its jobs keep it
    assert _round(village, up_v, v_state)["pushed"] == 1  # custody, and the pull's answer in the push's
    assert _round(township, up_t, t_state)["pushed"] == 1  # the hub's ack in the push's answer
    hub.apply_accepted()  # the hub takes the case: 接件 goes down
    assert _round(township, down_t, t_state)["pushed"] == 0  # nothing to push: the periodic pull
    summary = _round(village, down_v, v_state)
    assert up_v.paths == up_t.paths == ["/push", "/blobs/batch"]
    assert down_t.paths == down_v.paths == ["/pull"]
    assert all(form == "compact" for s in (up_v, up_t, down_t, down_v) for form in s.forms)
    assert summary["acked"] == 1 and outbox_states(village) == {1: "acked"}  # the hub's ack, through the township
    assert village_cases(village)[case_id]["status"] == "RECEIVED"
    # Nothing left anywhere: the next idle round of each is a single pull that brings nothing.
    idle = Counting()
    assert _round(village, idle) == {"pushed": 0, "blobs": 0, "acked": 0, "applied": 0, "metadata": 0}
    assert idle.paths == ["/pull"]


def test_the_push_answer_carries_the_pull_without_repeating_itself(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    _round(village, Counting())
    doc = township.conn.execute("SELECT document FROM custody").fetchone()["document"]
    _round(township, Counting())  # the case and its files: the hub acknowledges
    client = client_with(township, WireSession())
    pull = {"cursors": {}, "metadata": {}, "acked": {}}  # as if it held no ack yet
    answer = client.push_stored([bytes(doc)], compact=True, pull=pull)
    assert answer["ok"] == {village.node_id: [[1, 1]]}  # a duplicate now
    assert len(answer["acks"]) == 1  # the hub's ack of the village's case, in the push's answer
    # ... and not again in the pull's, which has no server, no empty lists, but its versions.
    assert "acks" not in answer["pull"] and "server" not in answer["pull"]
    assert answer["pull"]["envelope_versions"] == [1, 2]
    assert answer["pull"]["metadata"]  # it trusts nothing (metadata {}): everything newer comes
    # Asked for nothing: the answer is the old one, member for member.
    plain = client.push_stored([bytes(doc)], compact=True)
    assert "pull" not in plain and hub.scalar("SELECT COUNT(*) FROM inbox") >= 1


def test_a_township_records_the_push_count_of_a_push_that_pulled(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    for _ in range(2):
        create_case(village, agent, city_item(village, agent))
    _round(village, Counting())
    row = township.query("SELECT last_push_count FROM peer_status WHERE node_id = ?", (village.node_id,))[0]
    assert row["last_push_count"] == 2  # the pull in the push does not overwrite it with 0


@pytest.mark.parametrize("asked", [
    {"pull": []}, {"pull": {"cursors": []}}, {"pull": {"acked": {"x": -1}}}, {"pull": {"metadata": {"root": "1"}}},
    {"blobs": {}}, {"blobs": ["not a hash"]}, {"blobs": ["ab" * 32] * (wire.MAX_BLOBS_ASKED + 1)},
])
def test_a_malformed_question_in_a_push_is_refused_before_custody(build_network, asked):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    client = client_with(village, WireSession())
    with pytest.raises(client_module.SyncUnavailable) as refused:
        client.push_stored([r["document"] for r in outbox.to_send(village.conn, 10)], compact=True, **asked)
    assert refused.value.status == 400 and '"malformed"' in str(refused.value)
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0


def test_the_push_answer_says_what_the_parent_holds_of_the_files_asked_about(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    files = material_files(city_item(village, agent), "held")
    create_case(village, agent, city_item(village, agent), files)
    shas = [sha256(d) for _, _, d in files]
    data = {sha256(d): d for _, _, d in files}
    township.node.blobs.write_chunk(shas[0], len(data[shas[0]]), 0, data[shas[0]], 1 << 20)  # whole
    township.node.blobs.write_chunk(shas[1], len(data[shas[1]]), 0, data[shas[1]][:10], 1 << 20)  # 10 bytes
    missing = "cd" * 32
    client = client_with(village, WireSession())
    answer = client.push_stored([r["document"] for r in outbox.to_send(village.conn, 10)], compact=True,
                                blobs=[shas[0], shas[1], missing])
    # Only the partial file in "have" (nothing held and complete files left out), as in §5.3.2.
    assert answer["blobs"] == {"have": {shas[1]: 10}, "complete": [shas[0]]}
    assert client.blob_status([shas[0], shas[1], missing]) == ({shas[0]: len(data[shas[0]]), shas[1]: 10,
                                                                missing: 0}, {shas[0]})


def test_an_old_style_client_still_pushes_and_pulls_separately(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    client_module._LONG_AUTH.add(village.node.config["PARENT_URL"].rstrip("/"))  # the three long headers
    session = WireSession()
    client = client_with(village, session)
    answer = client.push([envelope.from_bytes(r["document"]) for r in outbox.to_send(village.conn, 10)])
    assert "pull" not in answer and answer["receipt"] is not None and "ok" not in answer
    pulled = client.pull({}, {})
    assert pulled["envelope_versions"] == [1, 2] and "server" in pulled
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1


def test_a_new_client_falls_back_to_a_separate_pull_and_long_headers_with_an_old_parent(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    old, state = Counting(old_parent=True), SyncState()
    _round(village, old, state)
    # The compact header refused (401), the same push with the long ones, then the files' status,
    # the files and the pull, each a request of its own as before.
    assert old.paths == ["/push", "/push", "/blobs/status", "/blobs/batch", "/pull"]
    assert old.forms == ["compact"] + ["long"] * 4
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1 and outbox_states(village) == {1: "custody"}
    again = Counting(old_parent=True)
    _round(village, again, state)
    assert again.paths == ["/pull"] and again.forms == ["long"]  # remembered for this parent


def test_a_revoked_node_is_told_so_on_its_compact_header(build_network):
    """403 node_revoked at once: the compact header's short kid finds the revoked key too (a
    401 there would only be hidden by the long-header retry)."""
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    revoked = last_json(cli("provision", "revoke", "--data", net.hub.data_dir, "--node-code", village.node_id,
                            "--after-seq", "0").output)
    assert revoked["revoked_after_seq"] == 0
    township.sync()  # the township learns the new registry
    session = Counting()
    summary = run_round(village.conn, village.node, SyncState(), client=client_with(village, session), force=True)
    assert '"node_revoked"' in summary["error"] and "HTTP 403" in summary["error"]
    assert session.paths == ["/push"] and session.forms == ["compact"]


def test_a_refusal_that_is_not_about_the_header_form_keeps_the_compact_one(build_network):
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    stranger = SigningKey.generate()  # not in the registry: 401 in either form
    client = client_module.ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, stranger,
                                        node.nonces, session=WireSession())
    with pytest.raises(client_module.SyncUnavailable) as refused:
        client.pull({}, {})
    assert refused.value.status == 401
    assert client.base_url not in client_module._LONG_AUTH  # only a long form that passes is remembered


def _post_pull(node, headers: dict) -> requests.Response:
    body = canonical.dumps({"cursors": {}, "metadata": {}})
    return requests.post(node.config["PARENT_URL"] + "/sync/v1/pull", data=body,
                         headers={**headers, "Content-Type": "application/json"}, timeout=10)


def _compact(node, nonce: int, path: str = "/sync/v1/pull", body: bytes | None = None) -> dict:
    body = canonical.dumps({"cursors": {}, "metadata": {}}) if body is None else body
    return sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", path, body, nonce, compact=True)


def test_the_compact_header_is_checked_like_the_long_ones(build_network):
    net = build_network(villages=1)
    node = net.village().node
    good = _compact(node, node.nonces.next())
    value = good[AUTH_HEADER]
    who, nonce, kid, sig = value.split(" ")
    assert len(kid) == nodeauth.SHORT_KID and len(sig) == 86 and len(value) < 130
    raw = base64.urlsafe_b64decode(sig + "==")
    flipped = sig[:-1] + ("B" if sig[-1] == "A" else "A")  # the last character's spare bits (or the signature)
    bad = {
        "another nonce than the signed one": f"{who} {int(nonce) + 1} {kid} {sig}",
        "another key id": f"{who} {nonce} {'0' * 8} {sig}",
        "padded": f"{who} {nonce} {kid} {sig}==",
        "standard base64": f"{who} {nonce} {kid} {base64.b64encode(raw).decode()}",
        "changed signature": f"{who} {nonce} {kid} {flipped}",
        "missing part": f"{who} {nonce} {sig}",
        "another node": f"130926100202 {nonce} {kid} {sig}",
    }
    for why, forged in bad.items():
        assert _post_pull(node, {AUTH_HEADER: forged}).status_code == 401, why
    assert _post_pull(node, good).status_code == 200
    assert _post_pull(node, good).status_code == 401  # the same nonce again: a replay
    # The same signature spelled as the long headers of the same nonce is that same replay.
    long = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull",
                        canonical.dumps({"cursors": {}, "metadata": {}}), int(nonce))
    assert _post_pull(node, long).status_code == 401


def _one_case_queued(build_network):
    """A fresh network whose village has one case queued: (village node, township, its envelope)."""
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    return village.node, net.township, bytes(outbox.to_send(village.conn, 10)[0]["document"])


def test_a_compact_push_is_bound_to_its_body_and_receiver(build_network):
    node, township, document = _one_case_queued(build_network)
    body = b'{"envelopes":[' + document + b"]}"
    url = node.config["PARENT_URL"] + "/sync/v1/push"
    headers = _compact(node, node.nonces.next(), "/sync/v1/push", body)
    assert requests.post(url, data=body + b" ", headers=headers, timeout=10).status_code == 401
    to_hub = sign_request(node.key, node.node_id, "130926", "POST", "/sync/v1/push", body, node.nonces.next(),
                          compact=True)
    assert requests.post(url, data=body, headers=to_hub, timeout=10).status_code == 401
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0
    assert requests.post(url, data=body, headers=_compact(node, node.nonces.next(), "/sync/v1/push", body),
                         timeout=10).status_code == 200
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1


def test_a_short_key_id_tries_every_key_of_the_node_it_names():
    first, second = SigningKey.generate(), SigningKey.generate()
    keys = {first.kid: first.public_b64, "f" * 64: "unused", second.kid: second.public_b64}
    assert nodeauth.keys_for(keys, second.kid) == [second.public_b64]
    assert nodeauth.keys_for(keys, second.kid[:8]) == [second.public_b64]
    assert nodeauth.keys_for(keys, second.kid[:7]) == []  # too short to name a key
    assert nodeauth.keys_for(keys, "0" * 8) == [] or "0" * 8 in (first.kid[:8], second.kid[:8])
    # Two keys under one short id (a 2^-32 chance): the signature decides which, either passes.
    both = {"abcdef01" + first.kid[8:]: first.public_b64, "abcdef01" + second.kid[8:]: second.public_b64}
    for signer in (first, second):
        headers = sign_request(signer, "130926100201", "130926100", "POST", "/sync/v1/pull", b"{}", 7, compact=True)
        node, kid, rest = headers[AUTH_HEADER].split(" ", 2)[0], "abcdef01", headers[AUTH_HEADER].split(" ", 3)[3]
        headers = {AUTH_HEADER: f"{node} 7 {kid} {rest}"}
        assert nodeauth.check_request(lambda n, k: nodeauth.keys_for(both, k), "130926100", "POST",
                                      "/sync/v1/pull", b"{}", headers) == ("130926100201", 7)
    stranger = SigningKey.generate()
    headers = sign_request(stranger, "130926100201", "130926100", "POST", "/sync/v1/pull", b"{}", 8, compact=True)
    headers = {AUTH_HEADER: headers[AUTH_HEADER].replace(stranger.kid[:8], "abcdef01")}
    with pytest.raises(SignatureError):
        nodeauth.check_request(lambda n, k: nodeauth.keys_for(both, k), "130926100", "POST", "/sync/v1/pull", b"{}",
                               headers)


PAGE_ONLY = ("Content-Security-Policy", "X-Frame-Options", "Referrer-Policy")


def test_node_answers_keep_nosniff_and_leave_out_the_pages_headers(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    node = village.node
    answers = [_post_pull(node, _compact(node, node.nonces.next())),  # 200
               _post_pull(node, {AUTH_HEADER: "nonsense"})]  # 401, the error shape
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Type"].startswith("application/json")
        assert not any(h in answer.headers for h in (*PAGE_ONLY, "Vary")), answer.headers
    assert answers[1].status_code == 401 and answers[1].json()["error"]["code"] == "node_auth"
    # Pages and the public API keep every security header.
    token = hub.account("hdr_api", "window", "130926-rs")
    for response in (requests.get(township.url + "/login", timeout=10), requests.get(hub.url + "/healthz", timeout=10),
                     hub.api("GET", "/api/v1/catalog", token)):
        assert all(h in response.headers for h in (*PAGE_ONLY, "X-Content-Type-Options")), response.request.url


def test_the_push_and_its_pull_are_the_same_request_signature(build_network):
    """The pull asked for inside a push is covered by the push's signature: changing it is a 401."""
    node, township, document = _one_case_queued(build_network)
    body = b'{"envelopes":[' + document + b'],"pull":{"cursors":{},"metadata":{}}}'
    headers = _compact(node, node.nonces.next(), "/sync/v1/push", body)
    tampered = body.replace(b'"metadata":{}', b'"metadata":{"root":9}')
    url = node.config["PARENT_URL"] + "/sync/v1/push"
    assert requests.post(url, data=tampered, headers=headers, timeout=10).status_code == 401
    answer = requests.post(url, data=body, headers=headers, timeout=10)
    assert answer.status_code == 200 and "envelope_versions" in answer.json()["pull"]
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1
