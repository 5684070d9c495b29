"""Default deny on every node: each route of the three apps refuses a caller without credentials."""

from __future__ import annotations

import re

import pytest
from flask import url_for

# The only views anyone may reach without an account. A new public view must be added here on
# purpose (and reviewed), or this module fails.
# metrics.metrics authenticates itself (admin/supervisor session or METRICS_TOKEN): test_health_metrics.py.
# The icon and the 大字 switch (a cookie and a redirect to a local path) carry no data.
PUBLIC_ENDPOINTS = {"auth.login", "health.healthz", "metrics.metrics", "static", "display.favicon", "display.text_size"}


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def routes(app):
    """(endpoint, url, method) of every rule, arguments filled with a placeholder."""
    for rule in app.url_map.iter_rules():
        with app.test_request_context():
            url = url_for(rule.endpoint, **{a: "0" * 64 for a in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, url, method


def is_public(app, endpoint: str) -> bool:
    return endpoint in PUBLIC_ENDPOINTS or endpoint.endswith(".static")


def is_node_signed(app, endpoint: str) -> bool:
    return getattr(app.view_functions[endpoint], "liandong_node_signed", False)


def test_every_route_is_known_to_the_walk(net):
    # Guard against a walk that silently covers nothing.
    for handle in net.all_nodes():
        endpoints = {e for e, _, _ in routes(handle.app)}
        assert {"auth.login", "health.healthz", "cases.api_case", "auth.logout"} <= endpoints
        if handle.tier != "village":
            assert {"sync.push", "sync.pull", "sync.blob_status", "sync.blob_chunk"} <= endpoints
    assert "intake.api_create_case" in {e for e, _, _ in routes(net.village().app)}


def test_every_non_public_route_refuses_an_anonymous_request(net):
    checked = 0
    for handle in net.all_nodes():
        app = handle.app
        client = app.test_client()
        for endpoint, url, method in routes(app):
            if is_public(app, endpoint):
                continue
            response = client.open(url, method=method)
            where = f"{handle.tier} {method} {url} ({endpoint})"
            if is_node_signed(app, endpoint):
                assert 400 <= response.status_code < 500, where
                assert response.is_json and response.json["error"]["code"], where
                if url.startswith("/sync/"):
                    assert response.status_code == 401, where
                    assert response.json["error"]["code"] == "node_auth", where
            elif url.startswith("/api/"):
                assert response.status_code == 401, where
                assert response.is_json and response.json["error"]["code"] == "unauthorized", where
                assert re.search(r"[\u4e00-\u9fff]", response.json["error"]["message"]), where
            else:
                assert response.status_code == 302, where
                assert response.headers["Location"].startswith("/login"), where
            checked += 1
    assert checked > 40


def test_a_wrong_bearer_token_is_refused_everywhere(net):
    for handle in net.all_nodes():
        client = handle.app.test_client()
        headers = {"Authorization": "Bearer not-a-token"}
        api = client.get("/api/v1/cases/" + "0" * 32, headers=headers)
        assert api.status_code == 401 and api.json["error"]["code"] == "unauthorized"
        page = client.get("/cases/" + "0" * 32, headers=headers)
        assert page.status_code == 401  # a bearer caller is an API client: no redirect
        write = client.post("/api/v1/cases/" + "0" * 32 + "/actions", json={"action": "accept"}, headers=headers)
        assert write.status_code == 401


def test_an_anonymous_api_write_gets_401(net):
    response = net.village().app.test_client().post("/api/v1/cases", json={})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_healthz_is_public(net):
    for handle in net.all_nodes():
        response = handle.app.test_client().get("/healthz")
        assert response.status_code == 200
        assert response.json["node_id"] == handle.node_id and response.json["tier"] == handle.tier


def test_sync_endpoints_without_signature_headers_get_401_over_http(net):
    for handle in (net.hub, net.township):
        for method, path in (("POST", "/sync/v1/push"), ("POST", "/sync/v1/pull"),
                             ("POST", "/sync/v1/blobs/status"), ("PUT", "/sync/v1/blobs/" + "0" * 64)):
            response = handle.api(method, path, data=b'{"envelopes": []}',
                                  headers={"Content-Type": "application/json"})
            assert response.status_code == 401, (handle.tier, path)
            assert response.json()["error"]["code"] == "node_auth"
        # A node name alone, without a signature, is not enough either.
        response = handle.api("POST", "/sync/v1/pull", data=b"{}",
                              headers={"X-Liandong-Node": net.village().node_id, "X-Liandong-Nonce": "1"})
        assert response.status_code == 401


def csrf_token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def test_a_form_post_with_a_session_but_no_csrf_token_is_refused(net):
    village = net.village()
    village.account("formagent", "agent", village.node_id)
    client = village.app.test_client()
    login_page = client.get("/login").get_data(as_text=True)

    # The login form itself needs its token.
    refused = client.post("/login", data={"username": "formagent", "password": "test-password-1"})
    assert refused.status_code == 400
    logged_in = client.post("/login", data={"username": "formagent", "password": "test-password-1",
                                            "csrf_token": csrf_token_of(login_page)})
    assert logged_in.status_code == 302
    assert client.get("/cases").status_code == 200  # the session works

    no_token = client.post("/logout")
    assert no_token.status_code == 400
    assert "页面已过期" in no_token.get_data(as_text=True)
    assert client.get("/cases").status_code == 200  # still logged in: the logout did not run

    api_without_token = client.post("/api/v1/cases", json={})
    assert api_without_token.status_code == 400 and api_without_token.json["error"]["code"] == "csrf"

    token = csrf_token_of(client.get("/login").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/cases").status_code == 302  # logged out
