"""USB bundles: the sync exchange written to files when there is no network at all.

A village exports its unsent envelopes and their material files into one signed bundle; the
township imports it exactly as if the village had pushed (same custody, same idempotency) and
writes back an answer bundle holding what a pull would have returned (custody receipt, hub
acknowledgements, downlink, metadata), which the village imports.

Format (version 2, docs/sync-protocol.md "USB bundles"): a zip archive, every member stored raw
(no compression, no base64), read and written in chunks so memory stays constant at any size:

- ``envelopes.jsonl`` — the signed envelopes, one stored document per line;
- ``blobs/<sha256>`` — each material file, byte for byte;
- ``manifest.json`` — written last: a ``BUNDLE`` document signed by the author's node key whose
  body names every member with its sha256 and size, so a stick cannot carry forged or changed
  content. An answer bundle holds only the manifest (the answer is its body).

A bundle may be split across sticks (``split_bytes``): the archive is cut into volumes named
``<name>.001-of-003<suffix>``…; an import given any volume reads them all as one stream.
Version 1 bundles (one signed JSON document with base64 files) are still imported.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import sqlite3
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.core import canonical
from shared.core.clock import iso
from shared.core.crypto import SignatureError
from shared.core.errors import LiandongError
from sync import envelope, formats, node_sync, outbox
from sync.blobs import BlobError

MAX_BUNDLE_BYTES = 512 * 1024 * 1024  # a version 1 bundle is read whole
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_ENVELOPES_BYTES = 256 * 1024 * 1024  # the envelopes of one bundle are pushed as one batch
FORMAT = 2
MANIFEST = "manifest.json"
ENVELOPES = "envelopes.jsonl"
CHUNK = 1 << 20
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # members carry no clock: the manifest's created_at says when
_VOLUME = re.compile(r"^(?P<stem>.*)\.(?P<index>\d{3})-of-(?P<count>\d{3})(?P<suffix>(\.[^.]*)?)$")

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


class BundleRefused(SignatureError):
    """The file is not a complete, intact bundle signed by its sender for this node."""


# ---------------------------------------------------------------------------- volumes


class _VolumeWriter:
    """A write-only stream cut into files of at most ``split_bytes`` (one file when None).

    Not seekable, so zipfile writes data descriptors and never goes back into a closed volume.
    Volumes are written under temporary names and renamed with their count once all are
    fsynced; :meth:`paths` lists the final names.
    """

    def __init__(self, path: Path, split_bytes: int | None):
        self.path, self.split = Path(path), split_bytes
        self.written, self._parts, self._fh = 0, [], None

    def _roll(self) -> None:
        self._close_current()
        part = self.path.with_name(f".{self.path.name}.part{len(self._parts) + 1:03d}")
        self._parts.append(part)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._room = self.split or -1

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            if self._fh is None or self._room == 0:
                self._roll()
            take = len(view) if self._room < 0 else min(len(view), self._room)
            self._fh.write(view[:take])
            view = view[take:]
            if self._room > 0:
                self._room -= take
            self.written += take
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def finish(self) -> list[Path]:
        """fsync and name the volumes; returns their final paths."""
        self._close_current()
        count = len(self._parts)
        if self.split is None or count == 1:
            names = [self.path]
        else:
            names = [volume_path(self.path, i, count) for i in range(1, count + 1)]
        for part, name in zip(self._parts, names, strict=True):
            os.replace(part, name)
        return names

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for part in self._parts:
            part.unlink(missing_ok=True)


def volume_path(path: Path, index: int, count: int) -> Path:
    """The name of volume ``index`` of ``count`` of a split bundle written to ``path``."""
    return path.with_name(f"{path.stem}.{index:03d}-of-{count:03d}{path.suffix}")


def volumes(path: Path) -> list[Path]:
    """Every volume of the bundle that ``path`` belongs to, in order (just ``path`` when unsplit)."""
    path = Path(path)
    match = _VOLUME.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    names = [path.with_name(f"{match['stem']}.{i:03d}-of-{count:03d}{match['suffix']}") for i in range(1, count + 1)]
    missing = [str(i) for i, p in enumerate(names, 1) if not p.is_file()]
    if missing:
        raise BundleRefused(f"bundle refused: volume {', '.join(missing)} of {count} is missing next to {path.name}")
    return names


class _VolumeReader:
    """The volumes of a bundle read as one seekable stream (what zipfile needs)."""

    def __init__(self, paths: list[Path]):
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._starts, total = [], 0
        for fh in self._files:
            self._starts.append(total)
            total += os.fstat(fh.fileno()).st_size
        self.size, self.pos = total, 0

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        out = []
        while n > 0 and self.pos < self.size:
            i = max(k for k, start in enumerate(self._starts) if start <= self.pos)
            fh = self._files[i]
            fh.seek(self.pos - self._starts[i])
            block = fh.read(n)
            if not block:
                break
            out.append(block)
            self.pos += len(block)
            n -= len(block)
        return b"".join(out)

    def close(self) -> None:
        for fh in self._files:
            fh.close()


# ---------------------------------------------------------------------------- writing


def _write_member(zf: zipfile.ZipFile, name: str, size: int, chunks: Iterable[bytes], advance: Callable[[int], None]) -> dict:
    """Stream one raw member into the archive; returns its manifest entry."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type, info.file_size = zipfile.ZIP_STORED, size
    digest, written = hashlib.sha256(), 0
    with zf.open(info, "w", force_zip64=size > (1 << 31)) as member:
        for chunk in chunks:
            digest.update(chunk)
            member.write(chunk)
            written += len(chunk)
            advance(len(chunk))
    entry = {"name": name, "sha256": digest.hexdigest(), "size": size}
    if written != size or (name.startswith("blobs/") and entry["sha256"] != name[len("blobs/"):]):
        raise LiandongError("damaged_file", f"材料文件 {name[len('blobs/'):]} 在本机已损坏或正在被改动"
                            f"（内容与其哈希不符），无法导出U盘包", status=500)
    return entry


