"""A township's custody and its own register are two stages (township_node/relay_service.py,
docs/sync-protocol.md §5.3.1), as the hub's acknowledgement and its apply: a village's large
push is answered once in custody and followed from ``follow_queue`` afterwards, in custody
order; a small one is followed before its answer when nothing is queued (a 秒批 comes back in it)."""

from __future__ import annotations

import time

import pytest
from faults import WireSession, city_item, client_with
from network import case_payload, catalog, create_case, pick_item

from shared.services import casework
from sync import envelope


def _queued(township) -> int:
    """The township's queue, read without following it (``township.scalar`` follows first)."""
    return township.conn.execute("SELECT COUNT(*) FROM follow_queue").fetchone()[0]


def _stored(township, case_id: str):
    return township.conn.execute("SELECT status, sync_state FROM cases WHERE case_id = ?", (case_id,)).fetchone()


@pytest.fixture
def net(build_network):
    """One village below its township; the township's follow worker held back (the tests follow
    when they choose) and every push of the village queued (FOLLOW_INLINE_MAX_ENVELOPES 0)."""
    net = build_network(villages=1)
    service = net.township.app.extensions["liandong_sync"]
    service.worker.quiet = service.worker.max_lag = 3600.0
    net.township.app.config["FOLLOW_INLINE_MAX_ENVELOPES"] = 0
    return net


@pytest.fixture
def agent(net):
    return net.village().account("agent", "agent")


def _outbox(village) -> list[dict]:
    return [envelope.from_bytes(r[0]) for r in village.conn.execute("SELECT document FROM outbox ORDER BY seq")]


def test_a_large_push_is_answered_in_custody_and_followed_afterwards(net, agent):
    village, township = net.village(), net.township
    city = create_case(village, agent, city_item(village, agent))["case_id"]
    delegated = create_case(village, agent, pick_item(catalog(village, agent), "township"))["case_id"]
    village.sync()
    assert township.conn.execute("SELECT COUNT(*) FROM custody").fetchone()[0] == 2  # custody, FULL sync
    assert _queued(township) == 2
    assert _stored(township, city) is None and _stored(township, delegated) is None  # not yet followed
    service = township.app.extensions["liandong_sync"]
    assert service.follow_all(township.conn) == 2
    assert _queued(township) == 0
    assert tuple(_stored(township, city)) == ("SUBMITTED", "custody")
    assert tuple(_stored(township, delegated)) == ("RECEIVED", "custody")  # 接件 by the station
    # Its 接件 is dated when custody took the case, as the hub is told (``held``), not when followed.
    taken = township.conn.execute("SELECT received_at FROM custody WHERE case_id = ?", (delegated,)).fetchone()[0]
    receipt = township.conn.execute("SELECT at FROM case_events WHERE event_id = ?",
                                    (casework.receive_event_id(delegated),)).fetchone()[0]
    assert receipt == taken
    assert service.follow_all(township.conn) == 0  # following again changes nothing


def test_a_city_case_the_hub_holds_before_it_is_followed_is_stored_received_there(net, agent):
    """The hub acknowledged it first: stored 已接件 by the hub at once (the provisional record an
    acknowledgement writes), with no second update of the row."""
    village, township, hub = net.village(), net.township, net.hub
    city = create_case(village, agent, city_item(village, agent))["case_id"]
    delegated = create_case(village, agent, pick_item(catalog(village, agent), "township"))["case_id"]
    village.sync()
    service = township.app.extensions["liandong_sync"]
    # The township's round forwards custody and brings the hub's acknowledgement, before following.
    from sync.node_sync import SyncState, run_round

    run_round(township.conn, township.node, SyncState(), force=True)
    hub.apply_accepted()
    assert township.conn.execute("SELECT COUNT(*) FROM custody").fetchone()[0] == 0  # released by the ack
    assert _queued(township) == 2
    service.follow_all(township.conn)
    assert tuple(_stored(township, city)) == ("RECEIVED", "acked")
    event = township.conn.execute("SELECT node, actor FROM case_events WHERE event_id = ?",
                                  (casework.receive_event_id(city),)).fetchone()
    assert tuple(event) == (hub.node_id, "system")
    assert tuple(_stored(township, delegated)) == ("RECEIVED", "acked")  # the station's own 接件, at the hub


def test_a_hub_decision_that_comes_down_before_its_case_is_followed_is_applied_once_it_is(net, agent):
    """高龄津贴 is 秒批 at the hub: its 准予 can come down through the township while the case is
    still in the township's queue; the station keeps it and applies it once the case is followed."""
    from sync.node_sync import SyncState, run_round

    village, township, hub = net.village(), net.township, net.hub
    item = next(i for i in catalog(village, agent) if i["code"] == "130926-MZ-0004")
    payload = case_payload(item)
    payload["form"].update(age=85, local_hukou="是")
    response = village.api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 201, response.text
    case_id = response.json()["case_id"]
    village.sync()  # queued at the township
    run_round(township.conn, township.node, SyncState(), force=True)  # forwarded, with its scans
    hub.apply_accepted()  # 秒批 at the hub: its 准予 goes down
    run_round(township.conn, township.node, SyncState(), force=True)  # ... through the township, before following
    assert _stored(township, case_id) is None
    assert township.conn.execute("SELECT COUNT(*) FROM follow_waiting").fetchone()[0] == 1
    township.app.extensions["liandong_sync"].follow_all(township.conn)
    assert _stored(township, case_id)["status"] == "APPROVED"
    assert township.conn.execute("SELECT COUNT(*) FROM follow_waiting").fetchone()[0] == 0
    assert [r[0] for r in township.conn.execute("SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid",
                                                (case_id,))] == ["submit", "receive", "accept", "approve"]


