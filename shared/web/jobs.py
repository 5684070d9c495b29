"""Each node's apscheduler jobs, started with the app when ``SCHEDULER_ENABLED``.

Two jobs at most: the sync round towards the parent, and the tier's scheduled rules (its
``scheduled_rules``: the same list ``liandong hub jobs`` runs in its own process).
"""

from __future__ import annotations

import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from sync.node_sync import SyncState, run_round

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


def start_jobs(app: Flask) -> BackgroundScheduler | None:
    """Start the node's scheduler: sync towards the parent, and the tier's scheduled rules."""
    if not app.config.get("SCHEDULER_ENABLED"):
        return None
    scheduler = BackgroundScheduler(daemon=True)
    if app.config.get("PARENT_URL"):
        _add_sync(app, scheduler)
    _add_rules(app, scheduler)
    scheduler.start()
    app.extensions["liandong_scheduler"] = scheduler
    return scheduler


def _add_rules(app: Flask, scheduler: BackgroundScheduler) -> None:
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
    scheduler.add_job(rules_job, "interval", seconds=float(app.config["SUPERVISION_INTERVAL_SECONDS"]),
                      id="supervision", max_instances=1, coalesce=True)


def _add_sync(app: Flask, scheduler: BackgroundScheduler) -> None:
    node = app.extensions["liandong_node"]
    state: SyncState = app.extensions.setdefault("liandong_sync_state", SyncState())
    database = app.extensions["liandong_db"]
    lock = threading.Lock()

    def sync_job(force: bool = False, timeout: float | None = None) -> dict:
        # A forced round waits for a running one at most ``timeout`` (the agent is watching).
        if not lock.acquire(blocking=force, timeout=timeout if force and timeout else -1):
            return {"error": "Timeout: a round is already running"} if force else {"skipped": True}
        conn = database.connect(app)
        try:
            return run_round(conn, node, state, force=force, timeout=timeout)
        except Exception:  # a bug must not kill the scheduler thread; it is logged and retried
            log.exception("sync round failed")
            return {"error": "internal"}
        finally:
            conn.close()
            lock.release()

    app.extensions["liandong_sync_now"] = lambda timeout=None: sync_job(force=True, timeout=timeout)
    scheduler.add_job(sync_job, "interval", seconds=float(app.config["SYNC_INTERVAL_SECONDS"]),
                      id="sync", max_instances=1, coalesce=True)
