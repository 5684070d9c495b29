"""``liandong sim --throughput``: how many cases a clean county absorbs per second.

A closed loop: every village keeps at most ``window`` cases in flight (taken at its window, not
yet acknowledged by the hub) and takes the next one as soon as a sync round brings an
acknowledgement back, so cases are created exactly as fast as the county absorbs them. No
faults, no attacks, nobody decides: what is measured is intake to the hub. After ``seconds`` no
new case is taken, rounds go on until every case is acknowledged and in the hub's register
(bounded by ``quiesce_seconds``), and the county is counted as in the fault run (lost,
duplicated).

Figures (all in the JSON summary): cases per second accepted at the hub (its inbox, by the
hub's own ``received_at``; the steady rate leaves out the first tenth of the run), latency
percentiles from taking a case to the hub accepting it and to the village holding the hub's
acknowledgement, peak RSS and CPU seconds of this process, the hub and every township, and the
load average before and after.
"""

from __future__ import annotations

import os
import random
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from provisioning.sim.county import Village
from provisioning.sim.processes import NodeProcess
from shared.core import storage
from shared.core.clock import parse_iso
from sync import outbox
from sync.node_sync import run_round

#: Seconds between a village's rounds while it has cases in flight (jittered down to half):
#: the townships forward to the hub every second, so polling faster mostly finds nothing new.
POLL_SECONDS = 1.0
#: Share of the run left out of the steady rate (the loop filling up).
WARM_UP_SHARE = 0.1
#: What the throughput summary keeps of :meth:`Report.count` (the rest is about faults and
#: decisions, which this run has none of; ``failed`` reads the attack counters, all zero here).
COUNTED = ("cases_created", "cases_at_hub", "lost", "duplicated", "forged_accepted", "replayed_accepted",
           "revoked_accepted", "decisions_missing", "hub_quarantine", "custody_stuck")


