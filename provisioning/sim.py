"""``liandong sim``: a whole county on loopback, with faults, and a count of what got through.

The hub and every township are real ``liandong node serve`` processes (waitress, their own
SQLite files, townships syncing to the hub with their own scheduler); villages live in this
process, each with its own data folder, key, SQLite file and :class:`shared.node.Node`, and
their sync rounds are the real :func:`sync.node_sync.run_round`, driven by a scheduler loop.
Every node is enrolled through the real flow (tokens at the hub, ``enrol_node`` over HTTP).

Faults, all drawn from one seeded RNG per link:

- village → township: a ``requests`` session that drops requests, loses responses (the
  server did the work, the client never hears), delivers requests twice (concurrently),
  truncates request or response bodies and delays; pushes are shuffled (reordered);
- township → hub: the same faults, in a loopback proxy the townships use as their parent;
- townships taken offline for long stretches, townships and the hub killed with SIGKILL
  while they work, then restarted;
- villages whose PC clock is days ahead or behind;
- a forged envelope (unenrolled key; a real key claiming another origin), replayed envelopes
  and a replayed HTTP request, and a village revoked mid-run that keeps taking cases.

At the end the faults stop, rounds run until nothing moves (bounded), and the county is
counted. The last line printed is a JSON summary; the exit status is non-zero if any case
was lost or duplicated, or anything forged, replayed or revoked was accepted.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import click
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from shared import canonical, intake, storage
from shared.catalog import DEPARTMENTS, load_seed
from shared.clock import Clock, iso
from shared.crypto import SigningKey
from shared.idcard import id_check_char
from shared.node import Node
from shared.settings import DEFAULTS
from sync import envelope
from sync.client import ParentClient
from sync.node_sync import SyncState, run_round
from sync.nodeauth import sign_request

from . import nodes
from .enrolment import create_token

HUB_ID = "130926"
DECIDED = ("APPROVED", "DENIED", "NOT_ACCEPTED")
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"
TEXTS = ("肃宁县肃宁镇东关村", "河北省沧州市肃宁县", "家庭经营", "因病致贫", "杨树", "播种机")


# ------------------------------------------------------------------ configuration


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


@dataclass
class SimConfig:
    """One run of the county simulation."""

    townships: int = 9
    villages: int = 253
    cases: int = 1000
    seed: int = 1
    data_dir: Path | None = None
    faults: bool = True
    kill_every: float = 20.0
    offline_every: float = 30.0
    offline_seconds: float = 12.0
    kill_hub: bool = True
    rate: float | None = None
    quiesce_seconds: float = 240.0
    progress_every: float = 5.0
    workers: int = 6
    #: Every node's clock starts here and runs ``clock_speed`` times faster (days of work in minutes).
    clock_start: str | None = None
    clock_speed: float = 1.0
    #: Test hook: silently drop one envelope from a village's outbox before it is sent (a fault
    #: the system cannot recover from; the sim must report it as lost).
    sabotage_outbox: bool = False

    @property
    def case_rate(self) -> float:
        if self.rate:
            return self.rate
        return max(8.0, min(15.0, self.villages / 20))


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


# ------------------------------------------------------------------ fault injection


class FaultySession(requests.Session):
    """A ``requests`` session that injects link faults before handing the request on."""

    def __init__(self, rng: random.Random, plan: FaultPlan, stats: Stats, enabled: Callable[[], bool]):
        super().__init__()
        self.rng = rng
        self.plan = plan
        self.stats = stats
        self.enabled = enabled
        self._lock = threading.Lock()

    def request(self, method, url, **kwargs):  # noqa: D102 - requests' signature
        with self._lock:
            fault = self.plan.pick(self.rng) if self.enabled() else None
            delay = self.rng.uniform(0, self.plan.max_delay)
            truncate_request = self.rng.random() < 0.5
        if fault is None:
            return super().request(method, url, **kwargs)
        self.stats.add(f"link.{fault}")
        if fault == "drop_request":
            raise requests.ConnectionError("sim: request dropped on the way")
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
            response.close()
            raise requests.ConnectionError("sim: answer lost on the way back")
        response._content = response.content[: len(response.content) // 2]  # truncated answer
        return response


def _quiet_request(method: str, url: str, kwargs: dict) -> None:
    try:
        requests.request(method, url, **kwargs).close()
    except requests.RequestException:
        pass


class SimClient(ParentClient):
    """The node's real client, whose pushes are sometimes reordered on the way."""

    def __init__(self, *args, rng: random.Random, plan: FaultPlan, stats: Stats, enabled: Callable[[], bool], **kw):
        super().__init__(*args, **kw)
        self.rng, self.plan, self.stats, self.enabled = rng, plan, stats, enabled

    def push(self, documents: list[dict]) -> dict:
        if self.enabled() and len(documents) > 1 and self.rng.random() < self.plan.reorder:
            documents = list(documents)
            self.rng.shuffle(documents)
            self.stats.add("link.reorder")
        return super().push(documents)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type, message, *args):  # noqa: A002 - werkzeug's signature
        pass


class FaultProxy:
    """A loopback HTTP proxy in front of the hub: the townships' faulty uplink."""

    FORWARDED = ("content-type", "x-liandong-node", "x-liandong-nonce", "x-liandong-signature")

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
        return answer(environ, start_response)


