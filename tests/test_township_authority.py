"""The township applies what its villages send with the hub's own rules (shared/rules/authority.py).

Replays of the attacks of a hacked village PC holding one enrolled village's key (issue: trust
at every tier): a decision forged for another village's township-decided case, a decision
document signed with the village's own key, and a case that names its own route. Each is
refused at the township as at the hub; what the township refuses still goes on to the hub,
which decides for itself, and the honest village's case is untouched.
"""

from __future__ import annotations

import pytest
from faults import WireSession, client_with
from network import catalog, create_case, form_for, pick_item

from shared.core.storage import write_transaction
from shared.services import casework, documents
from sync import envelope, outbox
from sync.client import SyncUnavailable


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=2)


def _agent(village):
    return village.account("agent", "agent", village.node_id)


def _send(village, kind: str, body: dict, case_id: str) -> None:
    """Queue an envelope the village signs itself, as a hacked PC would (bypassing its pages)."""
    node, conn = village.node, village.conn
    with write_transaction(conn):
        outbox.append(conn, node.key, node.node_id, kind, body, str(node.hlc.now()), node.now(), case_id=case_id)


def _status(handle, case_id: str) -> str | None:
    return handle.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,))


def _forged_event(village, row, action: str, to_status: str, documents_: list = ()) -> dict:
    event = casework.new_event(village.node_id, "agent", action, row["status"], to_status, village.node.now(),
                               "伪造")
    return casework.update_message(row, event, None, list(documents_))


def test_a_village_cannot_decide_another_villages_township_case_at_the_township(net):
    honest, hostile = net.village(0), net.village(1)
    item = pick_item(catalog(honest, _agent(honest)), "township")
    case_id = create_case(honest, _agent(honest), item)["case_id"]
    net.sync_all()
    township = net.township
    assert _status(township, case_id) == "RECEIVED"  # 接件 at the deciding township
    row = casework.get_row(township.conn, case_id)
    # An 受理 is a valid transition from RECEIVED: only the sender's entitlement refuses it.
    _send(hostile, "case.event", _forged_event(hostile, row, "accept", "ACCEPTED"), case_id)
    net.sync_all()
    assert _status(township, case_id) == "RECEIVED"
    refused = township.query("SELECT detail FROM audit_log WHERE action = 'relay.not_followed' AND target = ?",
                             (hostile.node_id,))
    assert refused and "无权" in refused[-1]["detail"]
    # The hub refuses the same envelope (its copy of the case is the township's business).
    reasons = {r["reason"] for r in net.hub.query("SELECT reason FROM quarantine WHERE origin = ?",
                                                   (hostile.node_id,))}
    assert reasons, "the hub did not refuse the forged event"
    assert _status(honest, case_id) == "RECEIVED"


def test_a_decision_document_signed_by_a_village_is_not_stored_or_shown(net):
    # The origin may send its own 送达 of a decided case, so entitlement and the state machine
    # let the event through: only the check of the documents it carries refuses it.
    hostile = net.village(1)
    item = pick_item(catalog(hostile, _agent(hostile)), "township")
    case_id = create_case(hostile, _agent(hostile), item)["case_id"]
    net.sync_all()
    township = net.township
    clerk = township.account("clerk_doc", "clerk", township.node_id)
    for action in ("accept", "approve"):
        r = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk, json={"action": action, "comment": "符合"})
        assert r.status_code == 200, r.text
    net.sync_all()
    row = casework.get_row(hostile.conn, case_id)
    assert row["status"] == "APPROVED"
    forged = envelope.sign(hostile.node.key, envelope.DOCUMENT, {
        "v": 1, "kind": "approve", "title": "准予许可决定书", "number": "伪造〔2026〕1号", "case_id": case_id,
        "receipt_no": row["receipt_no"], "item_name": row["item_name"], "applicant_name": row["applicant_name"],
        "applicant_id": "x", "office": township.node_id, "issuer": hostile.node_id, "issuer_name": "伪造",
        "issued_at": "2026-01-01T00:00:00.000Z", "comment": "", "details": {}})
    _send(hostile, "case.event", _forged_event(hostile, row, "deliver", "CONCLUDED", [forged]), case_id)
    net.sync_all()
    assert township.scalar("SELECT COUNT(*) FROM documents WHERE case_id = ? AND issuer = ?",
                           (case_id, hostile.node_id)) == 0
    assert _status(township, case_id) == "APPROVED"  # the whole update was refused
    refused = township.query("SELECT detail FROM audit_log WHERE action = 'relay.not_followed' AND target = ?",
                             (hostile.node_id,))
    assert refused and "文书" in refused[-1]["detail"]
    with pytest.raises(Exception, match="无权|签发"):
        documents.check_for_case(forged, township.node.trust(township.conn), case_id, township.node_id)


