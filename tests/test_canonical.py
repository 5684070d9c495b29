"""Canonical JSON: the fast encoder gives the reference encoder's bytes, and the strict check refuses
every other byte form of the same content (shared/core/canonical.py), with and without orjson."""

from __future__ import annotations

import json
import random

import pytest

from shared.core import canonical
from shared.core.canonical import CanonicalError


@pytest.fixture(autouse=True, params=["orjson", "standard library"])
def encoder(request, monkeypatch):
    """Every test twice: with orjson (the servers' "fast" extra) and without it (a village PC)."""
    if request.param == "orjson":
        if canonical.orjson is None:
            pytest.skip("orjson is not installed")
    else:
        monkeypatch.setattr(canonical, "orjson", None)
    return request.param


REFERENCE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def reference(obj) -> bytes:
    return REFERENCE.encode(obj).encode("utf-8")


def every_code_point() -> list[str]:
    """Every Unicode scalar value, 4,096 to a string."""
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    return ["".join(map(chr, points[i:i + 4096])) for i in range(0, len(points), 4096)]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 6 else 4)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), rng.randrange(-(2**63), 2**63)])
    if kind == 1:
        return rng.choice([True, False, None])
    if kind in (2, 3):
        return random_text(rng)
    if kind == 4:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_text(rng: random.Random) -> str:
    return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800),
                                   rng.randrange(0xE000, 0x110000)])) for _ in range(rng.randrange(8)))


def test_every_code_point_is_written_as_the_reference_writes_it():
    for text in every_code_point():
        assert canonical.dumps(text) == reference(text)
        assert canonical.dumps({text: 1, "a": text}) == reference({text: 1, "a": text})


def test_random_documents_are_written_as_the_reference_writes_them_and_read_back_strictly():
    rng = random.Random(20261202)
    for _ in range(3000):
        obj = {"k": random_value(rng)}
        data = canonical.dumps(obj)
        assert data == reference(obj)
        assert canonical.loads_canonical(data) == obj


def test_keys_sort_by_code_point_across_the_planes():
    obj = {"\U0001f600": 1, "\uffff": 2, "z": 3, "Z": 4, "\u00e9": 5, "\u4e2d": 6, "": 7}
    assert canonical.dumps(obj) == reference(obj)


@pytest.mark.parametrize("payload", [
    b'{"b":1,"a":2}',  # unsorted keys
    b'{"a": 1}',  # a space
    b'{"a":"\\u4e2d"}',  # an escape the canonical form writes as UTF-8
    b'{"a":"\\/"}',  # an escaped solidus
    b'{"a":1.0}',  # a float
    b'{"a":1,"a":1}',  # a duplicate key
    b'{"a":NaN}',
    b'{"a":99999999999999999999}',  # beyond 64 bits
    b'{"a":"\\ud800"}',  # a lone surrogate
    b'\xef\xbb\xbf{"a":1}',  # a BOM
])
def test_another_byte_form_of_the_same_content_is_refused(payload):
    with pytest.raises(CanonicalError):
        canonical.loads_canonical(payload)


def test_what_the_fast_encoder_refuses_is_answered_by_the_reference():
    deep: list = []
    inner = deep
    for _ in range(300):  # past orjson's nesting limit: the reference writes it
        inner.append([])
        inner = inner[0]
    assert canonical.dumps(deep) == reference(deep)
    assert canonical.dumps({"n": 2**70}) == reference({"n": 2**70})  # refused by a receiver, not by the writer
    with pytest.raises(CanonicalError):
        canonical.dumps({"a": "\ud800"})
    for bad in ({"a": 1.5}, {1: "x"}, {"a": float("nan")}, {"a": object()}, {"a": b"bytes"}):
        with pytest.raises(CanonicalError):
            canonical.dumps(bad)


@pytest.mark.parametrize("text", [b'{"a":"\\ud800"}', b'{"a":["x","\\uDFFF"]}', b'{"\\udbff":1}'])
def test_the_strict_parser_refuses_a_lone_surrogate_escape_in_any_case(text):
    with pytest.raises(canonical.BoundsError):
        canonical.loads(text)


def test_the_strict_parser_takes_an_escaped_pair_and_a_string_that_only_looks_like_an_escape():
    assert canonical.loads(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert canonical.loads(b'{"a":"\\\\ud800"}') == {"a": "\\ud800"}


def test_stored_documents_read_back_the_same_either_way():
    data = canonical.dumps({"a": ["\u4e2d", 1, None, True], "b": {"c": "\n"}})
    assert canonical.loads_own(data) == json.loads(data) == canonical.loads_canonical(data)


def _outcome(data: bytes):
    try:
        return ("value", canonical.loads(data))
    except CanonicalError as exc:
        return ("refused", type(exc).__name__, str(exc))


@pytest.mark.parametrize("text", [
    b'{"a":1.5}', b'[1]', b'{"a":[1,2.0]}', b'{"a":-0}', b'{"a":1e5}',  # floats, written or not as orjson writes them
    b'{"a":1,"a":1}', b'{"b":1,"a":{"c":1,"c":2}}',  # duplicate keys: orjson keeps one, so the re-encode differs
    b'{"a":18446744073709551615}', b'{"a":9223372036854775808}', b'{"a":-9223372036854775809}',  # past 63 bits
    b'{"a":9223372036854775807,"b":-9223372036854775808}',  # the edges, accepted
    b'{"a":"\\ud800"}', b'{"\\udbff":1}', b'{"a":"\\ud83d\\ude00"}',  # surrogates, lone and paired
    b'\xef\xbb\xbf{"a":1}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":"\xff"}',  # BOM, constants, not UTF-8
    b'[' * 32 + b']' * 32, b'[' * 33 + b']' * 33, b'[' * 2000 + b']' * 2000,  # depth, at and past the limits
    b'{"a":[],"b":{},"c":"\xe4\xb8\xad","d":true,"e":null}', b'{"a": 1}', b'{"b":1,"a":2}',  # canonical or not
])
def test_the_strict_parser_answers_every_input_the_same_with_or_without_its_fast_path(text, monkeypatch):
    """``loads`` reads a canonical body with orjson and a re-encode (the push path); the answer,
    value or refusal with its message, is the strict parser's own in every case."""
    fast = _outcome(text)
    monkeypatch.setattr(canonical, "orjson", None)
    assert fast == _outcome(text)


def test_random_canonical_bodies_read_the_same_with_or_without_the_fast_path(monkeypatch):
    rng = random.Random(7)
    documents = [canonical.dumps({"k": random_value(rng)}) for _ in range(1000)]
    fast = [_outcome(d) for d in documents]
    monkeypatch.setattr(canonical, "orjson", None)
    assert fast == [_outcome(d) for d in documents]
