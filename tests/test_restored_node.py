"""A village restored from an old backup and used again (issue 10, point 6).

A real network: the village is backed up with ``liandong backup``, files more cases that reach
the hub, loses its disk, is restored with ``liandong restore`` and takes new cases. Nothing
answers 500, the hub sees the fork (quarantine reason fork, node suspended, on the admin page),
and the documented recovery (reinstate after review, ``liandong node resume``) brings every case
to the hub. A node whose database is emptied or garbled refuses to start.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from faults import city_item, cli, last_json, new_case
from network_session import session_for

from shared.core.storage import SchemaError, write_transaction
from sync import envelope, relay


def fresh_app(handle) -> None:
    """Serve ``handle`` again from what is now in its data folder (a new app, same port)."""
    handle.close()
    handle.app = None
    handle.serve()


def all_errors(net) -> list[str]:
    """Sync every node a few rounds; the errors they met."""
    errors = []
    for _ in range(3):
        for handle in (*net.villages.values(), *net.townships.values()):
            summary = handle.sync()
            if "error" in summary:
                errors.append(summary["error"])
    return errors


def test_a_village_restored_from_an_old_backup_forks_visibly_and_resumes_without_loss(build_network, tmp_path):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent", village.node_id)
    item = city_item(village, agent)
    before, _ = new_case(village, agent, item, "before")
    net.sync_all()
    archive = tmp_path / "village.zip"
    cli("backup", "--data", village.data_dir, "--out", archive)
    lost = [new_case(village, agent, item, f"lost{i}")[0] for i in range(2)]
    net.sync_all()
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0
    hub_head = hub.scalar("SELECT MAX(seq) FROM inbox WHERE origin = ?", (village.node_id,))

    # The PC's disk dies; the village is restored from the old backup and used again.
    village.close()
    shutil.move(village.data_dir, tmp_path / "dead-disk")
    restored = cli("restore", "--data", village.data_dir, "--from", archive).output
    assert "node resume" in restored
    fresh_app(village)
    after = [new_case(village, agent, item, f"after{i}")[0] for i in range(2)]
    receipts = {r["receipt_no"] for r in (before, *lost)}
    assert not receipts & {r["receipt_no"] for r in after}  # receipt numbers never repeat

    # By U盘 first: the township takes the bundle and answers it; nothing dies with a traceback.
    cli("node", "export-bundle", "--data", village.data_dir, "--out", tmp_path / "village.bundle")
    cli("node", "import-bundle", "--data", township.data_dir, "--in", tmp_path / "village.bundle",
        "--answer", tmp_path / "answer.bundle")
    cli("node", "import-bundle", "--data", village.data_dir, "--in", tmp_path / "answer.bundle")

    errors = all_errors(net)
    assert not [e for e in errors if "HTTP 500" in e], errors  # the township never answers 500
    forks = hub.query("SELECT seq, reason FROM quarantine WHERE origin = ? AND reason = 'fork'", (village.node_id,))
    assert forks and all(r["seq"] <= hub_head for r in forks)
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "suspended"
    assert hub.scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'node.suspended' AND target = ?",
                      (village.node_id,)) == 1
    hub.account("fork-admin", "admin")
    page = session_for(hub, "fork-admin").get(hub.url + "/admin/nodes", timeout=10).text
    assert 'class="reason-fork"' in page and "fork" in page
    for r in (before, *lost):  # what the hub held is intact
        assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (r["case_id"],)) == 1

    # Recovery (docs/operations.md): the admin reviews and reinstates; the village resumes.
    cli("provision", "reinstate", "--data", hub.data_dir, "--node-code", village.node_id)
    hub.node.forget_trust()
    township.sync()  # the township learns the registry: it serves the village again
    village.close()
    result = last_json(cli("node", "resume", "--data", village.data_dir).output)
    assert result["acked_seq"] == hub_head and [m["to"] for m in result["renumbered"]] == [hub_head + 1, hub_head + 2]
    fresh_app(village)
    assert not all_errors(net)
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0
    for r in (before, *lost, *after):
        assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (r["case_id"],)) == 1, r
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "active"
    for row in hub.query("SELECT id FROM quarantine WHERE origin = ? AND resolved_at IS NULL", (village.node_id,)):
        cli("hub", "quarantine", "discard", "--data", hub.data_dir, "--id", row["id"],
            "--reason", "节点从旧备份恢复，已按运维手册续号重发")
    assert hub.scalar("SELECT COUNT(*) FROM quarantine WHERE origin = ? AND resolved_at IS NULL",
                      (village.node_id,)) == 0


def test_township_keeps_a_fork_it_sees_apart_from_acknowledgements(build_network):
    """The township sends on a second envelope with an acknowledged number instead of dropping it."""
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent", village.node_id)
    new_case(village, agent, city_item(village, agent), "one")
    net.sync_all()
    original = envelope.from_bytes(village.scalar("SELECT document FROM outbox WHERE seq = 1"))
    body = envelope.peek(original)
    fork = envelope.sign(village.node.key, envelope.ENVELOPE, {**body, "body": {**body["body"], "note": "fork"}})
    with write_transaction(township.conn):
        results, held = relay.take_custody(township.conn, township.node.trust(township.conn), township.node_id,
                                           [original, fork], township.node.now(), caller=village.node_id)
    assert [r["status"] for r in results] == ["custody", "custody"]
    assert township.scalar("SELECT last_error FROM custody WHERE envelope_id = ?",
                           (envelope.document_id(fork),)) == "fork"
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE envelope_id = ?", (envelope.document_id(original),)) == 0
    # The hub's acknowledgement arriving again (a pull before the next push) does not release it.
    ack = envelope.from_bytes(township.scalar("SELECT document FROM acks WHERE origin = ?", (village.node_id,)))
    with write_transaction(township.conn):
        relay.store_ack(township.conn, township.node.trust(township.conn), ack)
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE envelope_id = ?", (envelope.document_id(fork),)) == 1
    township.sync()
    assert net.hub.scalar("SELECT reason FROM quarantine WHERE envelope_id = ?", (envelope.document_id(fork),)) == "fork"
    assert township.scalar("SELECT COUNT(*) FROM custody") == 0


@pytest.mark.parametrize("damage", ["emptied", "garbled", "removed"])
def test_a_node_refuses_to_start_on_an_emptied_or_garbled_database(build_network, damage):
    net = build_network(villages=1)
    village = net.village()
    village.close()
    database = village.data_dir / "node.sqlite3"
    for suffix in ("-wal", "-shm"):
        (village.data_dir / f"node.sqlite3{suffix}").unlink(missing_ok=True)
    if damage == "emptied":
        sqlite3.connect(database).close()
        database.write_bytes(b"")
    elif damage == "garbled":
        data = bytearray(database.read_bytes())
        data[100:4096] = b"\x5a" * (4096 - 100)
        database.write_bytes(bytes(data))
    else:
        database.unlink()
    village.app = None
    with pytest.raises(SchemaError) as refused:
        village.serve()
    assert "拒绝启动" in refused.value.message and "liandong restore" in refused.value.message
    result = cli("node", "serve", "--data", village.data_dir, "--port", "1", ok=False)
    assert result.exit_code != 0 and "拒绝启动" in result.output
    if damage == "removed":
        assert not database.exists()  # nothing created in its place
