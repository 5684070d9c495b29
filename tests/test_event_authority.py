"""Only the node entitled to a step may send it: a village cannot approve its own case, and a
village key cannot sign a decision document."""

from __future__ import annotations

from network import catalog, create_case, pick_item

from shared.core.crypto import SignatureError
from shared.core.storage import write_transaction
from shared.services import casework, documents
from sync import envelope, outbox


def test_a_village_cannot_decide_its_own_case(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    receipt = create_case(village, agent, pick_item(catalog(village, agent), "city"))
    net.sync_all()
    node, conn = village.node, village.conn
    row = casework.get_row(conn, receipt["case_id"])
    event = casework.new_event(node.node_id, "agent", "approve", row["status"], "APPROVED", node.now(), "自己批准")
    with write_transaction(conn):
        outbox.append(conn, node.key, node.node_id, "case.event", casework.update_message(row, event, None),
                      str(node.hlc.now()), node.now(), case_id=row["case_id"])
    net.sync_all()
    reasons = {r["reason"] for r in net.hub.query("SELECT reason FROM quarantine WHERE origin = ?", (node.node_id,))}
    assert "invalid_content" in reasons
    assert net.hub.scalar("SELECT status FROM cases WHERE case_id = ?", (receipt["case_id"],)) == "RECEIVED"
    # The chain still moves: the refused event is held by the hub, the village is acknowledged.
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0


def test_a_village_key_cannot_sign_a_decision(build_network):
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    fake = envelope.sign(node.key, envelope.DOCUMENT, {
        "v": 1, "kind": "approve", "title": "准予许可决定书", "number": "伪造", "case_id": "x", "receipt_no": "x",
        "item_name": "x", "applicant_name": "x", "applicant_id": "x", "office": "130926-mz",
        "issuer": node.node_id, "issuer_name": "x", "issued_at": "2026-01-01T00:00:00.000Z", "comment": "",
        "details": {}})
    trust = net.hub.node.trust(net.hub.conn)
    try:
        documents.verify(fake, trust)
    except SignatureError as exc:
        assert "无权" in str(exc)
    else:
        raise AssertionError("a village-signed decision verified")


def test_a_history_only_step_with_an_older_status_is_kept_without_moving_the_case(build_network):
    # The township recorded a 现场核查 while it still thought the case RECEIVED; the hub has
    # accepted it since. The visit belongs in the history; the status stays ACCEPTED.
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    receipt = create_case(village, agent, item)
    net.sync_all()
    window = net.hub.account("w", "chief", f"130926-{item['department_code']}")
    assert net.hub.api("POST", f"/api/v1/cases/{receipt['case_id']}/actions", window,
                       json={"action": "accept"}).status_code == 200
    conn = net.hub.conn
    row = casework.get_row(conn, receipt["case_id"])
    visit = casework.new_event(net.township.node_id, "clerk", "site_visit", "RECEIVED", "RECEIVED",
                               net.hub.node.now(), "现场核查", {"inspectors": ["甲", "乙"], "result": "符合",
                                                               "visit_date": "2026-11-20"})
    casework.check_event(conn, row, visit, net.township.node_id)
    with write_transaction(conn):
        casework.record_event(conn, receipt["case_id"], visit)
    assert casework.get_row(conn, receipt["case_id"])["status"] == "ACCEPTED"
    assert net.hub.scalar("SELECT COUNT(*) FROM case_events WHERE action = 'site_visit'") == 1
