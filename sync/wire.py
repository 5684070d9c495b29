"""Content codings of sync request and answer bodies, and the batched blob framing.

Compression is negotiated per RFC 7694: a parent lists the codings it accepts for request
bodies in an ``Accept-Encoding`` answer header; a node compresses its requests only once its
parent said so (an older parent never does, and gets plain bodies). Answers are compressed the
ordinary way, by the caller's ``Accept-Encoding``. gzip is always there; zstd only where the
optional ``zstandard`` package is installed at both ends. docs/sync-protocol.md §4.1.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from shared.core import canonical

try:  # optional: zstd is smaller and faster than gzip, but gzip alone is enough
    import zstandard
except ImportError:  # pragma: no cover - depends on the installation
    zstandard = None

ZSTD_LEVEL = 3
#: zstd with the project's dictionary (docs/sync-protocol.md §5.1.1): a name per dictionary, whose
#: bytes never change once released (a new dictionary is a new name, ``zstd-ld2``).
DICT_CODING = "zstd-ld1"
DICT_FILE = Path(__file__).with_name("wire-1.zdict")


def _dictionary():
    """The dictionary of :data:`DICT_CODING`, or None (no zstandard, or the file is missing)."""
    if zstandard is None or not DICT_FILE.is_file():
        return None
    dictionary = zstandard.ZstdCompressionDict(DICT_FILE.read_bytes())
    dictionary.precompute_compress(level=ZSTD_LEVEL)
    return dictionary


_DICT = _dictionary()
#: Codings this node can decode and encode, preferred first.
CODINGS = (((DICT_CODING,) if _DICT is not None else ()) + ("zstd", "gzip")) if zstandard is not None else ("gzip",)
#: Files one push may ask about (its ``"blobs"``, docs/sync-protocol.md §5.3.2): one stat each at
#: the parent, as many as /blobs/status's 1 MiB of names; a sender with more asks that route.
MAX_BLOBS_ASKED = 10_000
#: Bodies shorter than this go plain (the coding's own header would eat the gain).
COMPRESS_MIN_BYTES = 512
#: The same with the dictionary, which knows the JSON around a few bytes of content already.
DICT_MIN_BYTES = 96
GZIP_LEVEL = 6


def worth(coding: str | None, size: int) -> bool:
    """Whether a body of ``size`` bytes is worth compressing in ``coding``."""
    return coding is not None and size >= (DICT_MIN_BYTES if coding == DICT_CODING else COMPRESS_MIN_BYTES)


class CodingError(ValueError):
    """A body in a coding this node does not know, corrupt, or larger than allowed decoded."""


def choose(accept: str | None) -> str | None:
    """The best coding of ours that an ``Accept-Encoding`` value lists (``q=0`` excluded), or None."""
    offered = set()
    for part in (accept or "").split(","):
        name, _, params = part.partition(";")
        quality = params.replace(" ", "").lower()
        try:
            if quality.startswith("q=") and float(quality[2:]) == 0:
                continue
        except ValueError:
            continue  # a malformed weight: not an offer
        offered.add(name.strip().lower())
    return next((c for c in CODINGS if c in offered), None)


def encode(body: bytes, coding: str) -> bytes:
    """``body`` in ``coding`` (``gzip`` or ``zstd``)."""
    if coding == "gzip":
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return packer.compress(body) + packer.flush()
    if coding == "zstd" and zstandard is not None:
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if coding == DICT_CODING and _DICT is not None:
        # No dictionary id in the frame (4 bytes): the coding's name says which dictionary.
        return zstandard.ZstdCompressor(dict_data=_DICT, write_dict_id=False).compress(body)
    raise CodingError(f"unsupported content coding {coding!r}")


def decode(body: bytes, coding: str, max_bytes: int) -> bytes:
    """Decode a request body, refusing more than ``max_bytes`` decoded (a compression bomb).

    :raises CodingError: unknown coding, corrupt data, or too large once decoded.
    """
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    try:
        if coding == "gzip":
            unpacker = zlib.decompressobj(31)
            out = unpacker.decompress(body, max_bytes + 1)
            if len(out) > max_bytes or unpacker.unconsumed_tail:
                raise CodingError(f"decoded body larger than {max_bytes} bytes")
            if not unpacker.eof:
                raise CodingError("truncated gzip body")
            return out
        if (coding == "zstd" and zstandard is not None) or (coding == DICT_CODING and _DICT is not None):
            decompressor = zstandard.ZstdDecompressor(dict_data=_DICT) if coding == DICT_CODING \
                else zstandard.ZstdDecompressor()
            reader = decompressor.stream_reader(body)
            out = reader.read(max_bytes + 1)
            if len(out) > max_bytes:
                raise CodingError(f"decoded body larger than {max_bytes} bytes")
            return out
    except (zlib.error, ValueError) as exc:
        if isinstance(exc, CodingError):
            raise
        raise CodingError(f"corrupt {coding} body: {exc}") from exc
    except Exception as exc:  # zstandard.ZstdError is not a ValueError
        raise CodingError(f"corrupt {coding} body: {exc}") from exc
    raise CodingError(f"unsupported content coding {coding!r}")


#: Push outcomes a compact answer gives as seq ranges; every other one is listed in full.
ROUTINE_STATUSES = ("accepted", "custody", "duplicate")


def compact_results(results: list[dict]) -> dict:
    """A push answer's per-envelope ``results`` as ``{"ok": {origin: [[first, last], …]},
    "results": [the exceptions]}``: routine outcomes (accepted, in custody, duplicate, with no
    file missing) as seq ranges per origin, anything else listed whole (docs/sync-protocol.md §5.3)."""
    ranges: dict[str, list[list[int]]] = {}
    exceptions = []
    for r in results:
        if r.get("status") in ROUTINE_STATUSES and not r.get("missing_blobs") and r.get("origin") and r.get("seq"):
            runs = ranges.setdefault(r["origin"], [])
            if runs and runs[-1][1] + 1 == r["seq"]:
                runs[-1][1] = r["seq"]
            else:
                runs.append([r["seq"], r["seq"]])
        else:
            exceptions.append(r)
    return {"ok": ranges, "results": exceptions}


# Batched blob transfer (docs/sync-protocol.md §6.1): many files, or pieces of them, per request.
BLOB_BATCH_TYPE = "application/vnd.liandong.blobs"
BLOB_BATCH_MAGIC = b"LDB1"
_FRAME = struct.Struct(">32sQQI")  # sha256 (raw), size, offset, length; then `length` bytes
FRAME_HEAD_BYTES = _FRAME.size


def blob_frame(sha256: str, size: int, offset: int, data: bytes) -> bytes:
    """One frame: ``data`` is the bytes of blob ``sha256`` (``size`` bytes long) from ``offset``."""
    return _FRAME.pack(bytes.fromhex(sha256), size, offset, len(data)) + data


def blob_frames(body: bytes) -> list[tuple[str, int, int, memoryview]]:
    """Split a batch body into ``(sha256, size, offset, data)``.

    :raises CodingError: no magic, a truncated frame, or trailing bytes.
    """
    if not body.startswith(BLOB_BATCH_MAGIC):
        raise CodingError("not a blob batch (magic LDB1 missing)")
    view, pos, frames = memoryview(body), len(BLOB_BATCH_MAGIC), []
    while pos < len(body):
        if pos + _FRAME.size > len(body):
            raise CodingError("truncated frame header")
        digest, size, offset, length = _FRAME.unpack_from(view, pos)
        pos += _FRAME.size
        if pos + length > len(body):
            raise CodingError("truncated frame data")
        frames.append((digest.hex(), size, offset, view[pos: pos + length]))
        pos += length
    return frames


def held_ranges(rows) -> dict[str, list[list]]:
    """The ``held`` member of a township's push (docs/sync-protocol.md §5.3): when it took each
    forwarded envelope into custody, as ``{origin: [[first seq, last seq, time], ...]}`` runs
    of one origin's consecutive envelopes taken at one time (a village's push: one run)."""
    held: dict[str, list[list]] = {}
    for row in rows:
        runs = held.setdefault(row["origin"], [])
        if runs and runs[-1][1] + 1 == row["seq"] and runs[-1][2] == row["received_at"]:
            runs[-1][1] = row["seq"]
        else:
            runs.append([row["seq"], row["seq"], row["received_at"]])
    return held


def held_times(value, max_runs: int) -> dict[str, list[tuple[int, int, str]]]:
    """Read a push's ``held`` member: runs of counts and a time each, at most ``max_runs``,
    each origin's sorted by their first seq.

    :raises ValueError: not that shape (the caller answers ``400 malformed``).
    """
    if not isinstance(value, dict):
        raise ValueError("held must be an object")
    out: dict[str, list[tuple[int, int, str]]] = {}
    runs = 0
    for origin, items in value.items():
        if not isinstance(items, list):
            raise ValueError("held runs must be arrays")
        for item in items:
            runs += 1
            if (runs > max_runs or not isinstance(item, list) or len(item) != 3
                    or not all(canonical.is_count(n) for n in item[:2]) or item[0] > item[1]
                    or not isinstance(item[2], str) or len(item[2]) > 40):
                raise ValueError("held runs are [first seq, last seq, time], at most one per envelope")
            out.setdefault(origin, []).append((item[0], item[1], item[2]))
    return {origin: sorted(items) for origin, items in out.items()}
