"""The county: its configuration, the hub and townships as processes, the villages in this
process (enrolled through the real flow, some with skewed clocks), and their applications.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from city_hub.enrolment_service import create_token
from provisioning import nodes
from provisioning.sim.faults import FaultProxy, FaultySession, SimClient
from provisioning.sim.processes import NodeProcess, free_port
from provisioning.tiers import TIERS
from shared.core import storage
from shared.core.clock import Clock, iso
from shared.core.settings import DEFAULTS
from shared.rules.catalog import DEPARTMENTS, load_seed
from shared.rules.idcard import id_check_char
from shared.services import intake
from sync.node import Node
from sync.node_sync import SyncState
from sync.trust import TrustStore

HUB_ID = "130926"
DECIDED = ("APPROVED", "DENIED", "NOT_ACCEPTED")
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂"
TEXTS = ("肃宁县肃宁镇东关村", "河北省沧州市肃宁县", "家庭经营", "因病致贫", "杨树", "播种机")
#: SQLite page cache of each village's connection, KiB. The default (2 MiB a connection) filled
#: with every village's copy of the registry and catalog documents and, with the prepared
#: statements each connection keeps (sqlite3 keeps 128; the villages keep none), was most of the
#: simulator's memory at a thousand villages (docs/performance.md); the operating system's file
#: cache serves those pages just as well. A real village is one process with one connection.
VILLAGE_CACHE_KIB = 64


class SharedTrustVillage(type(TIERS["village"])):
    """The village tier, with one trust store per registry version for all the villages of this
    process instead of one each.

    A trust store holds an entry per node of the county, so a thousand villages each parsing
    their own copy of the registry held a million entries. All villages of one county trust the
    same root and the same hub-signed registry versions (a node refuses a different document
    under a version it holds), so a store is keyed by the village's ``trust_version``. Stores
    are only read below the hub (only the hub's ingest changes its own).
    """

    def __init__(self):
        self._stores: dict[object, TrustStore] = {}
        self._stores_lock = threading.Lock()

    def load_trust(self, conn, node) -> TrustStore | None:
        version = self.trust_version(conn)
        # Built under the lock: villages syncing at once would otherwise each build their own.
        with self._stores_lock:
            store = self._stores.pop(version, None)
            if store is None:
                store = super().load_trust(conn, node)
            if store is not None:
                # Least recently used last out: the current version is used by every round, while
                # villages still behind load their old versions once, in their first round.
                self._stores[version] = store
                while len(self._stores) > 8:
                    del self._stores[next(iter(self._stores))]
            return store


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
    #: The throughput run (:mod:`provisioning.sim.throughput`): no faults, cases in a closed loop
    #: of ``window`` per village for ``seconds``.
    throughput: bool = False
    seconds: float = 60.0
    window: int = 8

    @property
    def case_rate(self) -> float:
        if self.rate:
            return self.rate
        return max(8.0, min(15.0, self.villages / 20))


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
    inflight: dict[int, float] = field(default_factory=dict)  # throughput run: outbox seq -> taken at (epoch s)

    def hang_up(self) -> None:
        """Close the village's connections to its township after a round, as a village does (its
        scheduler makes a new client every round): a hundred villages keeping theirs open would
        fill the township's waitress (100 connections) and starve the rest."""
        self.client.session.close()


def random_id_number(rng: random.Random) -> str:
    born = date(1940, 1, 1) + timedelta(days=rng.randint(0, 24000))
    first17 = f"{HUB_ID}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return first17 + id_check_char(first17)


def random_phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randint(0, 999_999_999):09d}"


def random_name(rng: random.Random) -> str:
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
            form[f["name"]] = random_id_number(rng)
        elif f.get("format") == "phone":
            form[f["name"]] = random_phone(rng)
        elif f["name"].endswith("name"):
            form[f["name"]] = random_name(rng)[: f.get("max", 20)]
        else:
            form[f["name"]] = rng.choice(TEXTS)[: f.get("max", 50)]
    return form


class County:
    """Building the county and taking applications (a part of :class:`provisioning.sim.loop.Simulation`)."""

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
            # The 首席审批员 accepts and decides; the 部门负责人 decides items where the chief has 初审权.
            self.hub_tokens[office] = nodes.add_account(hub_dir, f"{code}_chief", "sim-password-1", "chief",
                                                        f"{DEPARTMENTS.get(code, code)}首席审批员", office)
            self.head_tokens[office] = nodes.add_account(hub_dir, f"{code}_head", "sim-password-1", "head",
                                                         f"{DEPARTMENTS.get(code, code)}负责人", office)
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
        # A skewed clock is a fault; the throughput run measures a clean county.
        skewed = [] if cfg.throughput else self.rng.sample(sorted(self.villages), k=min(2, len(self.villages)))
        for vid, days in zip(skewed, (3, -2), strict=False):
            self._set_skew(self.villages[vid], days)
        self._wait_registry()
        self.say(f"{len(self.villages)} villages enrolled; skewed clocks: "
                 + (", ".join(f"{v} ({self.villages[v].skew_days:+d} d)" for v in skewed) or "none"))

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
        node = Node(config, vdir, self.village_tier)
        node.blobs.rows.keep = 0  # a kept connection per village would cost ~1,000 parsed schemas
        conn = nodes.open_db(vdir, "village", cached_statements=0)
        conn.execute(f"PRAGMA cache_size = -{VILLAGE_CACHE_KIB}")
        seed = hash((self.cfg.seed, vid)) & 0xFFFFFFFF
        session = FaultySession(random.Random(seed), self.plan, self.stats, lambda: self.faults_on)
        client = SimClient(config["PARENT_URL"], config["PARENT_ID"], vid, node.key, node.nonces,
                           timeout=float(config["SYNC_TIMEOUT_SECONDS"]), session=session,
                           rng=random.Random(seed + 1), plan=self.plan, stats=self.stats,
                           enabled=lambda: self.faults_on)
        _, catalog = node.catalog(conn)
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

    # -------------------------------------------------------------- applications

    def create_case(self, village: Village, record: dict[str, str] | None = None,
                    rng: random.Random | None = None) -> str | None:
        """Take one random application at ``village``; its case id (None if the window refused it).

        ``rng``: the random source (default the run's seeded one; threads of the throughput run
        each have their own)."""
        rng = rng or self.rng
        item = rng.choice(village.items)
        payload = {
            "item_code": item["code"],
            "applicant": {"name": random_name(rng), "id_number": random_id_number(rng), "phone": random_phone(rng)},
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
