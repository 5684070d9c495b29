"""Backup of a running node (SQLite online backup) and restore into an empty folder."""

from __future__ import annotations

import json
import sqlite3
import stat

from click.testing import CliRunner
from network import catalog, create_case, pick_item

from provisioning.cli import main


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_backup_while_running_and_restore(build_network, tmp_path):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    receipts = [create_case(village, agent, pick_item(catalog(village, agent), "city")) for _ in range(3)]
    archive = tmp_path / "village.tar.gz"
    result = _run("backup", "--data", village.data_dir, "--out", archive)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds the node's key

    target = tmp_path / "restored"
    result = _run("restore", "--data", target, "--from", archive)
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(target / "node.sqlite3")
    ids = {r[0] for r in conn.execute("SELECT case_id FROM cases")}
    assert {r["case_id"] for r in receipts} <= ids
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 3
    conn.close()
    assert (target / "keys" / "node.pem").read_bytes() == (village.data_dir / "keys" / "node.pem").read_bytes()
    assert stat.S_IMODE((target / "keys" / "node.pem").stat().st_mode) == 0o600
    # material files come along (content-addressed, immutable)
    assert sorted(p.name for p in (target / "blobs").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (village.data_dir / "blobs").rglob("*") if p.is_file())


def test_restore_refuses_a_folder_in_use(build_network, tmp_path):
    net = build_network(villages=1)
    archive = tmp_path / "hub.tar.gz"
    assert _run("backup", "--data", net.hub.data_dir, "--out", archive).exit_code == 0
    result = CliRunner().invoke(main, ["restore", "--data", str(net.hub.data_dir), "--from", str(archive)])
    assert result.exit_code != 0 and "not empty" in result.output


def test_hub_jobs_runs_the_rules_once(build_network):
    net = build_network(villages=0, township=False)
    result = _run("hub", "jobs", "--data", net.hub.data_dir, "--once")
    assert result.exit_code == 0, result.output
    done = json.loads(result.output.strip().splitlines()[-1])
    assert done["supervision"] == {"deemed_accepted": 0, "terminated": 0, "alerts": 0}
    # The same rules as the web process's scheduler, the apply queue first (city_hub/tier.py).
    assert list(done)[0] == "apply_queue" and {"metadata", "joint", "regulation", "case_facts"} <= set(done)
