"""Canonical JSON: the one serialisation that is signed, and a strict parser for what is received.

Signed payloads are serialised once by their author (sorted keys, no spaces, UTF-8, integers
only) and then travel as opaque bytes; receivers verify those bytes and only then parse them,
strictly. Re-serialising before verifying is the classic trap (Secure Scuttlebutt), so nothing
here is ever used to "normalise" bytes that someone else signed.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:  # optional (the "fast" extra: hub and township): the canonical re-encode 15x faster
    import orjson
except ImportError:  # a village PC does without: ~2.4 MiB less resident, the standard encoder
    orjson = None

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted in a received JSON document.
MAX_DEPTH = 32
#: Integers travel as SQLite stores them: signed 64 bits. Counters (seq, nonce, sizes, offsets)
#: are further bounded to ``0 <= n <= MAX_INT`` where they are read (:func:`is_count`).
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class CanonicalError(ValueError):
    """Bytes that are not strict canonical-compatible JSON."""


class BoundsError(CanonicalError):
    """Parsed JSON that holds what no received document may: ``kind`` is ``depth``, ``integer`` or ``unicode``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` canonically: sorted keys, compact separators, UTF-8, no floats."""
    try:
        text = _encode(obj).decode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CanonicalError(f"not serialisable canonically: {exc}") from exc
    # Re-reading with the C parser finds floats and non-string keys (json.dumps turns an int
    # key into a string, so the round trip must give back an equal object) at C speed.
    if _FLOAT_CHECK.decode(text) != obj and not _equal_ignoring_tuples(json.loads(text), obj):
        raise CanonicalError("not serialisable canonically: only string keys, arrays, strings, integers,"
                             " true, false and null")
    return text.encode("utf-8")


def _equal_ignoring_tuples(parsed: Any, obj: Any) -> bool:
    if isinstance(obj, tuple):
        obj = list(obj)
    if isinstance(obj, list) and isinstance(parsed, list):
        return len(obj) == len(parsed) and all(_equal_ignoring_tuples(p, o) for p, o in zip(parsed, obj, strict=True))
    if isinstance(obj, dict) and isinstance(parsed, dict):
        return parsed.keys() == obj.keys() and all(_equal_ignoring_tuples(parsed[k], obj[k]) for k in obj)
    return parsed == obj and type(parsed) is type(obj)


def loads_canonical(data: bytes, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse a signed payload, which must be exactly its own canonical serialisation.

    One content has one byte form: parsing with the C decoder and serialising again must give
    back the received bytes, which rules out duplicate keys, floats, NaN, escapes, unsorted keys
    and extra white space in one comparison (and is several times faster than parse hooks).
    """
    if len(data) > max_bytes:
        raise CanonicalError(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = _decode(_STRICT_DECODER, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CanonicalError("document is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"malformed JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:
        raise BoundsError("depth", "JSON nested too deeply") from exc
    try:
        canonical_form = _encode(obj)
    except UnicodeEncodeError as exc:  # an escaped lone surrogate has no UTF-8 form
        raise CanonicalError("payload holds a string that is not valid Unicode") from exc
    # Only a mismatch pays for the reference encoder: the two agree on every parsed value
    # (tests/test_canonical.py), so this never changes an answer, it only makes sure of it.
    if canonical_form != data and _CANONICAL_ENCODER.encode(obj).encode("utf-8") != data:
        loads(data, max_bytes)  # name the precise fault (duplicate key, float…) when there is one
        raise CanonicalError("payload is not in canonical form (sorted keys, no spaces, UTF-8, integers)")
    return obj


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)  # in C; the loop below runs only to name a duplicate
    if len(result) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise CanonicalError(f"{name} is not allowed")


def _no_float(text: str) -> Any:
    raise CanonicalError("floats are not allowed in signed documents")


def bounded_int(text: str) -> int:
    """``parse_int`` hook: a JSON integer, refused outside signed 64 bits before it is converted
    (``int()`` of a few thousand digits is slow, and beyond 4300 a bare ``ValueError``)."""
    if len(text) > 18:  # 19 digits (or a sign and 18) may still fit: compare exactly
        if len(text) > 20 or not MIN_INT <= int(text) <= MAX_INT:
            raise BoundsError("integer", "integer out of the 64-bit range")
    return int(text)


def loads(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse JSON strictly: size cap first, then no duplicate keys, NaN, Infinity or floats."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise CanonicalError(f"document of {len(data)} bytes exceeds the limit of {max_bytes}")
    if orjson is not None:
        obj = _canonical_fast(data)
        if obj is not _NOT_FAST:
            return obj
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError("document is not UTF-8") from exc
    try:
        obj = _decode(_STRICT_PAIRS_DECODER, text)
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"malformed JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:
        raise BoundsError("depth", "JSON nested too deeply") from exc
    # A lone surrogate can only come from a \uD800-\uDFFF escape (the bytes were strict UTF-8):
    # without one, no string needs looking at (a push body's payload texts are most of its bytes).
    check_bounds(obj, strings=_SURROGATE_ESCAPE.search(text) is not None)
    return obj


_NOT_FAST = object()


def _canonical_fast(data: bytes) -> Any:
    """The strict parse of a document that is its own canonical form, as the nodes' clients send
    their bodies: orjson parses it and serialising it again must give back ``data``, which rules
    out duplicate keys (one would be lost), white space, unsorted keys, and integers beyond 64
    bits (orjson reads them as floats, written back otherwise). What that leaves for the walk:
    floats written as such, depth, 64-bit bounds, and no lone surrogate (orjson refuses those).
    ``_NOT_FAST`` for anything else, even valid JSON: the strict parser then answers, with the
    precise fault where there is one, so this changes no answer, only its cost (a push body:
    ~4 µs per envelope instead of ~13)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT_FAST
    if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) != data:
        return _NOT_FAST
    check_bounds(obj, strings=False, floats=False)
    return obj


# Built once: ``json.loads``/``json.dumps`` with options build a new decoder (and its scanner) or
# encoder on every call, a few microseconds per signed document at every tier.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_no_float, parse_int=bounded_int)
_STRICT_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                                         parse_float=_no_float, parse_int=bounded_int)
_FLOAT_CHECK = json.JSONDecoder(parse_float=_no_float)
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SIGNING_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(obj: Any) -> bytes:
    """The canonical bytes of ``obj``: orjson's sorted compact UTF-8 output where it is installed, byte for byte what
    ``_SIGNING_ENCODER`` gives for every value a strict parse yields, 15 times faster (the re-encode
    was a sixth of the hub's ingest). Whatever orjson refuses or may render otherwise (a lone
    surrogate, an integer beyond 64 bits, nesting past its limit, a non-string key) goes to the
    reference encoder, which answers as before.

    :raises UnicodeEncodeError, TypeError, ValueError: as the reference encoder does.
    """
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass
    return _SIGNING_ENCODER.encode(obj).encode("utf-8")


def string_bytes(text: str) -> bytes:
    """``text`` as a JSON string literal in UTF-8, as the canonical writer writes it (orjson's
    bytes where installed: the same as the standard encoder's for every code point,
    tests/test_canonical.py). For documents this node stores; never for bytes it signs.

    :raises UnicodeEncodeError: a lone surrogate.
    """
    return _encode(text)


def loads_own(data: bytes | str) -> Any:
    """Parse JSON this node wrote itself after checking it (stored documents): no strictness
    needed, only speed (orjson where installed)."""
    return orjson.loads(data) if orjson is not None else json.loads(data)


def dumps_own(obj: Any) -> str:
    """JSON text this node stores for itself and reads back with :func:`loads_own` (a case's form,
    an event's detail): keys in the order given, UTF-8 text unescaped; orjson's compact form where
    it is installed (4-5 times faster: two or three values per case on the hub's apply), the
    standard encoder's otherwise and for what orjson refuses (a non-string key, an integer past 64
    bits). Never signed and never compared as text, so the two forms may both be stored."""
    if orjson is not None:
        try:
            return orjson.dumps(obj).decode("utf-8")
        except TypeError:
            pass
    return _OWN_ENCODER.encode(obj)


_OWN_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    """``decoder.decode(text)``, refusing a leading BOM with ``json.loads``'s own error."""
    if text.startswith("\ufeff"):
        return json.loads(text)  # raises JSONDecodeError("Unexpected UTF-8 BOM …")
    return decoder.decode(text)


def check_bounds(obj: Any, max_depth: int = MAX_DEPTH, strings: bool = True, floats: bool = True) -> None:
    """Refuse what a received JSON value may not hold, whatever its schema.

    Nesting deeper than ``max_depth``, integers outside signed 64 bits (SQLite's INTEGER) and,
    with ``strings``, lone surrogates (an escaped ``\\ud800`` parses, but has no UTF-8 form, so
    it would fail later when stored or signed). Iterative, so hostile depth cannot exhaust the stack.
    With ``floats=False``, floats too (for a value parsed by a reader that accepts them).

    :raises BoundsError: naming the fault; CanonicalError for a float.
    """
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= max_depth:
                raise BoundsError("depth", f"JSON nested deeper than {max_depth} levels")
            if strings and any(_SURROGATE.search(key) for key in value):
                raise BoundsError("unicode", "a key is not valid Unicode (lone surrogate)")
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if depth >= max_depth:
                raise BoundsError("depth", f"JSON nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if not MIN_INT <= value <= MAX_INT:
                raise BoundsError("integer", "integer out of the 64-bit range")
        elif strings and isinstance(value, str) and _SURROGATE.search(value):
            raise BoundsError("unicode", "a string is not valid Unicode (lone surrogate)")
        elif not floats and isinstance(value, float):
            raise CanonicalError("floats are not allowed in signed documents")


def is_count(value: Any) -> bool:
    """Whether ``value`` is a JSON integer usable as a counter, size or offset: ``0 <= n <= MAX_INT``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT
