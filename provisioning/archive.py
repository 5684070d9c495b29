"""The backup archive: a zip that deflates what compresses and stores what is already compressed.

Scans arrive as JPEG, PNG, PDF or zip files; deflating them again costs CPU on an old PC and
saves almost nothing, so those members are written ``ZIP_STORED`` (recognised by their first
bytes: material files are content-addressed and have no extension). The database, config and
keys are deflated. Restore also reads the ``.tar.gz`` backups of earlier releases.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

# First bytes of formats that are compressed already.
COMPRESSED_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"%PDF-",  # PDF (its streams are compressed)
    b"PK\x03\x04",  # zip, docx, xlsx, ofd
    b"\x1f\x8b",  # gzip
    b"RIFF",  # WebP
)


CHUNK = 1024 * 1024


class UnsafeArchive(Exception):
    """A member would land outside the target folder (absolute path, ``..``, a link)."""


def is_compressed(path: Path) -> bool:
    """Whether the file starts like an already-compressed format."""
    with open(path, "rb") as f:
        head = f.read(8)
    return head.startswith(COMPRESSED_MAGIC)


class Progress:
    """Reports bytes done as a line per ``step`` percent (long backups on a slow disk)."""

    def __init__(self, total: int, emit: Callable[[str], None], step: int = 10):
        self.total, self.emit, self.step = max(total, 1), emit, step
        self.done, self.reported = 0, 0

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more and report every threshold crossed."""
        self.done += nbytes
        percent = min(100, self.done * 100 // self.total)
        while self.reported + self.step <= percent:
            self.reported += self.step
            self.emit(f"备份进度 {self.reported}%（{self.done / 1e6:.1f} / {self.total / 1e6:.1f} MB）")


def write_zip(out_path: Path, members: Iterable[tuple[Path, str]], progress: Progress) -> None:
    """Write ``(file, name in archive)`` members to ``out_path``, created with mode 0600 (it holds keys)."""
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, name in members:
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_STORED if is_compressed(path) else zipfile.ZIP_DEFLATED
            # In chunks, so that a large database reports its progress as it goes.
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    progress.advance(len(chunk))
    os.chmod(out_path, 0o600)  # also when the file existed before


def _safe_name(name: str) -> str:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise UnsafeArchive(name)
    return name


def extract(in_path: Path, target: Path) -> None:
    """Unpack a backup (zip, or the ``.tar.gz`` of earlier releases) into ``target``, refusing unsafe paths."""
    if zipfile.is_zipfile(in_path):
        with zipfile.ZipFile(in_path) as zf:
            for info in zf.infolist():
                _safe_name(info.filename)
            zf.extractall(target)
        return
    with tarfile.open(in_path, "r:gz") as tar:
        for member in tar.getmembers():
            _safe_name(member.name)
        tar.extractall(target, filter="data")
