"""Each node's apscheduler jobs, started with the app when ``SCHEDULER_ENABLED``."""

from __future__ import annotations

import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from city_hub import case_facts
from shared.services import joint
from sync.node_sync import SyncState, run_round

log = logging.getLogger("liandong.jobs")


def start_jobs(app: Flask) -> BackgroundScheduler | None:
    """Start the node's scheduler: sync towards the parent, and the deciding node's rules."""
    if not app.config.get("SCHEDULER_ENABLED"):
        return None
    scheduler = BackgroundScheduler(daemon=True)
    if app.config.get("PARENT_URL"):
        _add_sync(app, scheduler)
    if app.config["TIER"] in ("hub", "township"):
        _add_supervision(app, scheduler)
    scheduler.start()
    app.extensions["liandong_scheduler"] = scheduler
    return scheduler


def refresh_hub_metadata(conn, node) -> None:
    """Keep the hub's signed metadata from expiring (see city_hub.registry.refresh_metadata)."""
    from city_hub.registry import refresh_metadata
    from shared.core.storage import write_transaction

    with write_transaction(conn):
        if refresh_metadata(conn, node):
            node.forget_trust()


def extra_rules() -> list:
    """Scheduled rules of other modules, run after the supervision pass (same signature)."""
    return list(EXTRA_RULES)


# Modules add ``rule(conn, node, emit)`` functions here (e.g. deemed consent of 联合审批).
EXTRA_RULES: list = [joint.run_scheduled, case_facts.run_scheduled]


def _add_supervision(app: Flask, scheduler: BackgroundScheduler) -> None:
    from shared.services import supervision

    node = app.extensions["liandong_node"]
    database = app.extensions["liandong_db"]

    def supervision_job() -> dict:
        conn = database.connect(app)
        try:
            if node.tier == "hub":  # the rules see every accepted case (also from the jobs process)
                app.extensions["liandong_sync"].apply_all(conn)
            done = supervision.run(conn, node, node.emit)
            if node.tier == "hub":
                refresh_hub_metadata(conn, node)
            for rule in extra_rules():
                rule(conn, node, node.emit)
            return done
        except Exception:  # logged and retried at the next interval
            log.exception("supervision pass failed")
            return {"error": "internal"}
        finally:
            conn.close()

    app.extensions["liandong_supervision_now"] = supervision_job
    scheduler.add_job(supervision_job, "interval", seconds=float(app.config["SUPERVISION_INTERVAL_SECONDS"]),
                      id="supervision", max_instances=1, coalesce=True)


def _add_sync(app: Flask, scheduler: BackgroundScheduler) -> None:
    node = app.extensions["liandong_node"]
    state: SyncState = app.extensions.setdefault("liandong_sync_state", SyncState())
    database = app.extensions["liandong_db"]
    lock = threading.Lock()

    def sync_job(force: bool = False) -> dict:
        if not lock.acquire(blocking=force):
            return {"skipped": True}
        conn = database.connect(app)
        try:
            return run_round(conn, node, state, force=force)
        except Exception:  # a bug must not kill the scheduler thread; it is logged and retried
            log.exception("sync round failed")
            return {"error": "internal"}
        finally:
            conn.close()
            lock.release()

    app.extensions["liandong_sync_now"] = lambda: sync_job(force=True)
    scheduler.add_job(sync_job, "interval", seconds=float(app.config["SYNC_INTERVAL_SECONDS"]),
                      id="sync", max_instances=1, coalesce=True)
