"""The scanner folder (扫描仪文件夹): scans the scanner software saved, offered in the wizard.

A village room's scanner saves into one folder (setting ``SCANNER_FOLDER``); the 材料 step
lists the image and PDF files found there, newest first, so the agent ticks which material each
scan is instead of hunting for it in a file picker. The file is read on the server from that
folder by its name only: a name with a path separator, ``..``, a drive or stream marker, a
leading dot, another extension, a link or anything that is not a regular file directly in the
folder is refused. After attaching, the scans can be moved to the ``done/`` subfolder so the
list shows only new ones. Plain ``pathlib``/``os`` calls only (the village runs on Windows).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from shared.core.errors import ValidationError

#: What a scanner saves and the wizard accepts (images and PDF).
EXTENSIONS = frozenset({".pdf", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
#: At most this many files are listed (the newest).
LIST_LIMIT = 30
DONE = "done"


def folder_of(setting: str | os.PathLike | None) -> Path | None:
    """The configured folder, or None when unset or missing."""
    if not setting:
        return None
    path = Path(setting)
    return path if path.is_dir() else None


def _plain_name(name: str) -> bool:
    return (bool(name) and len(name) <= 255 and name == name.strip() and not name.startswith(".")
            and not any(ch in name for ch in '/\\:\x00') and name not in (".", "..")
            and Path(name).suffix.lower() in EXTENSIONS)


def list_scans(folder: Path | None, max_bytes: int, limit: int = LIST_LIMIT) -> list[dict]:
    """The scans in ``folder``, newest first: ``name``, ``size``, ``modified`` (UTC ISO), ``too_large``."""
    if folder is None:
        return []
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        try:
            if not _plain_name(entry.name) or entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append({"name": entry.name, "size": info.st_size, "mtime": info.st_mtime,
                      "too_large": info.st_size > max_bytes or info.st_size == 0})
    found.sort(key=lambda f: (-f["mtime"], f["name"]))
    for f in found:
        f["modified"] = datetime.fromtimestamp(f.pop("mtime"), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return found[:limit]


def scan_path(folder: Path | None, name: str, field: str = "materials") -> Path:
    """The path of scan ``name`` directly inside ``folder``.

    :raises ValidationError: no folder configured, not a plain file name of an image/PDF, or no
        such regular file there (links are refused too).
    """
    if folder is None:
        raise ValidationError(field, "本机未设置扫描仪文件夹")
    if not isinstance(name, str) or not _plain_name(name):
        raise ValidationError(field, f"只能选择扫描仪文件夹中的图片或 PDF 文件（「{str(name)[:60]}」不可用）")
    path = folder / name
    base = folder.resolve()
    if path.is_symlink() or not path.is_file() or path.resolve().parent != base:
        raise ValidationError(field, f"扫描仪文件夹中没有文件「{name}」（可能已被移走），请刷新后重选")
    return path


def read_scan(folder: Path | None, name: str, max_bytes: int, field: str = "materials") -> bytes:
    """The bytes of one scan (see :func:`scan_path`); refuses files over ``max_bytes`` or empty."""
    path = scan_path(folder, name, field)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValidationError(field, f"扫描件「{name}」超过单个材料文件的大小上限")
    data = path.read_bytes()
    if not data:
        raise ValidationError(field, f"扫描件「{name}」是空文件")
    return data


def move_done(folder: Path, name: str) -> Path | None:
    """Move an attached scan to ``done/`` (a free name if one is taken); None if it is gone."""
    try:
        source = scan_path(folder, name)
    except ValidationError:
        return None
    done = folder / DONE
    done.mkdir(exist_ok=True)
    target, stem, suffix, n = done / name, Path(name).stem, Path(name).suffix, 1
    while target.exists():
        n += 1
        target = done / f"{stem}({n}){suffix}"
    os.replace(source, target)
    return target