def percentiles(values: list[float]) -> dict:
    """p50, p95, p99 and max of ``values`` (seconds) in milliseconds; empty if none."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> int:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000), "n": len(ordered)}


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KiB) of a running process, from ``/proc`` (Linux); (0, 0) if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0
    # utime and stime are fields 14 and 15 of stat; after the ")" of the command they are 12 and 13.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), hwm


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


class Throughput:
    """The throughput run (a part of :class:`provisioning.sim.loop.Simulation`)."""

    def _processes(self) -> dict[str, NodeProcess]:
        return {"hub": self.hub, **self.townships}

    def _cpu(self) -> dict[str, float]:
        cpu = {name: process_usage(proc.proc.pid)[0] for name, proc in self._processes().items() if proc.running}
        times = os.times()
        cpu["sim"] = times.user + times.system
        return cpu

    def throughput_round(self, village: Village) -> None:
        """Fill the village's window with new cases (while loading), run one round, and take the
        acknowledged cases out of flight."""
        cfg = self.cfg
        with self.round_guard(village):  # Simulation.round_guard
            rng = self._thread_rng()
            while self.loading and len(village.inflight) < cfg.window:
                taken = time.time()
                case_id = self.create_case(village, rng=rng)
                if case_id is None:
                    break
                with village.lock:
                    seq = village.conn.execute("SELECT seq FROM outbox WHERE case_id = ? AND kind = 'case.submit'",
                                               (case_id,)).fetchone()[0]
                village.inflight[seq] = taken
                self.taken_at[(village.node_id, seq)] = taken
            with village.lock:
                result = run_round(village.conn, village.node, village.state, village.client, force=True)
                village.hang_up()
                acked = outbox.acked_through(village.conn)
            now = time.time()
            for seq in [s for s in village.inflight if s <= acked]:
                self.ack_latencies.append(now - village.inflight.pop(seq))
            self.stats.add("rounds")
            if "error" in result:
                self.stats.add("rounds.failed")
                village.next_sync = time.monotonic() + 0.5
            elif village.inflight:
                village.next_sync = time.monotonic() + rng.uniform(POLL_SECONDS / 2, POLL_SECONDS)
            else:
                village.next_sync = time.monotonic()  # its window is free: take the next cases now

    def warm_up_round(self, village: Village) -> None:
        """One round before the load (no cases): the village catches up with the county's metadata."""
        try:
            with village.lock:
                result = run_round(village.conn, village.node, village.state, village.client, force=True)
                village.hang_up()
            self.stats.add("warm_up.rounds")
            if "error" in result:
                self.stats.add("warm_up.failed")
        except Exception as exc:  # counted and shown; the village's next round tries again
            self.stats.add("warm_up.crashed")
            self.errors.append(f"warm-up round at {village.node_id}: {type(exc).__name__}: {exc}")

    def _thread_rng(self) -> random.Random:
        rng = getattr(self._rngs, "rng", None)
        if rng is None:
            rng = self._rngs.rng = random.Random(f"{self.cfg.seed}-{threading.get_ident()}")
        return rng

    def _schedule_throughput(self, pool: ThreadPoolExecutor, limit: int) -> None:
        now = time.monotonic()
        inflight = sum(1 for v in self.villages.values() if v.busy)
        if inflight >= limit:
            return
        due = sorted((v for v in self.villages.values() if not v.busy and v.next_sync <= now),
                     key=lambda v: v.next_sync)
        for village in due[: limit - inflight]:
            village.busy = True
            pool.submit(self.throughput_round, village)

    def _throughput_progress(self) -> None:
        at_hub = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM cases")
        in_flight = sum(len(v.inflight) for v in self.villages.values())
        self.say(f"created {len(self.created)}  acknowledged {len(self.ack_latencies)}  in flight {in_flight}"
                 f"  in the hub's register {at_hub}  rounds {self.stats.snapshot().get('rounds', 0)}"
                 f"  sim peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
                 f"  load {load_average()[0]}")

    def _hub_arrivals(self) -> list[tuple[float, float]]:
        """(accepted at the hub, taken at the village) in epoch seconds, per case taken in this run."""
        conn = storage.connect(self.hub.data_dir / "node.sqlite3")
        try:
            rows = conn.execute("SELECT origin, seq, received_at FROM inbox WHERE kind = 'case.submit'").fetchall()
        finally:
            conn.close()
        return [(parse_iso(r["received_at"]).timestamp(), self.taken_at[(r["origin"], r["seq"])])
                for r in rows if (r["origin"], r["seq"]) in self.taken_at]

    def run_throughput(self) -> dict:
        """Load the county for ``seconds``, let it drain, count; returns the summary."""
        cfg = self.cfg
        limit = cfg.workers * 2
        load_before = load_average()
        pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="sim-village")
        self.say(f"throughput: {len(self.villages)} villages, {cfg.window} cases in flight each, "
                 f"{cfg.seconds:.0f}s, {cfg.workers} village threads; load {load_before}")
        # Each village's first round brings the county's registry down (a thousand nodes, once):
        # done before the clock starts, so the figures are of the steady loop.
        warm = time.monotonic()
        list(pool.map(self.warm_up_round, list(self.villages.values())))
        self.say(f"warm-up: one round at every village in {time.monotonic() - warm:.1f}s; load {load_average()}")
        load_before = load_average()
        self.loading = True
        cpu_start = self._cpu()
        started = time.time()
        load_end = time.monotonic() + cfg.seconds
        last_progress = time.monotonic()
        quiet = False
        try:
            while time.monotonic() < load_end:
                self._schedule_throughput(pool, limit)
                if time.monotonic() - last_progress >= cfg.progress_every:
                    last_progress = time.monotonic()
                    self._throughput_progress()
                time.sleep(0.01)
            self.loading = False
            stopped = time.time()
            cpu_end = self._cpu()
            load_after = load_average()
            self.say("no new cases; rounds until every case is acknowledged and in the hub's register,"
                     " and every decision already made (秒批) is back at its village")
            quiet = self.until_quiet(
                lambda: self._schedule_throughput(pool, limit),
                lambda: not any(v.inflight for v in self.villages.values())
                and self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM cases") >= len(self.created)
                and not self.count()["decisions_missing"],  # read only once the cheap checks hold
                self._throughput_progress)
        finally:
            self.loading = False
            pool.shutdown(wait=True)
        peaks = {name: process_usage(proc.proc.pid)[1] for name, proc in self._processes().items() if proc.running}
        arrivals = self._hub_arrivals()
        warm = started + cfg.seconds * WARM_UP_SHARE
        steady = sum(1 for at, _ in arrivals if warm <= at <= stopped)
        in_window = sum(1 for at, _ in arrivals if started <= at <= stopped)
        counted = self.count()
        summary = {"mode": "throughput", **{k: counted[k] for k in COUNTED}}
        townships = [peaks.get(t, 0) for t in self.townships]
        summary.update({
            "quiescent": quiet,
            "townships": len(self.townships),
            "villages": len(self.villages),
            "window": cfg.window,
            "workers": cfg.workers,
            "load_seconds": cfg.seconds,
            "seed": cfg.seed,
            "hub_cases_per_second": round(steady / max(1e-9, stopped - warm), 1),
            "hub_cases_per_second_whole_run": round(in_window / max(1e-9, stopped - started), 1),
            "latency_to_hub_ms": percentiles([max(0.0, at - taken) for at, taken in arrivals]),
            "latency_acknowledged_ms": percentiles(self.ack_latencies),
            "rounds": self.stats.snapshot().get("rounds", 0),
            "cpu_seconds": {k: round(cpu_end.get(k, 0) - v, 1) for k, v in cpu_start.items()},
            "peak_rss_mib": {
                "sim": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "hub": round(peaks.get("hub", 0) / 1024, 1),
                "township_max": round(max(townships, default=0) / 1024, 1),
                "townships_total": round(sum(townships) / 1024, 1),
            },
            "load_average": {"before": load_before, "end_of_load": load_after, "end": load_average()},
            "faults": self.stats.snapshot(),
            "errors": self.errors[:20],
        })
        if not quiet:
            summary["waiting_for"] = (f"{sum(len(v.inflight) for v in self.villages.values())} cases not acknowledged"
                                      f" after {cfg.quiesce_seconds:.0f}s")
        return summary
