"""Envelope version 2 (issue 12, compact wire; docs/sync-protocol.md §2.1.1, §5.2.2, §5.3, §5.6).

Real nodes over real HTTP: a node signs v2 only once its parent says it takes it (and a township
says so only once the hub did), v1 and v2 envelopes of one origin make one chain, a v1 and a v2
submission of one case are stored alike, a relay still cannot alter a v2 envelope, custody
receipts name seq ranges, and a push body leaves out the links its receiver can compute.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from faults import city_item, client_with, outbox_states
from network import form_for

from shared.core.clock import iso
from shared.core.crypto import SignatureError
from shared.core.storage import write_transaction
from shared.services import casework, submission
from sync import envelope, formats, outbox, relay, wire
from sync.node_sync import SyncState, full_forms, receipt_ids, run_round
from sync.transport import Transport
from township_node.relay_service import VerifiedPush


def _outbox_document(handle, seq: int) -> dict:
    row = handle.conn.execute("SELECT document FROM outbox WHERE seq = ?", (seq,)).fetchone()
    return envelope.from_bytes(row["document"])


def _new_case(handle) -> dict:
    """A case taken through the village's API (``shared.services.intake.submit``)."""
    from network import create_case

    agent = handle.account("agent", "agent")
    return create_case(handle, agent, city_item(handle, agent))


class RecordingSession(Transport):
    """Keeps each request's JSON body (decoded from its coding) and each answer's JSON, by path."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, dict, dict]] = []

    def request(self, method, url, *args, data=None, headers=None, **kwargs):
        response = super().request(method, url, *args, data=data, headers=headers, **kwargs)
        body = data or b""
        if (headers or {}).get("Content-Encoding"):  # gzip, or zstd where zstandard is installed
            body = wire.decode(body, headers["Content-Encoding"], 1 << 26)
        # JSON unless typed otherwise: a body in the dictionary coding carries no type (it is JSON).
        sent = json.loads(body) if body and (headers or {}).get("Content-Type", "application/json") == \
            "application/json" else {}
        self.calls.append((url.split("/sync/v1/")[-1], sent, response.json() if response.content else {}))
        return response

    def last(self, path: str) -> tuple[dict, dict]:
        return next((sent, answer) for p, sent, answer in reversed(self.calls) if p == path)


def test_a_village_signs_v1_until_its_parent_takes_v2_and_the_hub_takes_both_in_one_chain(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    with pytest.MonkeyPatch.context() as older:
        older.setattr(formats, "advertised", lambda conn, node: [1])  # hub and township of the older release
        net.sync_all()
        first = _new_case(village)
    assert formats.uplink_version(village.conn) == 1
    v1 = _outbox_document(village, 1)
    assert v1["payloadType"] == envelope.ENVELOPE
    assert {"event", "item_name", "route"} <= set(envelope.peek(v1)["body"])  # what an older parent needs
    village.sync()  # the township took v1 only from its hub, so it offers only v1 …
    assert formats.uplink_version(village.conn) == 1
    township.sync()  # … until the hub said it takes v2
    assert formats.uplink_version(township.conn) == 2
    village.sync()
    assert formats.uplink_version(village.conn) == 2
    second = _new_case(village)
    v2 = _outbox_document(village, 2)
    assert v2["payloadType"] == envelope.ENVELOPE_V2 and v2["payload"].startswith("{")  # the text, no base64
    body = envelope.peek(v2)
    assert body["v"] == 2 and not set(submission.DERIVED) & set(body["body"])
    assert body["prev"] == envelope.document_id(v1)  # one chain across the versions
    net.sync_all()
    assert outbox_states(village) == {1: "acked", 2: "acked"}
    held = {r["seq"]: envelope.from_bytes(r["document"]) for r in hub.query(
        "SELECT seq, document FROM inbox WHERE origin = ?", (village.node_id,))}
    assert held == {1: v1, 2: v2}  # relayed unchanged, byte for byte
    for case in (first, second):
        row = hub.query("SELECT item_name, limit_wd, status FROM cases WHERE case_id = ?", (case["case_id"],))[0]
        assert row["item_name"] and row["status"] == "RECEIVED"
        submit = hub.query("SELECT event_id, actor, detail FROM case_events WHERE case_id = ? AND action = 'submit'",
                           (case["case_id"],))[0]
        assert submit["event_id"] == casework.submit_event_id(case["case_id"])
        assert json.loads(submit["detail"])["actor_name"] == "agent"


def test_an_answer_without_envelope_versions_means_v1():
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE node_meta(key TEXT PRIMARY KEY, value TEXT)")
    assert formats.record_parent(conn, [1, 2]) == 2 and formats.uplink_version(conn) == 2
    assert formats.record_parent(conn, [1, 2, 3]) == 2  # a later version this code does not know
    assert formats.record_parent(conn, None) == 1 and formats.uplink_version(conn) == 1  # an older parent
    assert formats.record_parent(conn, [True, "2"]) == 1


def _hub_stores(hub, document, received_at: str) -> tuple:
    """The hub's register rows for the case of ``document`` applied now, then rolled back."""
    conn, node = hub.conn, hub.node
    opened = envelope.open_signed(document, envelope.ENVELOPE_TYPES, node.trust(conn).node_key)
    opened = dataclasses.replace(opened, received_at=received_at)
    appliers = hub.app.extensions["liandong_sync"].appliers
    case_id = opened.body["body"]["case_id"]
    conn.execute("BEGIN IMMEDIATE")
    try:
        appliers["case.submit"](conn, opened)
        return _rows(conn, case_id)
    finally:
        conn.execute("ROLLBACK")


