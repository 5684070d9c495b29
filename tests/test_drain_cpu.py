"""The drain's CPU and commits (issue 12, tenth round): each shortcut keeps what the long way
kept. Real nodes over real HTTP (tests/network.py)."""

from __future__ import annotations

import pytest
from faults import WireSession, city_item, client_with, outbox_states
from network import create_case

from sync import node_sync
from sync.node_sync import SyncState, run_round


def _round(handle, state: SyncState | None = None) -> dict:
    summary = run_round(handle.conn, handle.node, state or SyncState(), client=client_with(handle, WireSession()),
                        force=True)
    assert "error" not in summary, summary
    return summary


def _commits(conn, action) -> int:
    """How many transactions ``action`` commits on ``conn``."""
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    return sum(1 for s in seen if s.strip().upper() == "COMMIT")


def test_a_round_applies_the_push_answer_its_pull_and_the_contact_in_one_commit(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    for _ in range(3):
        create_case(village, agent, city_item(village, agent))
    assert _commits(village.conn, lambda: _round(village)) == 1  # was three: receipt, pull, contact
    assert set(outbox_states(village).values()) == {"custody"}
    assert village.query("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")
    # A round without a push: its pull's answer and the contact, also one commit (was two).
    before = village.query("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")[0]["value"]
    assert _commits(village.conn, lambda: _round(village)) == 1
    assert village.query("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")[0]["value"] >= before


def test_a_push_answer_whose_pull_fails_to_apply_is_not_half_applied(build_network, monkeypatch):
    """The custody receipt and the pull in the same answer commit together: a failure in the
    second leaves the first undone too (the next round applies both again, idempotently)."""
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))

    def broken(*args, **kwargs):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(node_sync, "apply_pull_answer", broken)
    with pytest.raises(RuntimeError):
        _round(village)
    assert set(outbox_states(village).values()) == {"pending"}
    assert not village.query("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")
    monkeypatch.undo()
    _round(village)  # offered again: the township holds it already and says so
    assert set(outbox_states(village).values()) == {"custody"}


def test_custody_uses_what_was_opened_before_the_lock_only_under_the_same_trust_store(build_network):
    """prepare_push opens the push before the write lock; if the registry changed meanwhile (a
    revocation), custody opens everything again with the trust store of its transaction."""
    from sync import envelope
    from township_node.relay_service import TownshipSync

    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    for _ in range(2):
        create_case(village, agent, city_item(village, agent))
    documents = [envelope.from_bytes(r["document"]) for r in village.query("SELECT document FROM outbox ORDER BY seq")]
    service = TownshipSync(township.node)
    trust, opened = service.prepare_push(township.conn, township.node, documents)
    assert all(isinstance(o, envelope.Opened) for o in opened)
    # Stale: what was opened then must not be used (here it names the wrong bodies).
    swapped = [opened[1], opened[0]]
    answer = service.push(township.conn, township.node, village.node_id, documents, prepared=(object(), swapped))
    assert [r["seq"] for r in answer["results"]] == [1, 2] and {r["status"] for r in answer["results"]} == {"custody"}
    assert [r["seq"] for r in township.query("SELECT seq FROM custody ORDER BY rowid")] == [1, 2]


def test_a_village_applies_its_parents_answer_with_a_larger_page_cache_and_gives_it_back(build_network,
                                                                                           monkeypatch):
    net = build_network(villages=1)
    village = net.village()
    village.conn.execute("PRAGMA cache_size=-512")  # what a village's connections keep
    agent = village.account("agent", "agent")
    create_case(village, agent, city_item(village, agent))
    seen = []
    real = node_sync.apply_push_answer

    def watched(conn, *args, **kwargs):
        seen.append(conn.execute("PRAGMA cache_size").fetchone()[0])
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(node_sync, "apply_push_answer", watched)
    _round(village)
    assert seen == [-int(village.node.config["SYNC_CACHE_KIB"])] and seen[0] < -512
    assert village.conn.execute("PRAGMA cache_size").fetchone()[0] == -512
    village.node.config["SYNC_CACHE_KIB"] = 0  # switched off: the connection's own
    create_case(village, agent, city_item(village, agent))
    _round(village)
    assert seen[-1] == -512


def test_a_township_keeps_statement_journals_in_memory_and_a_village_does_not(build_network, tmp_path):
    from provisioning import nodes
    from shared.core import storage

    net = build_network(villages=1)
    village, township = net.village(), net.township
    for handle, expected in ((township, 2), (village, 0)):  # 2: MEMORY, 0: the build's default (files)
        app = handle.app
        with app.app_context():
            conn = app.extensions["liandong_db"].connect(app)
            try:
                assert conn.execute("PRAGMA temp_store").fetchone()[0] == expected
            finally:
                conn.close()
        conn = nodes.open_db(handle.data_dir)  # the CLI's and the township's round connection
        try:
            assert conn.execute("PRAGMA temp_store").fetchone()[0] == expected
        finally:
            conn.close()
    plain = storage.connect(tmp_path / "x.sqlite3")
    assert plain.execute("PRAGMA temp_store").fetchone()[0] == 0


KILLED_MID_ANSWER = """
import os, signal, sys
from provisioning import nodes
from sync import node_sync

data = sys.argv[1]
node = nodes.node_for(data)
conn = nodes.open_db(data)
real = node_sync.apply_pull_answer


def killed(conn, *args, **kwargs):
    # The push answer (custody receipt) is applied in this transaction already: die before the commit.
    assert conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'custody'").fetchone()[0] > 0
    os.kill(os.getpid(), signal.SIGKILL)


node_sync.apply_pull_answer = killed
node_sync.run_round(conn, node, node_sync.SyncState(), force=True)
"""


def test_a_village_killed_while_applying_an_answer_keeps_neither_half_and_the_next_round_applies_both(
        build_network):
    """kill -9 inside the one transaction of a push answer and its pull: after the restart the
    database holds neither (nothing half-applied), and the next round, offering the envelopes
    again, records the custody the township still holds."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    for _ in range(3):
        create_case(village, agent, city_item(village, agent))
    village.conn.close()  # another process writes the file now
    village._conn = None
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", KILLED_MID_ANSWER, str(village.data_dir)], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert set(outbox_states(village).values()) == {"pending"}  # the custody receipt went with the kill
    assert not village.query("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")
    assert township.scalar("SELECT COUNT(*) FROM custody") == 3  # the township committed before answering
    _round(village)
    assert set(outbox_states(village).values()) == {"custody"}
    assert township.scalar("SELECT COUNT(*) FROM custody") == 3  # offered again, held once
