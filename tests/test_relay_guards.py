"""The relay survives any one village, and a node pushes only what it may (issue 10, points 1 and 5).

Real networks (tests/network.py), real signed envelopes made with the nodes' own keys: a 12×2 MB
flood, an envelope declaring a 2^40-byte attachment, blobs parked at the hub and the township,
a revocation that clears the township's custody, and the hub's quarantine actions.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta

import pytest
from faults import cli, last_json
from network import catalog, create_case, pick_item
from network_session import session_for

from shared.core.clock import iso
from shared.core.storage import write_transaction
from sync import blobs, envelope, node_sync, outbox, relay
from sync.client import ParentClient, SyncUnavailable

FLOOD_PAYLOAD = 1_900_000  # each envelope just under the 2 MiB per-envelope cap


def sign_own(handle, kind: str, body: dict, attachments: list | None = None) -> dict:
    """Queue a validly signed envelope of ``handle`` (its key, its chain) and return it."""
    node = handle.node
    with write_transaction(handle.conn):
        _, _, document = outbox.append(handle.conn, node.key, node.node_id, kind, body, str(node.hlc.now()),
                                       node.now(), attachments=attachments)
    return document


def client(handle, parent) -> ParentClient:
    """A client signed by ``handle``'s key towards any node (not only its parent)."""
    node = handle.node
    return ParentClient(parent.url, parent.node_id, node.node_id, node.key, node.nonces)


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=2)
    net.add_township("130926101")
    net.add_village("130926101201")
    return net


@pytest.fixture(scope="module")
def agents(net):
    return {v.node_id: v.account("agent", "agent", v.node_id) for v in net.villages.values()}


def acked(handle) -> int:
    return handle.scalar("SELECT COUNT(*) FROM outbox WHERE state = 'acked'")


# ---------------------------------------------------------------- point 1: who pushes what


def test_hub_quarantines_an_envelope_pushed_by_a_node_that_is_neither_its_origin_nor_its_township(net):
    village, other_township = net.village(0), net.townships["130926101"]
    document = sign_own(village, "relay.test", {"n": 1})
    envelope_id = envelope.document_id(document)
    # Another township (not the village's parent) relays it to the hub.
    answer = client(other_township, net.hub).push([document])
    assert answer["results"][0]["status"] == "quarantined"
    assert answer["results"][0]["reason"] == "wrong_relay"
    # A village of another township pushes it to the hub directly.
    answer = client(net.villages["130926101201"], net.hub).push([document])
    assert answer["results"][0]["reason"] == "wrong_relay"
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE envelope_id = ?", (envelope_id,)) == 0
    # Its own township may relay it.
    answer = client(net.township, net.hub).push([document])
    assert answer["results"][0]["status"] == "accepted"
    net.sync_all()


def test_township_takes_only_the_calling_villages_own_envelopes(net):
    first, second, far = net.village(0), net.village(1), net.villages["130926101201"]
    net.sync_all()  # every township knows every village (the registry)
    mine = sign_own(second, "relay.test", {"n": 2})
    below_other = sign_own(far, "relay.test", {"n": 3})
    answer = first.client_to_parent().push([mine, below_other])
    assert [r["status"] for r in answer["results"]] == ["rejected", "rejected"]
    assert {r["reason"] for r in answer["results"]} == {"not_below_this_township"}
    ids = [envelope.document_id(d) for d in (mine, below_other)]
    assert net.township.scalar(f"SELECT COUNT(*) FROM custody WHERE envelope_id IN ({','.join('?' * 2)})", ids) == 0
    assert answer["receipt"] is None
    # Whoever hands it over (a U盘 bundle names no calling node here): a village below another
    # township is never taken into this township's custody.
    township = net.township
    with write_transaction(township.conn):
        results, held = relay.take_custody(township.conn, township.node.trust(township.conn), township.node_id,
                                           [below_other], township.node.now())
    assert results[0]["reason"] == "not_below_this_township" and held == []
    net.sync_all()  # the second village's envelope goes up by its own push


# ---------------------------------------------------------------- point 5: the relay survives a flood


