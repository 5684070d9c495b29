"""Bounded input: body size limits before authentication, 64-bit integers, hostile JSON.

Real servers on loopback, real signatures: the 413 is measured on a socket that never sends the
body it declares; the oversized seq is in an envelope the village's real key signed; the hostile
JSON bodies are thrown at every JSON POST route of the three apps, enumerated from their url maps.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import requests
from network import HUB_ID, catalog, create_case, pick_item

from shared.core import canonical
from sync import envelope
from sync.nodeauth import sign_request

CHINESE = re.compile(r"[\u4e00-\u9fff]")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def item(net, agent):
    return pick_item(catalog(net.village(), agent), "city")


def raw_request(handle, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """Send ``head`` (and ``body``) on a plain socket; (status, headers, body) of the answer.

    The socket never sends more than given: a server that waited for a declared body would time out.
    """
    with socket.create_connection(("127.0.0.1", handle.port), timeout=timeout) as sock:
        sock.sendall(head.encode("ascii") + body)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head_bytes, _, content = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, content


def rss_bytes() -> int:
    """Resident memory of this process (the test servers run in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ----------------------------------------------------------------------------- sizes


def test_an_anonymous_300_mb_push_is_refused_413_before_its_body_is_read(net):
    township = net.township
    before = rss_bytes()
    status, _, body = raw_request(township, (
        "POST /sync/v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {300 * MB}\r\nConnection: close\r\n\r\n"))
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "too_large" and CHINESE.search(error["message"]) and "16 MB" in error["message"]
    assert rss_bytes() - before < 20 * MB


def test_the_limit_depends_on_the_route_class(net):
    hub = net.hub
    declared = 2 * MB  # over the form limit (1 MB), under the push limit (16 MB)
    for path, expected in (("/sync/v1/pull", 413), ("/api/v1/complaints", 413), ("/login", 413)):
        status, _, _ = raw_request(hub, (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\nConnection: close\r\n\r\n"))
        assert status == expected, path
    # A push of the same size is read (and then refused for its missing signature, not its size).
    response = requests.post(hub.url + "/sync/v1/push", data=b"x" * declared, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "node_auth"
    # One blob chunk is bounded far below a push.
    status, _, body = raw_request(hub, (
        f"PUT /sync/v1/blobs/{'0' * 64}?size=1&offset=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {declared}\r\nConnection: close\r\n\r\n"))
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"


def test_a_page_form_over_its_limit_gets_a_chinese_page(net):
    status, headers, body = raw_request(net.village(), (
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {5 * MB}\r\nConnection: close\r\n\r\n"))
    assert status == 413 and headers["Content-Type"].startswith("text/html")
    assert "提交的内容过大" in body.decode("utf-8")


def test_a_chunked_body_without_length_is_cut_off_at_the_limit(net):
    township = net.township
    chunk = b"x" * (256 * 1024)
    before = rss_bytes()

    def endless():
        for _ in range(160):  # 40 MB, more than twice the push limit
            yield chunk

    # (werkzeug's test server reads and discards what the app left unread, so the client sees the 413;
    # gunicorn closes the connection instead. Either way the app holds at most the limit.)
    response = requests.post(township.url + "/sync/v1/push", data=endless(), timeout=20,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert rss_bytes() - before < 30 * MB


def test_every_route_has_a_limit_class_that_exists(net):
    from shared.web.limits import DEFAULT_LIMIT, ROUTE_LIMITS

    endpoints = {rule.endpoint for handle in net.all_nodes() for rule in handle.app.url_map.iter_rules()}
    assert set(ROUTE_LIMITS) <= endpoints, set(ROUTE_LIMITS) - endpoints  # a renamed route keeps its class
    settings = {s.name for s in __import__("shared.core.settings", fromlist=["SETTINGS"]).SETTINGS}
    assert set(ROUTE_LIMITS.values()) | {DEFAULT_LIMIT, "MAX_CONTENT_LENGTH"} <= settings


# ----------------------------------------------------------------------------- 64-bit integers


def village_envelope(village, **changes) -> dict:
    """The village's newest outbox envelope, with ``changes``, signed again by the village's real key."""
    row = village.query("SELECT document FROM outbox ORDER BY seq DESC LIMIT 1")[0]
    body = envelope.peek(envelope.from_bytes(row["document"]))
    return envelope.sign(village.node.key, envelope.ENVELOPE, {**body, **changes})


@pytest.mark.parametrize("seq", [2**63, 2**64, -1, 0])
def test_a_validly_signed_seq_out_of_range_is_refused_alone_at_township_and_hub(net, agent, item, seq):
    village, township, hub = net.village(), net.township, net.hub
    create_case(village, agent, item)
    forged = village_envelope(village, seq=seq)
    genuine = envelope.from_bytes(village.query("SELECT document FROM outbox ORDER BY seq DESC LIMIT 1")[0]["document"])

    # Township custody: the forged one is refused as malformed; the genuine one in the same push is kept.
    answer = village.client_to_parent().push([forged, genuine])
    assert [r["status"] for r in answer["results"]] == ["rejected", "custody"]
    assert answer["results"][0]["reason"] == "malformed"

    # The hub (as a relay would send it): quarantined as malformed, never a 500; the batch goes on.
    answer = net.township.client_to_parent().push([forged])
    assert answer["results"][0]["status"] == "quarantined" and answer["results"][0]["reason"] == "malformed"
    assert hub.scalar("SELECT COUNT(*) FROM quarantine WHERE envelope_id = ? AND reason = 'malformed'",
                      (envelope.document_id(forged),)) == 1
    assert township.scalar("SELECT COUNT(*) FROM custody WHERE envelope_id = ?", (envelope.document_id(forged),)) == 0


def signed_post(sender, receiver, path: str, body: bytes, nonce: int) -> requests.Response:
    headers = sign_request(sender.node.key, sender.node_id, receiver.node_id, "POST", path, body, nonce)
    headers["Content-Type"] = "application/json"
    return requests.post(receiver.url + path, data=body, headers=headers, timeout=10)


def test_a_validly_signed_nonce_of_2_64_is_a_400_with_the_json_error(net):
    township, hub = net.township, net.hub
    body = canonical.dumps({"cursors": {}, "metadata": {}})
    response = signed_post(township, hub, "/sync/v1/pull", body, 2**64)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed" and error["field"] == "X-Liandong-Nonce" and CHINESE.search(error["message"])
    # The largest allowed nonce is stored (and then no further request is possible: a sane client
    # never gets there, its nonces are milliseconds).
    assert signed_post(township, hub, "/sync/v1/pull", body, 2**63 - 1).status_code == 200
    assert hub.scalar("SELECT nonce FROM request_nonces WHERE node_id = ?", (township.node_id,)) == 2**63 - 1


@pytest.mark.parametrize("values", [{"cursors": {HUB_ID: 2**63}}, {"metadata": {"catalog": 2**64}},
                                    {"acked": {"x": -1}}, {"cursors": {"x": True}}])
def test_pull_counters_out_of_range_are_a_400(net, values):
    village, township = net.village(), net.township
    body = canonical.dumps({"cursors": {}, "metadata": {}, **values})
    response = signed_post(village, township, "/sync/v1/pull", body, village.node.nonces.next())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"


@pytest.mark.parametrize("query", ["size=9223372036854775808&offset=0", "size=1&offset=18446744073709551616",
                                   "size=-1&offset=0", "size=1&offset=%D9%A1", "size=1&offset="])
def test_blob_chunk_sizes_and_offsets_out_of_range_are_a_400(net, query):
    village, township = net.village(), net.township
    path = f"/sync/v1/blobs/{'a' * 64}?{query}"
    headers = sign_request(village.node.key, village.node_id, township.node_id, "PUT", path, b"x",
                           village.node.nonces.next())
    response = requests.put(township.url + path, data=b"x", headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"


# ----------------------------------------------------------------------------- hostile JSON on every route

API_PREFIXES = ("/api/", "/sync/", "/enrol/")
SOURCES = ("shared", "sync", "city_hub", "township_node", "village_node")
ROOT = Path(__file__).resolve().parent.parent


def body_keys() -> list[str]:
    """Every key the code reads from a dict by a literal name: the fields a route may look at."""
    keys: set[str] = set()
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            keys.update(re.findall(r"""(?:\.get\(|\[)["']([a-z_][a-z0-9_]*)["']""", path.read_text("utf-8")))
    return sorted(keys)


DEEP = b"[" * 10_000 + b"]" * 10_000
TOP_LEVEL_BODIES = {
    "deep_list": DEEP,
    "deep_in_object": b'{"action":' + DEEP + b',"item_code":' + DEEP + b"}",
    "deep_objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "lone_surrogate": b'{"action":"\\ud800","comment":"\\udfff","name":"\\ud800"}',
    "lone_surrogate_key": b'{"\\ud800":1}',
    "surrogate_bytes": b'{"comment":"\xed\xa0\x80"}',
    "huge_int": b'{"level":18446744073709551616,"seq":9223372036854775808}',
    "array": b"[]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "not_json": b"{not json",
    "empty": b"",
}
#: Bodies no route may accept, whatever it does with an empty or missing body.
MUST_FAIL = {name for name in TOP_LEVEL_BODIES if name not in ("null", "empty")}
WRONG_VALUES = {"list": [], "object": {}, "list_of_lists": [[1]], "negative": -1, "true": True, "null": None,
                "float": 1.5, "string": "x", "long_string": "字" * 5000, "lone_surrogate": "\ud800",
                "control": "a\x00\u202e", "int": 7, "superscript_digit": "²"}


def hostile_bodies() -> dict[str, bytes]:
    bodies = dict(TOP_LEVEL_BODIES)
    keys = body_keys()
    for name, value in WRONG_VALUES.items():
        # ensure_ascii: a lone surrogate travels escaped, as any JSON encoder sends it.
        bodies[f"every_key_{name}"] = json.dumps(dict.fromkeys(keys, value)).encode("ascii")
    return bodies


def json_post_routes(app) -> list[tuple[str, str]]:
    """(rule, endpoint) of every POST route of the API, sync and enrolment."""
    return sorted((r.rule, r.endpoint) for r in app.url_map.iter_rules()
                  if "POST" in r.methods and r.rule.startswith(API_PREFIXES))


@pytest.fixture(scope="module")
def case_id(net, agent, item):
    receipt = create_case(net.village(), agent, item)
    net.sync_all()
    return receipt["case_id"]


def fill(rule: str, case_id: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: case_id if m.group(1) == "case_id" else "x", rule)


def callers(handle) -> list[dict]:
    """Headers for every role of the node's tier (each route is tried by each)."""
    from shared.services.accounts import ROLES_BY_TIER

    office = {"hub": "rs", "township": handle.node_id, "village": handle.node_id}[handle.tier]
    return [{"Authorization": f"Bearer {handle.account(f'fuzz-{role}', role, office)}"}
            for role in ROLES_BY_TIER[handle.tier]]


@pytest.mark.parametrize("tier", ["hub", "township", "village"])
def test_hostile_json_on_every_json_post_route_is_a_400_never_a_500(net, case_id, tier):
    handle = {"hub": net.hub, "township": net.township, "village": net.village()}[tier]
    sender = {"hub": net.township, "township": net.village(), "village": None}[tier]
    client = handle.app.test_client()
    routes = json_post_routes(handle.app)
    assert routes, "no JSON POST routes found"
    who = callers(handle)
    bodies = hostile_bodies()  # built once: it scans the sources for every key a route may read
    failures = []
    for rule, endpoint in routes:
        path = fill(rule, case_id)
        for name, body in bodies.items():
            if path.startswith("/sync/"):
                if sender is None:
                    continue
                attempts = [sign_request(sender.node.key, sender.node_id, handle.node_id, "POST", path, body,
                                         sender.node.nonces.next())]
            else:
                attempts = who if path.startswith("/api/") else [{}]
            for headers in attempts:
                response = client.post(path, data=body, headers={**headers, "Content-Type": "application/json"})
                if response.status_code >= 500 or response.status_code < 300 and name in MUST_FAIL:
                    failures.append((endpoint, name, response.status_code, response.get_data(as_text=True)[:200]))
                    continue
                if response.status_code >= 400:
                    error = response.get_json()["error"]
                    if not (error["code"] and CHINESE.search(error["message"])):
                        failures.append((endpoint, name, response.status_code, error))
    assert not failures, "\n".join(map(str, failures[:20])) + f"\n… {len(failures)} in all"


def mutations(base: dict) -> list[tuple[str, dict]]:
    """``base`` with one field (top level or one level down) replaced by each wrong value."""
    out = []
    for key, value in base.items():
        for name, wrong in WRONG_VALUES.items():
            out.append((f"{key}={name}", {**base, key: wrong}))
        inner = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else value
        if isinstance(inner, dict):
            for sub in inner:
                for name, wrong in WRONG_VALUES.items():
                    changed = {**inner, sub: wrong}
                    out.append((f"{key}.{sub}={name}", {**base, key: [changed] if isinstance(value, list) else changed}))
    return out


def test_one_wrong_field_in_an_otherwise_valid_body_is_a_400_never_a_500(net, agent, item, case_id):
    from network import case_payload

    village, township, hub = net.village(), net.township, net.hub
    clerk = township.account("clerk", "clerk", township.node_id)
    office = hub.scalar("SELECT route_office FROM cases WHERE case_id = ?", (case_id,))
    window = hub.account(f"fuzz-window-{office}", "chief", office)
    pdf = [(item["materials"][0]["code"], "扫描件.pdf", b"%PDF-1.4 test scan")]
    genuine = envelope.from_bytes(village.query("SELECT document FROM outbox ORDER BY seq LIMIT 1")[0]["document"])
    targets = [
        (village, agent, "/api/v1/cases", case_payload(item, pdf, situation={}, entrustment={"consent": True})),
        (township, clerk, "/api/v1/cases", case_payload(item, pdf)),
        (hub, window, f"/api/v1/cases/{case_id}/actions", {"action": "start_review", "comment": "审查"}),
        (village, agent, "/api/v1/complaints", {"case_id": case_id, "content": "办理太慢",
                                                "complainant": {"name": "李四", "phone": "13812345678"}}),
        (village, agent, f"/api/v1/cases/{case_id}/rating", {"level": 5, "comment": "满意"}),
        (township, clerk, f"/api/v1/cases/{case_id}/site-visits",
         {"inspectors": ["王五"], "visit_date": "2026-03-02", "findings": "属实", "result": "pass", "photos": []}),
        (township, None, "/sync/v1/push", {"envelopes": [genuine]}),
    ]
    failures = []
    for handle, token, path, base in targets:
        client = handle.app.test_client()
        for name, body in mutations(base):
            data = json.dumps(body).encode("ascii")
            if token is None:
                headers = sign_request(village.node.key, village.node_id, handle.node_id, "POST", path, data,
                                       village.node.nonces.next())
            else:
                headers = {"Authorization": f"Bearer {token}"}
            response = client.post(path, data=data, headers={**headers, "Content-Type": "application/json"})
            if response.status_code >= 500:
                failures.append((handle.tier, path, name, response.get_data(as_text=True)[:200]))
    assert not failures, "\n".join(map(str, failures[:30])) + f"\n… {len(failures)} in all"


def test_digits_of_other_scripts_in_query_and_form_numbers_are_not_a_500(net, agent, item):
    village = net.village()
    session_headers = {"Authorization": f"Bearer {agent}"}
    for path in ("/cases?page=²", "/results?page=١٢", "/cases?page=99999999999999999999999"):
        response = village.app.test_client().get(path, headers=session_headers)
        assert response.status_code == 200, path
    hub = net.hub
    admin = hub.account("fuzz-admin", "admin", None)
    client = hub.app.test_client()
    response = client.post("/admin/nodes", headers={"Authorization": f"Bearer {admin}"},
                           data={"node_id": "130926100299", "name": "新村", "ttl_hours": "9" * 30})
    assert response.status_code < 500


@pytest.mark.parametrize("body, words", [
    (b'{"content":' + b"9" * 5000 + b"}", "整数超出范围"),  # refused before int() is even tried
    (b'{"content":-9223372036854775809}', "整数超出范围"),
    (b'{"content":' + b"[" * 40 + b"]" * 40 + b"}", "嵌套过深"),
    (b'{"content":"\\udc00"}', "Unicode"),
])
def test_a_hostile_json_body_is_named_precisely(net, agent, body, words):
    response = net.village().app.test_client().post(
        "/api/v1/complaints", data=body, headers={"Authorization": f"Bearer {agent}", "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == ("malformed", "body") and words in error["message"]
