"""The sync path without per-item or quadratic work (issue 12, points 1 and 4): each shortcut
gives exactly what the long way gave, and the guarantees (nothing lost or duplicated, order per
origin, kill -9 safety) hold."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from faults import WireSession, city_item, client_with, material_files, outbox_states
from network import clock_at, create_case, sha256_hex

from city_hub.sync_service import HubSync
from shared.core import canonical
from shared.core.crypto import SigningKey
from shared.core.storage import write_transaction
from sync import envelope, node_sync, outbox, relay, schema, trust
from sync.client import ParentClient
from sync.ingest import Ingestor
from sync.node_sync import SyncState, run_round
from township_node.relay_service import TownshipSync


def _documents(key: SigningKey, n: int) -> list[dict]:
    return [envelope.sign(key, envelope.ENVELOPE, {"v": 1, "origin": "130926100201", "seq": i, "kind": "case.submit",
                                                   "body": {"申请人": "王建国", "form": {"地址": "东关村三街12号"}, "n": i},
                                                   "attachments": []})
            for i in range(1, n + 1)]


def test_a_push_joined_from_stored_bytes_sends_the_bytes_of_the_parsed_push(monkeypatch):
    key = SigningKey.generate()
    sent = []
    monkeypatch.setattr(ParentClient, "_call", lambda self, method, path, body, *a, **k: sent.append((path, body)) or {})
    client = ParentClient("http://127.0.0.1:9", "130926100", "130926100201", key, nonces=None)
    for n in (0, 1, 3):
        docs = _documents(key, n)
        for compact in (False, True):
            sent.clear()
            client.push(docs, compact=compact)
            client.push_stored([envelope.to_bytes(d) for d in docs], compact=compact)
            assert sent[0] == sent[1], (n, compact)


def test_a_township_push_parses_each_envelope_once_and_reads_its_catalog_once(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for tag in "abc":
        create_case(village, agent, item, material_files(item, tag))
    counts = {"active": False, "payloads": 0, "catalogs": 0}
    real_loads, real_catalog = canonical.loads_canonical, trust.trusted_catalog
    real_prepare, real_push = TownshipSync.prepare_push, TownshipSync.push

    def loads_canonical(data, *args, **kwargs):
        counts["payloads"] += counts["active"]
        return real_loads(data, *args, **kwargs)

    def trusted_catalog(conn):
        counts["catalogs"] += counts["active"]
        return real_catalog(conn)

    def counted(real):
        def call(self, *args, **kwargs):
            counts["active"] = True
            try:
                return real(self, *args, **kwargs)
            finally:
                counts["active"] = False
        return call

    monkeypatch.setattr(canonical, "loads_canonical", loads_canonical)
    monkeypatch.setattr(trust, "trusted_catalog", trusted_catalog)
    monkeypatch.setattr(TownshipSync, "prepare_push", counted(real_prepare))
    monkeypatch.setattr(TownshipSync, "push", counted(real_push))
    assert "error" not in village.sync()
    assert township.scalar("SELECT COUNT(*) FROM custody") == 3
    assert township.scalar("SELECT COUNT(*) FROM cases") == 3  # every case followed
    # One parse each, before the write lock: custody and following them parsed each again.
    assert counts["payloads"] == 3
    assert counts["catalogs"] == 1  # once per push, not once per case


def _custody_db(rows: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.executescript(schema.RELAY)
    # Two villages' pushes interleaved, each in seq order, as custody takes them.
    for i in range(rows):
        origin, seq = ("130926100201", i // 2 + 1) if i % 2 == 0 else ("130926100202", i // 2 + 1)
        conn.execute("INSERT INTO custody(envelope_id, origin, seq, document, received_at) VALUES (?,?,?,?,?)",
                     (f"{i:064x}", origin, seq, b"{}", "2026-12-01T00:00:00.000Z"))
    return conn


def test_forwarding_walks_custody_in_arrival_order_without_sorting_it():
    conn = _custody_db(2000)
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN SELECT envelope_id, origin, seq, document"
                                                " FROM custody ORDER BY rowid LIMIT 200"))
    assert "TEMP B-TREE" not in plan
    steps = []
    conn.set_progress_handler(lambda: steps.append(1), 10)
    first = relay.to_forward(conn, 10)
    conn.set_progress_handler(None, 10)
    assert len(steps) < 40, len(steps)  # sorting 2,000 rows to return 10 took thousands of steps
    assert [(r["origin"], r["seq"]) for r in first][:4] == [("130926100201", 1), ("130926100202", 1),
                                                          ("130926100201", 2), ("130926100202", 2)]
    # Acknowledged rows leave; a row taken later comes after every row still held, per origin in order.
    conn.execute("DELETE FROM custody WHERE seq <= 999")
    conn.execute("INSERT INTO custody(envelope_id, origin, seq, document, received_at) VALUES (?,?,?,?,?)",
                 ("f" * 64, "130926100201", 1001, b"{}", "2026-12-01T00:00:01.000Z"))
    assert [(r["origin"], r["seq"]) for r in relay.to_forward(conn, 10)] == [
        ("130926100201", 1000), ("130926100202", 1000), ("130926100201", 1001)]


def test_an_acknowledgement_is_worked_out_without_reading_the_origins_whole_inbox():
    """refresh_ack finds the first envelope still waiting for a file in ``inbox_blobs``' key: asking
    ``inbox`` for ``blobs_pending > 0`` read all of an origin's envelopes at every push."""
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.executescript(schema.HUB)
    origin, key = "130926100201", SigningKey.generate()
    conn.executemany("INSERT INTO inbox(origin, seq, envelope_id, prev, kind, document, received_at, via,"
                     " blobs_pending) VALUES (?,?,?,?,?,?,?,?,?)",
                     [(origin, seq, f"{seq:064x}", "0" * 64, "case.submit", b"x" * 1500, "2026-12-01T00:00:00.000Z",
                       origin, 1 if seq == 4000 else 0) for seq in range(1, 5001)])
    conn.execute("INSERT INTO inbox_blobs(origin, seq, sha256) VALUES (?, 4000, ?)", (origin, "a" * 64))
    store = trust.TrustStore(hub_id="130926", root_public_key=key.public_b64)
    ingestor = Ingestor(conn, store, key, has_blob=lambda sha: False, max_skew_ms=0)
    steps = []
    conn.set_progress_handler(lambda: steps.append(1), 100)
    ack = ingestor.refresh_ack(origin, datetime(2026, 12, 1, 8, tzinfo=UTC))
    conn.set_progress_handler(None, 100)
    assert envelope.peek(ack)["acked_seq"] == 3999  # held back by the file the 4,000th still waits for
    assert len(steps) < 20, len(steps)  # reading 5,000 envelopes took hundreds of steps of 100


