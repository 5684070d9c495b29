"""Nodes on one machine (the demo on 127.0.0.1) keep separate sessions in one browser.

Cookies are per host, not per port, so with Flask's default cookie name a login at the hub
would replace the village's session. Each node names its cookie ``liandong_<node_id>``.
"""

from __future__ import annotations

import re

import pytest
import requests
from network import PASSWORD

from shared.web.factory import session_cookie_name


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=1)
    net.village().account("agent", "agent", net.village().node_id, display_name="王代办")
    net.hub.account("window", "window", "130926-mz", display_name="赵窗口")
    return net


def _login(jar: requests.Session, handle, username: str) -> None:
    page = jar.get(handle.url + "/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = jar.post(handle.url + "/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf},
                 timeout=10)
    assert r.ok and "/login" not in r.url, r.text[:300]


def _signed_in(jar: requests.Session, handle) -> bool:
    r = jar.get(handle.url + "/", timeout=10)
    return r.status_code == 200 and "/login" not in r.url


def test_two_nodes_sessions_coexist_in_one_cookie_jar(net):
    village, hub = net.village(), net.hub
    assert village.url.split(":")[1] == hub.url.split(":")[1]  # same host, different ports
    jar = requests.Session()
    _login(jar, village, "agent")
    _login(jar, hub, "window")
    assert _signed_in(jar, village) and _signed_in(jar, hub)
    names = {c.name for c in jar.cookies}
    assert {session_cookie_name(village.node_id), session_cookie_name(hub.node_id)} <= names
    assert "session" not in names
    # Logging out at the hub leaves the village signed in.
    page = jar.get(hub.url + "/", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    jar.post(hub.url + "/logout", data={"csrf_token": csrf}, timeout=10)
    assert not _signed_in(jar, hub) and _signed_in(jar, village)
