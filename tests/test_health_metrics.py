"""``/healthz`` (public: ok 200 / degraded 503, no personal data) and ``/metrics`` (protected)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from network import catalog, create_case, pick_item
from network_session import session_for
from prometheus_client.parser import text_string_to_metric_families

from shared.core.clock import iso


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    net.receipt = create_case(village, agent, pick_item(catalog(village, agent), "city"))
    net.sync_all()
    return net


def _health(handle):
    response = handle.app.test_client().get("/healthz")
    return response.status_code, response.json


def test_every_node_is_ok_with_its_queues_and_no_personal_data(net):
    status, body = _health(net.hub)
    assert status == 200 and body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "disk": "ok"}
    assert body["queues"] == {"apply_queue": 0, "quarantine": 0}
    status, body = _health(net.township)
    assert status == 200 and body["checks"]["parent_contact"] == "ok"
    assert body["queues"] == {"outbox_unacked": 0, "custody": 0, "follow_queue": 0}
    assert body["last_parent_contact"] and body["parent_contact_age_seconds"] < 60
    status, body = _health(net.village())
    assert status == 200 and set(body["queues"]) == {"outbox_unacked"}
    text = net.village().app.test_client().get("/healthz").get_data(as_text=True)
    assert "张三" not in text and net.receipt["case_id"] not in text  # counts only


def test_a_village_silent_too_long_is_degraded(net):
    village = net.village()
    conn = village.conn
    before = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()[0]
    silent_since = iso(village.node.now() - timedelta(seconds=village.app.config["HEALTH_PARENT_SILENCE_SECONDS"] + 60))
    conn.execute("UPDATE node_meta SET value = ? WHERE key = 'last_parent_contact'", (silent_since,))
    try:
        status, body = _health(village)
        assert status == 503 and body["status"] == "degraded"
        assert body["checks"]["parent_contact"] == "stale" and body["last_parent_contact"] == silent_since
    finally:
        conn.execute("UPDATE node_meta SET value = ? WHERE key = 'last_parent_contact'", (before,))
    assert _health(village)[0] == 200


def test_an_unreadable_database_is_degraded(net):
    path = net.township.data_dir / "node.sqlite3"
    conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("PRAGMA user_version=999")  # as if a newer release had taken the file over
    try:
        status, body = _health(net.township)
        assert status == 503 and body["checks"]["database"] == "error" and "queues" not in body
    finally:
        conn.execute(f"PRAGMA user_version={version}")
        conn.close()
    assert _health(net.township)[0] == 200


def test_metrics_refuse_anonymous_and_other_roles(net):
    hub = net.hub.app.test_client()
    assert hub.get("/metrics").status_code == 401
    assert hub.get("/metrics", headers={"Authorization": "Bearer guessed"}).status_code == 401
    window = net.hub.account("metrics_window", "window", "130926-rs")
    assert hub.get("/metrics", headers={"Authorization": f"Bearer {window}"}).status_code == 403
    assert net.village().app.test_client().get("/metrics").status_code == 404  # hub and township only


def test_metrics_with_the_token_parse_as_prometheus_text(net):
    net.hub.app.config["METRICS_TOKEN"] = "scrape-secret-0123456789"
    try:
        response = net.hub.app.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123456789"})
    finally:
        net.hub.app.config["METRICS_TOKEN"] = None
    assert response.status_code == 200 and response.mimetype == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    queues = {s.labels["queue"]: s.value for s in families["liandong_queue_length"].samples}
    assert queues == {"apply_queue": 0, "quarantine": 0}
    ingested = families["liandong_ingested_envelopes"].samples[0].value
    assert ingested >= 1 and families["liandong_applied_envelopes"].samples[0].value == ingested
    assert families["liandong_apply_lag_seconds"].samples[0].value == 0
    assert families["liandong_http_request_duration_seconds"].type == "histogram"


def test_an_admin_or_supervisor_reads_township_metrics(net):
    admin = net.township.account("metrics_admin", "admin")
    response = net.township.app.test_client().get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {s.labels["queue"] for s in families["liandong_queue_length"].samples} == {"outbox_unacked", "custody", "follow_queue"}
    assert families["liandong_parent_contact_age_seconds"].samples[0].value < 60
    latency = [s for s in families["liandong_http_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels["endpoint"] == "health.healthz"]
    assert sum(s.value for s in latency) >= 1  # earlier /healthz requests were timed


def test_a_supervisor_session_reads_hub_metrics(net):
    net.hub.account("metrics_supervisor", "supervisor")
    session = session_for(net.hub, "metrics_supervisor")
    response = session.get(net.hub.url + "/metrics", timeout=10)
    assert response.status_code == 200 and "liandong_queue_length" in response.text