def test_one_village_flooding_its_township_does_not_stop_the_others(net, agents):
    flooder, neighbour, township, hub = net.village(0), net.village(1), net.township, net.hub
    net.sync_all()
    before = hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (flooder.node_id,))
    for i in range(12):
        sign_own(flooder, "relay.test", {"padding": os.urandom(FLOOD_PAYLOAD // 2).hex()[:FLOOD_PAYLOAD], "i": i})
    item = pick_item(catalog(neighbour, agents[neighbour.node_id]), "city")
    receipt = create_case(neighbour, agents[neighbour.node_id], item)
    pending = flooder.scalar("SELECT SUM(length(document)) FROM outbox WHERE state = 'pending'")
    assert pending > 16 * 1024 * 1024  # well past the hub's (and township's) push limit

    for _ in range(6):
        for handle in (flooder, neighbour, township, neighbour):
            assert "error" not in handle.sync(), handle.node_id
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1
    assert neighbour.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0
    assert hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (flooder.node_id,)) == before + 12
    assert flooder.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0


def test_pending_documents_stay_within_the_byte_budget(net):
    township = net.township
    sizes = [len(r["document"]) for _, r in node_sync._pending_documents(township.conn, township.node)]
    assert sum(sizes) <= int(township.node.config["SYNC_BATCH_BYTES"]) or len(sizes) == 1
    rows = [{"document": b"x" * 5}, {"document": b"x" * 5}, {"document": b"x" * 5}]
    assert len(envelope.within_bytes(rows, 10)) == 2
    assert len(envelope.within_bytes(rows, 1)) == 1  # one envelope always goes


def test_an_attachment_of_2_to_the_40_is_refused_at_once_and_blocks_nothing(net):
    village, hub = net.village(1), net.hub
    net.sync_all()
    huge = sign_own(village, "relay.test", {"n": 4}, attachments=[{"sha256": "ab" * 32, "size": 2**40}])
    after = sign_own(village, "relay.test", {"n": 5})
    for _ in range(2):
        net.sync_all()
    quarantined = hub.query("SELECT reason FROM quarantine WHERE envelope_id = ?", (envelope.document_id(huge),))
    assert [r["reason"] for r in quarantined] == ["attachment_too_large"]
    assert hub.scalar("SELECT blobs_pending FROM inbox WHERE envelope_id = ?", (envelope.document_id(huge),)) == 0
    assert hub.scalar("SELECT COUNT(*) FROM apply_queue a JOIN inbox i ON i.origin = a.origin AND i.seq = a.seq"
                      " WHERE i.envelope_id = ?", (envelope.document_id(huge),)) == 0
    # The origin's acknowledgements go on past it.
    assert village.scalar("SELECT state FROM outbox WHERE envelope_id = ?", (envelope.document_id(after),)) == "acked"


# ---------------------------------------------------------------- point 5: parked blobs


@pytest.mark.parametrize("parent_name", ["hub", "township"])
def test_unreferenced_blobs_are_limited_per_node_and_removed_after_a_while(net, parent_name):
    parent = net.hub if parent_name == "hub" else net.township
    sender = net.township if parent_name == "hub" else net.village(1)
    parent.node.config["BLOB_PARK_QUOTA_BYTES"] = 3 * 100_000
    try:
        files = [os.urandom(100_000) for _ in range(4)]
        to_parent = client(sender, parent)
        for data in files[:3]:
            assert to_parent.send_blob(hashlib.sha256(data).hexdigest(), data, 0)["complete"]
        with pytest.raises(SyncUnavailable, match="blob_quota"):
            to_parent.send_blob(hashlib.sha256(files[3]).hexdigest(), files[3], 0)
        assert parent.scalar("SELECT SUM(size) FROM blob_parking WHERE node_id = ?", (sender.node_id,)) == 300_000
        # An envelope that names a parked file claims it: it no longer counts against the quota.
        named = {"sha256": hashlib.sha256(files[0]).hexdigest(), "size": len(files[0])}
        assert to_parent.push([sign_own(sender, "relay.test", {"named": 1}, attachments=[named])])["results"]
        assert parent.scalar("SELECT SUM(size) FROM blob_parking WHERE node_id = ?", (sender.node_id,)) == 200_000
        files = files[1:] + [os.urandom(100_000)]

        # The scheduled rule removes what no envelope named after BLOB_PARK_SECONDS.
        rules = dict(parent.node.kind.scheduled_rules(parent.node))
        assert rules["blob_parking"](parent.conn) == 0  # not old enough yet
        cutoff = iso(parent.node.now() + timedelta(seconds=1))
        assert blobs.sweep_parked(parent.conn, parent.node.blobs, cutoff) == 2
        assert not any(parent.node.blobs.has(hashlib.sha256(d).hexdigest()) for d in files[:2])
        assert parent.node.blobs.has(named["sha256"])
        assert parent.scalar("SELECT COUNT(*) FROM blob_parking") == 0
        for data in files[2:]:
            assert to_parent.send_blob(hashlib.sha256(data).hexdigest(), data, 0)["complete"]
    finally:
        parent.node.config["BLOB_PARK_QUOTA_BYTES"] = 32 * 1024 * 1024
        blobs.sweep_parked(parent.conn, parent.node.blobs, iso(parent.node.now() + timedelta(seconds=1)))


@pytest.mark.parametrize("parent_name", ["hub", "township"])
def test_a_batch_of_unnamed_files_is_parked_within_the_same_quota(net, parent_name):
    """The batched route parks what no envelope names, as the single-file route does: a hostile
    node cannot fill a parent's disk with files that nothing claims and nothing sweeps."""
    parent = net.hub if parent_name == "hub" else net.township
    sender = net.township if parent_name == "hub" else net.village(1)
    parent.node.config["BLOB_PARK_QUOTA_BYTES"] = 3 * 100_000
    files = [os.urandom(100_000) for _ in range(5)]
    try:
        (answer,) = client(sender, parent).send_blob_batch([(hashlib.sha256(d).hexdigest(), d, 0) for d in files])
        assert len(answer["complete"]) == 3 and len(answer["rejected"]) == 2
        assert all(reason.startswith("blob_quota") for reason in answer["rejected"].values())
        assert not any(parent.node.blobs.has(sha) for sha in answer["rejected"])
        assert parent.scalar("SELECT SUM(size) FROM blob_parking WHERE node_id = ?", (sender.node_id,)) == 300_000
        # Parked, so swept like any other unnamed upload.
        assert blobs.sweep_parked(parent.conn, parent.node.blobs, iso(parent.node.now() + timedelta(seconds=1))) == 3
        assert not any(parent.node.blobs.has(sha) for sha in answer["complete"])
    finally:
        parent.node.config["BLOB_PARK_QUOTA_BYTES"] = 32 * 1024 * 1024
        blobs.sweep_parked(parent.conn, parent.node.blobs, iso(parent.node.now() + timedelta(seconds=1)))


def test_material_files_named_by_envelopes_are_not_parked_or_swept(net, agents):
    village, hub = net.village(1), net.hub
    item = pick_item(catalog(village, agents[village.node_id]), "city")
    required = [m for m in item["materials"] if m.get("required")]
    files = [(m["code"], f"{m['code']}.pdf", b"%PDF-1.4 kept " + os.urandom(64)) for m in required]
    receipt = create_case(village, agents[village.node_id], item, files)
    net.sync_all()
    assert hub.scalar("SELECT COUNT(*) FROM blob_parking") == 0
    assert net.township.scalar("SELECT COUNT(*) FROM blob_parking") == 0
    # Content addressing: a file parked by another node may be the very bytes of a case here.
    kept = hub.scalar("SELECT sha256 FROM case_materials WHERE case_id = ? LIMIT 1", (receipt["case_id"],))
    with write_transaction(hub.conn):
        hub.conn.execute("INSERT INTO blob_parking(sha256, node_id, size, parked_at) VALUES (?, ?, 1, ?)",
                         (kept, net.township.node_id, iso(hub.node.now())))
    for handle in (hub, net.township):
        blobs.sweep_parked(handle.conn, handle.node.blobs, iso(handle.node.now() + timedelta(days=2)))
    for row in hub.query("SELECT sha256 FROM case_materials WHERE case_id = ?", (receipt["case_id"],)):
        assert hub.node.blobs.has(row["sha256"])


# ---------------------------------------------------------------- point 5: revocation clears custody


def test_a_revoked_villages_custody_leaves_the_township(net):
    village, township, hub = net.village(0), net.township, net.hub
    net.sync_all()
    held_before = hub.scalar("SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE origin = ?", (village.node_id,))
    for i in range(3):
        sign_own(village, "relay.test", {"late": i})
    village.sync()  # into the township's custody; the township has not forwarded them
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE origin = ?", (village.node_id,)) == 3
    result = last_json(cli("provision", "revoke", "--data", hub.data_dir, "--node-code", village.node_id,
                           "--after-seq", held_before + 1).output)
    assert result["revoked_after_seq"] == held_before + 1
    hub.node.forget_trust()
    try:
        # The township learns of the revocation by pull (pulls also run while pushes fail).
        node_sync._pull(township.conn, township.node, township.client_to_parent())
        seqs = [r["seq"] for r in township.query("SELECT seq FROM custody WHERE origin = ?", (village.node_id,))]
        assert seqs == [held_before + 1]  # made while the PC was still trusted: it still goes up
        audit = township.query("SELECT detail FROM audit_log WHERE action = 'custody.revoked_dropped' AND target = ?",
                               (village.node_id,))
        assert len(audit) == 1 and "2 envelopes" in audit[0]["detail"]
        township.sync()
        assert township.scalar("SELECT COUNT(*) FROM custody") == 0
        assert hub.scalar("SELECT COUNT(*) FROM quarantine WHERE origin = ? AND reason = 'revoked'",
                          (village.node_id,)) == 0
    finally:
        cli("provision", "reinstate", "--data", hub.data_dir, "--node-code", village.node_id)
        hub.node.forget_trust()
        net.sync_all()


# ---------------------------------------------------------------- point 5: quarantine review


def test_quarantined_envelopes_are_listed_released_and_discarded_with_an_audit(net):
    village, hub = net.village(1), net.hub
    document = sign_own(village, "relay.test", {"review": 1})
    answer = client(net.townships["130926101"], hub).push([document])  # the wrong relay: quarantined
    assert answer["results"][0]["reason"] == "wrong_relay"
    rows = [last_json(line) for line in cli("hub", "quarantine", "list", "--data", hub.data_dir).output.splitlines()]
    row = next(r for r in rows if r["envelope_id"] == envelope.document_id(document))
    assert row["reason"] == "wrong_relay" and row["has_document"] == 1

    # The admin page lists it with its actions.
    hub.account("qadmin", "admin")
    admin = session_for(hub, "qadmin")
    page = admin.get(hub.url + "/admin/nodes", timeout=10).text
    assert f"放行 {row['id']}" in page and "wrong_relay" in page

    # Release after review: ingested again as coming from its origin.
    released = last_json(cli("hub", "quarantine", "release", "--data", hub.data_dir, "--id", row["id"]).output)
    assert released["status"] in ("accepted", "held")
    assert hub.scalar("SELECT resolved_at IS NOT NULL FROM quarantine WHERE id = ?", (row["id"],)) == 1
    assert hub.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'quarantine.released' AND actor = 'cli'") >= 1
    again = cli("hub", "quarantine", "release", "--data", hub.data_dir, "--id", row["id"], ok=False)
    assert again.exit_code != 0 and "已于" in again.output

    # Discard needs a reason; the page form does it, audited under the admin's name.
    second = sign_own(village, "relay.test", {"review": 2})
    client(net.townships["130926101"], hub).push([second])
    qid = hub.scalar("SELECT id FROM quarantine WHERE envelope_id = ?", (envelope.document_id(second),))
    assert cli("hub", "quarantine", "discard", "--data", hub.data_dir, "--id", qid, "--reason", " ",
               ok=False).exit_code != 0
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = admin.post(f"{hub.url}/admin/quarantine/{qid}",
                          data={"csrf_token": token, "op": "discard", "reason": "由错误的乡镇转发，核查后作废"}, timeout=10)
    assert response.status_code == 200 and "已作废" in response.text
    assert hub.scalar("SELECT detail FROM audit_log WHERE action = 'quarantine.discarded' AND actor = 'qadmin'"
                      " ORDER BY id DESC LIMIT 1").endswith("由错误的乡镇转发，核查后作废")
    # 放行 on the page: a row the hub still refuses stays open, with the reason shown.
    third = sign_own(village, "relay.test", {"review": 3})
    client(net.townships["130926101"], hub).push([third])
    qid = hub.scalar("SELECT id FROM quarantine WHERE envelope_id = ?", (envelope.document_id(third),))
    with write_transaction(hub.conn):  # the origin is suspended meanwhile: a release is refused again
        hub.conn.execute("UPDATE nodes SET status = 'suspended' WHERE node_id = ?", (village.node_id,))
    hub.node.forget_trust()
    try:
        response = admin.post(f"{hub.url}/admin/quarantine/{qid}", data={"csrf_token": token, "op": "release"},
                              timeout=10)
        assert "仍被拒收：suspended" in response.text
        assert hub.scalar("SELECT resolved_at FROM quarantine WHERE id = ?", (qid,)) is None
    finally:
        with write_transaction(hub.conn):
            hub.conn.execute("UPDATE nodes SET status = 'active' WHERE node_id = ?", (village.node_id,))
        hub.node.forget_trust()
    response = admin.post(f"{hub.url}/admin/quarantine/{qid}", data={"csrf_token": token, "op": "release"}, timeout=10)
    assert "已放行" in response.text
    assert hub.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'quarantine.released' AND actor = 'qadmin'") == 1
    net.sync_all()
