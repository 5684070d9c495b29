"""Request observation for every node, and ``GET /metrics`` (Prometheus text) on hub and township.

Every request leaves one access-log line on ``liandong.access``: method, path (never the query
string, which may carry a search for a name or an ID number; never a body), status and
milliseconds. On the hub and townships its duration also feeds a latency histogram.

``/metrics`` reads the queues and counts from the database at scrape time, so it is right
whichever process did the work (gunicorn workers, ``hub jobs``). It is protected: an admin or
supervisor session, or ``Authorization: Bearer <METRICS_TOKEN>`` for Prometheus. Under gunicorn
each worker keeps its own latency histogram (a scrape sees one worker's).
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, request

from shared.core.clock import parse_iso
from shared.core.errors import Forbidden, Unauthorized
from shared.web.auth import public
from shared.web.health import parent_contact_age

access_log = logging.getLogger("liandong.access")
bp = Blueprint("metrics", __name__)
METRICS_ROLES = ("admin", "supervisor")
# Seconds: pages take tens of ms, a push of 200 envelopes with files may take seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def init_app(app: Flask) -> None:
    """Access log on every node; the metrics registry and ``/metrics`` on hub and township."""
    app.extensions["liandong_started"] = time.monotonic()
    histogram = _create_registry(app) if app.config["TIER"] in ("hub", "township") else None

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response):
        seconds = time.perf_counter() - g.pop("request_started", time.perf_counter())
        access_log.info("%s %s %d %.1fms", request.method, request.path, response.status_code, seconds * 1000)
        if histogram is not None:
            histogram.labels(request.method, request.endpoint or "unmatched", str(response.status_code)).observe(seconds)
        return response


def _create_registry(app: Flask):
    from prometheus_client import (  # optional: loaded where /metrics is used (hub, township), not in the village process
        CollectorRegistry,
        Histogram,
    )

    registry = CollectorRegistry(auto_describe=True)
    histogram = Histogram("liandong_http_request_duration_seconds", "HTTP request latency by route and status.",
                          ["method", "endpoint", "status"], buckets=LATENCY_BUCKETS, registry=registry)
    registry.register(NodeCollector(app))
    app.extensions["liandong_metrics"] = registry
    app.register_blueprint(bp)
    return histogram


class NodeCollector:
    """Queues, ingest and apply counts and sync lag, read from the node's database per scrape."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # optional: as above

        app, node = self.app, self.app.extensions["liandong_node"]
        conn = app.extensions["liandong_db"].connect(app)
        try:
            queues = GaugeMetricFamily("liandong_queue_length", "Items waiting, by queue.", labels=["queue"])
            for name, length in node.kind.queue_counts(conn).items():
                queues.add_metric([name], length)
            yield queues
            if node.kind.ingests:
                ingested = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
                waiting = conn.execute("SELECT COUNT(*) FROM apply_queue").fetchone()[0]
                yield CounterMetricFamily("liandong_ingested_envelopes", "Envelopes accepted into their "
                                          "origin's chain (acknowledged).", value=ingested)
                yield CounterMetricFamily("liandong_applied_envelopes", "Accepted envelopes applied to the "
                                          "case register.", value=ingested - waiting)
                oldest = conn.execute("SELECT MIN(i.received_at) FROM apply_queue q JOIN inbox i"
                                      " ON i.origin = q.origin AND i.seq = q.seq").fetchone()[0]
                lag = (node.now() - parse_iso(oldest)).total_seconds() if oldest else 0.0
                yield GaugeMetricFamily("liandong_apply_lag_seconds", "Age of the oldest accepted envelope "
                                        "not yet applied (0 when none waits).", value=max(0.0, lag))
            else:
                _, age = parent_contact_age(conn, node, app.extensions["liandong_started"])
                yield GaugeMetricFamily("liandong_parent_contact_age_seconds", "Seconds since the last "
                                        "successful sync round with the parent (since start-up if none).", value=age)
                relayed = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'acked'").fetchone()[0]
                yield CounterMetricFamily("liandong_acked_envelopes", "This node's own envelopes the hub "
                                          "has acknowledged.", value=relayed)
        finally:
            conn.close()


@bp.get("/metrics")
@public  # authenticates itself below: a session role or the METRICS_TOKEN bearer
def metrics():
    """Prometheus text exposition; admin/supervisor session or the METRICS_TOKEN bearer."""
    from prometheus_client import (  # optional: loaded where /metrics is used (hub, township), not in the village process
        CONTENT_TYPE_LATEST,
        generate_latest,
    )

    token = current_app.config.get("METRICS_TOKEN")
    header = request.headers.get("Authorization", "")
    by_token = bool(token) and header.startswith("Bearer ") and hmac.compare_digest(
        header[7:].strip().encode(), str(token).encode())
    if not by_token:
        if g.get("account") is None:
            raise Unauthorized("读取监控指标需要管理员或监察员登录，或有效的 METRICS_TOKEN")
        if g.account["role"] not in METRICS_ROLES:
            raise Forbidden("只有管理员或监察员可以读取监控指标")
    return Response(generate_latest(current_app.extensions["liandong_metrics"]), mimetype=CONTENT_TYPE_LATEST)
