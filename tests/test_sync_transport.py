"""The sync client's own HTTP (sync/transport.py) and the small village process.

Only an explicit 2xx with JSON counts: a refused connection, a silent parent, a captive
portal's 200 HTML page, a 5xx and a redirect each raise ``SyncUnavailable`` (and a failed round
backs off). One connection per parent is kept alive and reused; one the parent closed while
idle is noticed before it is used. The bytes counted are the bytes written and read. A
village's ``liandong node serve`` loads neither ``requests`` nor the other tiers' code, and
runs with one malloc arena, a small SQLite page cache and ``malloc_trim`` when idle.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from network import free_port

from provisioning import memory
from shared.core.crypto import SigningKey
from sync import transport as transport_module
from sync.client import ParentClient, SyncUnavailable
from sync.node_sync import SyncState, run_round
from sync.transport import Transport
from township_node.tier import TownshipTier

ROOT = Path(__file__).resolve().parent.parent


class _Nonces:
    def __init__(self):
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def _client(url: str, session: Transport, timeout: float = 2.0) -> ParentClient:
    return ParentClient(url, "130926100", "130926100201", SigningKey.generate(), _Nonces(), timeout=timeout,
                        session=session)


class RawServer:
    """A one-thread HTTP/1.1 server on a raw socket: records every request's exact bytes and
    every accepted connection, answers each with ``answer(request_bytes)``; ``close_after``
    answers, it hangs up the connection without saying so (an idle timeout)."""

    def __init__(self, answer, close_after: int | None = None):
        self.answer, self.close_after = answer, close_after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            answered, buffer = 0, b""
            with conn:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                    self.requests.append(request)
                    conn.sendall(self.answer(request))
                    answered += 1
                    if self.close_after is not None and answered >= self.close_after:
                        break

    def close(self) -> None:
        self.sock.close()


def _answer(status: str, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound once and released: nothing listens there


def test_a_refused_connection_is_sync_unavailable_named_as_such(closed_port):
    with pytest.raises(SyncUnavailable) as failed:
        _client(f"http://127.0.0.1:{closed_port}", session=Transport()).pull({}, {})
    assert str(failed.value).startswith("ConnectionError: ") and failed.value.status is None


def test_a_parent_that_never_answers_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        with pytest.raises(SyncUnavailable) as failed:
            _client(f"http://127.0.0.1:{silent.getsockname()[1]}", Transport(), timeout=0.5).pull({}, {})
        assert time.monotonic() - started < 3
        assert str(failed.value).startswith("Timeout: ")  # what the 立即同步 page looks for
    finally:
        silent.close()


@pytest.mark.parametrize(("answer", "status", "words"), [
    (_answer("200 OK", "<html>请先登录无线网络</html>".encode(), "text/html; charset=utf-8"), None, "not JSON"),
    (_answer("502 Bad Gateway", b"<html>Bad Gateway</html>", "text/html"), 502, "HTTP 502"),
    (_answer("503 Service Unavailable", b'{"error": {"code": "busy"}}'), 503, "HTTP 503"),
    (_answer("302 Found", b'{"ok": true}', extra="Location: http://127.0.0.1:9/login\r\n"), 302, "HTTP 302"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"cut\": ", None, "ConnectionError"),  # cut short
    (b"garbage\r\n\r\n", None, "ConnectionError"),
])
def test_only_an_explicit_2xx_with_json_counts(answer, status, words):
    server, link = RawServer(lambda request: answer, close_after=1), Transport()
    try:
        with pytest.raises(SyncUnavailable) as failed:
            _client(server.url, session=link, timeout=2).pull({}, {})
        assert words in str(failed.value) and failed.value.status == status
        assert len(server.requests) == 1  # a redirect is not followed
    finally:
        link.close()
        server.close()


def test_a_failed_round_backs_off(net, closed_port):
    village = net.village()
    state = SyncState()
    client = ParentClient(f"http://127.0.0.1:{closed_port}", village.node.config["PARENT_ID"], village.node_id,
                          village.node.key, village.node.nonces, timeout=1)
    assert "error" in run_round(village.conn, village.node, state, client=client, force=True)
    assert state.failures == 1 and state.next_attempt > time.monotonic()
    assert run_round(village.conn, village.node, state, client=client) == {"skipped": True}  # not yet due


def test_one_connection_is_kept_alive_and_the_bytes_counted_are_those_on_the_wire():
    answer_body = gzip.compress(b'{"acks": {}, "documents": []}')
    answer = _answer("200 OK", answer_body, extra="Content-Encoding: gzip\r\n")
    server = RawServer(lambda request: answer)
    counted: list[tuple[int, int]] = []

    class Counting(Transport):
        def exchanged(self, method, url, headers, body, sent, response):
            counted.append((sent, response.head_bytes + response.body_bytes))

    link = Counting()
    try:
        for _ in range(3):  # a new client per round, as node_sync builds it: the connection outlives it
            assert _client(server.url, session=link).pull({"130926100201": 1}, {}) == {"acks": {}, "documents": []}
        assert server.connections == 1 and len(server.requests) == 3
        assert [sent for sent, _ in counted] == [len(r) for r in server.requests]  # head and body, exactly
        assert all(received == len(answer) for _, received in counted)
        first = server.requests[0].decode("latin-1")
        assert re.search(r"\r\nAccept-Encoding: [^\r]*gzip", first) and "\r\nLiandong-Auth: " in first
        assert link.open_connections() == 1
        link.close()
        assert link.open_connections() == 0
    finally:
        server.close()


def test_a_coded_request_asks_its_answer_in_its_own_coding():
    """With a Content-Encoding and no Accept-Encoding of the caller's, none is added: the body's
    coding stands for it (docs/sync-protocol.md §5.1.1); without either, every coding is listed."""
    server, link = RawServer(lambda request: _answer("200 OK", b"{}")), Transport()
    try:
        link.request("POST", server.url + "/sync/v1/pull", data=b"x", headers={"Content-Encoding": "gzip"})
        link.request("POST", server.url + "/sync/v1/pull", data=b"x", headers={})
        coded, plain = (r.decode("latin-1") for r in server.requests)
        assert "\r\nAccept-Encoding" not in coded and "\r\nContent-Encoding: gzip" in coded
        assert re.search(r"\r\nAccept-Encoding: [^\r]*gzip", plain)
    finally:
        link.close()
        server.close()


def test_a_kept_connection_the_parent_closed_while_idle_is_not_used():
    server = RawServer(lambda request: _answer("200 OK", b"{}"), close_after=1)  # hangs up after each answer
    link = Transport()
    try:
        for _ in range(3):
            time.sleep(0.1)  # the parent's close reaches this side
            assert _client(server.url, session=link).pull({}, {}) == {}
        assert server.connections == 3 and len(server.requests) == 3
    finally:
        link.close()
        server.close()


def test_trim_runs_when_the_last_request_in_flight_ends():
    calls: list[int] = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = memory.TrimWhenIdle(app, calls.append, idle_seconds=0)
    first = wrapped({}, lambda *a: None)
    second = wrapped({}, lambda *a: None)
    assert list(first) == [b"ok"] and len(first) == 1  # a one-item body keeps its length (Content-Length)
    first.close()
    assert calls == []  # another request is still in flight
    second.close()
    assert calls == [0]


def test_trim_waits_until_no_request_has_been_in_flight_for_a_while():
    """Requests back to back (a village's drain at its township) do not trim between them: a
    trim there gave back what the next file batch faults in again."""
    calls: list[float] = []
    trimmed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = memory.TrimWhenIdle(app, lambda pad: calls.append(time.monotonic()) or trimmed.set(), idle_seconds=0.3)
    started = time.monotonic()
    for _ in range(10):  # 10 requests over ~0.5 s, 50 ms apart
        time.sleep(0.05)
        wrapped({}, lambda *a: None).close()
    last = time.monotonic()  # the last request ended
    assert calls == []  # never 0.3 s without a request
    assert trimmed.wait(5)
    assert len(calls) == 1 and calls[0] - last >= 0.29 and calls[0] - started >= 0.8
    time.sleep(0.4)
    assert len(calls) == 1  # once per quiet spell


def test_the_memory_calls_are_no_ops_off_glibc(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    app = object()
    assert memory.trim_when_idle(app) is app
    assert memory.trim_free_memory() is False
    assert memory.limit_malloc_arenas(1) is False


def test_each_connection_has_its_tiers_page_cache(net):
    village, township = net.village(), net.township

    def cache(handle) -> int:
        conn = handle.app.extensions["liandong_db"].connect(handle.app)
        try:
            return conn.execute("PRAGMA cache_size").fetchone()[0]
        finally:
            conn.close()

    assert cache(village) == -512 and cache(township) == -2000  # SQLite's default at a township
    village.app.config["SQLITE_CACHE_KIB"] = 256
    try:
        assert cache(village) == -256
    finally:
        village.app.config["SQLITE_CACHE_KIB"] = None


SERVE = """
import json, sys, waitress
from provisioning import cli

seen = {}
cli.limit_malloc_arenas = lambda arenas: seen.setdefault("arenas", arenas) and False


def serve(app, **options):
    flask_app = app.app  # under TrimWhenIdle
    page = flask_app.test_client().get("/cases", headers={"Authorization": "Bearer " + sys.argv[2]})
    seen["page"] = page.status_code
    seen["round"] = flask_app.extensions["liandong_sync_now"](5)
    db = flask_app.extensions["liandong_db"]
    conn = db.connect(flask_app)
    seen["cache"] = conn.execute("PRAGMA cache_size").fetchone()[0]
    seen["modules"] = sorted(sys.modules)
    seen["inbuf_overflow"] = options["inbuf_overflow"]


waitress.serve = serve
cli.main(["node", "serve", "--data", sys.argv[1], "--port", "1"], standalone_mode=False)
print(json.dumps(seen))
"""

NOT_IN_A_VILLAGE = ("requests", "urllib3", "charset_normalizer", "city_hub", "township_node", "provisioning.demo",
                    "provisioning.sim", "provisioning.kit", "provisioning.catalog_cli", "segno")


def test_a_villages_serve_loads_no_second_http_stack_and_no_other_tiers_code(net):
    village = net.village()
    token = village.account("agent", "agent")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIANDONG_SYNC_INTERVAL_SECONDS": "3600"}
    env.pop("MALLOC_ARENA_MAX", None)
    run = subprocess.run([sys.executable, "-c", SERVE, str(village.data_dir), token], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["page"] == 200 and "error" not in seen["round"], seen["round"]  # a page and a round, really done
    loaded = [m for m in seen["modules"] if any(m == name or m.startswith(name + ".") for name in NOT_IN_A_VILLAGE)]
    assert loaded == []
    assert seen["arenas"] == 1 and seen["cache"] == -512
    # No body over waitress's 512 KiB kept in memory while it arrives: connections cannot fill
    # a village PC (a township or hub keeps a file batch of 4 MiB there, sync/tier.py).
    assert seen["inbuf_overflow"] == 512 * 1024 < TownshipTier.request_body_in_memory_bytes


def test_compiled_templates_are_kept_and_a_later_start_does_not_compile_them(net, monkeypatch):
    from village_node import create_app

    village = net.village()
    token = village.account("agent", "agent")
    assert village.app.test_client().get("/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    cache = village.data_dir / "cache" / "templates"
    assert any(cache.iterdir())
    if os.name == "posix":
        assert cache.stat().st_mode & 0o777 == 0o700
    again = create_app({"DATA_DIR": str(village.data_dir), "SCHEDULER_ENABLED": False})

    def no_compiling(*args, **kwargs):
        raise AssertionError("a template was compiled again")

    monkeypatch.setattr(again.jinja_env, "_parse", no_compiling)
    assert again.test_client().get("/cases", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("answer", [
    _answer("200 OK", gzip.compress(b"0" * 5000), extra="Content-Encoding: gzip\r\n"),  # small on the wire
    _answer("200 OK", b"[" + b"0," * 2500 + b"0]"),  # large as it is
])
def test_an_answer_larger_than_the_bound_is_refused(monkeypatch, answer):
    monkeypatch.setattr(transport_module, "MAX_ANSWER_BYTES", 4096)
    server, link = RawServer(lambda request: answer, close_after=1), Transport()
    try:
        with pytest.raises(SyncUnavailable, match="larger than 4096"):
            _client(server.url, session=link).pull({}, {})
    finally:
        link.close()
        server.close()