def test_a_small_push_waits_behind_what_is_queued(net, agent):
    """Custody order is the order of following: a small push behind a queued one is queued too
    (a village's later step on a case is never followed before the case)."""
    village, township = net.village(), net.township
    first = create_case(village, agent, city_item(village, agent))["case_id"]
    village.sync()
    assert _queued(township) == 1
    township.app.config["FOLLOW_INLINE_MAX_ENVELOPES"] = 10  # small pushes followed at once again
    second = create_case(village, agent, city_item(village, agent))["case_id"]
    village.sync()
    assert _stored(township, second) is None
    assert [r[0] for r in township.conn.execute("SELECT seq FROM follow_queue ORDER BY id")] == [1, 2]
    township.app.extensions["liandong_sync"].follow_all(township.conn)
    assert _stored(township, first) is not None and _stored(township, second) is not None
    # With nothing queued, a small push is followed before its answer.
    third = create_case(village, agent, city_item(village, agent))["case_id"]
    village.sync()
    assert _queued(township) == 0 and _stored(township, third) is not None


def test_a_queued_delegated_case_is_verified_before_the_station_decides_it(net, agent):
    """Custody took it on the request signature; following it from the queue, the station still
    verifies end to end what it decides (the hub's rule), and refuses a forged one."""
    village, township = net.village(), net.township
    item = pick_item(catalog(village, agent), "township")
    case_id = create_case(village, agent, item)["case_id"]
    [document] = _outbox(village)
    sig = document["signatures"][0]["sig"]
    forged = {**document, "signatures": [{**document["signatures"][0], "sig": ("B" if sig[0] != "B" else "C") + sig[1:]}]}
    client_with(village, WireSession()).push([forged])
    assert _queued(township) == 1
    township.app.extensions["liandong_sync"].follow_all(township.conn)
    assert _stored(township, case_id) is None
    assert township.conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'relay.not_followed'").fetchone()[0] == 1


def test_a_restarted_station_follows_what_it_queued_once_a_village_calls(net, agent):
    """The queue is on disk, written with custody: a new app on the same data (the station
    restarted) follows it when a village next calls (kill -9: tests/test_kill9.py)."""
    from township_node import create_app

    village, township = net.village(), net.township
    case_id = create_case(village, agent, city_item(village, agent))["case_id"]
    village.sync()
    assert _queued(township) == 1
    restarted = create_app({"DATA_DIR": str(township.data_dir), "SCHEDULER_ENABLED": False,
                            "FOLLOW_QUIET_SECONDS": 0.0})
    service = restarted.extensions["liandong_sync"]
    conn = restarted.extensions["liandong_db"].connect(restarted)
    try:
        service.pull(conn, service.node, village.node_id, {}, {})  # a village's visit wakes the worker
        deadline = time.monotonic() + 10
        while conn.execute("SELECT COUNT(*) FROM follow_queue").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert conn.execute("SELECT status FROM cases WHERE case_id = ?", (case_id,)).fetchone()[0] == "SUBMITTED"
    finally:
        conn.close()


def test_the_station_page_says_what_waits_to_be_followed(net, agent):
    village, township = net.village(), net.township
    create_case(village, agent, city_item(village, agent))
    village.sync()
    token = township.account("ts_admin", "admin")
    client = township.app.test_client(use_cookies=False)  # not township.local(): that follows first
    page = client.get("/relay", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert 'id="to-follow"' in page and "<strong>1</strong> 条村级消息" in page
    township.app.extensions["liandong_sync"].follow_all(township.conn)
    page = client.get("/relay", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert 'id="to-follow"' not in page


def test_the_stations_scheduled_pass_follows_what_is_queued(net, agent):
    """After a restart with no village calling, the station's scheduled rules follow the queue
    first (``liandong`` jobs or the in-process scheduler), before supervision reads the register."""
    village, township = net.village(), net.township
    case_id = create_case(village, agent, city_item(village, agent))["case_id"]
    village.sync()
    rules = township.node.kind.scheduled_rules(township.node, township.app.extensions["liandong_sync"])
    assert rules[0][0] == "follow_queue"
    assert rules[0][1](township.conn) == 1
    assert _stored(township, case_id) is not None


def test_a_file_batch_holds_the_following_back_as_a_push_does(net, agent, monkeypatch):
    """A village sends a case's scans right after its push: the township's worker waits for
    those too, so a drain's uploads are not slowed. The hub's apply worker waits for pushes
    only: a county's uploads never pause, and its register would lag by APPLY_MAX_LAG_SECONDS."""
    from flask import request

    from sync.node_sync import SyncState, run_round

    village, township, hub = net.village(), net.township, net.hub
    paths: dict[str, list] = {"township": [], "hub": []}
    for name, handle in (("township", township), ("hub", hub)):
        worker = handle.app.extensions["liandong_sync"].worker
        monkeypatch.setattr(worker, "pushing", lambda real=worker.pushing, seen=paths[name]: (
            seen.append(request.path), real())[1])
    create_case(village, agent, city_item(village, agent))  # with a scan of each required material
    village.sync()
    assert "/sync/v1/push" in paths["township"] and "/sync/v1/blobs/batch" in paths["township"]
    run_round(township.conn, township.node, SyncState(), force=True)  # the case and its scans on to the hub
    assert "/sync/v1/push" in paths["hub"] and "/sync/v1/blobs/batch" not in paths["hub"]
