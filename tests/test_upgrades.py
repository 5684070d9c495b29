"""Explicit upgrades: only `node migrate` (after a backup) and serving migrate a database.

An old database is made the way an old release made it: a real hub created while the code knew
only the first ``OLD`` migrations. `node status` and `backup` read it without touching its
schema; everything that would write needs the migration first; a database from a newer release
is refused everywhere with one clear message.
"""

from __future__ import annotations

import json
import sqlite3
import zipfile

import pytest
from click.testing import CliRunner

from city_hub import create_app as create_hub_app
from city_hub.db import MIGRATIONS as HUB_MIGRATIONS
from provisioning import nodes
from provisioning.cli import main

OLD = 6  # the schema of an older release (before 项目代办, drafts, case facts, the apply queue)
NEWER = len(HUB_MIGRATIONS) + 87


def _run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _user_version(data_dir) -> int:
    conn = sqlite3.connect(data_dir / "node.sqlite3")
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def _audit_before_the_chain(conn, actor, action, target, detail, now):
    """The audit writer of a release before the hash chain (migration 14)."""
    conn.execute("INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?,?,?,?,?)",
                 (now.isoformat(), actor, action, target, detail))


@pytest.fixture
def old_hub(tmp_path, monkeypatch):
    """A hub whose database was created by a release that knew only the first OLD migrations."""
    with monkeypatch.context() as m:
        m.setattr(nodes, "migrations_for", lambda tier: HUB_MIGRATIONS[:OLD])
        m.setattr(nodes, "audit", _audit_before_the_chain)
        nodes.init_hub(tmp_path / "hub", "130926", "测试县政务服务中心")
    assert _user_version(tmp_path / "hub") == OLD
    return tmp_path / "hub"


def test_status_and_backup_leave_an_old_schema_as_it_is(old_hub, tmp_path):
    result = _run("node", "status", "--data", old_hub)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["schema"] == {"version": OLD, "current": len(HUB_MIGRATIONS), "migrate_needed": True}
    assert _user_version(old_hub) == OLD

    result = _run("backup", "--data", old_hub, "--out", tmp_path / "pre-upgrade.zip")
    assert result.exit_code == 0, result.output
    assert _user_version(old_hub) == OLD
    with zipfile.ZipFile(tmp_path / "pre-upgrade.zip") as zf:
        (tmp_path / "x").mkdir()
        zf.extract("node.sqlite3", tmp_path / "x")
    assert _user_version(tmp_path / "x") == OLD  # a pre-upgrade backup really is pre-upgrade


def test_writing_commands_ask_for_the_migration_first(old_hub):
    result = _run("provision", "token", "--data", old_hub, "--node-code", "130926100", "--name", "测试镇")
    assert result.exit_code == 1
    assert "liandong node migrate" in result.output and "（schema_outdated）" in result.output
    assert "Traceback" not in result.output
    assert _user_version(old_hub) == OLD


def test_node_migrate_backs_up_then_upgrades(old_hub):
    result = _run("node", "migrate", "--data", old_hub)
    assert result.exit_code == 0, result.output
    assert _user_version(old_hub) == len(HUB_MIGRATIONS)
    backups = list((old_hub / "backups").glob("pre-migrate-v6-*.sqlite3"))
    assert len(backups) == 1 and _user_version_of(backups[0]) == OLD
    conn = sqlite3.connect(backups[0])
    assert conn.execute("SELECT COUNT(*) FROM metadata").fetchone()[0] >= 2  # the data came along
    conn.close()
    # the upgraded hub works: it issues a token and is up to date
    assert _run("provision", "token", "--data", old_hub, "--node-code", "130926100", "--name", "测试镇").exit_code == 0
    again = _run("node", "migrate", "--data", old_hub)
    assert again.exit_code == 0 and "无需升级" in again.output
    assert len(list((old_hub / "backups").glob("*.sqlite3"))) == 1


def _user_version_of(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_serving_migrates_after_an_automatic_backup(old_hub):
    app = create_hub_app({"DATA_DIR": str(old_hub), "SCHEDULER_ENABLED": False})
    assert _user_version(old_hub) == len(HUB_MIGRATIONS)
    assert len(list((old_hub / "backups").glob("pre-migrate-v6-*.sqlite3"))) == 1
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.usefixtures("restore_logging")
def test_a_database_from_a_newer_release_is_refused_everywhere(old_hub, tmp_path):
    conn = sqlite3.connect(old_hub / "node.sqlite3")
    conn.execute(f"PRAGMA user_version={NEWER}")
    conn.close()
    for args in (("node", "status", "--data", old_hub), ("backup", "--data", old_hub, "--out", tmp_path / "b.zip"),
                 ("node", "migrate", "--data", old_hub), ("node", "serve", "--data", old_hub, "--port", "1"),
                 ("provision", "token", "--data", old_hub, "--node-code", "130926100", "--name", "测试镇")):
        result = _run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"架构版本 {NEWER}" in result.output and "（schema_too_new）" in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "b.zip").exists()
    with pytest.raises(nodes.storage.SchemaError):
        create_hub_app({"DATA_DIR": str(old_hub), "SCHEDULER_ENABLED": False})
    assert _user_version(old_hub) == NEWER
    assert not (old_hub / "backups").exists()


def test_two_workers_migrating_at_once_apply_each_migration_once(old_hub, monkeypatch):
    """gunicorn starts several workers; each migrates at start-up. One that read the old version
    just before another finished must not apply the same migrations again."""
    from shared.core import storage

    first, second = storage.connect(old_hub / "node.sqlite3"), storage.connect(old_hub / "node.sqlite3")
    try:
        storage.migrate(first, HUB_MIGRATIONS)
        stale = storage.check_schema
        monkeypatch.setattr(storage, "check_schema", lambda conn, m, allow_older=False: OLD)  # read before
        assert storage.migrate(second, HUB_MIGRATIONS) == len(HUB_MIGRATIONS)
        monkeypatch.setattr(storage, "check_schema", stale)
    finally:
        first.close()
        second.close()
    assert _user_version(old_hub) == len(HUB_MIGRATIONS)
