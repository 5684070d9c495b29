"""Write-through (docs/sync-protocol.md §5.3.3): a village's small push is forwarded by the
township at once and answered with the hub's signed acknowledgement, the custody receipt left
out; a slow or offline hub, a large push, an older village or the setting at 0 get the ordinary
answer, and the village records custody from the ack as a receipt would have."""

from __future__ import annotations

import threading
import time

import pytest
from network import catalog, create_case, pick_item

from shared.web import jobs
from shared.web.jobs import Scheduler, _add_sync
from sync import envelope, node_sync, outbox, relay, wire
from sync.client import ParentClient
from sync.node_sync import SyncState, run_round


class Recording:
    """A ``requests``-shaped session that keeps every answer the village got (and the request)."""

    def __init__(self):
        from sync.transport import Transport

        self.transport = Transport()
        self.exchanges: list[tuple[str, bytes, dict]] = []

    def request(self, method, url, data=None, headers=None, timeout=None, allow_redirects=False):
        response = self.transport.request(method, url, data=data, headers=headers, timeout=timeout)
        # The body as the parent reads it: compressed when this process learned, from an earlier
        # answer at the same URL (a port reused by another test's township), that it takes zstd.
        body = wire.decode(data, (headers or {}).get("Content-Encoding", ""), 16 * 1024 * 1024) if data else data
        self.exchanges.append((url, body, response.json() if response.content else {}))
        return response


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=1)
    # The township's own rounds towards the hub, as its scheduler installs them (not started:
    # only what arrives starts one, here).
    _add_sync(net.township.app, Scheduler())
    # A bound no loaded test machine reaches when the hub answers; an offline hub must still
    # cost far less than it (the wait ends with the round, test_an_offline_hub_…).
    net.township.app.config["SYNC_WRITE_THROUGH_SECONDS"] = 10.0
    return net


@pytest.fixture(scope="module")
def agent(net):
    village = net.village()
    return village.account("agent", "agent", village.node_id)


def without_materials(items: list[dict], level: str) -> dict:
    """An item decided at ``level`` (taken here without its files, 容缺: the hub acks it at once)."""
    return pick_item(items, level)


def village_round(village) -> tuple[dict, Recording]:
    session = Recording()
    node = village.node
    client = ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces,
                          session=session)
    summary = run_round(village.conn, node, SyncState(), client=client, force=True)
    return summary, session


def states(village) -> list[str]:
    return [r["state"] for r in village.query("SELECT state FROM outbox ORDER BY seq")]


def test_one_push_brings_the_hubs_ack_and_no_receipt(net, agent):
    village, township, hub = net.village(), net.township, net.hub
    receipt = create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    summary, session = village_round(village)
    assert "error" not in summary
    assert [url.rsplit("/", 1)[1] for url, _, _ in session.exchanges] == ["push"]  # no second request
    url, body, answer = session.exchanges[0]
    assert body.startswith(b'{"ack":"wait","answer":"compact",')
    assert "receipt" not in answer
    assert [envelope.peek(a)["origin"] for a in answer["acks"]] == [village.node_id]
    assert states(village)[-1] == "acked"
    hub.apply_accepted()
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0  # released by the ack
    assert village.scalar("SELECT sync_state FROM cases WHERE case_id = ?", (receipt["case_id"],)) == "acked"


def test_a_township_decided_case_is_received_there_from_the_ack(net, agent):
    """Without the custody step the ack stands for, the village never records the township's
    接件 (it is not sent down: it comes from custody, casework.mark_in_custody)."""
    village = net.village()
    item = without_materials(catalog(village, agent), "township")
    receipt = create_case(village, agent, item, materials=[])
    summary, session = village_round(village)
    assert "receipt" not in session.exchanges[0][2] and "error" not in summary
    assert states(village)[-1] == "acked"
    assert village.scalar("SELECT custody_at FROM outbox WHERE case_id = ?", (receipt["case_id"],)) is not None
    actions = [r["action"] for r in village.query("SELECT action FROM case_events WHERE case_id = ? ORDER BY at",
                                                  (receipt["case_id"],))]
    assert "receive" in actions


