"""Storage guarantees on real node folders: WAL + synchronous=FULL, append-only audit, 0600 secrets."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from shared.core.storage import write_transaction
from shared.services.accounts import audit

FULL = 2  # PRAGMA synchronous value of FULL


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def test_every_node_database_is_wal_with_full_sync(net):
    for handle in net.all_nodes():
        path = handle.app.extensions["liandong_db"].path(handle.app)
        plain = sqlite3.connect(str(path))
        try:
            assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal", handle.tier  # persistent in the file
        finally:
            plain.close()
        job_conn = handle.app.extensions["liandong_db"].connect(handle.app)  # what sync rounds and jobs use
        try:
            assert job_conn.execute("PRAGMA synchronous").fetchone()[0] == FULL, handle.tier
            assert job_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert job_conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        finally:
            job_conn.close()
        with handle.app.app_context():
            request_conn = handle.app.extensions["liandong_db"].get_db()  # what requests use
            assert request_conn.execute("PRAGMA synchronous").fetchone()[0] == FULL, handle.tier
            assert request_conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_audit_log_is_append_only(net):
    for handle in net.all_nodes():
        conn = handle.conn
        with write_transaction(conn):
            audit(conn, "tester", "test.append", handle.node_id, "原始记录", handle.node.now())
        row_id = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
        count = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            with write_transaction(conn):
                conn.execute("UPDATE audit_log SET detail = '篡改' WHERE id = ?", (row_id,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            with write_transaction(conn):
                conn.execute("DELETE FROM audit_log WHERE id = ?", (row_id,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            with write_transaction(conn):
                conn.execute("DELETE FROM audit_log")
        assert conn.execute("SELECT detail FROM audit_log WHERE id = ?", (row_id,)).fetchone()[0] == "原始记录"
        assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == count


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_and_config_are_readable_by_the_owner_only(net):
    expected = {
        "hub": ["config.py", "keys/root.pem", "keys/hub-signing.pem"],
        "township": ["config.py", "keys/node.pem"],
        "village": ["config.py", "keys/node.pem"],
    }
    for handle in net.all_nodes():
        for name in expected[handle.tier]:
            path = handle.data_dir / name
            assert path.is_file(), path
            assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
        for path in (handle.data_dir / "keys").iterdir():  # every key file, however many
            assert mode(path) & 0o077 == 0, f"{path}: {oct(mode(path))}"
        assert "SECRET_KEY" in (handle.data_dir / "config.py").read_text(encoding="utf-8")