# ------------------------------------------------------------------ processes and nodes


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeProcess:
    """A hub or township served by ``liandong node serve`` in its own process."""

    def __init__(self, node_id: str, data_dir: Path, port: int, env: dict):
        self.node_id = node_id
        self.data_dir = data_dir
        self.port = port
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: float = 60.0) -> None:
        if self.running:
            return
        if self._log is None:
            self._log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(self.data_dir),
             "--port", str(self.port)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.proc.returncode}; see {self.data_dir}/serve.log")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.node_id} did not come up on {self.url}")

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def close(self) -> None:
        self.signal(signal.SIGTERM)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Village:
    """One village room, in this process."""

    node_id: str
    township_id: str
    data_dir: Path
    node: Node
    conn: object
    client: SimClient
    items: list[dict]
    skew_days: int = 0
    state: SyncState = field(default_factory=SyncState)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_sync: float = 0.0
    busy: bool = False


def _id_number(rng: random.Random) -> str:
    born = date(1940, 1, 1) + timedelta(days=rng.randint(0, 24000))
    first17 = f"{HUB_ID}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return first17 + id_check_char(first17)


def _phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randint(0, 999_999_999):09d}"


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))


def form_for(item: dict, rng: random.Random) -> dict:
    """Valid random values for an item's form."""
    form = {}
    for f in item["fields"]:
        if not f["required"] and rng.random() < 0.5:
            continue
        if f["type"] == "select":
            form[f["name"]] = rng.choice(f["options"])
        elif f["type"] == "number":
            low = int(f.get("min", 0))
            form[f["name"]] = rng.randint(low, int(f.get("max", low + 5000)))
        elif f["type"] == "date":
            form[f["name"]] = (date(2026, 1, 1) + timedelta(days=rng.randint(0, 364))).isoformat()
        elif f.get("format") == "id_number":
            form[f["name"]] = _id_number(rng)
        elif f.get("format") == "phone":
            form[f["name"]] = _phone(rng)
        elif f["name"].endswith("name"):
            form[f["name"]] = _name(rng)[: f.get("max", 20)]
        else:
            form[f["name"]] = rng.choice(TEXTS)[: f.get("max", 50)]
    return form


# ------------------------------------------------------------------ the simulation