def _township_stores(township, document) -> tuple:
    conn = township.conn
    case_id = envelope.peek(document)["body"]["case_id"]
    conn.execute("BEGIN IMMEDIATE")
    try:
        node = township.node
        township.app.extensions["liandong_sync"]._follow_case(
            conn, document, envelope.peek(document), VerifiedPush([document], node.trust(conn)), node.catalog(conn)[1].get)
        return _rows(conn, case_id)
    finally:
        conn.execute("ROLLBACK")


def _rows(conn, case_id: str) -> tuple:
    return tuple([tuple(r) for r in conn.execute(f"SELECT * FROM {table} WHERE case_id = ? ORDER BY 1, 2", (case_id,))]
                 for table in ("cases", "case_events", "case_materials"))


def _synced_city_item(build_network):
    """A synced network and a city item of its village's catalog: (net, catalog version, item)."""
    net = build_network(villages=1)
    village = net.village()
    net.sync_all()
    agent = village.account("agent", "agent")
    version, items = village.node.catalog(village.conn)
    return net, version, items[city_item(village, agent)["code"]]


def test_a_v1_and_a_v2_submission_of_one_case_are_stored_alike(build_network):
    net, version, item = _synced_city_item(build_network)
    village, township, hub = net.village(), net.township, net.hub
    node, conn = village.node, village.conn
    applicant = {"name": "王五", "id_number": "130926199001011237", "phone": "13800138000"}
    materials = [{"code": m["code"], "filename": f"{m['code']}.pdf", "sha256": f"{i:064x}", "size": 10 + i}
                 for i, m in enumerate(item["materials"])]
    with write_transaction(conn):
        body, _ = casework.capture(
            conn, node_id=node.node_id, item=item, catalog_version=version, route={"level": "city", "office": "x"},
            applicant=applicant, form=form_for(item), materials=materials, agent="agent", now=node.now(),
            entrustment={"principal": "王五", "agent": "agent", "scope": item["name"], "consent": True},
            cited_licences=[{"material": "m", "licence_id": "L-1"}], agent_name="王代办")
    header = {"origin": node.node_id, "seq": 1, "prev": outbox.GENESIS, "hlc": str(node.hlc.now()),
              "kind": "case.submit", "attachments": []}
    as_v1 = envelope.sign(node.key, envelope.ENVELOPE, {**header, "v": 1, "body": {**body, "missing_materials": []}})
    compact = submission.compact(body, node.node_id)
    as_v2 = envelope.sign(node.key, envelope.ENVELOPE_V2, {**header, "v": 2, "body": compact})
    assert len(envelope.to_bytes(as_v2)) < 0.75 * len(envelope.to_bytes(as_v1))
    received_at = iso(hub.node.now())
    at_hub = _hub_stores(hub, as_v1, received_at)
    assert at_hub[0] and len(at_hub[1]) == 2 and len(at_hub[2]) == len(materials)  # case, submit + 接件, files
    assert _hub_stores(hub, as_v2, received_at) == at_hub
    at_township = _township_stores(township, as_v1)
    assert at_township[0] and _township_stores(township, as_v2) == at_township


