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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shared.core.errors import LiandongError

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


def connect(path: str | Path, synchronous: str = "FULL", cached_statements: int = 128,
            cache_kib: int | None = None, temp_in_memory: bool = False) -> sqlite3.Connection:
    """Open ``path`` with the project's PRAGMAs (WAL, FULL sync, busy timeout, foreign keys).

    The connection is in autocommit mode (``isolation_level=None``): transactions are explicit.
    The file and its ``-wal``/``-shm`` companions are 0600 (full 身份证号, password hashes):
    SQLite gives the companions the main file's mode, so that one is created 0600 first.
    ``cached_statements`` is how many prepared statements the connection keeps (sqlite3's
    default); a process holding hundreds of connections (``liandong sim``) keeps none.
    ``cache_kib``: the connection's page cache (``PRAGMA cache_size``), None for SQLite's 2,000 KiB.
    ``temp_in_memory``: statement journals and temporary tables in memory (``PRAGMA temp_store``),
    not in temporary files once past 64 KiB.
    """
    on_disk = str(path) != ":memory:" and not str(path).startswith("file:")
    if on_disk:
        private_file(path)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0, cached_statements=cached_statements
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
    if cache_kib:
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB, not pages
    if temp_in_memory:
        conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def _lock_for(conn: sqlite3.Connection) -> threading.RLock:
    row = conn.execute("PRAGMA database_list").fetchone()
    name = row[2] or f"memory:{id(conn)}"
    with _write_locks_guard:
        return _write_locks.setdefault(name, threading.RLock())


def write_lock_held(conn: sqlite3.Connection) -> bool:
    """Whether this thread holds the write lock of ``conn``'s file (a :func:`write_transaction`
    is open on it, through any connection): a second connection's ``BEGIN IMMEDIATE`` would then
    wait on this thread's own transaction until the busy timeout."""
    return _lock_for(conn)._is_owned()  # RLock's own check: held by the calling thread


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


class SchemaError(LiandongError):
    """The database's schema version does not match this release (message for the operator)."""

    default_status = 503


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version the database was last migrated to (``PRAGMA user_version``; 0 = empty)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_schema(conn: sqlite3.Connection, migrations: Sequence[str], *, allow_older: bool = False) -> int:
    """The database's schema version, refusing one this release cannot use. Writes nothing.

    A database from a newer release (a version this code does not know) is always refused: an
    older program would misread or damage it. An older schema is refused unless
    ``allow_older`` (read-only commands such as ``node status`` and ``backup``): only
    ``liandong node migrate`` and ``serve`` upgrade it, each after a backup.
    """
    version, known = schema_version(conn), len(migrations)
    if version > known:
        raise SchemaError("schema_too_new", f"数据库来自更新版本的联动（架构版本 {version}，本程序最高支持 {known}）："
                                            "请安装该版本或更新的联动，不要用旧版本打开")
    if version < known and not allow_older:
        raise SchemaError("schema_outdated", f"数据库需要升级（架构版本 {version}，本程序为 {known}）："
                                             "请先运行 liandong node migrate（会先自动备份）")
    return version


def check_health(path: str | Path, expect_data: bool, cache_kib: int | None = None) -> None:
    """Refuse to run on a lost, emptied or damaged database (checked at every start).

    ``expect_data``: the node already has its key, so its database must exist and hold a schema
    (an empty one would number its envelopes from 1 again under a key the hub knows).
    :raises SchemaError: with what the operator should do.
    """
    path = Path(path)
    advice = "请停止节点，用 `liandong restore` 从最近的备份恢复，再按运维手册执行 `liandong node resume`"
    if not path.exists() or path.stat().st_size == 0:
        if expect_data:
            raise SchemaError("database_missing", f"节点密钥已存在，但数据库 {path} 不存在或为空，拒绝启动。{advice}")
        return
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        try:
            if cache_kib:  # the check reads every page once: a big cache would only hold the heap
                conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SchemaError("database_damaged", f"数据库 {path} 已损坏（{exc}），拒绝启动。{advice}") from exc
    if verdict != "ok":
        raise SchemaError("database_damaged", f"数据库 {path} 未通过完整性检查（{verdict}），拒绝启动。{advice}")
    if expect_data and version == 0:
        raise SchemaError("database_empty", f"节点密钥已存在，但数据库 {path} 是空的，拒绝启动。{advice}")


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """Open an existing database read-only (``mode=ro``): nothing, not even the schema, is written."""
    if not Path(path).exists():
        raise SchemaError("no_database", f"数据库文件不存在：{path}")
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                           timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Apply the migrations after ``PRAGMA user_version`` in one transaction each.

    ``migrations[i]`` brings the schema to version ``i + 1``. Returns the new version. A
    database from a newer release is refused (:class:`SchemaError`) before anything is written.
    """
    version = check_schema(conn, migrations, allow_older=True)
    for number, script in enumerate(migrations[version:], start=version + 1):
        with write_transaction(conn):
            if schema_version(conn) >= number:  # another process (a gunicorn worker) was first
                continue
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


def upgrade(conn: sqlite3.Connection, migrations: Sequence[str], backup_dir: str | Path) -> tuple[int, int, Path | None]:
    """Bring an existing database to the current schema, backing it up first.

    A new, empty database (version 0) is created without a backup. Before migrating an older
    one, a consistent copy ``pre-migrate-v<old>-<UTC time>.sqlite3`` (mode 0600) is written into
    ``backup_dir``: to roll back, stop the node and put that file in place of the database.
    Returns ``(old version, new version, backup file or None)``.
    """

    old = check_schema(conn, migrations, allow_older=True)
    snapshot = None
    if 0 < old < len(migrations):
        folder = Path(backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        snapshot = folder / f"pre-migrate-v{old}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.sqlite3"
        backup(conn, snapshot)
        snapshot.chmod(0o600)
    return old, migrate(conn, migrations), snapshot
