"""The run: the scheduler loop that creates applications, drives the villages' sync rounds
(the real :func:`sync.node_sync.run_round`) and the deciding offices, starts the faults and the
attacks at their moments, then runs rounds until the county is quiescent and counts it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import click
import requests

from provisioning.sim.attacks import Attacks
from provisioning.sim.county import DECIDED, County, SharedTrustVillage, SimConfig, Village
from provisioning.sim.faults import FaultPlan, FaultProxy, ProcessFaults, Stats
from provisioning.sim.processes import NodeProcess
from provisioning.sim.report import Report, failed
from provisioning.sim.throughput import Throughput
from shared.core import storage
from shared.core.clock import Clock
from sync.node_sync import SyncState, run_round


class Simulation(County, ProcessFaults, Attacks, Report, Throughput):
    """Build a county, run it under faults (or load it for throughput), count.

    One object, its behaviour by concern: building and applications (:class:`County`), process
    faults (:class:`ProcessFaults`), attacks (:class:`Attacks`), counting (:class:`Report`), the
    throughput run (:class:`Throughput`); the state they share is set here.
    """

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
        self.village_tier = SharedTrustVillage()  # one trust store per registry version for all villages
        self.hub_tokens: dict[str, str] = {}  # office -> API token of its 首席审批员
        self.head_tokens: dict[str, str] = {}  # office -> API token of its 部门负责人
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
        # the throughput run
        self.loading = False  # villages take new cases
        self.taken_at: dict[tuple[str, int], float] = {}  # (origin, outbox seq) -> taken at (epoch s)
        self.ack_latencies: list[float] = []  # seconds from taking a case to its village holding the ack
        self._rngs = threading.local()

    # -------------------------------------------------------------- rounds

    @contextmanager
    def round_guard(self, village: Village) -> Iterator[None]:
        """Around one village round: a bug in it is counted and shown and the county goes on
        (the village tries again 2 s later); the village is free again afterwards."""
        try:
            yield
        except Exception as exc:
            self.stats.add("rounds.crashed")
            self.errors.append(f"round at {village.node_id}: {type(exc).__name__}: {exc}")
            village.next_sync = time.monotonic() + 2.0
        finally:
            village.busy = False

    def village_round(self, village: Village) -> None:
        started = time.monotonic()
        with self.round_guard(village):
            with village.lock:
                result = run_round(village.conn, village.node, village.state, village.client, force=True)
                village.hang_up()
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
            url, headers = f"{proc.url}/api/v1/cases/{row['case_id']}/actions", {"Authorization": f"Bearer {token}"}
            response = requests.post(url, json=body, headers=headers, timeout=20)
            if response.status_code == 409 and response.json()["error"]["code"] == "materials_missing":
                # 受理 needs every required material: a simulated application lacking one is refused.
                body = {"action": "reject", "comment": "申请材料不齐全，不予受理"}
                response = requests.post(url, json=body, headers=headers, timeout=20)
            head = self.head_tokens.get(row["route_office"]) if level == "city" else None
            if response.status_code == 403 and head:
                # The chief holds only 初审权 for this item: his 初审, then the head decides.
                requests.post(url, json={"action": "pre_review", "opinion": "同意", "comment": "初审通过"},
                              headers=headers, timeout=20)
                response = requests.post(url, json=body, headers={"Authorization": f"Bearer {head}"}, timeout=20)
            self.stats.add(f"decide.{body['action']}" if response.status_code == 200 else "decide.refused")
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
            # The faults go on until the replay attack has found an acknowledged envelope to
            # send again (in a small county under load none may be acknowledged before `settle`).
            while time.monotonic() < settle or (self.revoking and not self.revoked
                                                and time.monotonic() < revoke_deadline) \
                    or (cfg.faults and not replayed and time.monotonic() < revoke_deadline):
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
            waiting = "not checked"

            def settled() -> bool:
                nonlocal waiting
                waiting = self.waiting_for()
                return waiting is None

            quiet = self.until_quiet(lambda: self.schedule_rounds(pool, limit), settled, self.progress)
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

    def until_quiet(self, schedule: Callable[[], None], settled: Callable[[], bool],
                    progress: Callable[[], None]) -> bool:
        """Run rounds (``schedule()``) until ``settled()`` holds (asked once a second) or
        ``quiesce_seconds`` pass, with a progress line every ``progress_every``; True if settled."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.quiesce_seconds
        next_check, last_progress = 0.0, time.monotonic()
        while time.monotonic() < deadline:
            schedule()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                if settled():
                    return True
            if time.monotonic() - last_progress >= cfg.progress_every:
                last_progress = time.monotonic()
                progress()
            time.sleep(0.05)
        return False

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
        summary = sim.run_throughput() if config.throughput else sim.run()
    finally:
        sim.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["ok"] = not failed(summary)
    return summary
