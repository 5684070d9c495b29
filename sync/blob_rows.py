"""Small material files kept as rows of the node's own SQLite database (table ``blob_bytes``).

SQLite reads and writes blobs of ~10-20 KB faster than separate files
(https://www.sqlite.org/fasterthanfs.html, https://www.sqlite.org/intern-v-extern-blob.html),
and a batch of scans stored as rows is one transaction: one commit at ``synchronous=FULL``, no
file created and no folder fsynced per scan (docs/performance.md, tenth round). The rows are
only ever reached through :class:`sync.blobs.BlobStore`, which decides what is a row and what a
file and keeps the hash checks; this module only stores, finds and deletes rows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.core import storage
from shared.core.storage import DiskFullError, write_lock_held, write_transaction

log = logging.getLogger("liandong.blobs")

#: The page cache of the kept connections between batches: a blob is read from the OS cache
#: anyway, and a village's process is small (its RSS: docs/performance.md, tenth round).
CACHE_KIB = 128
_IN_CHUNK = 500  # names per ``IN (...)`` query, well under SQLite's bound-parameter limit


class BlobRows:
    """The ``blob_bytes`` rows of one node's database file, through connections of their own
    (a blob arrives outside any of the node's transactions), a few of them kept for reuse."""

    #: Connections kept for reuse (opening one parses the whole schema); more are opened when
    #: needed and closed after use. A process holding hundreds of nodes (``liandong sim``) keeps none.
    keep = 2

    def __init__(self, database: str | Path | None):
        self.database = Path(database) if database is not None else None
        self._table = False  # blob_bytes seen in the database (it never goes away once there)
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection to the node's database, from the pool when one is free."""
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = storage.connect(self.database, cached_statements=16, cache_kib=CACHE_KIB)  # synchronous=FULL
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint runs behind (_checkpoint_behind)
        try:
            yield conn
        finally:
            with self._pool_lock:
                if len(self._pool) < self.keep and not conn.in_transaction:
                    self._pool.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        """Close the kept connections (the next use opens new ones)."""
        with self._pool_lock:
            kept, self._pool = self._pool, []
        for conn in kept:
            conn.close()

    def exist(self) -> bool:
        """Whether rows may be read: the database exists and has ``blob_bytes`` (migration 26)."""
        if self._table:
            return True
        if self.database is None or not self.database.exists():
            return False  # never create an empty database beside a node that has none yet
        with self.connection() as conn:
            self._table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob_bytes'").fetchone() is not None
        return self._table

    def writable(self) -> bool:
        """Whether new rows may be written now. Not while this thread holds the database's write
        lock for another connection (a second connection would wait on the first for ever)."""
        if not self.exist():
            return False
        with self.connection() as conn:
            return not write_lock_held(conn)

    def insert(self, rows: list[tuple[str, int, bytes]], conn: sqlite3.Connection | None = None) -> None:
        """Store verified ``(sha256, size, data)`` rows in one transaction (one commit, at the
        database's ``synchronous=FULL``: durable when this returns); ``conn``: in that connection's.

        :raises DiskFullError: the database could not grow; nothing of ``rows`` was written.
        """
        sql = "INSERT INTO blob_bytes(sha256, size, data) VALUES (?,?,?) ON CONFLICT(sha256) DO NOTHING"
        try:
            if conn is not None:
                with write_transaction(conn):
                    conn.executemany(sql, rows)
                return
            with self.connection() as own:
                # A batch's pages stay in memory until the commit writes them to the WAL once: with
                # the kept connection's small cache they spilled to the WAL mid-transaction (a
                # batch of 200 scans of 20 KB: 7.6 → 2.1 ms). The cache is given back after.
                own.execute(f"PRAGMA cache_size = -{max(CACHE_KIB, 2 * sum(len(r[2]) for r in rows) // 1024)}")
                try:
                    with write_transaction(own):
                        own.executemany(sql, rows)
                finally:
                    own.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                    own.execute("PRAGMA shrink_memory")
            _checkpoint_behind(self)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
                raise DiskFullError(f"no space left for a blob: {exc}") from exc
            raise

    def data(self, sha256: str) -> bytes | None:
        """The bytes of one row, None if there is none."""
        return self._one(sha256, "data")

    def size(self, sha256: str) -> int | None:
        """The size of one row's blob, None if there is none."""
        return self._one(sha256, "size")

    def _one(self, sha256: str, column: str):
        if not self.exist():
            return None
        with self.connection() as conn:
            row = conn.execute(f"SELECT {column} FROM blob_bytes WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else row[0]

    def sizes(self, shas: list[str]) -> Iterable[tuple[str, int]]:
        """``(sha256, size)`` of the rows among ``shas`` (one query per 500 names)."""
        return self._many(shas, "size")

    def contents(self, shas: list[str]) -> Iterable[tuple[str, bytes]]:
        """``(sha256, data)`` of the rows among ``shas`` (one query per 500 names)."""
        return self._many(shas, "data")

    def _many(self, shas: list[str], column: str) -> list[tuple]:
        if not shas or not self.exist():
            return []
        found: list[tuple] = []
        with self.connection() as conn:
            for i in range(0, len(shas), _IN_CHUNK):
                part = shas[i:i + _IN_CHUNK]
                found += conn.execute(f"SELECT sha256, {column} FROM blob_bytes"
                                      f" WHERE sha256 IN ({','.join('?' * len(part))})", part).fetchall()
        return found

    def delete(self, sha256: str, conn: sqlite3.Connection | None = None) -> bool:
        """Delete one row; False if there was none. ``conn``: a connection to the node's database
        whose write transaction the deletion joins (required when this thread has one open)."""
        if not self.exist():
            return False
        sql = "DELETE FROM blob_bytes WHERE sha256 = ? RETURNING 1"
        if conn is not None:
            with write_transaction(conn):
                return bool(conn.execute(sql, (sha256,)).fetchall())
        with self.connection() as own, write_transaction(own):
            return bool(own.execute(sql, (sha256,)).fetchall())


def _checkpoint_behind(rows: BlobRows) -> None:
    """Copy the WAL into the database file in the background, not in the commit that just wrote
    a batch of scans: the commit is then one WAL write and one fsync, and the sender's answer
    does not wait for several MB copied and the database file fsynced (docs/performance.md,
    thirteenth round). One thread for the process (``liandong sim`` holds hundreds of nodes)."""
    global _checkpointer
    with _checkpoints_ready:
        _checkpoints_due.add(rows)
        if _checkpointer is None or not _checkpointer.is_alive():
            _checkpointer = threading.Thread(target=_checkpoints, name="blob-checkpoint", daemon=True)
            _checkpointer.start()
        _checkpoints_ready.notify()


def _checkpoints() -> None:
    while True:
        with _checkpoints_ready:
            while not _checkpoints_due:
                _checkpoints_ready.wait()
            rows = _checkpoints_due.pop()
        try:
            with rows.connection() as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers or writers
        except sqlite3.Error as exc:  # the next commit's own checkpoint (or this one's next turn) does it
            log.warning("background checkpoint of %s failed: %s", rows.database, exc)


_checkpoints_due: set[BlobRows] = set()
_checkpoints_ready = threading.Condition()
_checkpointer: threading.Thread | None = None
