"""The audit log is append-only in fact and tamper-evident: a hash chain checked by
``liandong audit verify``, on a real hub data folder."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from provisioning import nodes
from provisioning.cli import main
from shared.core import storage
from shared.core.audit import GENESIS, audit, verify_chain
from shared.services import schema

NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def _verify(data_dir):
    return CliRunner().invoke(main, ["audit", "verify", "--data", str(data_dir)])


@pytest.fixture
def hub(tmp_path):
    """A hub data folder whose audit log holds five chained rows (besides what init wrote)."""
    data_dir = tmp_path / "hub"
    nodes.init_hub(data_dir, "130926", "测试县政务服务中心")
    conn = storage.connect(data_dir / "node.sqlite3")
    try:
        for n in range(5):
            audit(conn, f"user{n}", "case.read", f"case-{n}", "oversight", NOW)
    finally:
        conn.close()
    return data_dir


def _tamper(data_dir, *statements):
    """Edit the database file as an intruder would: around the triggers."""
    conn = sqlite3.connect(data_dir / "node.sqlite3")
    try:
        for trigger in ("audit_log_no_update", "audit_log_no_delete"):
            conn.execute(f"DROP TRIGGER {trigger}")
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _ids(data_dir) -> list[int]:
    conn = sqlite3.connect(data_dir / "node.sqlite3")
    try:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
    finally:
        conn.close()


def test_an_intact_log_verifies_and_prints_its_head(hub):
    result = _verify(hub)
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(hub / "node.sqlite3")
    head = conn.execute("SELECT row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()[0]
    count = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    conn.close()
    assert f"audit log ok: {count} rows; head {head}" in result.output


def test_an_edited_row_is_reported(hub):
    target = _ids(hub)[-3]
    _tamper(hub, f"UPDATE audit_log SET actor = 'someone-else' WHERE id = {target}")
    result = _verify(hub)
    assert result.exit_code == 1
    assert f"审计日志第 {target} 行起哈希链断裂" in result.output and "edited" in result.output


def test_a_deleted_row_is_reported_at_the_row_after_it(hub):
    ids = _ids(hub)
    _tamper(hub, f"DELETE FROM audit_log WHERE id = {ids[-3]}")
    result = _verify(hub)
    assert result.exit_code == 1 and f"第 {ids[-2]} 行" in result.output and "deleted" in result.output


def test_a_removed_hash_is_reported(hub):
    target = _ids(hub)[-1]
    _tamper(hub, f"UPDATE audit_log SET row_hash = NULL WHERE id = {target}")
    output = _verify(hub).output
    assert f"第 {target} 行" in output and "no hash" in output


def test_the_triggers_refuse_update_delete_replace_and_unchained_rows(hub):
    conn = storage.connect(hub / "node.sqlite3")
    try:
        last = conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        for sql, params in (
            ("UPDATE audit_log SET actor = 'x' WHERE id = ?", (last["id"],)),
            ("DELETE FROM audit_log WHERE id = ?", (last["id"],)),
            # REPLACE deletes the old row without firing the DELETE trigger: refused before it.
            ("INSERT OR REPLACE INTO audit_log(id, at, actor, action, prev_hash, row_hash) VALUES (?,?,?,?,?,?)",
             (last["id"], "x", "x", "x", last["row_hash"], "e" * 64)),  # linked right, so only the id refuses it
            ("INSERT INTO audit_log(at, actor, action) VALUES ('x', 'x', 'x')", ()),  # no hash
            ("INSERT INTO audit_log(at, actor, action, prev_hash, row_hash) VALUES ('x','x','x',?,?)",
             (GENESIS, "f" * 64)),  # links to the wrong row
        ):
            with pytest.raises(sqlite3.IntegrityError, match="audit_log"):
                conn.execute(sql, params)
    finally:
        conn.close()
    assert _verify(hub).exit_code == 0


def test_rows_from_before_the_chain_are_counted_then_the_chain_starts(tmp_path):
    full = nodes.migrations_for("hub")
    conn = storage.connect(tmp_path / "old.sqlite3")
    storage.migrate(conn, full[:full.index(schema.AUDIT_CHAIN)])  # a release before the chain wrote these rows
    for n in range(3):
        conn.execute("INSERT INTO audit_log(at, actor, action) VALUES ('2026-01-01T00:00:00Z', ?, 'login')", (f"u{n}",))
    storage.migrate(conn, full)
    audit(conn, "new", "case.read", "c1", None, NOW)
    report = verify_chain(conn)
    assert report.ok and (report.unchained, report.rows) == (3, 4)
    # A row written after the chain began may not lose its hash, even when the triggers are gone.
    conn.execute("DROP TRIGGER audit_log_chained")
    conn.execute("INSERT INTO audit_log(at, actor, action) VALUES ('x', 'x', 'x')")
    assert verify_chain(conn).broken_id == 5
    conn.close()


def test_writers_on_several_connections_keep_one_chain(hub):
    """Each row links to the last one read in the same write transaction: concurrent writers
    (gunicorn workers, the jobs process) never both link to the same row."""
    failures = []

    def write(n):
        conn = storage.connect(hub / "node.sqlite3")
        try:
            for i in range(60):
                audit(conn, f"worker{n}", "case.read", f"c{i}", None, NOW)
        except Exception as exc:  # noqa: BLE001 - collected and shown by the assert
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert _verify(hub).exit_code == 0
