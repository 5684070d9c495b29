"""zstd with the project's dictionary (``zstd-ld1``, docs/sync-protocol.md §5.1.1): the shipped
dictionary is pinned, bodies round-trip, a peer that did not list it never gets it, a bomb is
bounded, and an answer to a request already in the parent's best coding leaves its offer out."""

from __future__ import annotations

import hashlib
import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import zstandard

from shared.core import canonical
from sync import client as client_module
from sync import wire
from sync.client import ParentClient
from sync.nodeauth import sign_request

VECTORS = json.loads((Path(__file__).parent / "vectors" / "wire_dictionary.json").read_text(encoding="utf-8"))


def test_the_shipped_dictionary_is_the_one_its_name_stands_for():
    """A dictionary is protocol: another file under the same coding name would garble every body
    a peer with the old one decodes. A new dictionary is a new name (zstd-ld2)."""
    assert wire.DICT_CODING == VECTORS["coding"]
    assert hashlib.sha256(wire.DICT_FILE.read_bytes()).hexdigest() == VECTORS["dictionary_sha256"]
    assert wire.CODINGS[0] == wire.DICT_CODING


def test_the_vector_decodes_and_bodies_round_trip():
    for case in VECTORS["cases"]:
        plain = case["plain"].encode("utf-8")
        assert wire.decode(bytes.fromhex(case["encoded_hex"]), wire.DICT_CODING, 1 << 20) == plain
        packed = wire.encode(plain, wire.DICT_CODING)
        assert wire.decode(packed, wire.DICT_CODING, 1 << 20) == plain
        assert len(packed) < len(wire.encode(plain, "zstd"))  # what the dictionary is for


def test_without_the_dictionary_a_body_cannot_be_read():
    """So it is sent only to a peer that listed the coding (choose), never by default."""
    packed = wire.encode(canonical.dumps({"cursors": {}, "metadata": {}}), wire.DICT_CODING)
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(packed)
    with pytest.raises(wire.CodingError):
        wire.decode(packed, "zstd", 1 << 20)
    assert wire.choose("zstd, gzip") == "zstd"  # an older peer's list
    assert wire.choose("gzip, deflate") == "gzip"  # a requests-based client of an older release
    assert wire.choose(f"{wire.DICT_CODING}, zstd, gzip") == wire.DICT_CODING
    assert wire.choose(f"{wire.DICT_CODING};q=0, zstd") == "zstd"


def test_a_dictionary_bomb_is_bounded():
    bomb = wire.encode(b"{" + b" " * (4 * 1024 * 1024) + b"}", wire.DICT_CODING)
    assert len(bomb) < 4096
    with pytest.raises(wire.CodingError, match="larger"):
        wire.decode(bomb, wire.DICT_CODING, 1024 * 1024)


def test_small_bodies_compress_with_the_dictionary_only():
    assert wire.worth(wire.DICT_CODING, wire.DICT_MIN_BYTES) and not wire.worth(wire.DICT_CODING, 10)
    assert not wire.worth("zstd", wire.DICT_MIN_BYTES) and wire.worth("zstd", wire.COMPRESS_MIN_BYTES)
    assert not wire.worth(None, 10**6)


def _signed_pull(village, body: bytes, coding: str | None) -> requests.Response:
    node = village.node
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull", body,
                           node.nonces.next())
    headers.update({"Content-Type": "application/json", "Accept-Encoding": ", ".join(wire.CODINGS)})
    if coding:
        headers["Content-Encoding"] = coding
    return requests.post(node.config["PARENT_URL"] + "/sync/v1/pull", data=body, headers=headers, timeout=10)


def test_a_parent_reads_the_dictionary_coding_and_leaves_its_offer_out_only_then(build_network):
    net = build_network(villages=1)
    village = net.village()
    plain = canonical.dumps({"cursors": {}, "metadata": {}})
    coded = _signed_pull(village, wire.encode(plain, wire.DICT_CODING), wire.DICT_CODING)
    assert coded.status_code == 200, coded.text
    assert "Accept-Encoding" not in coded.headers  # the caller uses the parent's best coding already
    for coding, body in ((None, plain), ("zstd", wire.encode(plain, "zstd")), ("gzip", wire.encode(plain, "gzip"))):
        answer = _signed_pull(village, body, coding)
        assert answer.status_code == 200
        assert answer.headers["Accept-Encoding"] == ", ".join(wire.CODINGS)  # told what it could use