def _write_bundle(node, path: Path, body: dict, members: list[tuple[str, int, Callable[[], Iterable[bytes]]]],
                  progress: Progress, split_bytes: int | None) -> list[Path]:
    """Write the members, then the signed manifest naming them, into ``path`` (or its volumes).

    Progress counts member bytes plus one last step that ends only once the manifest is signed
    and every volume is fsynced and named.
    """
    total, done = sum(size for _, size, _ in members) + 1, 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress("write", done, total)

    out = _VolumeWriter(path, split_bytes)
    try:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            entries = [_write_member(zf, name, size, chunks(), advance) for name, size, chunks in members]
            manifest = envelope.sign(node.key, envelope.BUNDLE, {**body, "format": FORMAT, "members": entries})
            zf.writestr(zipfile.ZipInfo(MANIFEST, date_time=_ZIP_TIME), canonical.dumps(manifest))
        paths = out.finish()
    except BaseException:
        out.discard()
        raise
    advance(1)
    return paths


def export_outbox(conn: sqlite3.Connection, node, path: Path, progress: Progress = _no_progress,
                  split_bytes: int | None = None) -> dict:
    """Write this node's unacknowledged envelopes and their files into a signed bundle."""
    rows = outbox.unacked(conn)
    hashes: dict[str, int] = {}
    for r in rows:
        for a in envelope.peek(envelope.from_bytes(r["document"])).get("attachments", []):
            hashes[a["sha256"]] = a["size"]
    lines_size = sum(len(r["document"]) + 1 for r in rows)
    members = [(ENVELOPES, lines_size, lambda: (bytes(r["document"]) + b"\n" for r in rows))]
    held = sorted(node.blobs.held(hashes))  # rows of the database or files (sync/blobs.py)
    members += [(f"blobs/{sha}", node.blobs.size(sha), lambda sha=sha: node.blobs.chunks(sha, CHUNK))
                for sha in held]
    cursors, have = node_sync.pull_request(conn, node)
    body = {"kind": "outbox", "from": node.node_id, "to": node.config["PARENT_ID"], "created_at": iso(node.now()),
            "envelopes": len(rows), "cursors": cursors, "metadata": have}
    paths = _write_bundle(node, Path(path), body, members, progress, split_bytes)
    return {"envelopes": len(rows), "blobs": len(held), "bytes": sum(p.stat().st_size for p in paths),
            "files": [str(p) for p in paths]}


# ---------------------------------------------------------------------------- reading


