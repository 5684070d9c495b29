"""SQLite connections, PRAGMAs, the single-writer transaction and schema migrations.

Every node keeps its data in one SQLite file in WAL mode. ``synchronous=FULL`` is the default
because every node acknowledges receipt to a peer (custody, ingest, downlink); writes are
batched into short ``BEGIN IMMEDIATE`` transactions so the fsync per commit stays cheap.
Within one process all writes go through :func:`write_transaction`, which serialises them on a
per-file lock: one writer per SQLite file, readers never wait (WAL).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


class DiskFullError(Exception):
    """The node's disk is (nearly) full; new work is refused before SQLite would fail."""


def private_file(path: str | Path) -> None:
    """Make a file readable by the owner only (0600), creating it empty if missing.

    POSIX only: on Windows the data folder's NTFS ACL protects it (docs/operations.md).
    """
    if os.name != "posix":
        return
    path = Path(path)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        os.chmod(path, 0o600)
    except PermissionError:
        pass  # another account's file (e.g. read by an operator's tool): not ours to change


def private_dir(path: str | Path) -> None:
    """Create a folder (and its parents) and make it owner-only (0700) on POSIX."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            pass


def connect(path: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open ``path`` with the project's PRAGMAs (WAL, FULL sync, busy timeout, foreign keys).

    The connection is in autocommit mode (``isolation_level=None``): transactions are explicit.
    The file and its ``-wal``/``-shm`` companions are 0600 (full 身份证号, password hashes):
    SQLite gives the companions the main file's mode, so that one is created 0600 first.
    """
    on_disk = str(path) != ":memory:" and not str(path).startswith("file:")
    if on_disk:
        private_file(path)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    if on_disk:
        for suffix in ("-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                private_file(f"{path}{suffix}")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _lock_for(conn: sqlite3.Connection) -> threading.RLock:
    row = conn.execute("PRAGMA database_list").fetchone()
    name = row[2] or f"memory:{id(conn)}"
    with _write_locks_guard:
        return _write_locks.setdefault(name, threading.RLock())


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a block as one ``BEGIN IMMEDIATE`` transaction, the only writer to this file.

    Nested use joins the outer transaction (the lock is re-entrant and no second BEGIN is
    issued), so helpers can be composed into one atomic batch.
    """
    lock = _lock_for(conn)
    with lock:
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back after SQLITE_FULL, IOERR, NOMEM…
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Apply the migrations after ``PRAGMA user_version`` in one transaction each.

    ``migrations[i]`` brings the schema to version ``i + 1``. Returns the new version.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(migrations[version:], start=version + 1):
        with write_transaction(conn):
            for statement in _split_statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
    return max(version, len(migrations))


def _split_statements(script: str) -> list[str]:
    """Split a schema script on complete statements (executescript would COMMIT on its own)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path``."""

    target = Path(path)
    while not target.exists():
        target = target.parent
    return shutil.disk_usage(target).free


def ensure_disk_space(path: str | Path, reserve_bytes: int) -> None:
    """Refuse new work while less than ``reserve_bytes`` are free, long before SQLITE_FULL."""
    if free_bytes(path) < reserve_bytes:
        raise DiskFullError(f"less than {reserve_bytes} bytes free under {path}")


def backup(conn: sqlite3.Connection, destination: str | Path) -> None:
    """Copy a live database with SQLite's online backup API (consistent while in use)."""
    private_file(destination)
    target = sqlite3.connect(str(destination))
    try:
        conn.backup(target)
    finally:
        target.close()