def test_a_v2_body_that_carries_what_the_receiver_derives_is_refused(build_network):
    net, version, item = _synced_city_item(build_network)
    village, township, hub = net.village(), net.township, net.hub
    node, conn = village.node, village.conn
    with write_transaction(conn):
        body, _ = casework.capture(
            conn, node_id=node.node_id, item=item, catalog_version=version, route={"level": "city", "office": "x"},
            applicant={"name": "王五", "id_number": "130926199001011237", "phone": "13800138000"},
            form=form_for(item), materials=[], agent="agent", now=node.now())
        forged = {**submission.compact(body, node.node_id), "item_name": "另一个事项"}  # disagrees with the catalog
        outbox.append(conn, node.key, node.node_id, "case.submit", forged, str(node.hlc.now()), node.now(),
                      case_id=body["case_id"], version=2)
    net.sync_all()
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (body["case_id"],)) == 0
    refused = hub.query("SELECT reason, detail FROM quarantine WHERE origin = ?", (village.node_id,))
    assert [r["reason"] for r in refused] == ["invalid_content"] and "item_name" in refused[0]["detail"]
    assert outbox_states(village) == {1: "acked"}  # it keeps its place in the chain
    assert township.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'relay.not_followed'") >= 1


def test_a_relay_cannot_alter_a_v2_envelope(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    net.sync_all()
    case = _new_case(village)
    village.sync()
    row = township.conn.execute("SELECT envelope_id, document FROM custody").fetchone()
    document = envelope.from_bytes(row["document"])
    assert document["payloadType"] == envelope.ENVELOPE_V2
    name = envelope.peek(document)["body"]["applicant"]["name"]
    altered = {**document, "payload": document["payload"].replace(name, "李四")}
    assert altered != document
    with write_transaction(township.conn):  # the township's disk is edited behind its back
        township.conn.execute("UPDATE custody SET document = ? WHERE envelope_id = ?",
                              (envelope.to_bytes(altered), row["envelope_id"]))
    township.sync()
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (case["case_id"],)) == 0
    assert [r["reason"] for r in hub.query("SELECT reason FROM quarantine")] == ["bad_signature"]
    assert outbox_states(village) == {1: "custody"}  # nothing acknowledged: the village keeps its case


def test_a_lone_surrogate_in_a_v2_payload_is_refused_not_a_crash():
    document = {"payloadType": envelope.ENVELOPE_V2, "payload": '{"a":"\ud800"}', "signatures": []}
    for check in (envelope.document_id, envelope.peek):
        with pytest.raises(SignatureError, match="not valid Unicode"):
            check(document)


