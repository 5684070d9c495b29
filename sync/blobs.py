"""Content-addressed material files: stored by SHA-256, received in resumable chunks.

A small blob is a row of the node's database (:mod:`sync.blob_rows`); a larger one lives at
``<data>/blobs/<first two hex>/<sha256>``. While a blob is arriving over several requests its
bytes accumulate in ``<data>/blobs/partial/<sha256>``; a sender asks how much arrived and sends
only the rest (``docs/sync-protocol.md`` §6). A blob counts only once its hash is verified.

Blobs are ID-card scans: files are created 0600 and folders 0700 whatever the umask. A write
that fails (a full disk: :class:`shared.core.storage.DiskFullError`) leaves no partial file behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shared.core.clock import iso
from shared.core.crypto import fsync_dir
from shared.core.storage import DiskFullError, private_dir, write_transaction
from sync.blob_rows import BlobRows

# O_BINARY: on Windows a descriptor opened without it would turn every LF byte into CRLF.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 256 * 1024


class BlobError(ValueError):
    """A chunk that does not fit: wrong offset, too large, or a hash mismatch."""


@dataclass
class BatchResult:
    """What :meth:`BlobStore.write_batch` did: files now held whole (sha256 → size), bytes held
    of the others it wrote to, and the files it refused (sha256 → reason)."""

    complete: dict[str, int]
    partial: dict[str, int]
    rejected: dict[str, str]


class _Arriving:
    """One file a batch writes to: its partial file, appended to and fsynced once at the end."""

    def __init__(self, sha256: str, size: int, path: Path, have: int):
        self.sha256, self.size, self.path = sha256, size, path
        self.before = self.held = have
        # Bytes that arrive from offset 0 within the batch are hashed as they are written.
        self._digest = hashlib.sha256() if have == 0 else None
        self._fd: int | None = None

    def append(self, offset: int, data) -> None:
        """Write a chunk at ``offset`` (checked against what is held) without fsyncing it."""
        if offset != self.held:
            raise BlobError(f"expected offset {self.held}, got {offset}")
        if self.held + len(data) > self.size:
            raise BlobError("chunk runs past the declared size")
        if self._fd is None:
            self._fd = os.open(self.path, _WRITE_FLAGS | os.O_APPEND, 0o600)
            if os.name == "posix":
                os.fchmod(self._fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.held += len(data)
        if self._digest is not None:
            self._digest.update(data)

    def close(self, sync: bool) -> None:
        """fsync (``sync``) and close the partial file; a no-op once closed."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if sync:
                os.fsync(fd)
                if os.fstat(fd).st_size != self.held:
                    self._digest = None  # someone else wrote to it too: hash what is on disk
        finally:
            os.close(fd)

    def verified(self) -> bool:
        """Whether the finished file's bytes hash to its name."""
        if self._digest is None:
            self._digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    self._digest.update(block)
        return self._digest.hexdigest() == self.sha256