def test_the_files_a_push_names_are_looked_up_once_and_a_released_envelope_still_finds_its_own(tmp_path):
    """Ingest asks which of a batch's files are here in one lookup (a query and a stat per file
    cost ~0.1 ms each at 2,000 files a drain); an envelope that waited behind a gap and is
    released by a later push is not in that push's lookup, and is looked up on its own."""
    from test_vectors import NOW, VILLAGE_B, WALL_MS, envelope_body, hub_db, key, trust_store

    file_a, file_b = sha256_hex(b"id card scan"), sha256_hex(b"hukou scan")
    sign = lambda body: envelope.sign(key("village_b"), envelope.ENVELOPE, body)  # noqa: E731
    first = sign(envelope_body(VILLAGE_B, 1, outbox.GENESIS))
    second = sign(envelope_body(VILLAGE_B, 2, envelope.document_id(first), attachments=[{"sha256": file_a, "size": 12}]))
    third = sign(envelope_body(VILLAGE_B, 3, envelope.document_id(second), attachments=[{"sha256": file_b, "size": 10}]))
    here, batch_lookups, single_lookups = {file_a, file_b}, [], []
    conn = hub_db(tmp_path)
    ingestor = Ingestor(conn, trust_store(), key("hub_signing"), lambda sha: single_lookups.append(sha) or sha in here,
                        0, held_blobs=lambda shas: batch_lookups.append(sorted(shas)) or here & set(shas))

    def push(documents):
        with write_transaction(conn):
            return ingestor.ingest(documents, via=VILLAGE_B, now=NOW, wall_ms=WALL_MS).to_json()

    assert [r["status"] for r in push([first, third])["results"]] == ["accepted", "held"]  # 2 is missing
    answer = push([second])  # closes the gap: 3 is accepted from the held buffer
    assert [r["status"] for r in answer["results"]] == ["accepted"]
    assert batch_lookups == [[file_b], [file_a]]
    assert single_lookups == [file_b]  # the released envelope's file, not in the second push's lookup
    assert conn.execute("SELECT COUNT(*) FROM inbox WHERE blobs_pending > 0").fetchone()[0] == 0
    assert envelope.peek(answer["acks"][0])["acked_seq"] == 3