def test_the_township_routes_a_case_by_its_own_catalog_not_by_the_payload(net):
    hostile = net.village(1)
    node, conn = hostile.node, hostile.conn
    item = pick_item(catalog(hostile, _agent(hostile)), "city")  # a county-decided item
    version, _ = node.catalog(conn)
    forged_route = {"level": "township", "office": net.township.node_id}
    applicant = {"name": "王五", "id_number": "130926199001011237", "phone": "13800138000"}
    with write_transaction(conn):
        body, _ = casework.capture(conn, node_id=node.node_id, item=item, catalog_version=version,
                                   route=forged_route, applicant=applicant, form=form_for(item), materials=[],
                                   agent="agent", now=node.now())
        # Version 1 carries a route (a v2 body has none: one that carries it is refused outright,
        # tests/test_envelope_v2.py); a v1 route is ignored by every receiver.
        outbox.append(conn, node.key, node.node_id, "case.submit", body, str(node.hlc.now()), node.now(),
                      case_id=body["case_id"], version=1)
    net.sync_all()
    township, hub = net.township, net.hub
    stored = township.query("SELECT route_level, route_office, status FROM cases WHERE case_id = ?",
                            (body["case_id"],))[0]
    assert stored["route_level"] == "city" and stored["route_office"] != township.node_id
    assert stored["status"] != "RECEIVED" or stored["route_level"] == "city"  # not 接件 as its own
    clerk = township.account("clerk_route", "clerk", township.node_id)
    r = township.api("POST", f"/api/v1/cases/{body['case_id']}/actions", clerk, json={"action": "accept"})
    assert r.status_code in (403, 409), r.text  # the township does not decide a county item
    assert hub.scalar("SELECT route_level FROM cases WHERE case_id = ?", (body["case_id"],)) == "city"


def test_the_cases_of_one_push_are_stored_together_and_a_broken_one_alone_is_refused(net, monkeypatch):
    """The township stores the cases it only follows in one executemany per table (one savepoint
    for the push's run of them); a case that breaks a constraint (here: a 收件编号 another case
    holds) undoes that run, which is then followed case by case, so that case alone is refused."""
    hostile = net.village(1)
    node, conn = hostile.node, hostile.conn
    item = pick_item(catalog(hostile, _agent(hostile)), "city")
    taken = create_case(hostile, _agent(hostile), item)
    net.sync_all()
    version, _ = node.catalog(conn)
    applicant = {"name": "王五", "id_number": "130926199001011237", "phone": "13800138000"}
    with write_transaction(conn):
        bodies = [casework.capture(conn, node_id=node.node_id, item=item, catalog_version=version,
                                   route={"level": "city", "office": "x"}, applicant=applicant, form=form_for(item),
                                   materials=[], agent="agent", now=node.now())[0] for _ in range(3)]
        bodies[1]["receipt_no"] = taken["receipt_no"]  # a number the township holds for another case
        for body in bodies:
            outbox.append(conn, node.key, node.node_id, "case.submit", body, str(node.hlc.now()), node.now(),
                          case_id=body["case_id"], version=1)
    batches = []
    write_many = casework.write_many_case_rows
    monkeypatch.setattr(casework, "write_many_case_rows",
                        lambda c, rows: (batches.append([r.case[0] for r in rows]), write_many(c, rows)))
    net.sync_all()
    township = net.township
    ids = [b["case_id"] for b in bodies]
    assert ids in batches  # one statement per table for the push's three cases (undone: constraint)
    assert [_status(township, i) is not None for i in ids] == [True, False, True]
    refused = township.query("SELECT detail FROM audit_log WHERE action = 'relay.not_followed' AND target = ?",
                             (hostile.node_id,))
    assert "IntegrityError" in refused[-1]["detail"]
    # All three went on to the hub, which decides for itself (the same constraint refuses the second).
    assert [net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (i,)) for i in ids] == [1, 0, 1]


