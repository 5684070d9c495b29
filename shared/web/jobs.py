"""Each node's apscheduler jobs, started with the app when ``SCHEDULER_ENABLED``."""

from __future__ import annotations

import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from sync.node_sync import SyncState, run_round

log = logging.getLogger("liandong.jobs")


def start_sync(app: Flask) -> BackgroundScheduler | None:
    """Run a sync round towards the parent every ``SYNC_INTERVAL_SECONDS`` (never overlapping)."""
    if not app.config.get("SCHEDULER_ENABLED") or not app.config.get("PARENT_URL"):
        return None
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
    scheduler = BackgroundScheduler(daemon=True)
    scheduler.add_job(sync_job, "interval", seconds=float(app.config["SYNC_INTERVAL_SECONDS"]),
                      id="sync", max_instances=1, coalesce=True)
    scheduler.start()
    app.extensions["liandong_scheduler"] = scheduler
    return scheduler
