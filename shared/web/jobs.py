"""Each node's scheduled jobs, started with the app when ``SCHEDULER_ENABLED``.

Two jobs at most: the sync rounds towards the parent, and the tier's scheduled rules (its
``scheduled_rules``: the same list ``liandong hub jobs`` runs in its own process). Sync drains
a backlog back to back (``sync.node_sync.drain``) and paces only when there is nothing to send;
a township also starts a round as soon as a village's envelopes or files arrive
(``liandong_sync_kick``), so the two tiers work at the same time. Each job is one daemon thread
that sleeps on an event between runs (a run never overlaps itself; a late run is not repeated
to catch up). A thread per job replaced APScheduler, which cost every process ~3.4 MiB of
imports for two intervals (docs/performance.md, memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask

from sync.node_sync import SyncState, drain

#: Requests that may wait at once for a write-through acknowledgement (docs/sync-protocol.md §5.3.3).
WRITE_THROUGH_WAITERS = 2

log = logging.getLogger("liandong.jobs")


def run_rules(conn, rules: list) -> dict:
    """Run each ``(name, rule)`` once, in order; one failing rule is logged and the others still run."""
    done = {}
    for name, rule in rules:
        try:
            done[name] = rule(conn)
        except Exception:  # logged and retried at the next interval
            log.exception("scheduled rule %s failed", name)
            done[name] = {"error": "internal"}
    return done


class Scheduler:
    """Interval jobs, one daemon thread each, stopped together by :meth:`shutdown`."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def add_job(self, job: Callable[[], object], seconds: float, name: str) -> None:
        """Run ``job`` every ``seconds`` (first run after one interval), until shutdown."""

        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    job()
                except Exception:  # a bug must not end the loop; it is logged and run again next time
                    log.exception("scheduled job %s failed", name)

        self.threads.append(threading.Thread(target=loop, name=f"liandong-{name}", daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop every loop (a run in progress finishes first when ``wait``)."""
        self._stop.set()
        if wait:
            for thread in self.threads:
                if thread.is_alive() and thread is not threading.current_thread():
                    thread.join()


def start_jobs(app: Flask) -> Scheduler | None:
    """Start the node's jobs: sync towards the parent, and the tier's scheduled rules."""
    if not app.config.get("SCHEDULER_ENABLED"):
        return None
    scheduler = Scheduler()
    if app.config.get("PARENT_URL"):
        _add_sync(app, scheduler)
    _add_rules(app, scheduler)
    scheduler.start()
    app.extensions["liandong_scheduler"] = scheduler
    return scheduler


def _add_rules(app: Flask, scheduler: Scheduler) -> None:
    node = app.extensions["liandong_node"]
    rules = node.kind.scheduled_rules(node, app.extensions.get("liandong_sync"))
    if not rules:
        return
    database = app.extensions["liandong_db"]

    def rules_job() -> dict:
        conn = database.connect(app)
        try:
            return run_rules(conn, rules)
        finally:
            conn.close()

    app.extensions["liandong_supervision_now"] = rules_job
    scheduler.add_job(rules_job, float(app.config["SUPERVISION_INTERVAL_SECONDS"]), "supervision")


def _add_sync(app: Flask, scheduler: Scheduler) -> None:
    node = app.extensions["liandong_node"]
    state: SyncState = app.extensions.setdefault("liandong_sync_state", SyncState())
    database = app.extensions["liandong_db"]
    lock = threading.Lock()
    wanted = threading.Event()  # set by every request for a round; the running drain repeats
    # Passes of the drain loop below, started and finished, for write-through (forward_and_wait):
    # a pass numbered after a kick began after what that kick was for had been committed.
    passes = {"started": 0, "finished": 0}
    passed = threading.Condition()

    def acks_applied() -> None:  # a round brought acks: waiters look again, mid-pass
        with passed:
            passed.notify_all()

    state.on_acks = acks_applied

    def sync_job(force: bool = False, timeout: float | None = None) -> dict:
        wanted.set()
        # A forced round waits for a running one at most ``timeout`` (the agent is watching).
        if not lock.acquire(blocking=force, timeout=timeout if force and timeout else -1):
            return {"error": "Timeout: a round is already running"} if force else {"skipped": True}
        while True:
            try:
                summary = _passes(force, timeout)
            finally:
                lock.release()
            # A request for a round that came after the last look at `wanted` and before the
            # release found the lock taken and left: without this it waited for the next interval
            # (and a write-through push for its whole bound).
            if "error" in summary or not wanted.is_set() or not lock.acquire(blocking=False):
                return summary
            force = True

    def _passes(force: bool, timeout: float | None) -> dict:
        """Drain passes while a round is wanted (call with the lock held)."""
        conn = database.connect(app)
        try:
            summary: dict = {}
            while wanted.is_set():  # the running drain sees `wanted` and goes on
                wanted.clear()
                with passed:
                    passes["started"] += 1
                try:
                    summary = drain(conn, node, state, force=force, timeout=timeout)
                finally:  # also when it raised: a waiting push must not wait for nothing
                    with passed:
                        passes["finished"] += 1
                        passed.notify_all()
                if "error" in summary:
                    break
                force = True
            return summary
        except Exception:  # a bug must not kill the scheduler thread; it is logged and retried
            log.exception("sync round failed")
            return {"error": "internal"}
        finally:
            conn.close()

    def kick() -> None:
        """Something arrived for the parent (a village's push, its files): forward it now, in
        the background, while the village sends its next batch (the tiers overlap)."""
        threading.Thread(target=sync_job, name="sync-kick", daemon=True).start()

    # Serving threads that may wait at once: a township serves with a few (4 by default), and
    # its pages, pulls and file batches keep the others while a slow hub holds these.
    waiting = threading.BoundedSemaphore(WRITE_THROUGH_WAITERS)

    def forward_and_wait(done: Callable[[], bool], timeout: float) -> bool:
        """Kick a round and wait, at most ``timeout`` seconds, until ``done()`` (e.g. the hub's
        acknowledgement of a village's push is here), looked at again whenever the round applies
        acknowledgements (``SyncState.on_acks``). Gives up sooner once a pass that began
        after the kick has finished without it (the hub is offline, holds it for its files, or
        the round backs off): the caller is not stalled for nothing. With
        ``WRITE_THROUGH_WAITERS`` requests waiting already, it only kicks. Returns ``done()``."""
        if not waiting.acquire(blocking=False):
            kick()
            return done()
        try:
            return _wait_forwarded(done, timeout)
        finally:
            waiting.release()

    def _wait_forwarded(done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with passed:
            after = passes["started"]  # a pass numbered above this one started after the kick
        kick()
        while not done():
            with passed:
                if passes["finished"] > after:  # such a pass is over (passes never overlap)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                passed.wait(remaining)
        return done()

    app.extensions["liandong_sync_now"] = lambda timeout=None: sync_job(force=True, timeout=timeout)
    app.extensions["liandong_sync_forward"] = forward_and_wait
    app.extensions["liandong_sync_kick"] = kick
    scheduler.add_job(sync_job, float(app.config["SYNC_INTERVAL_SECONDS"]), "sync")