class Simulation:
    """Build a county, run it under faults, count."""

    def __init__(self, config: SimConfig, echo: Callable[[str], None] = print):
        self.cfg = config
        self.clock = Clock.from_settings(config.clock_start, config.clock_speed)
        self.echo = echo
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.plan = FaultPlan() if config.faults else FaultPlan.none()
        self.faults_on = False
        self.root: Path = Path()
        self.hub: NodeProcess | None = None
        self.proxy: FaultProxy | None = None
        self.townships: dict[str, NodeProcess] = {}
        self.villages: dict[str, Village] = {}
        self.hub_tokens: dict[str, str] = {}  # office -> API token of its window account
        self.clerk_tokens: dict[str, str] = {}  # township -> API token of its clerk
        self.created: dict[str, str] = {}  # case_id -> origin (cases that must reach the hub)
        self.after_revocation: dict[str, str] = {}  # case_id -> origin (must never be accepted)
        self.sabotaged: list[str] = []
        self.forged_ids: set[str] = set()
        self.forged_cases: set[str] = set()
        self.replayed_accepted = 0
        self.replayed_sent = 0
        self.revoking: str | None = None
        self.calm = False  # no new process faults (townships come back as their stretch ends)
        self.revoked: str | None = None
        self.down: set[str] = set()  # townships currently offline or killed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.errors: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        self.echo(f"[{self.elapsed():7.1f}s] {message}")

    # -------------------------------------------------------------- building

    def build(self, root: Path) -> None:
        cfg = self.cfg
        self.root = root
        hub_dir = root / HUB_ID
        port = free_port()
        nodes.init_hub(hub_dir, HUB_ID, "肃宁县政务服务中心(模拟)", f"http://127.0.0.1:{port}", self.clock)
        departments = sorted({i["department_code"] for i in load_seed() if i["decide_level"] == "city"})
        for code in departments:
            office = f"{HUB_ID}-{code}"
            self.hub_tokens[office] = nodes.add_account(hub_dir, f"{code}_window", "sim-password-1", "window",
                                                        f"{DEPARTMENTS.get(code, code)}窗口", office)
        base_env = {**os.environ, "PYTHONUNBUFFERED": "1", "LIANDONG_SCHEDULER_ENABLED": "true",
                    "LIANDONG_SYNC_INTERVAL_SECONDS": "1", "LIANDONG_SYNC_BACKOFF_MAX_SECONDS": "3",
                    "LIANDONG_SYNC_TIMEOUT_SECONDS": "20"}
        base_env.pop("LIANDONG_DATA_DIR", None)
        if self.cfg.clock_start:
            base_env.update(LIANDONG_CLOCK_START=self.cfg.clock_start, LIANDONG_CLOCK_SPEED=str(self.cfg.clock_speed))
        self.hub = NodeProcess(HUB_ID, hub_dir, port, base_env)
        self.hub.start()
        self.say(f"hub {HUB_ID} up at {self.hub.url}")
        if cfg.faults:
            self.proxy = FaultProxy(self.hub.url, self.plan, cfg.seed * 7919 + 1, self.stats)
            self.proxy.start()
        uplink = self.proxy.url if self.proxy else self.hub.url
        for t in range(cfg.townships):
            tid = f"{HUB_ID}{100 + t:03d}"
            tdir = root / tid
            tport = free_port()
            token = self._token(tid, f"模拟第{t + 1}镇便民服务站")
            nodes.enrol_node(tdir, token, self.hub.url, f"模拟第{t + 1}镇便民服务站", f"http://127.0.0.1:{tport}",
                             clock=self.clock)
            self.clerk_tokens[tid] = nodes.add_account(tdir, "clerk", "sim-password-1", "clerk", "便民服务站站员", tid)
            proc = NodeProcess(tid, tdir, tport, {**base_env, "LIANDONG_PARENT_URL": uplink})
            proc.start()
            self.townships[tid] = proc
        self.say(f"{cfg.townships} townships enrolled and serving")
        plan: list[tuple[str, str]] = []
        tids = list(self.townships)
        for i in range(cfg.villages):
            tid = tids[i % len(tids)]
            plan.append((f"{tid}{201 + i // len(tids):03d}", tid))
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda p: self._enrol_village(*p), plan))
        skewed = self.rng.sample(sorted(self.villages), k=min(2, len(self.villages)))
        for vid, days in zip(skewed, (3, -2), strict=False):
            self._set_skew(self.villages[vid], days)
        self._wait_registry()
        self.say(f"{len(self.villages)} villages enrolled; skewed clocks: "
                 + ", ".join(f"{v} ({self.villages[v].skew_days:+d} d)" for v in skewed))

    def _token(self, node_id: str, name: str) -> str:
        conn = nodes.open_db(self.hub.data_dir, "hub")
        try:
            with storage.write_transaction(conn):
                return create_token(conn, node_id, name, None, timedelta(hours=2), Clock().now(), "sim")
        finally:
            conn.close()

    def _enrol_village(self, vid: str, tid: str) -> None:
        vdir = self.root / vid
        name = f"模拟村{vid[-3:]}便民服务室"
        for attempt in range(5):
            token = self._token(vid, name)
            try:
                nodes.enrol_node(vdir, token, self.townships[tid].url, name, clock=self.clock)
                break
            except nodes.ProvisioningError:
                if attempt == 4:
                    raise
                shutil.rmtree(vdir, ignore_errors=True)
                time.sleep(0.5)
        village = self._open_village(vid, tid, 0)
        with self.lock:
            self.villages[vid] = village

    def _open_village(self, vid: str, tid: str, skew_days: int) -> Village:
        vdir = self.root / vid
        overrides = {"SYNC_BACKOFF_MAX_SECONDS": 4, "SYNC_TIMEOUT_SECONDS": 20}
        if self.cfg.clock_start:
            overrides.update(CLOCK_START=self.cfg.clock_start, CLOCK_SPEED=self.cfg.clock_speed)
        if skew_days:
            base = Clock.from_settings(self.cfg.clock_start, self.cfg.clock_speed).now()
            overrides["CLOCK_START"] = iso(base + timedelta(days=skew_days))
        config = {**DEFAULTS, **nodes.read_config(vdir), **overrides}
        node = Node(config, vdir)
        conn = nodes.open_db(vdir, "village")
        seed = hash((self.cfg.seed, vid)) & 0xFFFFFFFF
        session = FaultySession(random.Random(seed), self.plan, self.stats, lambda: self.faults_on)
        client = SimClient(config["PARENT_URL"], config["PARENT_ID"], vid, node.key, node.nonces,
                           timeout=float(config["SYNC_TIMEOUT_SECONDS"]), session=session,
                           rng=random.Random(seed + 1), plan=self.plan, stats=self.stats,
                           enabled=lambda: self.faults_on)
        _, catalog = intake.catalog_items(conn)
        items = [i for i in catalog.values() if "village" in i["accept_levels"] and not i.get("consultation_only")]
        return Village(vid, tid, vdir, node, conn, client, sorted(items, key=lambda i: i["code"]), skew_days)

    def _set_skew(self, village: Village, days: int) -> None:
        village.client.session.close()
        village.conn.close()
        self.villages[village.node_id] = self._open_village(village.node_id, village.township_id, days)

    def _wait_registry(self, seconds: float = 120.0) -> None:
        """Every township serves only villages its registry lists: wait until all know all."""
        hub_conn = nodes.open_db(self.hub.data_dir, "hub")
        try:
            wanted = hub_conn.execute("SELECT MAX(version) FROM metadata WHERE role = 'registry'").fetchone()[0]
        finally:
            hub_conn.close()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            versions = [self._scalar(t.data_dir, "SELECT version FROM trusted_metadata WHERE role = 'registry'")
                        for t in self.townships.values()]
            if all(v is not None and v >= wanted for v in versions):
                return
            time.sleep(0.3)
        raise RuntimeError("townships did not learn the registry in time")

    def _scalar(self, data_dir: Path, sql: str, params: tuple = ()):
        conn = storage.connect(data_dir / "node.sqlite3")
        try:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]
        finally:
            conn.close()

    # -------------------------------------------------------------- cases and rounds

    def create_case(self, village: Village, record: dict[str, str] | None = None) -> str | None:
        rng = self.rng
        item = rng.choice(village.items)
        payload = {
            "item_code": item["code"],
            "applicant": {"name": _name(rng), "id_number": _id_number(rng), "phone": _phone(rng)},
            "form": form_for(item, rng),
        }
        files = []
        if item["materials"] and rng.random() < 0.3:
            material = rng.choice(item["materials"])
            # Some files are the same bytes (a shared form scan): content addressing dedups them.
            data = b"sim-shared-scan" * 50 if rng.random() < 0.2 else rng.randbytes(rng.randint(200, 6000))
            data = b"\xff\xd8\xff\xe0" + data  # a JPEG by its first bytes: materials are checked by content
            files.append((material["code"], f"{material['code']}.jpg", data))
        with village.lock:
            try:
                receipt = intake.submit(village.conn, village.node, payload, files, "sim-agent")
            except Exception as exc:  # a refusal at the window (e.g. the node knows it is revoked)
                self.stats.add("intake.refused")
                self.errors.append(f"intake at {village.node_id}: {exc}")
                return None
            if self.cfg.sabotage_outbox and not self.sabotaged and record is None:
                self._sabotage(village)
                self.sabotaged.append(receipt["case_id"])
        (self.created if record is None else record)[receipt["case_id"]] = village.node_id
        village.next_sync = min(village.next_sync, time.monotonic() + 0.3)
        return receipt["case_id"]

    def _sabotage(self, village: Village) -> None:
        """Drop the newest envelope before it was ever sent, as a buggy node would."""
        conn = village.conn
        with storage.write_transaction(conn):
            row = conn.execute("SELECT seq, prev FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()
            conn.execute("DELETE FROM outbox WHERE seq = ?", (row["seq"],))
            conn.execute("UPDATE node_meta SET value = ? WHERE key = 'outbox_seq'", (str(row["seq"] - 1),))
            conn.execute("UPDATE node_meta SET value = ? WHERE key = 'outbox_head'", (row["prev"],))
        self.say(f"SABOTAGE: dropped envelope {row['seq']} of {village.node_id} before it was sent")

    def village_round(self, village: Village) -> None:
        started = time.monotonic()
        try:
            with village.lock:
                result = run_round(village.conn, village.node, village.state, village.client, force=True)
                pending = village.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]
                waiting = village.conn.execute(
                    f"SELECT COUNT(*) FROM cases WHERE status NOT IN ({','.join('?' * len(DECIDED))})", DECIDED
                ).fetchone()[0]
            self.stats.add("rounds")
            now = time.monotonic()
            if now - started > 3:
                self.stats.add("rounds.slow")
            if "error" in result:
                self.stats.add("rounds.failed")
                village.next_sync = max(village.state.next_attempt, now + 0.2)
            elif pending or waiting:
                village.next_sync = now + self.rng.uniform(1.0, 2.5)
            else:
                village.next_sync = now + self.rng.uniform(6.0, 12.0)
        except Exception as exc:  # a bug in a round: counted and shown, the county goes on
            self.stats.add("rounds.crashed")
            self.errors.append(f"round at {village.node_id}: {type(exc).__name__}: {exc}")
            village.next_sync = time.monotonic() + 2.0
        finally:
            village.busy = False

    def schedule_rounds(self, pool: ThreadPoolExecutor, limit: int) -> None:
        now = time.monotonic()
        due = [v for v in self.villages.values() if not v.busy and v.next_sync <= now and v.node_id != self.revoked]
        # (the village about to be revoked keeps syncing: its queue must drain first)
        inflight = sum(1 for v in self.villages.values() if v.busy)
        due.sort(key=lambda v: v.next_sync)
        for village in due[: max(0, limit - inflight)]:
            village.busy = True
            pool.submit(self.village_round, village)

    def wait_idle(self, village: Village, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while village.busy and time.monotonic() < deadline:
            time.sleep(0.02)

    # -------------------------------------------------------------- deciding offices

    def approver(self) -> None:
        """Hub windows and township clerks take and decide what reaches them, over HTTP."""
        rng = random.Random(self.cfg.seed * 31 + 7)
        while not self.stop.is_set():
            try:
                self._decide_at(self.hub, "city", lambda row: self.hub_tokens.get(row["route_office"]), rng)
                for tid, proc in self.townships.items():
                    if proc.running and tid not in self.down:
                        self._decide_at(proc, "township", lambda row, tid=tid: self.clerk_tokens[tid], rng)
            except Exception as exc:  # noqa: BLE001 - keep deciding; a node may be down right now
                self.stats.add("approver.retry")
                if not isinstance(exc, (requests.RequestException, OSError)):
                    self.errors.append(f"approver: {type(exc).__name__}: {exc}")
            self.stop.wait(0.3)

    def _decide_at(self, proc: NodeProcess, level: str, token_for, rng: random.Random) -> None:
        conn = storage.connect(proc.data_dir / "node.sqlite3")
        try:
            rows = conn.execute(
                "SELECT case_id, status, route_office FROM cases WHERE route_level = ? AND status IN"
                " ('RECEIVED', 'ACCEPTED') ORDER BY updated_at LIMIT 40", (level,)).fetchall()
        finally:
            conn.close()
        for row in rows:
            if self.stop.is_set() or not proc.running:
                return
            token = token_for(row)
            if token is None:
                continue
            if row["status"] == "RECEIVED":
                body = {"action": "accept"}
            elif rng.random() < 0.8:
                body = {"action": "approve", "comment": "材料齐全，符合条件"}
            else:
                body = {"action": "deny", "comment": "经审查不符合申请条件"}
            response = requests.post(f"{proc.url}/api/v1/cases/{row['case_id']}/actions", json=body,
                                     headers={"Authorization": f"Bearer {token}"}, timeout=20)
            self.stats.add(f"decide.{body['action']}" if response.status_code == 200 else "decide.refused")

    # -------------------------------------------------------------- process faults

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

    # -------------------------------------------------------------- attacks

    def _direct_client(self, village: Village, base_url: str, server_id: str) -> ParentClient:
        """The village's own key, talking straight to ``base_url`` (an attacker on the path has it)."""
        return ParentClient(base_url, server_id, village.node_id, village.node.key, village.node.nonces, timeout=20)

    def forge(self) -> None:
        """Envelopes the county must refuse: an unenrolled key; a real key claiming another origin."""
        villages = [v for v in self.villages.values() if v.node_id != self.revoked]
        signer = self.rng.choice([v for v in villages if v.township_id not in self.down] or villages)
        target = self.rng.choice([v for v in villages if v is not signer])
        hub_head = self._hub_head(target.node_id)
        forged = []
        for key, claimed_origin in ((SigningKey.generate(), target.node_id), (signer.node.key, target.node_id)):
            case_id = os.urandom(16).hex()
            body = {"case_id": case_id, "receipt_no": f"{claimed_origin}-forged", "item_code": target.items[0]["code"],
                    "item_name": target.items[0]["name"], "catalog_version": 1, "limit_wd": 1,
                    "route": {"level": "city", "office": f"{HUB_ID}-rs"},
                    "applicant": {"name": "冒名", "id_number": _id_number(self.rng), "phone": _phone(self.rng)},
                    "form": {}, "materials": [], "agent": "forger", "submitted_at": iso(Clock().now())}
            document = envelope.sign(key, envelope.ENVELOPE, {
                "v": 1, "origin": claimed_origin, "seq": hub_head + 1, "prev": "0" * 64, "hlc": _hlc_now(), "kind": "case.submit", "body": body, "attachments": []})
            forged.append(document)
            self.forged_ids.add(envelope.document_id(document))
            self.forged_cases.add(case_id)
        for document in forged:
            for base_url, server_id in ((self.hub.url, HUB_ID),
                                        (self.townships[signer.township_id].url, signer.township_id)):
                try:
                    answer = self._direct_client(signer, base_url, server_id).push([document])
                    status = answer.get("results", [{}])[0].get("status")
                except Exception as exc:  # noqa: BLE001 - a refusal at the door is what we want
                    status = f"refused ({str(exc)[:60]})"
                self.stats.add("forged.sent")
                self.say(f"forged envelope for {target.node_id} pushed to {server_id}: {status}")

    def replay(self) -> bool:
        """Old envelopes pushed again, and a captured HTTP request sent a second time."""
        candidates = [v for v in self.villages.values() if v.node_id != self.revoked]
        self.rng.shuffle(candidates)
        done = 0
        for village in candidates:
            with village.lock:
                rows = village.conn.execute(
                    "SELECT seq, document FROM outbox WHERE state = 'acked' ORDER BY seq LIMIT 2").fetchall()
            if not rows:
                continue
            old = [envelope.from_bytes(r["document"]) for r in rows]
            try:
                answer = self._direct_client(village, self.hub.url, HUB_ID).push(old)
                statuses = [r.get("status") for r in answer.get("results", [])]
            except Exception as exc:  # noqa: BLE001
                statuses = [f"refused ({str(exc)[:60]})"]
            self.replayed_sent += len(old)
            # An acknowledged envelope must come back as a duplicate (or be refused), never be taken again.
            self.replayed_accepted += statuses.count("accepted") + statuses.count("held")
            self.say(f"replayed {len(old)} acknowledged envelopes of {village.node_id} to the hub: {statuses}")
            # A captured request, byte for byte, sent again: the nonce must refuse it.
            for base_url, server_id in ((self.hub.url, HUB_ID),
                                        (self.townships[village.township_id].url, village.township_id)):
                body = canonical.dumps({"envelopes": old[:1]})
                headers = sign_request(village.node.key, village.node_id, server_id, "POST", "/sync/v1/push", body,
                                       village.node.nonces.next())
                headers["Content-Type"] = "application/json"
                try:
                    first = requests.post(base_url + "/sync/v1/push", data=body, headers=headers, timeout=20)
                    again = requests.post(base_url + "/sync/v1/push", data=body, headers=headers, timeout=20)
                except requests.RequestException as exc:
                    self.say(f"request replay to {server_id} not tried: {exc}")
                    continue
                self.replayed_sent += 1
                if 200 <= again.status_code < 300:
                    self.replayed_accepted += 1
                self.say(f"captured request replayed to {server_id}: first {first.status_code}, again {again.status_code}")
            done += 1
            if done >= 2:
                break
        return done > 0

    def choose_revoked(self) -> None:
        """Pick the village to revoke: it takes no new cases until its queue is drained."""
        candidates = sorted(v for v in self.villages if self.villages[v].skew_days == 0)
        reachable = [v for v in candidates if self.villages[v].township_id not in self.down]
        self.revoking = self.rng.choice(reachable or candidates)
        self.say(f"village {self.revoking} will be revoked once the hub holds its queue")

    def maybe_revoke(self) -> None:
        """Revoke the chosen village at the hub as soon as everything it sent is acknowledged."""
        from .lifecycle import revoke

        if self.revoking is None or self.revoked is not None:
            return
        village = self.villages[self.revoking]
        if village.busy or not village.lock.acquire(blocking=False):
            return
        try:
            if village.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]:
                return
            hub_dir = self.hub.data_dir
            conn = nodes.open_db(hub_dir, "hub")
            try:
                with storage.write_transaction(conn):
                    result = revoke(conn, nodes.node_for(hub_dir), village.node_id, None, "sim")
            finally:
                conn.close()
            self.revoked = village.node_id  # no more scheduled rounds for it
        finally:
            village.lock.release()
        self.stats.add("revoked")
        self.say(f"village {village.node_id} revoked after seq {result['revoked_after_seq']}; it keeps taking cases")

    def revoked_village_works_on(self, count: int) -> None:
        """The revoked PC takes more cases and tries to send them (it must be refused)."""
        village = self.villages[self.revoked]
        while len(self.after_revocation) < count:
            self.create_case(village, record=self.after_revocation)
        for _ in range(3):
            with village.lock:
                run_round(village.conn, village.node, SyncState(), village.client, force=True)

    # -------------------------------------------------------------- counting

    def diagnose(self, vid: str) -> str:
        """Where each unacknowledged envelope of a village is: village, township custody, hub."""
        village = self.villages[vid]
        with village.lock:
            rows = village.conn.execute(
                "SELECT seq, envelope_id, state FROM outbox WHERE state != 'acked' ORDER BY seq").fetchall()
        township = self.townships[village.township_id].data_dir
        parts = [f"last error {village.state.last_error!r}"]
        for r in rows[:5]:
            custody = self._scalar(township, "SELECT COUNT(*) FROM custody WHERE envelope_id = ?", (r["envelope_id"],))
            inbox = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM inbox WHERE envelope_id = ?", (r["envelope_id"],))
            held = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM held WHERE envelope_id = ?", (r["envelope_id"],))
            ack = self._scalar(self.hub.data_dir, "SELECT acked_seq FROM origin_heads WHERE origin = ?", (vid,))
            parts.append(f"seq {r['seq']} {r['state']}: custody {custody}, hub inbox {inbox}, held {held}, hub ack {ack}")
        return "; ".join(parts)

    def _hub_head(self, origin: str) -> int:
        return self._scalar(self.hub.data_dir, "SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE origin = ?", (origin,))

    def _hub_inbox_count(self, origin: str) -> int:
        return self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM inbox WHERE origin = ?", (origin,))

    def progress(self) -> None:
        at_hub = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM cases")
        decided = self._scalar(self.hub.data_dir,
                               "SELECT COUNT(*) FROM cases WHERE status IN ('APPROVED','DENIED','NOT_ACCEPTED')")
        pending = sum(v.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]
                      for v in self.villages.values())
        down = ",".join(sorted(self.down)) or "-"
        self.say(f"created {len(self.created) + len(self.after_revocation)}/{self.cfg.cases}  at hub {at_hub}"
                 f"  decided {decided}  village unacked {pending}  down {down}  {self.stats.snapshot()}")

    def waiting_for(self) -> str | None:
        """What the county is still waiting for (None: quiescent): nothing queued anywhere,
        nothing undecided, every decision back at its village."""
        for v in self.villages.values():
            if v.node_id == self.revoked:
                continue
            with v.lock:
                n = v.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]
            if n:
                return f"{n} unacknowledged envelopes at {v.node_id} ({v.state.last_error or 'no error'})"
        for t in self.townships.values():
            # Envelopes of the revoked node that a township took before it learnt of the revocation
            # are refused by the hub and never acknowledged: counted apart (``custody_stuck``).
            n = self._scalar(t.data_dir, "SELECT COUNT(*) FROM custody WHERE origin IS NOT ?", (self.revoked,))
            if n:
                return f"{n} envelopes in custody at {t.node_id}"
            n = self._scalar(t.data_dir, "SELECT COUNT(*) FROM outbox WHERE state != 'acked'")
            if n:
                return f"{n} unacknowledged envelopes of {t.node_id} itself"
        counts = self.count()
        if counts["cases_at_hub"] != len(self.created):
            return f"{len(self.created) - counts['cases_at_hub']} cases not at the hub"
        if counts["undecided"]:
            return f"{counts['undecided']} cases not decided yet"
        if counts["decisions_missing"]:
            return f"{counts['decisions_missing']} decisions not back at their village"
        return None

    def count(self) -> dict:
        hub = storage.connect(self.hub.data_dir / "node.sqlite3")
        try:
            hub_cases = {r["case_id"]: dict(r) for r in hub.execute(
                "SELECT case_id, origin, status, decision, route_level, receipt_no FROM cases")}
            submits = Counter()
            inbox_ids = set()
            for r in hub.execute("SELECT envelope_id, kind, document FROM inbox"):
                inbox_ids.add(r["envelope_id"])
                if r["kind"] == "case.submit":
                    submits[envelope.peek(envelope.from_bytes(r["document"]))["body"]["case_id"]] += 1
            revoked_after = None
            if self.revoked:
                revoked_after = hub.execute("SELECT revoked_after_seq FROM nodes WHERE node_id = ?",
                                            (self.revoked,)).fetchone()[0]
                revoked_inbox = hub.execute("SELECT COUNT(*) FROM inbox WHERE origin = ? AND seq > ?",
                                            (self.revoked, revoked_after)).fetchone()[0]
            else:
                revoked_inbox = 0
            quarantine = dict(hub.execute(
                "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason").fetchall())
        finally:
            hub.close()
        decisions: dict[str, dict] = {}  # case_id -> decision at the deciding node
        undecided = 0
        for cid, row in hub_cases.items():
            if row["route_level"] == "city" and cid in self.created:
                if row["decision"]:
                    decisions[cid] = json.loads(row["decision"])
                elif row["status"] not in DECIDED and row["origin"] != self.revoked:
                    undecided += 1
        for t in self.townships.values():
            conn = storage.connect(t.data_dir / "node.sqlite3")
            try:
                for r in conn.execute("SELECT case_id, status, decision, origin FROM cases WHERE route_level = 'township'"):
                    if r["case_id"] not in self.created:
                        continue
                    if r["decision"]:
                        decisions[r["case_id"]] = json.loads(r["decision"])
                    elif r["origin"] != self.revoked:
                        undecided += 1
            finally:
                conn.close()
        returned = missing = repeated = 0
        for v in self.villages.values():
            if v.node_id == self.revoked:
                continue
            with v.lock:
                rows = v.conn.execute("SELECT case_id, decision FROM cases").fetchall()
                repeated += v.conn.execute(
                    "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM case_events"
                    " WHERE action IN ('approve', 'deny', 'reject') GROUP BY case_id)").fetchone()[0]
            for r in rows:
                if r["case_id"] not in decisions:
                    continue
                back = json.loads(r["decision"]) if r["decision"] else None
                if back is not None and back.get("result") == decisions[r["case_id"]].get("result"):
                    returned += 1
                else:
                    missing += 1
        custody_stuck = sum(self._scalar(t.data_dir, "SELECT COUNT(*) FROM custody") for t in self.townships.values())
        expected = set(self.created)
        at_hub = expected & set(hub_cases)
        unknown = set(hub_cases) - expected - set(self.after_revocation) - self.forged_cases
        duplicated = sum(n - 1 for n in submits.values() if n > 1) + repeated + len(unknown)
        skewed = {v.node_id for v in self.villages.values() if v.skew_days}
        return {
            "cases_created": len(self.created) + len(self.after_revocation),
            "cases_at_hub": len(at_hub),
            "lost": len(expected - at_hub),
            "duplicated": duplicated,
            "decisions_made": len(decisions),
            "decisions_returned": returned,
            "decisions_missing": missing,
            "undecided": undecided,
            "forged_sent": self.stats.snapshot().get("forged.sent", 0),
            "forged_accepted": len(self.forged_ids & inbox_ids) + len(self.forged_cases & set(hub_cases)),
            "replayed_sent": self.replayed_sent,
            "replayed_accepted": self.replayed_accepted,
            "revoked_node": self.revoked,
            "revoked_after_seq": revoked_after,
            "revoked_created": len(self.after_revocation),
            "revoked_accepted": len(set(self.after_revocation) & set(hub_cases)) + revoked_inbox,
            "skewed_villages": len(skewed),
            "skewed_cases_at_hub": sum(1 for c in at_hub if self.created[c] in skewed),
            "skewed_cases_created": sum(1 for o in self.created.values() if o in skewed),
            "hub_quarantine": quarantine,
            "custody_stuck": custody_stuck,
        }

    # -------------------------------------------------------------- the run

    def run(self) -> dict:
        cfg = self.cfg
        rate = cfg.case_rate
        forge_at, revoke_at, replay_at = int(cfg.cases * 0.4), int(cfg.cases * 0.5), int(cfg.cases * 0.6)
        revoked_cases = max(2, cfg.cases // 50)
        self.faults_on = cfg.faults
        if self.proxy:
            self.proxy.enabled = True
        threads = [threading.Thread(target=self.approver, name="sim-approver", daemon=True)]
        if cfg.faults:
            threads.append(threading.Thread(target=self.chaos, name="sim-chaos", daemon=True))
        self.t0_run = time.monotonic()
        for thread in threads:
            thread.start()
        self.say(f"running: {cfg.cases} cases at {rate:.1f}/s, faults {'on' if cfg.faults else 'off'}")
        last_progress = time.monotonic()
        made = 0
        forged = replayed = revoked = False
        pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="sim-village")
        try:
            limit = cfg.workers * 2
            while made < cfg.cases:
                due = min(cfg.cases, int((time.monotonic() - self.t0_run) * rate) + 1)
                while made < due:
                    if self.revoked and len(self.after_revocation) < revoked_cases and self.rng.random() < 0.1:
                        self.create_case(self.villages[self.revoked], record=self.after_revocation)
                    else:
                        choices = [v for v in self.villages.values() if v.node_id not in (self.revoking, self.revoked)]
                        self.create_case(self.rng.choice(choices))
                    made += 1
                    if cfg.faults and not forged and made >= forge_at:
                        forged = True
                        self.forge()
                    if cfg.faults and not revoked and made >= revoke_at:
                        revoked = True
                        self.choose_revoked()
                    if cfg.faults and not replayed and made >= replay_at:
                        replayed = self.replay()  # again later if nothing was acknowledged yet
                self.schedule_rounds(pool, limit)
                self.maybe_revoke()
                if time.monotonic() - last_progress >= cfg.progress_every:
                    last_progress = time.monotonic()
                    self.progress()
                time.sleep(0.02)
            self.say("all cases created; faults go on for a while")
            settle = time.monotonic() + min(20.0, max(2.0, cfg.cases / rate * 0.2))
            revoke_deadline = time.monotonic() + min(120.0, max(15.0, cfg.quiesce_seconds / 2))
            while time.monotonic() < settle or (self.revoking and not self.revoked
                                                and time.monotonic() < revoke_deadline):
                self.calm = time.monotonic() >= settle
                self.schedule_rounds(pool, limit)
                self.maybe_revoke()
                if cfg.faults and not replayed:
                    replayed = self.replay()
                time.sleep(0.05)
            if self.revoked:
                self.revoked_village_works_on(revoked_cases)
            elif self.revoking:
                self.errors.append(f"{self.revoking} never drained, not revoked: {self.diagnose(self.revoking)}")
            self.faults_on = False
            if self.proxy:
                self.proxy.enabled = False
            self.stop.set()
            for thread in threads:
                if thread.name == "sim-chaos":
                    thread.join(timeout=120)
            for tid, proc in self.townships.items():
                if not proc.running:
                    self._restart(tid)
            if not self.hub.running:
                self._restart_hub()
            self.stop.clear()
            threads = [threading.Thread(target=self.approver, name="sim-approver-2", daemon=True)]
            threads[0].start()
            self.say("faults stopped; running rounds until quiescent")
            for v in self.villages.values():
                v.next_sync = 0.0
                v.state = SyncState()
            deadline = time.monotonic() + cfg.quiesce_seconds
            quiet = False
            waiting = "not checked"
            next_check = 0.0
            while time.monotonic() < deadline:
                self.schedule_rounds(pool, limit)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    waiting = self.waiting_for()
                    if waiting is None:
                        quiet = True
                        break
                if time.monotonic() - last_progress >= cfg.progress_every:
                    last_progress = time.monotonic()
                    self.progress()
                time.sleep(0.05)
        finally:
            self.stop.set()
            pool.shutdown(wait=True)
            for thread in threads:
                thread.join(timeout=30)
        summary = self.count()
        summary["quiescent"] = quiet
        if not quiet:
            summary["waiting_for"] = waiting
            if waiting and waiting.split(" at ")[-1].split(" ")[0] in self.villages:
                summary["waiting_for"] += " — " + self.diagnose(waiting.split(" at ")[-1].split(" ")[0])
        summary["townships"] = len(self.townships)
        summary["villages"] = len(self.villages)
        summary["seed"] = cfg.seed
        summary["faults"] = self.stats.snapshot()
        summary["errors"] = self.errors[:20]
        return summary

    def close(self) -> None:
        self.stop.set()
        for v in self.villages.values():
            v.client.session.close()
            v.conn.close()
        for proc in self.townships.values():
            proc.close()
        if self.proxy:
            self.proxy.stop()
        if self.hub:
            self.hub.close()