def test_an_offline_hub_costs_the_village_no_more_than_the_bounded_wait(net, agent):
    village, hub = net.village(), net.hub
    hub.stop()
    try:
        create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
        started = time.monotonic()
        summary, session = village_round(village)
        waited = time.monotonic() - started
    finally:
        hub.start()
    assert "error" not in summary
    assert waited < 5 < float(net.township.app.config["SYNC_WRITE_THROUGH_SECONDS"])  # not the whole bound
    assert "receipt" in session.exchanges[0][2]  # custody, as before write-through
    assert states(village)[-1] == "custody"
    # The township's own round now backs off (SYNC_BACKOFF_MAX_SECONDS): pushes meanwhile are
    # answered at once, as above. The next tests want a hub that came back, and a link that knows it.
    backoff = net.township.app.extensions["liandong_sync_state"]
    assert backoff.failures >= 1
    backoff.failures, backoff.next_attempt = 0, 0.0
    net.township.sync()
    village.sync()
    assert states(village)[-1] == "acked"


def test_setting_zero_an_older_village_and_a_large_push_get_the_receipt(net, agent):
    village, township = net.village(), net.township
    items = catalog(village, agent)
    config = township.app.config
    config["SYNC_WRITE_THROUGH_SECONDS"] = 0
    try:
        create_case(village, agent, without_materials(items, "city"), materials=[])
        _, session = village_round(village)
        assert "receipt" in session.exchanges[0][2] and states(village)[-1] == "custody"
    finally:
        config["SYNC_WRITE_THROUGH_SECONDS"] = 10.0
    township.sync()
    village.sync()

    create_case(village, agent, without_materials(items, "city"), materials=[])
    documents = [bytes(r["document"]) for r in village.query("SELECT document FROM outbox WHERE state = 'pending'")]
    answer = village.client_to_parent().push_stored(documents, compact=True)  # a village from before: no "ack"
    assert "receipt" in answer
    township.sync()
    village.sync()

    config["SYNC_WRITE_THROUGH_MAX_ENVELOPES"] = 1
    try:
        for _ in range(2):
            create_case(village, agent, without_materials(items, "city"), materials=[])
        _, session = village_round(village)
        assert "receipt" in session.exchanges[0][2]
    finally:
        config["SYNC_WRITE_THROUGH_MAX_ENVELOPES"] = 10
    township.sync()
    village.sync()
    assert set(states(village)) == {"acked"}


def test_the_ack_must_cover_the_very_envelopes_taken(net, agent):
    """relay.ack_covering: an ack below the push's last seq, or a push envelope that is not the
    one this relay took first for its seq (a fork), is not an answer for it."""
    village, township = net.village(), net.township
    conn = township.conn
    acked = conn.execute("SELECT acked_seq FROM acks WHERE origin = ?", (village.node_id,)).fetchone()["acked_seq"]
    first = conn.execute("SELECT envelope_id FROM relayed_ids WHERE origin = ? AND seq = ?",
                         (village.node_id, acked)).fetchone()["envelope_id"]
    held = [{"origin": village.node_id, "seq": acked, "envelope_id": first, "status": "custody"}]
    assert relay.ack_covering(conn, village.node_id, held) is not None
    assert relay.ack_covering(conn, village.node_id, [{**held[0], "envelope_id": "ab" * 32}]) is None  # a fork
    assert relay.ack_covering(conn, village.node_id, [{**held[0], "seq": acked + 1}]) is None  # not yet acked
    assert relay.ack_covering(conn, "130926100299", held) is None  # another village's ack does not answer


def test_an_ack_for_another_chain_records_no_custody(net, agent):
    """_custody_by_ack: custody only from an ack naming this chain's own envelope."""
    village, hub = net.village(), net.hub
    create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    seq = outbox.last_seq(village.conn)
    forged = envelope.sign(hub.node.key, envelope.ACK, {
        "acked_id": "cd" * 32, "acked_seq": seq, "hub": hub.node_id, "hub_time": "2026-12-02T00:00:00Z",
        "origin": village.node_id})
    envelope.open_signed(forged, envelope.ACK, village.node.trust(village.conn).hub_key)  # hub-signed, verifies
    node_sync.apply_push_answer(village.conn, village.node, {"acks": [forged]}, acks_hold=True)
    assert states(village)[-1] == "pending"
    assert village.scalar("SELECT custody_at FROM outbox WHERE seq = ?", (seq,)) is None


