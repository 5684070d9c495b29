"""The township's automatic 接件, recorded at the hub from the township's forward
(docs/sync-protocol.md §7.2, ``shared.rules.authority.received_at_custody``): a case the deciding
township pushes is stored received by it; the township's own record, riding with its next step,
sets the time; no other node can make a case look received or move that time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from network import TOWNSHIP_ID
from service import VILLAGE

from shared.core.clock import iso, parse_iso
from shared.rules import authority, states
from shared.services import casework

TOWNSHIP_ITEM = "130926-RS-0003"  # 就业失业登记, decided by the township


def _receipt(service, case_id: str) -> dict | None:
    rows = service.query("SELECT at, node FROM case_events WHERE event_id = ?", (casework.receive_event_id(case_id),))
    return dict(rows[0]) if rows else None


def _township_step(service, case_id: str, action: str, to_status: str, earlier: list = (), decision=None) -> None:
    """The township's ``case.event`` for ``action``, signed with its key, pushed by itself."""
    row = casework.get_row(service.conn, case_id)
    event = casework.new_event(TOWNSHIP_ID, "clerk", action, row["status"], to_status, service.node.now())
    service.from_village_all([("case.event", {"case_id": case_id, "status": to_status, "event": event,
                                              "decision": decision, "documents": [], "earlier": list(earlier)})],
                             via=TOWNSHIP_ID, origin=TOWNSHIP_ID)


def _own_receipt(case_id: str, at) -> dict:
    return {"event_id": casework.receive_event_id(case_id), "at": iso(at), "node": TOWNSHIP_ID, "actor": "system",
            "action": "receive", "from_status": "SUBMITTED", "to_status": "RECEIVED", "comment": "", "detail": {}}


def test_the_rule_of_a_receipt_at_custody():
    assert authority.received_at_custody("township", TOWNSHIP_ID, TOWNSHIP_ID, later_step=False)
    assert not authority.received_at_custody("township", TOWNSHIP_ID, TOWNSHIP_ID, later_step=True)
    assert not authority.received_at_custody("township", TOWNSHIP_ID, "130926200", later_step=False)
    assert not authority.received_at_custody("city", "130926-RS", TOWNSHIP_ID, later_step=False)


def test_a_case_the_deciding_township_forwards_is_received_there_at_once(service):
    body = service.submit_body(TOWNSHIP_ITEM)
    assert body["route"] == {"level": "township", "office": TOWNSHIP_ID}
    service.from_village("case.submit", body)
    assert casework.get_row(service.conn, body["case_id"])["status"] == "RECEIVED"
    assert _receipt(service, body["case_id"])["node"] == TOWNSHIP_ID
    assert casework.recorded_actions(service.conn, body["case_id"]) == ["submit", "receive"]


def test_a_case_that_did_not_come_through_its_township_is_not(service):
    """A village that pushed its case to the hub itself: the township never held it."""
    body = service.submit_body(TOWNSHIP_ITEM)
    service.from_village_all([("case.submit", body)], via=VILLAGE)
    assert casework.get_row(service.conn, body["case_id"])["status"] == "SUBMITTED"
    assert _receipt(service, body["case_id"]) is None


def test_the_townships_own_receipt_sets_the_time_with_its_next_step(service):
    body = service.submit_body(TOWNSHIP_ITEM, submitted_at=service.node.now() - timedelta(hours=1))
    service.from_village("case.submit", body)
    case_id = body["case_id"]
    own = service.node.now() - timedelta(minutes=7)  # the township took it before its forward arrived
    _township_step(service, case_id, "accept", "ACCEPTED", [_own_receipt(case_id, own)])
    assert casework.get_row(service.conn, case_id)["status"] == "ACCEPTED"
    assert _receipt(service, case_id) == {"at": iso(own), "node": TOWNSHIP_ID}
    assert casework.recorded_actions(service.conn, case_id) == ["submit", "receive", "accept"]


def test_no_other_node_moves_the_time_of_the_townships_receipt(service):
    """The village may send its 送达 of the township's decision, but an 接件 riding with it is
    not its own to state: the time stays."""
    body = service.submit_body(TOWNSHIP_ITEM)
    service.from_village("case.submit", body)
    case_id = body["case_id"]
    _township_step(service, case_id, "accept", "ACCEPTED")
    decision = {"result": "approve", "result_label": "准予", "comment": "", "decided_at": iso(service.node.now()),
                "decided_by": "clerk", "office": TOWNSHIP_ID}
    _township_step(service, case_id, "approve", "APPROVED", decision=decision)
    before = _receipt(service, case_id)
    row = casework.get_row(service.conn, case_id)
    delivered = states.apply_action(row["status"], "deliver")
    deliver = casework.new_event(VILLAGE, "agent", "deliver", row["status"], delivered, service.node.now(),
                                 detail={"manner": "直接送达"})
    forged = _own_receipt(case_id, service.node.now() - timedelta(days=30))
    service.from_village("case.event", {"case_id": case_id, "status": delivered, "event": deliver,
                                        "decision": None, "documents": [], "earlier": [forged]})
    assert casework.get_row(service.conn, case_id)["status"] == delivered
    assert _receipt(service, case_id) == before


def test_the_hub_dates_the_receipt_when_the_township_took_the_case(service):
    """The township's push says when it took what it forwards (``held``, §5.3): the hub's record
    of its 接件 carries that time, not the hub's own, however late the forward came."""
    taken = service.node.now() - timedelta(hours=30)  # the township's uplink was down for a day
    body = service.submit_body(TOWNSHIP_ITEM, submitted_at=taken - timedelta(hours=2))
    seq = service.chains.get(VILLAGE, (0, ""))[0] + 1
    service.from_village_all([("case.submit", body)], held={VILLAGE: [(seq, seq, iso(taken))]})
    assert _receipt(service, body["case_id"]) == {"at": iso(taken), "node": TOWNSHIP_ID}


@pytest.mark.parametrize("when", ["future", "before_submission", "not_a_time"])
def test_a_held_time_that_cannot_be_true_is_not_taken(service, when):
    """Not after the hub accepted the case, not before it was submitted: else the hub's time."""
    submitted = service.node.now() - timedelta(hours=1)
    claimed = {"future": iso(service.node.now() + timedelta(days=2)),
               "before_submission": iso(submitted - timedelta(minutes=1)), "not_a_time": "昨天"}[when]
    body = service.submit_body(TOWNSHIP_ITEM, submitted_at=submitted)
    seq = service.chains.get(VILLAGE, (0, ""))[0] + 1
    service.from_village_all([("case.submit", body)], held={VILLAGE: [(seq, seq, claimed)]})
    receipt = _receipt(service, body["case_id"])
    assert receipt["node"] == TOWNSHIP_ID and receipt["at"] != claimed
    assert submitted <= parse_iso(receipt["at"]) <= service.node.now()


def test_a_village_cannot_say_when_its_township_took_its_case(service):
    """``held`` counts only for envelopes a township relays: a village pushing its own says nothing."""
    body = service.submit_body(TOWNSHIP_ITEM)
    seq = service.chains.get(VILLAGE, (0, ""))[0] + 1
    service.from_village_all([("case.submit", body)], via=VILLAGE,
                             held={VILLAGE: [(seq, seq, iso(service.node.now() - timedelta(days=3)))]})
    assert service.scalar("SELECT COUNT(*) FROM inbox_held WHERE origin = ? AND seq = ?", (VILLAGE, seq)) == 0
    assert _receipt(service, body["case_id"]) is None  # and no 接件 at the township was made of it