def _hlc_now() -> str:
    from sync.hlc import Timestamp

    return str(Timestamp(int(time.time() * 1000), 0, "forger"))


def failed(summary: dict) -> bool:
    """True if the run lost, duplicated or wrongly accepted anything."""
    return bool(summary["lost"] or summary["duplicated"] or summary["forged_accepted"]
                or summary["replayed_accepted"] or summary["revoked_accepted"]
                or summary.get("decisions_missing"))


def run_sim(config: SimConfig, echo: Callable[[str], None] = print) -> dict:
    """Build and run one county; returns the summary (with ``seconds``)."""
    started = time.monotonic()
    keep = config.data_dir is not None
    root = Path(config.data_dir) if keep else Path(tempfile.mkdtemp(prefix="liandong-sim-"))
    if keep:
        if root.exists() and any(root.iterdir()):
            raise click.ClickException(f"{root} is not empty: the simulation builds a fresh county")
        root.mkdir(parents=True, exist_ok=True)
    sim = Simulation(config, echo)
    try:
        sim.build(root)
        summary = sim.run()
    finally:
        sim.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["ok"] = not failed(summary)
    return summary


@click.command("sim")
@click.option("--townships", default=9, show_default=True, help="Township stations.")
@click.option("--villages", default=253, show_default=True, help="Village rooms, spread over the townships.")
@click.option("--cases", default=1000, show_default=True, help="Applications taken at random villages.")
@click.option("--seed", default=1, show_default=True, help="Seed of every random choice and fault.")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Empty folder to build the county in (kept); default: a temporary folder, removed.")
@click.option("--faults/--no-faults", default=True, show_default=True, help="Inject link and node faults.")
@click.option("--kill-every", default=20.0, show_default=True,
              help="Seconds between SIGKILLs of a township process (0: only once).")