class BlobStore:
    """The material files of one node: small ones as rows of its database, the others as files.

    A blob of up to ``inline_max`` bytes is kept in the table ``blob_bytes`` of the node's SQLite
    file (``database``): a batch of scans is then one transaction, with no file created and no
    folder fsynced per scan. Larger blobs, and every blob when ``database`` is None, the table
    is not there yet (an older schema) or a caller's write transaction is open on this thread,
    are files at ``<root>/<first two hex>/<sha256>`` as before. Every reader asks this store,
    which looks in both places, so a file stored before the table existed keeps working and is
    never rewritten. Partial uploads are always files in ``<root>/partial``.
    """

    def __init__(self, root: str | Path, database: str | Path | None = None, inline_max: int = 0):
        self.root = Path(root)
        private_dir(self.root)
        private_dir(self.root / "partial")
        self._folders: set[Path] = set()
        self.rows = BlobRows(database)
        self.database = self.rows.database
        self.inline_max = int(inline_max) if database is not None else 0

    def close(self) -> None:
        """Close the kept connections of the rows (the next use opens new ones)."""
        self.rows.close()

    def _rows_writable(self) -> bool:
        """Whether new small blobs go into rows now (not while this thread holds the database's
        write lock for another connection: then a file, which needs no lock, is as good)."""
        return bool(self.inline_max) and self.rows.writable()

    # ------------------------------------------------------------------ both kinds

    def path(self, sha256: str) -> Path:
        """Where a complete blob kept as a file lives (small blobs are rows: :meth:`read`)."""
        if not SHA256_RE.match(sha256):
            raise BlobError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the complete, verified blob is here (as a row or as a file). Rows first: where
        the table exists most blobs are rows, and a primary-key probe costs less than a stat."""
        path = self.path(sha256)  # checks the name
        return self.rows.size(sha256) is not None or os.path.exists(path)

    def held(self, shas) -> set[str]:
        """Which of ``shas`` are here complete (one query for the rows, a stat for the others)."""
        return set(self.holdings(shas, partial=False))

    def holdings(self, shas, partial: bool = True) -> dict[str, tuple[int, bool]]:
        """``{sha256: (bytes held, complete)}`` of ``shas`` (what a sender asks before sending):
        the rows in one query, a stat for each other file; ``partial``: the bytes of part files
        too (else only complete blobs are listed). Names that are not hex digests are left out."""
        shas = [s for s in dict.fromkeys(shas) if SHA256_RE.match(s)]
        found: dict[str, tuple[int, bool]] = {sha: (size, True) for sha, size in self.rows.sizes(shas)}
        rest = [sha for sha in shas if sha not in found]
        if not rest:
            return found
        # Strings, not Paths, and the folders listed once: this runs for every file of every push,
        # and most files asked about are new (no file, no partial file: two failed stats each).
        root = str(self.root)
        folders = _entries(root)
        partials = _entries(os.path.join(root, "partial")) if partial else set()
        for sha in rest:
            if sha[:2] in folders:
                try:
                    found[sha] = (os.stat(os.path.join(root, sha[:2], sha)).st_size, True)
                    continue
                except FileNotFoundError:
                    pass
            if partial:
                try:
                    size = os.stat(os.path.join(root, "partial", sha)).st_size if sha in partials else 0
                except FileNotFoundError:
                    size = 0
                found[sha] = (size, False)
        return found

    def size(self, sha256: str) -> int | None:
        """The size of a complete blob, None if it is not here."""
        full = self.path(sha256)
        if full.exists():
            return full.stat().st_size
        return self.rows.size(sha256)

    def received(self, sha256: str) -> int:
        """Bytes held for a blob: its size if complete, else what the partial file has."""
        size = self.size(sha256)
        if size is not None:
            return size
        partial = self.root / "partial" / sha256
        return partial.stat().st_size if partial.exists() else 0

    def put(self, data: bytes) -> str:
        """Store bytes whose hash is computed here, durably; returns the sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            if len(data) <= self.inline_max and self._rows_writable():
                self.rows.insert([(sha256, len(data), bytes(data))])
            else:
                self._commit_file(sha256, data)
        return sha256

    def read(self, sha256: str) -> bytes:
        """The bytes of a complete blob. :raises FileNotFoundError: it is not here."""
        path = self.path(sha256)
        data = self.rows.data(sha256)
        if data is not None:
            return bytes(data)
        return path.read_bytes()

    def read_many(self, shas) -> dict[str, bytes]:
        """``{sha256: bytes}`` of the complete blobs among ``shas`` (the rows in one query per 500,
        not one per blob: a sync round reads its batch of scans at once); those not here are left
        out."""
        shas = list(dict.fromkeys(s for s in shas if SHA256_RE.match(s)))
        found = {sha: bytes(data) for sha, data in self.rows.contents(shas)}
        for sha in shas:
            if sha not in found:
                try:
                    found[sha] = self.path(sha).read_bytes()
                except FileNotFoundError:
                    pass
        return found

    def chunks(self, sha256: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of a complete blob in pieces of ``chunk`` (a large file is never read whole)."""
        path = self.path(sha256)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            data = self.read(sha256)  # a row: small by construction
            for i in range(0, len(data), chunk):
                yield data[i:i + chunk]
            return
        with fh:
            yield from iter(lambda: fh.read(chunk), b"")

    def write_chunk(self, sha256: str, size: int, offset: int, data: bytes, max_size: int) -> bool:
        """Append a chunk at ``offset``; return True once the whole blob is verified and stored
        (a batch of one frame: :meth:`write_batch`).

        :raises BlobError: the offset is not where the partial file ends, the blob is larger
            than ``max_size``, or the finished bytes do not hash to ``sha256`` (the partial
            file is discarded so the sender starts again).
        """
        batch = self.write_batch([(sha256, size, offset, data)], max_size)
        if sha256 in batch.rejected:
            raise BlobError(batch.rejected[sha256])
        return sha256 in batch.complete

    def write_batch(self, frames, max_size: int, held: set[str] | None = None) -> BatchResult:
        """Write many chunks ``(sha256, size, offset, data)`` and make them durable together.

        Each frame is checked like one chunk (:meth:`write_chunk`: the offset must be where the
        file's partial bytes end, ``size <= max_size``, no chunk past ``size``); a frame that does
        not fit rejects its file (its later frames are skipped), the other files still count.
        A small blob (``<= inline_max``) sent whole in one frame is hash-checked in memory and
        becomes a row: all of them in one transaction, one commit, no file. The others are
        written to partial files; then, for the whole batch: every file written is fsynced (its
        data on disk), the finished ones are hash-checked and either stored as rows (small ones
        resumed over several frames; their partial file is removed after the commit) or renamed
        into place, and each folder a file was renamed into is fsynced once. So when this
        returns, every blob in ``complete`` survives a power cut, and the caller may register
        them and tell the sender (the order docs/sync-protocol.md §6.3 promises): a power cut
        before then costs a resend, never a name without its bytes.

        ``held``: which of the frames' blobs the caller has just found here complete
        (:meth:`held`), so they are not looked up again.

        :raises DiskFullError: a write, fsync or commit found the disk full; every file of the
            batch is cut back to the bytes it held before (the sender resumes there) and no row
            of it was written.
        """
        frames = list(frames)
        complete: dict[str, int] = {}
        rejected: dict[str, str] = {}
        open_files: dict[str, _Arriving] = {}
        whole: dict[str, bytes] = {}  # small blobs sent whole in one frame: rows, never files
        rows_ok = self._rows_writable()
        already = held if held is not None else self.held(sha for sha, _, _, _ in frames)
        partials = _entries(str(self.root / "partial"))  # once, not a stat per frame
        try:
            for sha256, size, offset, data in frames:
                if sha256 in rejected or sha256 in complete or sha256 in whole:
                    continue  # a repeated frame of a whole blob changes nothing (as for a held blob)
                arriving = open_files.get(sha256)
                if arriving is not None and arriving.held == arriving.size:
                    continue
                try:
                    if arriving is None:
                        if sha256 in already:
                            complete[sha256] = size
                            continue
                        _check_name(sha256, size, max_size)
                        if (rows_ok and size <= self.inline_max and sha256 not in partials and offset == 0
                                and len(data) == size):
                            whole[sha256] = data  # a view of the request body: no copy
                            continue
                        arriving = self._arriving(sha256, size)
                        open_files[sha256] = arriving
                    arriving.append(offset, data)
                except BlobError as exc:
                    rejected[sha256] = str(exc)
            rows: list[tuple[str, int, bytes]] = []
            for sha256, data in whole.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    rows.append((sha256, len(data), data))
                else:
                    rejected[sha256] = "blob bytes do not match their sha256"
            # The data of every file first (one fsync each, back to back), ...
            _together(lambda arriving: arriving.close(sync=True), open_files.values())
            # ... then each finished file checked and renamed into place (or kept as a row), ...
            folders, absorbed = set(), []
            for sha256, arriving in open_files.items():
                if sha256 in rejected or arriving.held < arriving.size:
                    continue
                if not arriving.verified():
                    arriving.path.unlink(missing_ok=True)
                    rejected[sha256] = "blob bytes do not match their sha256"
                    continue
                if rows_ok and arriving.size <= self.inline_max:
                    data = arriving.path.read_bytes()
                    if hashlib.sha256(data).hexdigest() == sha256:  # what the row gets is what was checked
                        rows.append((sha256, len(data), data))
                        absorbed.append(arriving.path)
                        continue
                target = self.path(sha256)
                self._promote(arriving.path, target)
                folders.add(target.parent)
                complete[sha256] = arriving.size
            # ... the rows in one transaction (one commit: the WAL's fsync), ...
            if rows:
                self.rows.insert(rows)
                complete.update((sha256, size) for sha256, size, _ in rows)
            # ... then each folder once: a batch of 200 files costs 200 file fsyncs and one per
            # folder touched, not two per file one after the other.
            _together(fsync_dir, sorted(folders))
        except (OSError, sqlite3.Error, DiskFullError) as exc:
            for arriving in open_files.values():
                arriving.close(sync=False)
                if not self.has(arriving.sha256):
                    _undo(arriving.path, arriving.before)  # back to where the sender will resume
            if isinstance(exc, OSError):
                raise _disk_full(exc) from exc
            raise
        for path in absorbed:
            path.unlink(missing_ok=True)  # its bytes are a committed row now; a leftover is never read
        partial = {sha: self.received(sha) for sha, _, _, _ in frames
                   if sha not in complete and SHA256_RE.match(sha)}
        return BatchResult(complete, partial, rejected)

    def _arriving(self, sha256: str, size: int) -> _Arriving:
        partial = self.root / "partial" / sha256
        have = partial.stat().st_size if partial.exists() else 0
        return _Arriving(sha256, size, partial, have)

    def _promote(self, partial: Path, target: Path) -> None:
        """Rename a verified partial file into its folder, created once per process (a mkdir and
        a chmod per file otherwise) and again if it went away meanwhile."""
        if target.parent not in self._folders:
            private_dir(target.parent)
            self._folders.add(target.parent)
        try:
            os.replace(partial, target)
        except FileNotFoundError:
            if not partial.exists():
                raise
            private_dir(target.parent)
            os.replace(partial, target)

    def remove(self, sha256: str, conn: sqlite3.Connection | None = None) -> bool:
        """Delete a blob (row or file) and any partial file of it (a parked upload nobody claimed,
        personal data purged); False if it was not here complete. ``conn``: a connection to the
        node's database whose write transaction the row's deletion joins (required when this
        thread has one open)."""
        existed = self.path(sha256).exists()
        self.path(sha256).unlink(missing_ok=True)
        (self.root / "partial" / sha256).unlink(missing_ok=True)
        return self.rows.delete(sha256, conn) or existed

    def _commit_file(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        private_dir(target.parent)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, _WRITE_FLAGS | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
        except OSError as exc:
            os.close(fd)
            _undo(tmp, 0)
            raise _disk_full(exc) from exc
        os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)


#: How many fsyncs of one batch wait at a time. A journaling filesystem commits once for all the
#: callers waiting (group commit), so 200 files fsynced 8 at a time cost a fraction of 200 flushes
#: one after another (a batch of 200 scans of 20 KB: ~120 ms → ~80 ms on an SSD; far more on a
#: hard disk, where each flush is a rotation).
SYNC_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _together(call, items) -> None:
    """``call(item)`` for every item, up to :data:`SYNC_THREADS` at a time; returns once every call
    has returned, then raises the first error (so no call is still running on a file the caller
    cleans up)."""
    global _pool
    items = list(items)
    if len(items) < 2:
        for item in items:
            call(item)
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="blob-fsync")
    futures = [_pool.submit(call, item) for item in items]
    wait(futures)
    for future in futures:
        future.result()


def _check_name(sha256: str, size: int, max_size: int) -> None:
    """:raises BlobError: ``sha256`` is not a hex digest, or the blob is larger than ``max_size``."""
    if not SHA256_RE.match(sha256):
        raise BlobError("not a sha256 hex digest")
    if size > max_size:
        raise BlobError(f"blob of {size} bytes exceeds the limit of {max_size}")


def _entries(folder: str) -> set[str]:
    """The names in ``folder`` (none if it is not there)."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to ``fd`` (owner-only, whatever the umask) and fsync it."""
    if os.name == "posix":
        os.fchmod(fd, 0o600)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _undo(path: Path, keep: int) -> None:
    """After a failed write: cut ``path`` back to its first ``keep`` bytes, or remove it."""
    try:
        if keep:
            os.truncate(path, keep)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # the disk is failing; the partial is re-checked by size and hash before it counts


def _disk_full(exc: OSError) -> Exception:
    """A full disk becomes the node's 507 ``disk_full``; any other error stays itself."""
    return DiskFullError(f"no space left for a blob: {exc}") if exc.errno == errno.ENOSPC else exc


def register(conn: sqlite3.Connection, sha256: str, size: int, now) -> None:
    """Record that a verified blob is held (idempotent)."""
    register_many(conn, [(sha256, size)], now)


def register_many(conn: sqlite3.Connection, files: list[tuple[str, int]], now) -> None:
    """Record that verified blobs ``(sha256, size)`` are held (idempotent), in one statement."""
    at = iso(now)
    conn.executemany("INSERT INTO blobs(sha256, size, received_at) VALUES (?,?,?) ON CONFLICT(sha256) DO NOTHING",
                     [(sha256, size, at) for sha256, size in files])


class QuotaExceeded(BlobError):
    """The uploading node already parked as many unreferenced bytes as it may."""


def park(conn: sqlite3.Connection, node_id: str, sha256: str, size: int, quota: int, now) -> None:
    """Record an upload that no envelope here names yet (a parked blob), counted at its declared
    size against the uploader's ``quota``. Call inside a write transaction.

    :raises QuotaExceeded: the node's parked bytes would pass ``quota``.
    """
    if conn.execute("SELECT 1 FROM blob_parking WHERE sha256 = ?", (sha256,)).fetchone() is not None:
        return
    used = conn.execute("SELECT COALESCE(SUM(size), 0) FROM blob_parking WHERE node_id = ?", (node_id,)).fetchone()[0]
    if used + size > quota:
        raise QuotaExceeded(f"node {node_id} has {used} bytes of files no envelope names; the limit is {quota}")
    conn.execute("INSERT INTO blob_parking(sha256, node_id, size, parked_at) VALUES (?,?,?,?)",
                 (sha256, node_id, size, iso(now)))


def claim_parked(conn: sqlite3.Connection, sha256s: list[str]) -> None:
    """Material files named by an envelope just accepted or taken into custody are no longer parked."""
    conn.executemany("DELETE FROM blob_parking WHERE sha256 = ?", [(s,) for s in sha256s])


def sweep_parked(conn: sqlite3.Connection, store: BlobStore, parked_before: str) -> int:
    """Remove parked blobs older than ``parked_before`` (ISO time) that still nothing names; returns
    how many files were removed. A file a case of this node uses is kept (content addressing: the
    node may hold the same bytes for its own case)."""
    removed = 0
    with write_transaction(conn):
        rows = conn.execute("DELETE FROM blob_parking WHERE parked_at < ? RETURNING sha256", (parked_before,)).fetchall()
        for row in rows:
            sha256 = row["sha256"]
            if conn.execute("SELECT 1 FROM case_materials WHERE sha256 = ? UNION ALL SELECT 1 FROM case_events"
                            " WHERE detail LIKE ? LIMIT 1", (sha256, f"%{sha256}%")).fetchone() is None:
                conn.execute("DELETE FROM blobs WHERE sha256 = ?", (sha256,))
                store.remove(sha256, conn)  # the row's deletion joins this transaction
                removed += 1
    return removed


def parking_rule(node):
    """The scheduled rule ``blob_parking`` of a hub or township: remove parked blobs older than
    ``BLOB_PARK_SECONDS``."""
    def rule(conn: sqlite3.Connection) -> int:
        cutoff = node.now() - timedelta(seconds=float(node.config["BLOB_PARK_SECONDS"]))
        return sweep_parked(conn, node.blobs, iso(cutoff))
    return rule