def test_the_client_keeps_its_coding_when_the_offer_is_left_out(build_network, monkeypatch):
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    client_module._REQUEST_CODING.clear()
    client = ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces)
    client.pull({}, {})  # plain: the parent's answer names its codings
    assert client_module._REQUEST_CODING[client.base_url] == wire.DICT_CODING
    have = {"calendar": 3, "catalog": 12, "registry": 40, "root": 1, "things": 2}
    client.pull({f"{node.node_id}:x": 0}, have, {node.node_id: 0})  # more than DICT_MIN_BYTES: coded
    assert client_module._REQUEST_CODING[client.base_url] == wire.DICT_CODING
    # An older parent (no dictionary): its offer lists zstd and gzip, and the client follows it.
    client_module._REQUEST_CODING[client.base_url] = None
    monkeypatch.setattr(wire, "CODINGS", ("zstd", "gzip"))  # the parent's (same process) and the client's
    client.pull({}, {})
    assert client_module._REQUEST_CODING[client.base_url] == "zstd"
    client.pull({f"{node.node_id}:x": 0}, have, {node.node_id: 0})
    assert client_module._REQUEST_CODING[client.base_url] == "zstd"


class _Bare:
    def __init__(self, status: int, headers, raw: bytes):
        self.status_code, self.headers, self.raw = status, headers, raw

    def json(self, coding: str | None = None):
        return json.loads(wire.decode(self.raw, coding, 1 << 24) if coding else self.raw)


def _bare_pull(village, body: bytes, coding: str | None, **extra) -> _Bare:
    """A signed pull with no Content-Type and no Accept-Encoding, on a bare connection (``requests``
    and http.client would add ``Accept-Encoding: identity``); the body as it came."""
    node = village.node
    headers = sign_request(node.key, node.node_id, node.config["PARENT_ID"], "POST", "/sync/v1/pull", body,
                           node.nonces.next())
    headers.update({**({"Content-Encoding": coding} if coding else {}), **extra})
    url = urlsplit(node.config["PARENT_URL"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("POST", "/sync/v1/pull", skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        answer = conn.getresponse()
        return _Bare(answer.status, answer.msg, answer.read())
    finally:
        conn.close()


def test_a_request_without_accept_encoding_is_answered_in_its_own_coding(build_network):
    """§5.1.1: the body's Content-Encoding stands for the Accept-Encoding left out (RFC 9110
    §12.5.3: without one, any coding is acceptable); a plain request so gets a plain answer."""
    net = build_network(villages=1)
    village = net.village()
    plain = canonical.dumps({"cursors": {}, "metadata": {}})
    for coding in (wire.DICT_CODING, "gzip"):
        answer = _bare_pull(village, wire.encode(plain, coding), coding)
        assert answer.status_code == 200 and answer.headers["Content-Encoding"] == coding
        assert "server" in answer.json(coding)
    answer = _bare_pull(village, plain, None)
    assert answer.status_code == 200 and "Content-Encoding" not in answer.headers and "server" in answer.json()


def test_a_dictionary_coded_answer_carries_no_type_and_every_other_keeps_it_and_nosniff(build_network):
    """§5.1.3: only a node's client reads ``zstd-ld1`` (no browser decodes it), and it is always
    JSON, so such an answer leaves out Content-Type and nosniff. An answer a browser can read
    keeps both, errors included (they echo request data)."""
    net = build_network(villages=1)
    village = net.village()
    plain = canonical.dumps({"cursors": {}, "metadata": {}})
    coded = _bare_pull(village, wire.encode(plain, wire.DICT_CODING), wire.DICT_CODING)
    assert coded.headers["Content-Encoding"] == wire.DICT_CODING
    assert "Content-Type" not in coded.headers and "X-Content-Type-Options" not in coded.headers
    for answer in (_bare_pull(village, wire.encode(plain, "gzip"), "gzip"), _bare_pull(village, plain, None),
                   _bare_pull(village, plain, None, **{"Liandong-Auth": "nonsense"})):
        assert answer.headers["Content-Type"].startswith("application/json"), answer.headers.items()
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.status_code == 401


def test_the_client_leaves_out_what_its_coded_body_says_already(build_network):
    """A body in the dictionary coding goes without Content-Type (it is JSON) and without
    Accept-Encoding (its coding asks for the answer in it); a plain one names both."""
    net = build_network(villages=1)
    village = net.village()
    node = village.node
    sent: list[dict] = []

    class Recording(client_module.transport.Transport):
        def exchanged(self, method, url, headers, body, size, response):
            sent.append({**headers, "_status": response.status_code})

    client_module._REQUEST_CODING.clear()
    client = ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces,
                          session=Recording())
    client.pull({}, {})  # plain: the parent's answer names its codings
    have = {"calendar": 3, "catalog": 12, "registry": 40, "root": 1, "things": 2}
    answer = client.pull({f"{node.node_id}:x": 0}, have, {node.node_id: 0})  # coded, and read back
    assert "server" in answer
    first, coded = sent
    assert first["Content-Type"] == "application/json" and "Content-Encoding" not in first
    assert coded["Content-Encoding"] == wire.DICT_CODING and coded["_status"] == 200
    assert "Content-Type" not in coded and "Accept-Encoding" not in coded