class _Bundle:
    """An opened, verified bundle: its signed body and a way to stream its members."""

    def __init__(self, body: dict, zf: zipfile.ZipFile | None, legacy: bool):
        self.body, self.zf, self.legacy = body, zf, legacy

    def members(self) -> list[dict]:
        return self.body.get("members", [])

    def chunks(self, entry: dict, skip: int = 0) -> Iterator[bytes]:
        with self.zf.open(entry["name"]) as fh:
            while skip > 0:
                skip -= len(fh.read(min(CHUNK, skip)))
            yield from iter(lambda: fh.read(CHUNK), b"")


def _verify_signed(node, conn: sqlite3.Connection, document, expected_kind: str, max_bytes: int) -> dict:
    trust = node.trust(conn)
    opened = envelope.open_signed(document, envelope.BUNDLE, trust.node_key, max_bytes=max_bytes)
    body = opened.body
    signer = trust.node_of_key(opened.kid)
    if body.get("kind") != expected_kind or body.get("to") != node.node_id or signer.node_id != body.get("from"):
        raise SignatureError("bundle is not addressed to this node or not signed by its sender")
    return body


def _check_members(bundle: _Bundle, progress: Progress) -> None:
    """Every member named by the manifest is present with its size and sha256, and nothing else."""
    entries = bundle.members()
    names = {e["name"] for e in entries}
    if len(names) != len(entries) or names - {ENVELOPES} - {f"blobs/{e['sha256']}" for e in entries}:
        raise BundleRefused("bundle refused: the manifest names a member twice or under a wrong name")
    if set(bundle.zf.namelist()) != names | {MANIFEST}:
        raise BundleRefused("bundle refused: the archive's members differ from its manifest")
    total, done = sum(e["size"] for e in entries), 0
    for entry in entries:
        if bundle.zf.getinfo(entry["name"]).file_size != entry["size"]:
            raise BundleRefused(f"bundle refused: {entry['name']} has the wrong size")
        digest = hashlib.sha256()
        for chunk in bundle.chunks(entry):
            digest.update(chunk)
            done += len(chunk)
            progress("verify", done, total)
        if digest.hexdigest() != entry["sha256"]:
            raise BundleRefused(f"bundle refused: {entry['name']} does not match its sha256")


@contextmanager
def _opened(node, conn: sqlite3.Connection, path: Path, expected_kind: str, progress: Progress):
    """Open, verify (signature, addressing, every member's hash) and yield the bundle."""
    paths = volumes(path)
    with open(paths[0], "rb") as fh:
        legacy = fh.read(1) == b"{"
    if legacy:  # version 1: one signed JSON document, read whole (bounded)
        try:
            document = canonical.loads(Path(path).read_bytes(), max_bytes=MAX_BUNDLE_BYTES)
            body = _verify_signed(node, conn, document, expected_kind, MAX_BUNDLE_BYTES)
        except (SignatureError, canonical.CanonicalError) as exc:
            raise _refused(exc) from exc
        yield _Bundle(body, None, legacy=True)
        return
    stream = _VolumeReader(paths)
    try:
        try:
            zf = zipfile.ZipFile(stream)
            info = zf.getinfo(MANIFEST)
            if info.file_size > MAX_MANIFEST_BYTES:
                raise BundleRefused("bundle refused: manifest too large")
            document = canonical.loads(zf.read(info), max_bytes=MAX_MANIFEST_BYTES)
            bundle = _Bundle(_verify_signed(node, conn, document, expected_kind, MAX_MANIFEST_BYTES), zf, legacy=False)
            if bundle.body.get("format") != FORMAT:
                raise BundleRefused(f"bundle refused: format {bundle.body.get('format')!r} is not {FORMAT}; "
                                    "update this node to the sender's release")
            _check_members(bundle, progress)
        except (SignatureError, canonical.CanonicalError, zipfile.BadZipFile, zipfile.LargeZipFile,
                KeyError, TypeError, ValueError, EOFError) as exc:
            raise _refused(exc) from exc
        yield bundle
    finally:
        stream.close()


def _refused(exc: Exception) -> SignatureError:
    if isinstance(exc, SignatureError) and str(exc).startswith("bundle"):
        return exc
    return BundleRefused(f"bundle refused: {exc}")


