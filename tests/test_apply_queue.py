"""The second stage of hub ingest (sync/apply.py): accepted envelopes applied from a queue.

A push is acknowledged once its envelopes are in their chains; the case register is written
from ``apply_queue`` afterwards, in acceptance order, exactly once, even across a crash, and
one poison envelope never blocks the rest.
"""

from __future__ import annotations

import threading
import time

import pytest
from faults import city_item
from network import create_case
from network_session import session_for
from test_vectors import NOW, VILLAGE_A, chain_documents, hub_db, push
from test_vectors import ingestor as vector_ingestor

from city_hub import create_app
from shared.core.audit import audit
from shared.core.clock import FixedClock
from sync import apply, envelope
from sync.apply import ApplyWorker, apply_pending


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def item(net):
    return city_item(net.village(0), net.village(0).account("agent", "agent"))


def pushed_case(net, item) -> str:
    """A new village case pushed by the township to the hub (accepted, not yet applied)."""
    village = net.village(0)
    receipt = create_case(village, village.account("agent", "agent", village.node_id), item)
    document = envelope.from_bytes(
        village.query("SELECT document FROM outbox WHERE case_id = ?", (receipt["case_id"],))[0]["document"])
    answer = net.township.client_to_parent().push([document])
    assert answer["results"][0]["status"] == "accepted"
    assert "applied" not in answer["results"][0]  # the answer says "held by the hub", nothing more
    return receipt["case_id"]


def raw_count(net, sql: str, params: tuple = ()) -> int:
    """A count on the hub's database without applying first (NodeHandle.scalar would)."""
    return net.hub.conn.execute(sql, params).fetchone()[0]


