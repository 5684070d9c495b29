"""``GET /healthz``: public health of a node for a load balancer or a monitoring check.

``{"status": "ok" | "degraded", "checks": {...}, "queues": {...}, ...}`` with HTTP 200 when ok
and 503 when degraded. It holds identity, counts and times only, never personal data, so it
stays public. Degraded means: the database cannot be read, the disk is below
``DISK_RESERVE_BYTES``, or a node with a parent has not reached it for longer than
``HEALTH_PARENT_SILENCE_SECONDS`` (counted from start-up if it never has).
"""

from __future__ import annotations

import sqlite3
import time

from flask import Blueprint, current_app, jsonify

from shared.core import storage
from shared.core.clock import iso, parse_iso
from shared.web.auth import public
from shared.web.context import VERSION, current_node

bp = Blueprint("health", __name__)


def parent_contact_age(conn: sqlite3.Connection, node, started_at: float) -> tuple[str | None, float]:
    """(last successful contact with the parent or None, seconds since it, or since start-up if never)."""
    row = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()
    if row is None:
        return None, time.monotonic() - started_at
    return row[0], max(0.0, (node.now() - parse_iso(row[0])).total_seconds())


@bp.get("/healthz")
@public
def healthz():
    """ok (200) or degraded (503) with the checks behind it; public, no personal data."""
    node = current_node()
    config = current_app.config
    body = {"status": "ok", "node_id": node.node_id, "tier": node.tier, "version": VERSION, "time": iso(node.now()),
            "checks": {}}
    try:
        conn = current_app.extensions["liandong_db"].connect(current_app)
        try:
            body["queues"] = node.kind.queue_counts(conn)
            if config.get("PARENT_URL"):
                last, age = parent_contact_age(conn, node, current_app.extensions["liandong_started"])
                body["last_parent_contact"] = last
                body["parent_contact_age_seconds"] = round(age, 1)
                silent = age > float(config["HEALTH_PARENT_SILENCE_SECONDS"])
                body["checks"]["parent_contact"] = "stale" if silent else "ok"
        finally:
            conn.close()
        body["checks"]["database"] = "ok"
    except (sqlite3.Error, storage.SchemaError):
        body["checks"]["database"] = "error"
    low = storage.free_bytes(node.data_dir) < int(config["DISK_RESERVE_BYTES"])
    body["checks"]["disk"] = "low" if low else "ok"
    if any(value != "ok" for value in body["checks"].values()):
        body["status"] = "degraded"
    return jsonify(body), 200 if body["status"] == "ok" else 503