@click.option("--offline-every", default=30.0, show_default=True, help="Seconds between townships going offline.")
@click.option("--offline-seconds", default=12.0, show_default=True, help="How long a township stays offline.")
@click.option("--kill-hub/--no-kill-hub", default=True, show_default=True, help="Kill the hub with SIGKILL once.")
@click.option("--rate", default=None, type=float, help="Cases per second (default: 8–15 by county size).")
@click.option("--quiesce-seconds", default=240.0, show_default=True, help="Bound of the final catch-up.")
@click.option("--clock-start", default=None, help="Start every node's clock at this ISO time (sim only).")
@click.option("--clock-speed", default=1.0, show_default=True, help="Run the clocks this many times faster.")
@click.option("--sabotage-outbox", is_flag=True, hidden=True,
              help="Self-test: drop one unsent envelope at a village; the run must fail.")
def sim(townships: int, villages: int, cases: int, seed: int, data_dir: Path | None, faults: bool,
        kill_every: float, offline_every: float, offline_seconds: float, kill_hub: bool, rate: float | None,
        quiesce_seconds: float, clock_start: str | None, clock_speed: float, sabotage_outbox: bool) -> None:
    """Run a whole county on loopback under faults; the last line is a JSON summary."""
    if townships < 1 or villages < townships or townships > 899:
        raise click.UsageError("need 1–899 townships and at least one village per township")
    config = SimConfig(townships=townships, villages=villages, cases=cases, seed=seed, data_dir=data_dir,
                       faults=faults, kill_every=kill_every, offline_every=offline_every,
                       offline_seconds=offline_seconds, kill_hub=kill_hub and faults, rate=rate,
                       quiesce_seconds=quiesce_seconds, sabotage_outbox=sabotage_outbox,
                       clock_start=clock_start, clock_speed=clock_speed)
    summary = run_sim(config, lambda line: click.echo(line))
    click.echo(json.dumps(summary, ensure_ascii=False))
    sys.exit(0 if summary["ok"] else 1)