def test_the_ack_comes_first_and_the_case_is_received_at_acceptance_time(net, item):
    hub_sync = net.hub.app.extensions["liandong_sync"]
    clock = FixedClock(net.hub.node.now())
    node_clock, net.hub.node.clock = net.hub.node.clock, clock
    try:
        with hub_sync.worker.pushing():  # a push "in flight": the worker waits
            case_id = pushed_case(net, item)
            assert raw_count(net, "SELECT COUNT(*) FROM apply_queue") == 1
            assert raw_count(net, "SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 0
            accepted_at = net.hub.conn.execute(
                "SELECT received_at FROM inbox i JOIN apply_queue q ON i.origin = q.origin AND i.seq = q.seq"
            ).fetchone()[0]
            clock.advance(hours=30)  # applied a day later: 接件 still dates from acceptance
            assert net.hub.apply_accepted() == 1
    finally:
        net.hub.node.clock = node_clock
    received = net.hub.query("SELECT at FROM case_events WHERE case_id = ? AND action = 'receive'", (case_id,))
    assert [r["at"] for r in received] == [accepted_at]
    assert net.hub.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "RECEIVED"
    assert raw_count(net, "SELECT COUNT(*) FROM apply_queue") == 0


def test_the_worker_applies_once_pushes_pause(net, item):
    case_id = pushed_case(net, item)
    deadline = time.monotonic() + 10
    while raw_count(net, "SELECT COUNT(*) FROM cases WHERE case_id = ?", (case_id,)) == 0:
        assert time.monotonic() < deadline, "the apply worker did not apply the accepted case"
        time.sleep(0.02)
    assert raw_count(net, "SELECT COUNT(*) FROM apply_queue") == 0


def test_accepted_but_unapplied_envelopes_survive_a_restart_and_apply_once(net, item, tmp_path):
    hub_sync = net.hub.app.extensions["liandong_sync"]
    with hub_sync.worker.pushing():
        case_ids = [pushed_case(net, item) for _ in range(3)]
        assert raw_count(net, "SELECT COUNT(*) FROM apply_queue") == 3
        # A second hub process on the same files (the first one "died" before applying):
        # a township's pull wakes its worker, which applies the queue.
        second = create_app({"DATA_DIR": str(net.hub.data_dir), "SCHEDULER_ENABLED": False})
        second_sync = second.extensions["liandong_sync"]
        conn = second.extensions["liandong_db"].connect(second)
        try:
            assert second_sync.apply_all(conn) == 3
            assert second_sync.apply_all(conn) == 0
        finally:
            conn.close()
    marks = ",".join("?" * len(case_ids))
    assert net.hub.scalar(f"SELECT COUNT(*) FROM cases WHERE case_id IN ({marks})", tuple(case_ids)) == 3
    assert net.hub.scalar(f"SELECT COUNT(*) FROM case_events WHERE case_id IN ({marks})", tuple(case_ids)) == 6


# ------------------------------------------------------------- apply_pending on a bare hub DB


def queued_hub(tmp_path, n: int = 5):
    """A hub database with ``n`` accepted case.submit envelopes of one village, queued."""
    conn = hub_db(tmp_path)
    docs = chain_documents("village_a", VILLAGE_A, n)
    answer = push(vector_ingestor(conn, set()), docs)
    assert [r["status"] for r in answer["results"]] == ["accepted"] * n
    return conn


def test_a_poison_envelope_is_quarantined_alone(tmp_path):
    conn = queued_hub(tmp_path)
    seen = []

    def applier(c, opened):
        audit(c, "test", "applied", str(opened.body["seq"]), "", NOW)
        if opened.body["seq"] == 3:
            raise RuntimeError("a bug, not a content fault")
        seen.append(opened.body["seq"])

    assert apply_pending(conn, {"case.submit": applier}, NOW) == 5
    # The chunk failed once and was retried one envelope per savepoint: 3's writes are undone.
    assert [int(r[0]) for r in conn.execute("SELECT target FROM audit_log WHERE action = 'applied' ORDER BY id")] \
        == [1, 2, 4, 5]
    assert seen[-4:] == [1, 2, 4, 5]
    assert [tuple(r) for r in conn.execute("SELECT seq, reason FROM quarantine")] == [(3, "apply_failed")]
    assert apply.pending(conn) == 0


def test_content_faults_are_quarantined_and_order_is_acceptance_order(tmp_path):
    conn = queued_hub(tmp_path, n=4)
    order = []

    def applier(c, opened):
        if opened.body["seq"] == 2:
            raise KeyError("item_code")
        order.append(opened.body["seq"])

    assert apply_pending(conn, {"case.submit": applier}, NOW, limit=3) == 3
    assert apply.pending(conn) == 1
    assert apply_pending(conn, {"case.submit": applier}, NOW, limit=3) == 1
    assert order == [1, 3, 4]
    assert [tuple(r) for r in conn.execute("SELECT seq, reason FROM quarantine")] == [(2, "invalid_content")]


def test_a_failed_chunk_leaves_everything_queued(tmp_path):
    conn = queued_hub(tmp_path, n=3)

    def applier(c, opened):
        audit(c, "test", "applied", str(opened.body["seq"]), "", NOW)

    def dies(*args):
        raise SystemExit("the process stops mid-chunk")

    with pytest.raises(SystemExit):
        apply_pending(conn, {"case.submit": lambda c, o: (applier(c, o), dies())}, NOW)
    assert apply.pending(conn) == 3  # rolled back: nothing half-applied, nothing lost
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'applied'").fetchone()[0] == 0
    assert apply_pending(conn, {"case.submit": applier}, NOW) == 3
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'applied'").fetchone()[0] == 3


# ------------------------------------------------------------------------- the worker thread


def test_the_worker_waits_for_a_pause_then_drains():
    calls = []
    queue = [200, 200, 50]
    done = threading.Event()

    def apply_once():
        calls.append(time.monotonic())
        n = queue.pop(0) if queue else 0
        if not queue:
            done.set()
        return n

    worker = ApplyWorker(apply_once, quiet=0.2, max_lag=30)
    with worker.pushing():
        time.sleep(0.4)
        assert calls == []  # a push in flight: nothing applied
        ended = time.monotonic()
    assert done.wait(5)
    assert calls[0] - ended >= 0.15  # waited (about) the quiet period after the push
    assert len(calls) == 4  # three chunks, then one that found nothing


def test_the_worker_does_not_starve_under_a_flood():
    applied = threading.Event()

    def apply_once():
        applied.set()
        return 0

    worker = ApplyWorker(apply_once, quiet=0.2, max_lag=0.5)
    stop = time.monotonic() + 3
    started = time.monotonic()
    worker.poke()
    while time.monotonic() < stop and not applied.is_set():
        with worker.pushing():  # pushes back to back, never a pause
            time.sleep(0.05)
    assert applied.is_set()
    assert time.monotonic() - started < 2  # within max_lag (plus scheduling), not after the flood


def test_a_paced_worker_takes_one_chunk_per_lag_while_pushes_go_on():
    """A township's follow worker (``paced``): with pushes never pausing, one chunk each
    ``max_lag``, not everything at once; the hub's (not paced) runs every chunk once forced."""
    for paced, most, least in ((True, 8, 1), (False, float("inf"), 20)):
        chunks, over = [], threading.Event()

        def apply_once(chunks=chunks, over=over):
            chunks.append(time.monotonic())
            return 0 if over.is_set() else 1  # more queued until the test is over

        worker = ApplyWorker(apply_once, quiet=10.0, max_lag=0.3, paced=paced)
        with worker.pushing():  # a push in flight throughout: never a pause
            worker.poke()
            time.sleep(1.2)
            taken = len(chunks)
            over.set()
        assert least <= taken <= most, (paced, taken)


def test_the_hub_admin_page_shows_the_queue(net, item):
    hub_sync = net.hub.app.extensions["liandong_sync"]
    net.hub.account("admin", "admin")
    session = session_for(net.hub, "admin")
    with hub_sync.worker.pushing():
        pushed_case(net, item)
        page = session.get(net.hub.url + "/admin/nodes", timeout=10).text
    assert 'id="to-apply">1<' in page and "待入库" in page


# ------------------------------------------------------------------------- rows written together


def test_deferred_rows_are_written_together_before_any_other_applier_runs(tmp_path):
    conn = queued_hub(tmp_path, n=6)
    batches, seen_by_the_applier = [], []

    def write_many(c, rows):
        batches.append(list(rows))
        c.executemany("INSERT INTO node_meta(key, value) VALUES (?, 'x')", [(f"n{r}",) for r in rows])

    def applier(c, opened):  # the one-envelope path: it must see every row deferred before it
        seen_by_the_applier.append(c.execute("SELECT COUNT(*) FROM node_meta WHERE key LIKE 'n%'").fetchone()[0])

    def prepare(c, opened):
        seq = opened.body["seq"]
        if seq == 2:
            raise KeyError("item_code")  # refused: quarantined, the others go on
        return None if seq == 4 else apply.Deferred(write_many, seq)

    applier.prepare = prepare
    assert apply_pending(conn, {"case.submit": applier}, NOW) == 6
    assert batches == [[1, 3], [5, 6]]
    assert seen_by_the_applier == [2]
    assert [tuple(r) for r in conn.execute("SELECT seq, reason FROM quarantine")] == [(2, "invalid_content")]


def test_a_chunk_of_submits_is_written_as_one_by_one_would(service, monkeypatch):
    """Cases of one chunk go in one executemany per table, with the same rows as one at a time:
    a case id repeated keeps its first copy only, a 秒批 item whose rule the form does not meet is
    接件 like any other (no savepoint), one whose rule holds is approved after the rows before it."""
    from shared.services import casework

    written = []
    write_many = casework.write_many_case_rows
    monkeypatch.setattr(casework, "write_many_case_rows",
                        lambda c, rows: (written.append([r.case[0] for r in rows]), write_many(c, rows)))
    held = service.received_case("130926-RS-0001")  # already in the register
    plain = service.submit_body("130926-RS-0001")
    refused = service.submit_body("130926-MZ-0004", age=70, local_hukou="是")  # 高龄津贴 under 80: no 秒批
    copy = {**plain, "receipt_no": plain["receipt_no"] + "9", "event": {**plain["event"], "event_id": "e" * 32}}
    again = {**service.submit_body("130926-RS-0001"), "case_id": held}
    instant = service.submit_body("130926-MZ-0004", age=85, local_hukou="是")
    service.from_village_all([("case.submit", b) for b in (plain, refused, copy, again, instant)])

    assert written == [[plain["case_id"], refused["case_id"], plain["case_id"], held]]
    conn = service.conn
    events = lambda case_id: [r[0] for r in conn.execute(  # noqa: E731
        "SELECT event_id FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,))]
    assert events(plain["case_id"]) == [plain["event"]["event_id"], casework.receive_event_id(plain["case_id"])]
    assert conn.execute("SELECT receipt_no FROM cases WHERE case_id = ?", (plain["case_id"],)).fetchone()[0] \
        == plain["receipt_no"]
    assert len(events(held)) == 2 and again["event"]["event_id"] not in events(held)
    row = casework.get_row(conn, refused["case_id"])
    received_at = conn.execute("SELECT at FROM case_events WHERE case_id = ? AND action = 'receive'",
                               (refused["case_id"],)).fetchone()[0]
    assert (row["status"], row["updated_at"]) == ("RECEIVED", received_at)  # as recording the 接件 sets it
    assert casework.get_row(conn, instant["case_id"])["status"] == "APPROVED"
    assert casework.recorded_actions(conn, instant["case_id"]) == ["submit", "receive", "accept", "approve"]
