"""Content-addressed material files: stored by SHA-256, received in resumable chunks.

A blob lives at ``<data>/blobs/<first two hex>/<sha256>``. While it is arriving its bytes
accumulate in ``<data>/blobs/partial/<sha256>``; a sender asks how much arrived and sends only
the rest (``docs/sync-protocol.md`` §6). A blob counts only once its hash is verified.

Blobs are ID-card scans: files are created 0600 and folders 0700 whatever the umask. A write
that fails (a full disk: :class:`shared.core.storage.DiskFullError`) leaves no partial file behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

from shared.core.clock import iso
from shared.core.crypto import fsync_dir
from shared.core.storage import DiskFullError, private_dir, write_transaction

# O_BINARY: on Windows a descriptor opened without it would turn every LF byte into CRLF.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 256 * 1024


class BlobError(ValueError):
    """A chunk that does not fit: wrong offset, too large, or a hash mismatch."""


class BlobStore:
    """The blob folder of one node."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        private_dir(self.root)
        private_dir(self.root / "partial")

    def path(self, sha256: str) -> Path:
        """Where a complete blob lives."""
        if not SHA256_RE.match(sha256):
            raise BlobError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the complete, verified blob is here."""
        return self.path(sha256).exists()

    def received(self, sha256: str) -> int:
        """Bytes held for a blob: its size if complete, else what the partial file has."""
        full = self.path(sha256)
        if full.exists():
            return full.stat().st_size
        partial = self.root / "partial" / sha256
        return partial.stat().st_size if partial.exists() else 0

    def put(self, data: bytes) -> str:
        """Store bytes whose hash is computed here; returns the sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has(sha256):
            self._commit_file(sha256, data)
        return sha256

    def read(self, sha256: str) -> bytes:
        """The bytes of a complete blob."""
        return self.path(sha256).read_bytes()

    def write_chunk(self, sha256: str, size: int, offset: int, data: bytes, max_size: int) -> bool:
        """Append a chunk at ``offset``; return True once the whole blob is verified and stored.

        :raises BlobError: the offset is not where the partial file ends, the blob is larger
            than ``max_size``, or the finished bytes do not hash to ``sha256`` (the partial
            file is discarded so the sender starts again).
        """
        if self.has(sha256):
            return True
        if size > max_size:
            raise BlobError(f"blob of {size} bytes exceeds the limit of {max_size}")
        partial = self.root / "partial" / sha256
        have = partial.stat().st_size if partial.exists() else 0
        if offset != have:
            raise BlobError(f"expected offset {have}, got {offset}")
        if have + len(data) > size:
            raise BlobError("chunk runs past the declared size")
        fd = os.open(partial, _WRITE_FLAGS | os.O_APPEND, 0o600)
        try:
            _write_all(fd, data)
        except OSError as exc:
            os.close(fd)
            _undo(partial, have)  # back to where the sender will resume
            raise _disk_full(exc) from exc
        os.close(fd)
        if have + len(data) < size:
            return False
        digest = hashlib.sha256()
        with open(partial, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            partial.unlink()
            raise BlobError("blob bytes do not match their sha256")
        target = self.path(sha256)
        private_dir(target.parent)
        os.replace(partial, target)
        fsync_dir(target.parent)
        return True

    def remove(self, sha256: str) -> bool:
        """Delete a blob and any partial file of it (a parked upload nobody claimed, personal data
        purged); False if no complete file was here."""
        existed = self.path(sha256).exists()
        self.path(sha256).unlink(missing_ok=True)
        (self.root / "partial" / sha256).unlink(missing_ok=True)
        return existed

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
    conn.execute(
        "INSERT INTO blobs(sha256, size, received_at) VALUES (?,?,?) ON CONFLICT(sha256) DO NOTHING",
        (sha256, size, iso(now)),
    )


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
                store.remove(sha256)
                removed += 1
    return removed


def parking_rule(node):
    """The scheduled rule ``blob_parking`` of a hub or township: remove parked blobs older than
    ``BLOB_PARK_SECONDS``."""
    def rule(conn: sqlite3.Connection) -> int:
        cutoff = node.now() - timedelta(seconds=float(node.config["BLOB_PARK_SECONDS"]))
        return sweep_parked(conn, node.blobs, iso(cutoff))
    return rule
