"""Fault injection: link faults (dropped, lost, duplicated, truncated, delayed and reordered
requests) on the villages' session and in a proxy before the hub, and process faults (townships
offline or killed with SIGKILL, the hub killed once).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from provisioning.sim.processes import free_port
from sync.client import ParentClient
from sync.transport import Transport


@dataclass
class FaultPlan:
    """Probabilities of each fault on one HTTP exchange (at most one per exchange)."""

    drop_request: float = 0.04
    drop_response: float = 0.04
    duplicate: float = 0.04
    truncate: float = 0.03
    delay: float = 0.05
    reorder: float = 0.3
    max_delay: float = 0.4

    @classmethod
    def none(cls) -> FaultPlan:
        return cls(0, 0, 0, 0, 0, 0, 0)

    def pick(self, rng: random.Random) -> str | None:
        r = rng.random()
        for name in ("drop_request", "drop_response", "duplicate", "truncate", "delay"):
            p = getattr(self, name)
            if r < p:
                return name
            r -= p
        return None


class Stats:
    """Thread-safe counters of injected faults and events."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self) -> dict:
        with self._lock:
            return dict(sorted(self.counts.items()))


class FaultySession(Transport):
    """The client's own HTTP transport (sync/transport.py), injecting link faults around it."""

    def __init__(self, rng: random.Random, plan: FaultPlan, stats: Stats, enabled: Callable[[], bool]):
        super().__init__()
        self.rng = rng
        self.plan = plan
        self.stats = stats
        self.enabled = enabled
        self._lock = threading.Lock()

    def request(self, method, url, **kwargs):  # noqa: D102 - Transport's
        with self._lock:
            fault = self.plan.pick(self.rng) if self.enabled() else None
            delay = self.rng.uniform(0, self.plan.max_delay)
            truncate_request = self.rng.random() < 0.5
        if fault is None:
            return super().request(method, url, **kwargs)
        self.stats.add(f"link.{fault}")
        if fault == "drop_request":
            raise ConnectionError("sim: request dropped on the way")
        if fault == "delay":
            time.sleep(delay)
            return super().request(method, url, **kwargs)
        if fault == "truncate" and truncate_request and kwargs.get("data"):
            data = kwargs["data"]
            kwargs["data"] = data[: len(data) // 2]
            return super().request(method, url, **kwargs)
        if fault == "duplicate":
            # The network delivers the request twice, at the same time; the client sees one answer.
            twin = threading.Thread(target=_quiet_request, args=(method, url, dict(kwargs)), daemon=True)
            twin.start()
            response = super().request(method, url, **kwargs)
            twin.join(timeout=30)
            return response
        response = super().request(method, url, **kwargs)
        if fault == "drop_response":
            raise ConnectionError("sim: answer lost on the way back")
        response.content = response.content[: len(response.content) // 2]  # truncated answer
        return response


def _quiet_request(method: str, url: str, kwargs: dict) -> None:
    link = Transport()
    try:
        link.request(method, url, **kwargs)
    except OSError:
        pass
    finally:
        link.close()


class SimClient(ParentClient):
    """The node's real client, whose pushes are sometimes reordered on the way."""

    def __init__(self, *args, rng: random.Random, plan: FaultPlan, stats: Stats, enabled: Callable[[], bool], **kw):
        super().__init__(*args, **kw)
        self.rng, self.plan, self.stats, self.enabled = rng, plan, stats, enabled

    def push(self, documents: list[dict], compact: bool = False, elide: bool = False) -> dict:
        if self.enabled() and len(documents) > 1 and self.rng.random() < self.plan.reorder:
            documents = list(documents)
            self.rng.shuffle(documents)
            self.stats.add("link.reorder")
        return super().push(documents, compact=compact, elide=elide)  # links left out only where still in order


class _QuietHandler(WSGIRequestHandler):
    def log(self, type, message, *args):  # noqa: A002 - werkzeug's signature
        pass


class FaultProxy:
    """A loopback HTTP proxy in front of the hub: the townships' faulty uplink."""

    FORWARDED = ("content-type", "content-encoding", "x-liandong-node", "x-liandong-nonce", "x-liandong-signature")

    def __init__(self, target: str, plan: FaultPlan, seed: int, stats: Stats):
        self.target = target.rstrip("/")
        self.plan = plan
        self.rng = random.Random(seed)
        self.stats = stats
        self.enabled = False
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, self, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="liandong-sim-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path.rstrip("?")
        headers = {k: v for k, v in request.headers.items() if k.lower() in self.FORWARDED}
        with self._lock:
            fault = self.plan.pick(self.rng) if self.enabled else None
            delay = self.rng.uniform(0, self.plan.max_delay)
            truncate_request = self.rng.random() < 0.5
        if fault:
            self.stats.add(f"uplink.{fault}")
        broken = Response("sim: link broken", status=502, content_type="text/plain")
        if fault == "drop_request":
            return broken(environ, start_response)
        if fault == "delay":
            time.sleep(delay)
        if fault == "truncate" and truncate_request:
            body = body[: len(body) // 2]
        send = dict(method=request.method, url=self.target + uri, data=body, headers=headers, timeout=60)
        twin = None
        if fault == "duplicate":
            twin = threading.Thread(target=_quiet_request, args=(send.pop("method"), send.pop("url"), dict(send)),
                                    daemon=True)
            send = dict(method=request.method, url=self.target + uri, data=body, headers=headers, timeout=60)
            twin.start()
        try:
            upstream = requests.request(**send)
        except requests.RequestException:
            return broken(environ, start_response)
        finally:
            if twin is not None:
                twin.join(timeout=60)
        if fault == "drop_response":
            return broken(environ, start_response)
        content = upstream.content
        if fault == "truncate" and not truncate_request:
            content = content[: len(content) // 2]
        answer = Response(content, status=upstream.status_code,
                          content_type=upstream.headers.get("Content-Type", "application/json"))
        if "Accept-Encoding" in upstream.headers:  # which request codings the hub reads (sync-protocol §5.1.1)
            answer.headers["Accept-Encoding"] = upstream.headers["Accept-Encoding"]
        return answer(environ, start_response)


class ProcessFaults:
    """Process faults of the running county (a part of :class:`provisioning.sim.loop.Simulation`)."""

    def chaos(self) -> None:
        """Townships offline for long stretches and killed with SIGKILL mid-work; the hub killed once."""
        cfg = self.cfg
        rng = random.Random(cfg.seed * 131 + 3)
        creation = cfg.cases / cfg.case_rate
        next_kill = self.elapsed() + max(1.0, creation * 0.3)
        next_offline = self.elapsed() + max(0.5, creation * 0.15)
        hub_kill_at = self.elapsed() + max(2.0, creation * 0.65) if cfg.kill_hub else None
        returns: list[tuple[float, str]] = []
        while not self.stop.is_set():
            now = self.elapsed()
            for when, tid in list(returns):
                if now >= when:
                    returns.remove((when, tid))
                    self._restart(tid)
            up = [t for t in self.townships if t not in self.down]
            if self.calm:
                pass
            elif now >= next_offline and len(up) > 1:
                tid = rng.choice(up)
                self.down.add(tid)
                self.townships[tid].signal(signal.SIGTERM)
                self.stats.add("township.offline")
                stretch = cfg.offline_seconds * rng.uniform(0.7, 1.3)
                returns.append((now + stretch, tid))
                self.say(f"township {tid} goes offline for {stretch:.0f}s")
                next_offline = now + cfg.offline_every * rng.uniform(0.7, 1.3)
            elif now >= next_kill and up:
                tid = rng.choice(up)
                self.down.add(tid)
                self.townships[tid].signal(signal.SIGKILL)
                self.stats.add("township.sigkill")
                returns.append((now + rng.uniform(0.3, 2.0), tid))
                self.say(f"township {tid} killed with SIGKILL")
                next_kill = now + (cfg.kill_every * rng.uniform(0.7, 1.3) if cfg.kill_every > 0 else 1e12)
            if hub_kill_at is not None and now >= hub_kill_at:
                hub_kill_at = None
                self.hub.signal(signal.SIGKILL)
                self.stats.add("hub.sigkill")
                self.say("hub killed with SIGKILL")
                self.stop.wait(rng.uniform(0.5, 2.0))
                self._restart_hub()
            self.stop.wait(0.1)
        for _, tid in returns:
            self._restart(tid)

    def _restart(self, tid: str) -> None:
        try:
            self.townships[tid].start()
            self.say(f"township {tid} back")
        except RuntimeError as exc:
            self.errors.append(f"restart {tid}: {exc}")
            self.townships[tid].proc = None
            try:
                self.townships[tid].start()
            except RuntimeError as again:
                self.errors.append(f"restart {tid} again: {again}")
        self.down.discard(tid)

    def _restart_hub(self) -> None:
        for _ in range(3):
            try:
                self.hub.start()
                self.say("hub back")
                return
            except RuntimeError as exc:
                self.errors.append(f"restart hub: {exc}")
                self.hub.proc = None
