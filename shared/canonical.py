"""Canonical JSON: the one serialisation that is signed, and a strict parser for what is received.

Signed payloads are serialised once by their author (sorted keys, no spaces, UTF-8, integers
only) and then travel as opaque bytes; receivers verify those bytes and only then parse them,
strictly. Re-serialising before verifying is the classic trap (Secure Scuttlebutt), so nothing
here is ever used to "normalise" bytes that someone else signed.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


class CanonicalError(ValueError):
    """Bytes that are not strict canonical-compatible JSON."""


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` canonically: sorted keys, compact separators, UTF-8, no floats."""
    _reject_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise CanonicalError("floats are not allowed in signed documents")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CanonicalError("object keys must be strings")
            _reject_floats(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _reject_floats(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise CanonicalError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise CanonicalError(f"{name} is not allowed")


def _no_float(text: str) -> Any:
    raise CanonicalError("floats are not allowed in signed documents")


def loads(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON strictly: size cap first, then no duplicate keys, NaN, Infinity or floats."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise CanonicalError(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError("document is not UTF-8") from exc
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_no_float,
        )
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"malformed JSON: {exc.msg} at {exc.pos}") from exc