def test_an_overdue_envelope_is_offered_again_and_custody_is_searched_once_a_minute(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    statements: list[str] = []
    village.conn.set_trace_callback(statements.append)
    state, start = SyncState(), village.node.now()

    def round_at(minutes: float) -> int:
        statements.clear()
        with clock_at(village, start + timedelta(minutes=minutes)):
            assert "error" not in run_round(village.conn, village.node, state,
                                            client=client_with(village, WireSession()), force=True)
        return sum("custody_at <" in s for s in statements)  # the walk over every row in custody

    assert round_at(0) == 1
    assert outbox_states(village) == {1: "custody"}
    with township.conn:
        township.conn.execute("DELETE FROM custody")  # the township lost its disk
    assert round_at(0.5) == 0  # searched half a minute ago: not again
    assert round_at(5) == 1  # nothing overdue yet (10 minutes)
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0
    assert round_at(11) == 1
    assert township.scalar("SELECT COUNT(*) FROM custody") == 1  # offered again
    assert round_at(11.1) == 1  # while some are overdue, every round looks
    village.conn.set_trace_callback(None)


def _cases_with_files(village, n: int) -> list[list]:
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    files = [material_files(item, f"f{i}") for i in range(n)]
    for f in files:
        create_case(village, agent, item, f)
    return files


def test_a_batch_of_files_moves_each_origins_acknowledgement_once(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    _cases_with_files(village, 3)
    assert "error" not in village.sync()  # envelopes and files at the township
    signed, inside = [], []
    real_sign, real_complete = envelope.sign, HubSync.blobs_complete

    def sign(key, payload_type, body):
        if inside and payload_type == envelope.ACK:
            signed.append(body["acked_seq"])
        return real_sign(key, payload_type, body)

    def blobs_complete(self, *args, **kwargs):
        inside.append(1)
        try:
            return real_complete(self, *args, **kwargs)
        finally:
            inside.clear()

    monkeypatch.setattr(envelope, "sign", sign)
    monkeypatch.setattr(HubSync, "blobs_complete", blobs_complete)
    assert "error" not in township.sync()  # the envelopes, then every file in one batch
    assert signed == [3]  # one ack for the batch: per file, it was signed again at each step (1, 2, 3)
    net.sync_all()
    assert outbox_states(village) == {1: "acked", 2: "acked", 3: "acked"}


def _hub_waiting(net) -> int:
    return net.hub.scalar("SELECT COUNT(*) FROM inbox_blobs")


def test_files_on_disk_but_not_recorded_are_released_testing_only_what_holds_an_ack_back(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    files = _cases_with_files(village, 3)
    assert "error" not in village.sync()
    to_hub = client_with(township, WireSession())
    to_hub.push([envelope.from_bytes(r["document"]) for r in township.query("SELECT document FROM custody")])
    assert _hub_waiting(net) == sum(len(f) for f in files)
    tested = []
    real_has = hub.node.blobs.has
    monkeypatch.setattr(hub.node.blobs, "has", lambda sha: tested.append(sha) or real_has(sha))
    to_hub.push([])
    assert len(tested) == len(files[0])  # the first waiting envelope's files: the others wait behind it
    # The hub wrote the first two cases' files and died before recording them (kill -9).
    for _, _, data in files[0] + files[1]:
        hub.node.blobs.put(data)
    answer = to_hub.push([])
    assert _hub_waiting(net) == len(files[2])  # both released in one push, up to the file still missing
    acks = [envelope.open_signed(a, envelope.ACK, hub.node.trust(hub.conn).hub_key).body for a in answer["acks"]]
    assert [(a["origin"], a["acked_seq"]) for a in acks] == [(village.node_id, 2)]


def test_the_decoders_built_once_refuse_what_json_loads_refused():
    with pytest.raises(canonical.CanonicalError, match="BOM"):
        canonical.loads_canonical('\ufeff{"a":1}'.encode())
    with pytest.raises(canonical.CanonicalError, match="BOM"):
        canonical.loads('\ufeff{"a":1}'.encode())
    with pytest.raises(canonical.CanonicalError, match="duplicate key 'b'"):
        canonical.loads(b'{"a":{"b":1,"c":2,"b":3}}')
    with pytest.raises(canonical.CanonicalError, match="floats"):
        canonical.loads_canonical(b'{"a":1.5}')
    with pytest.raises(canonical.CanonicalError, match="not serialisable"):
        canonical.dumps({"a": float("nan")})
    assert canonical.loads(b'{"a":{"b":1,"c":2}}') == {"a": {"b": 1, "c": 2}}


def test_a_node_without_files_does_not_read_its_backlog_for_files_every_round(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(40):
        create_case(village, agent, item, [])  # no material files
    state, steps = SyncState(), []
    assert node_sync._attachments_to_send(village.conn, village.node, state) == []
    assert state.files_through == 40
    create_case(village, agent, item, [])
    village.conn.set_progress_handler(lambda: steps.append(1), 1)
    try:
        assert node_sync._attachments_to_send(village.conn, village.node, state) == []
    finally:
        village.conn.set_progress_handler(None, 1)
    assert state.files_through == 41
    assert len(steps) < 80, len(steps)  # reading the 41 unacknowledged rows again took ~150, growing with them
    files = material_files(item, "late")
    create_case(village, agent, item, files)  # a case with files after them: its files are found
    wanted = node_sync._attachments_to_send(village.conn, village.node, state)
    assert sorted(a["sha256"] for a in wanted) == sorted(sha256_hex(d) for _, _, d in files)


def test_custody_takes_an_envelope_in_two_statements_and_still_tells_a_retry_from_a_fork(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(5):
        create_case(village, agent, item, [])
    documents = [envelope.from_bytes(r["document"]) for r in outbox.to_send(village.conn, 10)]
    conn, trust_store = township.conn, township.node.trust(township.conn)
    statements: list[str] = []

    def take(docs):
        statements.clear()
        conn.set_trace_callback(statements.append)
        try:
            with write_transaction(conn):
                return relay.take_custody(conn, trust_store, township.node_id, docs, township.node.now(),
                                          caller=village.node_id)
        finally:
            conn.set_trace_callback(None)

    results, held = take(documents)
    assert [r["status"] for r in results] == ["custody"] * 5 and len(held) == 5
    work = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "PRAGMA"))]
    assert len(work) == 2 * 5 + 1, work  # custody row, first id of (origin, seq); the ack once per origin (was 4 each)
    results, held = take(documents)  # a retry: the very same envelopes
    assert [r["status"] for r in results] == ["custody"] * 5
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE last_error = 'fork'") == 0
    fork = sign_as(village, {**envelope.peek(documents[2]), "body": {"other": "content"}})
    results, _ = take([fork])
    assert results[0]["status"] == "custody"
    assert township.scalar("SELECT last_error FROM custody WHERE envelope_id = ?", (envelope.document_id(fork),)) == "fork"


def sign_as(handle, body: dict) -> dict:
    """An envelope with ``body`` signed by ``handle``'s own node key."""
    return envelope.sign(handle.node.key, envelope.ENVELOPE, body)


def test_hub_ingest_writes_one_row_per_envelope_and_queues_them_in_acceptance_order(build_network):
    net = build_network(villages=1)
    village, hub = net.village(), net.hub
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(6):
        create_case(village, agent, item, [])
    documents = [envelope.from_bytes(r["document"]) for r in outbox.to_send(village.conn, 10)]
    hub_sync = hub.app.extensions["liandong_sync"]
    statements: list[str] = []
    hub.conn.set_trace_callback(statements.append)
    try:
        answer = hub_sync.push(hub.conn, hub.node, net.township.node_id, documents[3:] + documents[:3])
    finally:
        hub.conn.set_trace_callback(None)
    # 4, 5, 6 wait behind the gap (held) until 1, 2, 3 arrive; then all six are accepted in order.
    assert [r["status"] for r in answer["results"]] == ["held"] * 3 + ["accepted"] * 3
    queued = [r["seq"] for r in hub.conn.execute("SELECT seq FROM apply_queue ORDER BY id")]
    assert queued == [1, 2, 3, 4, 5, 6]
    inserts = [s for s in statements if s.startswith(("INSERT INTO inbox(", "INSERT INTO apply_queue"))]
    assert len(inserts) == 6 + 6  # per envelope: its inbox row and its queue entry, nothing else written
    assert not any(s.startswith("DELETE FROM blob_parking") for s in statements)  # no files named: none claimed
    hub.apply_accepted()
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE origin = ?", (village.node_id,)) == 6


class _NoFiles(WireSession):
    """The link drops whenever material files are sent."""

    def request(self, method, url, *args, **kwargs):
        if url.endswith("/sync/v1/blobs/batch"):
            raise ConnectionError("link dropped by the test")
        return super().request(method, url, *args, **kwargs)


def test_an_envelope_the_hub_holds_is_not_forwarded_again_while_its_files_come(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    _cases_with_files(village, 2)
    pushed: list[str] = []
    real_push = ParentClient.push_stored

    def push_stored(self, documents, compact=False, ids=None, **asked):
        if self.node_id == township.node_id:
            pushed.extend(envelope.document_id(envelope.from_bytes(d)) for d in documents)
        return real_push(self, documents, compact, ids, **asked)

    monkeypatch.setattr(ParentClient, "push_stored", push_stored)
    state, start = SyncState(), township.node.now()

    def township_round(minutes: float = 0) -> None:
        with clock_at(township, start + timedelta(minutes=minutes)):
            run_round(township.conn, township.node, state, client=client_with(township, WireSession()), force=True)

    # The envelopes reach the township, their files not yet.
    assert "error" in run_round(village.conn, village.node, SyncState(), client=client_with(village, _NoFiles()),
                                force=True)
    township_round()
    assert len(pushed) == 2  # the hub holds both, waiting for their files
    for minutes in (1, 2, 5):
        township_round(minutes)
    assert len(pushed) == 2  # not pushed again each round while the files are missing
    township_round(11)
    assert len(pushed) == 4  # the acknowledgement is overdue: forwarded again (at least once)
    assert township.scalar("SELECT COUNT(*) FROM custody") == 2  # nothing left custody meanwhile
    net.sync_all(rounds=3)
    assert outbox_states(village) == {1: "acked", 2: "acked"}
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0


@pytest.mark.parametrize("push_ahead", [False, True])
def test_a_round_sends_only_the_files_of_envelopes_the_parent_holds_or_gets_in_it(build_network, push_ahead):
    """Files of envelopes still queued would be parked at the parent, against this node's quota:
    a round sends those of the envelopes it pushed (and earlier ones), the rest with their own;
    pushing ahead, each push's files right after it (one round drains the three)."""
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    scans = [material_files(item, f"one-by-one-{i}") for i in range(3)]
    for files in scans:
        create_case(village, agent, item, files)
    village.node.config.update(SYNC_BATCH=1, SYNC_BATCH_MAX=1, SYNC_PUSH_AHEAD=push_ahead)
    try:
        for pushed in ((3,) if push_ahead else (1, 2, 3)):
            summary = run_round(village.conn, village.node, SyncState(), force=True)
            assert summary["pushed"] == (3 if push_ahead else 1)
            held = [all(township.node.blobs.has(sha256_hex(data)) for _, _, data in files) for files in scans]
            assert held == [i < pushed for i in range(3)], (pushed, held)
            assert township.scalar("SELECT COUNT(*) FROM blob_parking") == 0
    finally:
        village.node.config.update(SYNC_BATCH=200, SYNC_PUSH_AHEAD=True)