def _downlink_actions(township, village_id: str, case_id: str) -> list[str]:
    """The actions of the township's signed messages down to ``village_id`` about ``case_id``."""
    out = []
    for row in township.query("SELECT document FROM downlink WHERE issuer = ? AND dest = ? ORDER BY seq",
                              (township.node_id, village_id)):
        body = envelope.peek(envelope.from_bytes(row["document"]))["body"]
        if body.get("case_id") == case_id:
            out.append(body["event"]["action"])
    return out


def test_the_townships_automatic_receive_is_not_signed_on_its_own_and_rides_with_the_next_step(net):
    """Two signatures per delegated case fewer: the village records the 接件 from the signed
    custody receipt, the hub from the township's forward (authority.received_at_custody), and
    the township's own event (its time, its node) comes up and down with the 受理."""
    village = net.village(0)
    item = pick_item(catalog(village, _agent(village)), "township")
    case_id = create_case(village, _agent(village), item)["case_id"]
    net.sync_all()
    township, hub = net.township, net.hub
    assert _status(township, case_id) == "RECEIVED"
    assert _downlink_actions(township, village.node_id, case_id) == []  # no message for the 接件 alone
    assert township.scalar("SELECT COUNT(*) FROM outbox WHERE case_id = ? AND kind = 'case.event'", (case_id,)) == 0
    receive_id = casework.receive_event_id(case_id)
    at_village = village.query("SELECT at, node FROM case_events WHERE event_id = ?", (receive_id,))
    assert _status(village, case_id) == "RECEIVED" and at_village[0]["node"] == township.node_id
    at_hub = hub.query("SELECT at, node FROM case_events WHERE event_id = ?", (receive_id,))
    assert _status(hub, case_id) == "RECEIVED" and at_hub[0]["node"] == township.node_id
    # Dated when the township took the case, as its push said (``held``): its own 接件's time.
    assert dict(at_hub[0]) == dict(township.query("SELECT at, node FROM case_events WHERE event_id = ?",
                                                  (receive_id,))[0])
    clerk = township.account("clerk_once", "clerk", township.node_id)
    r = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk, json={"action": "accept", "comment": "符合"})
    assert r.status_code == 200, r.text
    net.sync_all()
    assert _downlink_actions(township, village.node_id, case_id) == ["accept"]
    assert township.scalar("SELECT COUNT(*) FROM outbox WHERE case_id = ? AND kind = 'case.event'", (case_id,)) == 1
    own = township.query("SELECT at, node FROM case_events WHERE event_id = ?", (receive_id,))[0]
    assert dict(village.query("SELECT at, node FROM case_events WHERE event_id = ?", (receive_id,))[0]) == dict(own)
    assert dict(hub.query("SELECT at, node FROM case_events WHERE event_id = ?", (receive_id,))[0]) == dict(own)
    assert casework.recorded_actions(hub.conn, case_id) == ["submit", "receive", "accept"]
    assert _status(hub, case_id) == "ACCEPTED"
    assert casework.recorded_actions(village.conn, case_id) == ["submit", "receive", "accept"]
    assert _status(village, case_id) == "ACCEPTED"


def test_a_malformed_held_member_is_refused(net):
    """``held`` (when a township took what it forwards) is checked before anything is taken."""
    session = WireSession()
    for held in ("昨天", {"130926100201": [[5, 1, "2026-12-01T00:00:00.000Z"]]}, {"130926100201": [[1, 2]]}):
        with pytest.raises(SyncUnavailable) as refused:
            client_with(net.township, session).push_stored([], held=held)
        assert refused.value.status == 400 and "malformed" in str(refused.value)