def test_custody_receipts_name_seq_ranges_for_a_village_that_asks(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    net.sync_all()
    for _ in range(3):
        _new_case(village)
    session = RecordingSession()
    assert "error" not in run_round(village.conn, village.node, SyncState(), client=client_with(village, session),
                                    force=True)
    sent, answer = session.last("push")
    assert sent["receipt"] == "ranges"
    trust = village.node.trust(village.conn)
    assert len(answer["receipt"]["signatures"][0]["keyid"]) == envelope.SHORT_KID  # the short form (§2.1.2)
    receipt = envelope.open_signed(full_forms(answer, village.node, trust)["receipt"], envelope.CUSTODY_TYPES,
                                   trust.node_key)
    assert receipt.payload_type == envelope.CUSTODY_V2 and "envelope_ids" not in receipt.body
    assert [(r["first"], r["last"]) for r in receipt.body["held"]] == [(1, 3)]
    assert outbox_states(village) == {1: "custody", 2: "custody", 3: "custody"}
    ids = [r["envelope_id"] for r in village.query("SELECT envelope_id FROM outbox ORDER BY seq")]
    assert receipt_ids(village.conn, village.node_id, receipt.body) == ids
    # A run whose digest does not match this outbox's own envelopes covers nothing.
    wrong = {"held": [{**receipt.body["held"][0], "ids_sha256": relay.ids_digest(ids[::-1])}]}
    assert receipt_ids(village.conn, village.node_id, wrong) == []
    other = {"held": [{**receipt.body["held"][0], "origin": "130926100299"}]}
    assert receipt_ids(village.conn, village.node_id, other) == []
    # A village of the older release does not ask: it gets every id, as before.
    older = village.client_to_parent().push([_outbox_document(village, 1)])
    assert older["receipt"]["payloadType"] == envelope.CUSTODY
    assert envelope.peek(older["receipt"])["envelope_ids"] == ids[:1]
    assert township.scalar("SELECT COUNT(*) FROM custody") == 3


def test_a_push_body_leaves_out_the_links_its_receiver_computes(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    net.sync_all()
    for _ in range(3):
        _new_case(village)
    session = RecordingSession()
    run_round(village.conn, village.node, SyncState(), client=client_with(village, session), force=True)
    sent, _ = session.last("push")
    wire = sent["envelopes"]
    assert '"prev":""' not in wire[0]["payload"]  # its predecessor went in an earlier push
    assert all('"prev":""' in d["payload"] for d in wire[1:])
    stored = [envelope.from_bytes(r["document"]) for r in township.query("SELECT document FROM custody ORDER BY seq")]
    assert stored == [_outbox_document(village, s) for s in (1, 2, 3)]  # restored: the signed bytes
    session = RecordingSession()
    run_round(township.conn, township.node, SyncState(), client=client_with(township, session), force=True)
    sent, answer = session.last("push")
    assert all('"prev":""' in d["payload"] for d in sent["envelopes"][1:])
    # Accepted (waiting for the material files, which follow in the same round): restored and verified.
    assert [(r["seq"], r["status"]) for r in answer["results"]] == [(1, "accepted"), (2, "accepted"), (3, "accepted")]
    hub.apply_accepted()
    assert hub.scalar("SELECT COUNT(*) FROM cases") == 3


def test_elided_links_are_only_restored_from_the_envelope_before_them(build_network):
    net = build_network(villages=1)
    village = net.village()
    net.sync_all()
    for _ in range(2):
        _new_case(village)
    first, second = _outbox_document(village, 1), _outbox_document(village, 2)
    wire = envelope.elide_links([first, second])
    assert wire[0] == first and wire[1] != second and envelope.restore_links(wire) == [first, second]
    assert envelope.elide_links([second, first]) == [second, first]  # not each other's predecessor: untouched
    # The client elides on the stored bytes: the same bytes as eliding the parsed documents.
    rows = village.query("SELECT envelope_id, document FROM outbox WHERE seq IN (1, 2) ORDER BY seq")
    assert envelope.elide_stored([r["document"] for r in rows], [r["envelope_id"] for r in rows]) == [
        envelope.to_bytes(d) for d in wire]
    assert envelope.elide_stored([r["document"] for r in rows[::-1]], [r["envelope_id"] for r in rows[::-1]]) == [
        bytes(r["document"]) for r in rows[::-1]]
    alone = envelope.restore_links([wire[1]])[0]  # no envelope before it: stays as sent …
    assert alone == wire[1]
    with pytest.raises(SignatureError, match="does not verify"):  # … and does not verify
        envelope.open_signed(alone, envelope.ENVELOPE_TYPES, village.node.trust(village.conn).node_key)


def test_a_township_refuses_an_envelope_whose_header_names_another_version(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    net.sync_all()
    node = village.node
    header = {"origin": node.node_id, "seq": 1, "prev": outbox.GENESIS, "hlc": str(node.hlc.now()),
              "kind": "case.rating", "body": {}, "attachments": []}
    mislabelled = [envelope.sign(node.key, envelope.ENVELOPE_V2, {**header, "v": 1}),
                   envelope.sign(node.key, envelope.ENVELOPE, {**header, "v": 2})]
    answer = village.client_to_parent().push(mislabelled)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [("rejected", "malformed")] * 2
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0


def test_an_origin_signs_v2_only_for_a_submit_event_the_receiver_can_derive():
    case = {"case_id": "6f1c2a9e0b7d4e58a3c1f2e4d5b6a7c8", "receipt_no": "R-1", "submitted_at": "2027-03-01T08:30:00.000Z",
            "agent": "agent", "item_code": "X", "item_name": "事项", "limit_wd": 3, "route": {}, "missing_materials": []}
    event = {"event_id": casework.submit_event_id(case["case_id"]), "at": case["submitted_at"], "node": "130926100201",
             "actor": "agent", "action": "submit", "from_status": None, "to_status": "SUBMITTED", "comment": "",
             "detail": {"receipt_no": "R-1", "actor_name": "王代办"}}
    compact = submission.compact({**case, "event": event}, "130926100201")
    assert compact["agent_name"] == "王代办" and "event" not in compact
    for changed in ({"event_id": "0" * 32}, {"comment": "补充说明"}, {"detail": {"receipt_no": "R-1", "other": 1}},
                    {"detail": {"receipt_no": "R-2"}}, {"at": "2027-03-02T08:30:00.000Z"}):
        with pytest.raises(ValueError, match="not derivable"):  # it would be lost …
            submission.compact({**case, "event": {**event, **changed}}, "130926100201")
        odd = {**case, "event": {**event, **changed}}
        assert submission.for_version(odd, "130926100201", 2) == (odd, 1)  # … so such a case goes as v1
    assert submission.for_version({**case, "event": event}, "130926100201", 2) == (compact, 2)
    assert submission.for_version({**case, "event": event}, "130926100201", 1)[1] == 1
