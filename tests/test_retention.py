"""Personal data leaves the village PC (PIPL 最小必要, retention): a closed case whose every message
the hub acknowledged is purged after PERSONAL_DATA_RETENTION_DAYS, keeping a masked stub; its
documents come back from the township for reprinting; the hub never purges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from network import catalog, clock_at, create_case, pick_item, valid_id_number

from shared.core.storage import write_transaction
from shared.rules import retention as rules
from shared.rules.catalog import load_seed
from shared.services import casework, retention
from sync.client import SyncUnavailable

SCAN = b"\xff\xd8\xff\xe0" + b"retention-test-scan" * 20 + b"\xff\xd9"
SHARED_SCAN = b"\xff\xd8\xff\xe0" + b"shared-scan" * 20 + b"\xff\xd9"


# ----------------------------------------------------------------------------- the rules


def test_purge_is_due_only_when_closed_acknowledged_and_retained():
    closed = datetime(2026, 3, 2, tzinfo=UTC)
    later = closed + timedelta(days=90)
    assert rules.purge_due("CONCLUDED", closed, True, later, 90)
    assert not rules.purge_due("CONCLUDED", closed, True, later - timedelta(seconds=1), 90)
    assert not rules.purge_due("CONCLUDED", closed, False, later + timedelta(days=400), 90)  # hub lacks something
    assert not rules.purge_due("APPROVED", closed, True, later + timedelta(days=400), 90)  # not yet 送达
    assert rules.purge_due("WITHDRAWN", closed, True, later, 90)


def test_personal_fields_are_the_marked_ones_and_every_id_or_phone_field():
    item = {"fields": [{"name": "address", "personal": True}, {"name": "mother_id_number", "format": "id_number"},
                       {"name": "grade"}]}
    assert rules.personal_field_names(item) == {"address", "mother_id_number"}
    form = {"address": "肃宁县某村1号", "mother_id_number": valid_id_number(), "grade": "300元", "empty": ""}
    assert rules.purged_form(form, {"address", "mother_id_number"}) == {
        "address": rules.PURGED_VALUE, "mother_id_number": rules.PURGED_VALUE, "grade": "300元", "empty": ""}
    assert set(rules.purged_form(form, set(), whole=True).values()) == {rules.PURGED_VALUE, ""}
    assert rules.mask_name("张三丰") == "张**" and rules.mask_name("李") == "李*"


def test_the_seed_catalog_marks_addresses_personal():
    pension = next(i for i in load_seed() if i["code"] == "130926-RS-0001")
    assert rules.personal_field_names(pension) == {"address"}


# ----------------------------------------------------------------------------- over a real network


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=2)


@pytest.fixture(scope="module")
def people(net):
    village, hub = net.village(), net.hub
    agent = village.account("agent", "agent", village.node_id)
    items = catalog(village, agent)
    item = next(i for i in items if i["code"] == "130926-RS-0001")
    assert item == pick_item([item], "city")
    return {"agent": agent, "item": item, "window": hub.account("window", "window", "130926-rs"),
            "chief": hub.account("chief", "chief", "130926-rs")}  # 承诺件: the window accepts, the chief decides


def _concluded_case(net, people, materials=(("id_card", "sfz.jpg", SCAN),), deliver_sync: bool = True) -> str:
    village = net.village()
    # 受理 needs every required material: the other required ones come with their own scans.
    others = [(m["code"], f"{m['code']}.jpg", SCAN + m["code"].encode()) for m in people["item"]["materials"]
              if m["required"] and m["code"] not in {code for code, _, _ in materials}]
    case_id = create_case(village, people["agent"], people["item"], list(materials) + others)["case_id"]
    net.sync_all()
    for action, who in (("accept", "window"), ("approve", "chief")):
        r = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", people[who], json={"action": action})
        assert r.status_code == 200, r.text
    net.sync_all()
    with write_transaction(village.conn):
        casework.deliver(village.conn, village.node, case_id, "agent")
    if deliver_sync:
        net.sync_all()
    return case_id


def _far(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_nothing_is_purged_before_the_hub_acknowledged_the_delivery(net, people):
    village = net.village()
    case_id = _concluded_case(net, people, deliver_sync=False)
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE case_id = ? AND state != 'acked'", (case_id,)) >= 1
    with clock_at(village, _far(400)):
        retention.run(village.conn, village.node)
    row = village.query("SELECT purged_at, id_number FROM cases WHERE case_id = ?", (case_id,))[0]
    assert row["purged_at"] is None and row["id_number"] == valid_id_number()
    net.sync_all()  # the 送达 reaches the hub; the purge below is then allowed


def test_a_closed_acknowledged_case_is_purged_after_the_retention_time(net, people):
    village = net.village()
    case_id = _concluded_case(net, people)
    sha = village.scalar("SELECT sha256 FROM case_materials WHERE case_id = ?", (case_id,))
    assert village.node.blobs.has(sha)
    days = village.app.config["PERSONAL_DATA_RETENTION_DAYS"]
    assert days == 90
    with clock_at(village, _far(days - 1)):
        assert retention.run(village.conn, village.node)["purged"] == 0
    with clock_at(village, _far(days + 1)):
        assert retention.run(village.conn, village.node)["purged"] >= 1

    row = village.query("SELECT * FROM cases WHERE case_id = ?", (case_id,))[0]
    assert row["purged_at"] and row["applicant_name"] == "张*" and row["phone"] == ""
    assert row["id_number"] == valid_id_number()[:6] + "********" + valid_id_number()[-4:]
    form = json.loads(row["form"])
    assert form["address"] == rules.PURGED_VALUE and form["contribution_grade"] != rules.PURGED_VALUE
    assert not village.node.blobs.has(sha)
    assert village.scalar("SELECT COUNT(*) FROM blobs WHERE sha256 = ?", (sha,)) == 0
    assert village.scalar("SELECT COUNT(*) FROM documents WHERE case_id = ?", (case_id,)) == 0
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE case_id = ? AND length(document) > 0", (case_id,)) == 0
    assert village.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'personal_data.purge' AND target = ?",
                          (case_id,)) == 1

    # The stub still shows its progress.
    shown = village.api("GET", f"/api/v1/cases/{case_id}", people["agent"]).json()
    assert shown["status"] == "CONCLUDED" and shown["purged_at"] and shown["receipt_no"]
    assert [h["action"] for h in shown["history"]][-1] == "deliver"
    # Purging twice does nothing more (the audit shows one purge).
    with clock_at(village, _far(days + 2)):
        retention.run(village.conn, village.node)
    assert village.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'personal_data.purge' AND target = ?",
                          (case_id,)) == 1

    # The hub still holds everything.
    hub_row = net.hub.query("SELECT id_number, phone FROM cases WHERE case_id = ?", (case_id,))[0]
    assert hub_row["id_number"] == valid_id_number() and hub_row["phone"] == "13812345678"

    # Reprinting: the documents come back from the township, verified, and are kept a day.
    r = village.api("POST", f"/api/v1/cases/{case_id}/documents/refetch", people["agent"])
    assert r.status_code == 200, r.text
    assert r.json()["refetched"] >= 2  # 受理通知书, 准予许可决定书 (and the 送达回证)
    kinds = {k for (k,) in village.query("SELECT kind FROM documents WHERE case_id = ?", (case_id,))}
    assert {"accept", "approve"} <= kinds
    with clock_at(village, _far(days + 5)):
        assert retention.run(village.conn, village.node)["refetched_documents_removed"] >= 2
    assert village.scalar("SELECT COUNT(*) FROM documents WHERE case_id = ?", (case_id,)) == 0


def test_a_material_file_another_unpurged_case_uses_stays(net, people):
    village = net.village()
    first = _concluded_case(net, people, materials=(("id_card", "a.jpg", SHARED_SCAN),))
    create_case(village, people["agent"], people["item"], [("id_card", "b.jpg", SHARED_SCAN)])  # still open
    net.sync_all()
    with clock_at(village, _far(200)):
        retention.run(village.conn, village.node)
    assert village.scalar("SELECT purged_at FROM cases WHERE case_id = ?", (first,))
    sha = village.scalar("SELECT sha256 FROM case_materials WHERE case_id = ? AND code = 'id_card'", (first,))
    assert village.node.blobs.has(sha)


def test_the_hub_never_purges(net, people):
    hub = net.hub
    case_id = _concluded_case(net, people)
    assert not hub.node.kind.purges_personal_data
    assert "retention" not in dict(hub.node.kind.scheduled_rules(hub.node, hub.app.extensions.get("liandong_sync")))
    with clock_at(hub, _far(1000)):
        assert retention.run(hub.conn, hub.node) == {"purged": 0}
    row = hub.query("SELECT purged_at, id_number FROM cases WHERE case_id = ?", (case_id,))[0]
    assert row["purged_at"] is None and row["id_number"] == valid_id_number()
    assert "retention" in dict(net.village().node.kind.scheduled_rules(net.village().node))


def test_only_the_village_that_took_the_case_gets_its_documents(net, people):
    case_id = _concluded_case(net, people)
    assert len(net.village(0).client_to_parent().case_documents(case_id)) >= 2
    with pytest.raises(SyncUnavailable, match="403"):
        net.village(1).client_to_parent().case_documents(case_id)


def test_bookings_and_inquiries_are_masked_after_the_retention_time_too(net, people):
    village = net.village()
    r = village.api("POST", "/api/v1/inquiries", people["agent"],
                    json={"asker_name": "钱九", "asker_phone": "13500000009", "question": "低保怎么办？"})
    inquiry_id = r.json()["inquiry_id"]
    village.api("POST", f"/api/v1/inquiries/{inquiry_id}/close", people["agent"],
                json={"outcome": "answered", "answer": "请带户口簿到村委会"})
    with clock_at(village, _far(30)):
        assert retention.run(village.conn, village.node)["inquiries_purged"] == 0  # not yet
    with clock_at(village, _far(91)):
        assert retention.run(village.conn, village.node)["inquiries_purged"] >= 1
    row = village.query("SELECT asker_name, asker_phone FROM inquiries WHERE inquiry_id = ?", (inquiry_id,))[0]
    assert (row["asker_name"], row["asker_phone"]) == ("钱*", "")


def test_the_purge_search_reads_the_partial_index_of_closed_cases(tmp_path):
    """Migration 25 keeps only closed, unpurged cases in the purge index (a new case writes one
    index fewer); the search names the same statuses literally, or SQLite would scan the table."""
    from shared.core import storage
    from village_node.db import MIGRATIONS

    conn = storage.connect(tmp_path / "village.sqlite3")
    storage.migrate(conn, MIGRATIONS)
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + retention._CANDIDATES,
                                                ("130926100201", "2026-01-01T00:00:00Z")))
    assert "USING INDEX cases_closed_unpurged" in plan
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'cases_unpurged_closed'").fetchone()[0] == 0