def _envelopes(bundle: _Bundle) -> list[dict]:
    if bundle.legacy:
        return bundle.body["envelopes"]
    entry = next((e for e in bundle.members() if e["name"] == ENVELOPES), None)
    if entry is None:
        return []
    if entry["size"] > MAX_ENVELOPES_BYTES:
        raise BundleRefused("bundle refused: too many envelopes for one bundle")
    data = b"".join(bundle.chunks(entry))
    try:
        return [canonical.loads(line, max_bytes=envelope.MAX_ENVELOPE_BYTES * 2) for line in data.splitlines()]
    except canonical.CanonicalError as exc:
        raise BundleRefused(f"bundle refused: {exc}") from exc


def _store_blob(node, bundle: _Bundle, entry: dict, max_size: int) -> bool:
    """Stream one verified member into the blob store, resuming a partial file held already."""
    sha, size = entry["sha256"], entry["size"]
    if size > max_size:
        return False
    for _attempt in range(2):  # a stale partial that fails its hash is discarded: start once more from 0
        offset = node.blobs.received(sha)
        try:
            complete = node.blobs.has(sha)
            for chunk in ([] if complete else bundle.chunks(entry, skip=offset)):
                complete = node.blobs.write_chunk(sha, size, offset, chunk, max_size)
                offset += len(chunk)
            return complete or (size == 0 and node.blobs.write_chunk(sha, 0, 0, b"", max_size))
        except BlobError:
            continue
    return False


def _store_blobs(conn, node, service, bundle: _Bundle, progress: Progress) -> int:
    max_size = int(node.config["MAX_ATTACHMENT_BYTES"])
    if bundle.legacy:
        blobs = bundle.body.get("blobs", [])
        for i, blob in enumerate(blobs, 1):
            data = base64.b64decode(blob["data"])
            if len(data) <= max_size and node.blobs.write_chunk(blob["sha256"], len(data), 0, data, max_size):
                service.blob_complete(conn, node, blob["sha256"], len(data))
            progress("blobs", i, len(blobs))
        return len(blobs)
    entries = [e for e in bundle.members() if e["name"] != ENVELOPES]
    total, done = sum(e["size"] for e in entries), 0
    for entry in entries:
        if _store_blob(node, bundle, entry, max_size):
            service.blob_complete(conn, node, entry["sha256"], entry["size"])
        done += entry["size"]
        progress("blobs", done, total)
    return len(entries)


def _write_answer(node, path: Path, answer: dict, progress: Progress) -> None:
    _write_bundle(node, Path(path), answer, [], progress, None)


def import_at_township(conn: sqlite3.Connection, node, service, path: Path, answer_path: Path,
                       progress: Progress = _no_progress) -> dict:
    """Take custody of a village's bundle and write the answer bundle for it (``service``: the
    township's sync service, :class:`township_node.relay_service.TownshipSync`)."""
    with _opened(node, conn, path, "outbox", progress) as bundle:
        body = bundle.body
        village = body["from"]
        entry = node.trust(conn).nodes.get(village)
        if entry is None or entry.parent != node.node_id:
            raise SignatureError("the bundle's village is not below this township")
        envelopes = _envelopes(bundle)
        blob_count = _store_blobs(conn, node, service, bundle, progress)
    pushed = service.push(conn, node, village, envelopes)
    # Followed now, however many: the answer carries what the station decided (a 秒批, a 受理通知书),
    # and the next trip with the stick may be a week away.
    service.follow_all(conn)
    pulled = service.pull(conn, node, village, body.get("cursors", {}), body.get("metadata", {}))
    answer = {
        "kind": "answer", "from": node.node_id, "to": village, "created_at": iso(node.now()),
        "receipt": pushed["receipt"], "results": pushed["results"], "acks": pulled["acks"],
        "downlink": pulled["downlink"], "metadata": pulled["metadata"], "server": node.node_id,
        "server_time": pulled["server_time"], "envelope_versions": formats.advertised(conn, node),
        "keyids": formats.SHORT_KEYIDS,
    }
    _write_answer(node, answer_path, answer, progress)
    custody = sum(1 for r in pushed["results"] if r["status"] == "custody")
    return {"village": village, "envelopes": len(envelopes), "custody": custody, "blobs": blob_count}


def import_answer(conn: sqlite3.Connection, node, path: Path, progress: Progress = _no_progress) -> dict:
    """Apply the township's answer bundle at the village."""
    with _opened(node, conn, path, "answer", progress) as bundle:
        body = bundle.body
    node_sync.apply_push_answer(conn, node, body)
    result = node_sync.apply_pull_answer(conn, node, body)
    return {**result, "counts": outbox.counts(conn)}