def test_a_push_whose_scans_have_not_arrived_is_answered_at_once(net, agent, monkeypatch):
    """The hub cannot acknowledge a case before its files reach it, and they follow the push:
    waiting would only delay them (relay.files_missing)."""
    village = net.village()
    waited = []
    forward = net.township.app.extensions["liandong_sync_forward"]
    monkeypatch.setitem(net.township.app.extensions, "liandong_sync_forward",
                        lambda done, seconds: waited.append(seconds) or forward(done, seconds))
    create_case(village, agent, without_materials(catalog(village, agent), "city"))  # with its scans
    summary, session = village_round(village)
    push = next(answer for url, _, answer in session.exchanges if url.endswith("/push"))
    assert "receipt" in push and waited == [] and "error" not in summary
    create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    village_round(village)
    assert waited  # a case without files is still written through


def test_the_wait_ends_when_a_round_begun_after_the_push_has_finished(net):
    """forward_and_wait (shared/web/jobs.py) does not sit out its whole bound for an ack that
    this round did not bring: the round is over, nothing more will come before the next one."""
    forward = net.township.app.extensions["liandong_sync_forward"]
    started = time.monotonic()
    assert forward(lambda: False, 30.0) is False
    assert time.monotonic() - started < 10
    calls = []
    assert forward(lambda: calls.append(1) or True, 30.0) is True and len(calls) == 2  # checked before and after


def test_only_two_requests_wait_at_once_the_next_is_answered_without_waiting(net):
    """A slow hub must not hold every serving thread of the township: while two pushes wait
    (here: their ``done`` blocks), a third is only kicked on and answered at once."""
    forward = net.township.app.extensions["liandong_sync_forward"]
    release, entered = threading.Event(), threading.Semaphore(0)

    def stuck() -> bool:
        entered.release()
        release.wait(30)
        return False

    waiters = [threading.Thread(target=forward, args=(stuck, 30.0)) for _ in range(jobs.WRITE_THROUGH_WAITERS)]
    for t in waiters:
        t.start()
    try:
        for _ in waiters:
            assert entered.acquire(timeout=10)
        calls = []
        started = time.monotonic()
        assert forward(lambda: calls.append(1) or False, 30.0) is False
        assert calls == [1] and time.monotonic() - started < 5  # looked once, no wait for a pass
    finally:
        release.set()
        for t in waiters:
            t.join(30)
    later = []
    assert forward(lambda: later.append(1) or True, 30.0) is True and len(later) == 2  # slots free again


def test_a_replayed_answer_with_an_older_ack_marks_nothing_new(net, agent):
    """An earlier write-through answer played back (its ack is genuine, but old) covers only what
    the hub already acknowledged: a newer pending envelope gets neither custody nor its ack."""
    village = net.village()
    for _ in range(2):  # settled: the scans of an earlier case at the hub, so its ack covers what follows
        net.township.sync()
        village.sync()
    assert set(states(village)) == {"acked"}
    create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    _, session = village_round(village)
    old_ack = session.exchanges[0][2]["acks"][0]  # as the answer carried it (short form)
    create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    seq = outbox.last_seq(village.conn)
    assert envelope.peek(old_ack)["acked_seq"] < seq
    node_sync.apply_push_answer(village.conn, village.node, {"acks": [old_ack]}, acks_hold=True)
    assert states(village)[-1] == "pending"
    assert village.scalar("SELECT custody_at FROM outbox WHERE seq = ?", (seq,)) is None
    village_round(village)
    assert states(village)[-1] == "acked"


