"""Each node's apscheduler jobs, started with the app when ``SCHEDULER_ENABLED``.

Two jobs at most: the sync rounds towards the parent, and the tier's scheduled rules (its
``scheduled_rules``: the same list ``liandong hub jobs`` runs in its own process). Sync drains
a backlog back to back (``sync.node_sync.drain``) and paces only when there is nothing to send;
a township also starts a round as soon as a village's envelopes or files arrive
(``liandong_sync_kick``), so the two tiers work at the same time.
"""

from __future__ import annotations

import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from sync.node_sync import SyncState, drain

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
    wanted = threading.Event()  # set by every request for a round; the running drain repeats

    def sync_job(force: bool = False) -> dict:
        wanted.set()
        if not lock.acquire(blocking=force):
            return {"skipped": True}  # the running drain sees `wanted` and goes on
        conn = database.connect(app)
        try:
            summary: dict = {}
            while wanted.is_set():
                wanted.clear()
                summary = drain(conn, node, state, force=force)
                if "error" in summary:
                    break
                force = True
            return summary
        except Exception:  # a bug must not kill the scheduler thread; it is logged and retried
            log.exception("sync round failed")
            return {"error": "internal"}
        finally:
            conn.close()
            lock.release()

    def kick() -> None:
        """Something arrived for the parent (a village's push, its files): forward it now, in
        the background, while the village sends its next batch (the tiers overlap)."""
        threading.Thread(target=sync_job, name="sync-kick", daemon=True).start()

    app.extensions["liandong_sync_now"] = lambda: sync_job(force=True)
    app.extensions["liandong_sync_kick"] = kick
    scheduler.add_job(sync_job, "interval", seconds=float(app.config["SYNC_INTERVAL_SECONDS"]),
                      id="sync", max_instances=1, coalesce=True)