def test_a_pull_that_may_wait_brings_the_hubs_ack_of_a_backlog_in_custody(net, agent, monkeypatch):
    """§7.1 ``wait``: a village whose pushed backlog the township holds gets the hub's ack in one
    pull, not by asking again and again; without ``wait`` the same pull answers at once, without it.
    The township's kick after the push is held back here, so only the pull can start the round."""
    from shared.web import sync_api

    village, township = net.village(), net.township
    township.sync()
    village.sync()
    monkeypatch.setattr(sync_api, "_forward_soon", lambda: None)
    for _ in range(int(township.app.config["SYNC_WRITE_THROUGH_MAX_ENVELOPES"]) + 1):  # past write-through
        create_case(village, agent, without_materials(catalog(village, agent), "city"), materials=[])
    summary, session = village_round(village)
    assert "error" not in summary and "receipt" in session.exchanges[0][2]
    assert set(states(village)[-11:]) == {"custody"}
    node = village.node
    client = ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces)
    cursors, have = node_sync.pull_request(village.conn, node)
    acked = node_sync.acked_request(village.conn, node)
    assert client.pull(cursors, have, acked).get("acks", []) == []  # nothing forwarded yet, nothing waited for
    started = time.monotonic()
    answer = client.pull(cursors, have, acked, wait=5)
    assert time.monotonic() - started < 5
    acks = node_sync.full_forms(answer, node, node.trust(village.conn))["acks"]
    assert [envelope.peek(a)["origin"] for a in acks] == [village.node_id]
    assert envelope.peek(acks[0])["acked_seq"] == village.scalar("SELECT MAX(seq) FROM outbox")
    with pytest.raises(node_sync.SyncUnavailable):
        client.pull(cursors, have, acked, wait=61)  # 400 malformed
    # Everything of the caller's acknowledged now: a pull asking to wait neither waits nor kicks a round.
    kicked = []
    monkeypatch.setitem(township.app.extensions, "liandong_sync_forward", lambda done, seconds: kicked.append(1))
    acked = {village.node_id: envelope.peek(acks[0])["acked_seq"]}
    client.pull(cursors, have, acked, wait=5)
    assert kicked == []
    monkeypatch.undo()
    village.sync()
    assert set(states(village)) == {"acked"}


def test_a_village_asks_to_wait_only_with_envelopes_in_custody_soon_after_pushing(net):
    village = net.village()
    village.sync()
    conn, node, state = village.conn, village.node, SyncState()
    last = village.scalar("SELECT MAX(seq) FROM outbox")
    assert node_sync.pull_wait(conn, node, state, last) == 0  # never pushed (this state)
    state.pushed_at = time.monotonic()
    assert node_sync.pull_wait(conn, node, state, last) == 0  # everything acknowledged
    conn.execute("UPDATE outbox SET state = 'custody' WHERE seq = ?", (last,))
    try:
        assert node_sync.pull_wait(conn, node, state, last - 1) == int(node.config["SYNC_PULL_WAIT_SECONDS"]) == 2
        assert node_sync.pull_wait(conn, node, None, last - 1) == 0
        state.pushed_at = time.monotonic() - node_sync.PULL_WAIT_AFTER_PUSH_SECONDS
        assert node_sync.pull_wait(conn, node, state, last - 1) == 0  # a file the hub waits for, for hours
    finally:
        conn.execute("UPDATE outbox SET state = 'acked' WHERE seq = ?", (last,))


def test_a_waiter_sees_acks_applied_mid_pass_not_only_when_the_pass_ends(net, monkeypatch):
    """A township's pass drains while its backlog lasts (a village's scans: seconds); the acks its
    rounds bring are looked at as each answer is applied, so a waiting pull or push is answered
    then, not when the whole pass is over."""
    state = net.township.app.extensions["liandong_sync_state"]
    release, acked = threading.Event(), threading.Event()

    def long_pass(*args, **kwargs):
        release.wait(10)
        return {}

    monkeypatch.setattr(jobs, "drain", long_pass)

    def ack_arrives():
        time.sleep(0.3)
        acked.set()
        state.acks_applied()

    threading.Thread(target=ack_arrives).start()
    started = time.monotonic()
    try:
        assert net.township.app.extensions["liandong_sync_forward"](acked.is_set, 10.0) is True
        assert time.monotonic() - started < 3
    finally:
        release.set()
