"""Every page of every node: Chinese, served offline (no external host), reachable for its role."""

from __future__ import annotations

import re

import pytest
from conftest import decide_at_hub, login, session_for
from network import case_payload

EXTERNAL = re.compile(r"""(?:https?:)?//(?!127\.0\.0\.1[:/"'\s]|localhost[:/"'\s])[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")
SKIP_PREFIXES = ("/api/", "/sync/", "/enrol/", "/healthz", "/metrics", "/logout", "/assets/", "/static/", "/favicon.ico")
DIBAO = "130926-MZ-0001"


def _external_refs(text: str) -> list[str]:
    return [m.group(0) for m in EXTERNAL.finditer(text)]


def _decided_case(network) -> dict:
    """One case taken at the village, approved at the hub, known at all three nodes."""
    village, hub = network.village(), network.hub
    items = {i["code"]: i for i in village.api("GET", "/api/v1/catalog", village.tokens["agent"]).json()["items"]}
    r = village.api("POST", "/api/v1/cases", village.tokens["agent"],
                    json=case_payload(items[DIBAO]))  # a scan of every required material
    assert r.status_code == 201, r.text
    case = r.json()
    network.sync_all()
    decide_at_hub(hub, case["case_id"], "approve", "符合条件")
    network.sync_all()
    return case


def _pages(handle, case_id: str) -> list[str]:
    """Every GET page without arguments, plus the pages of one case and one catalog item."""
    paths = []
    for rule in handle.app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith(SKIP_PREFIXES):
            paths.append(rule.rule)
    paths += [f"/cases/{case_id}", f"/cases/{case_id}/receipt", f"/cases/{case_id}/notice"]
    if handle.tier != "hub":
        paths += [f"/catalog/{DIBAO}", f"/cases/new/{DIBAO}", "/catalog?q=sydj", "/things/new/130926-YJS-0001"]
    return sorted(set(paths))


def test_every_page_is_chinese_and_refers_to_no_external_host(network):
    case = _decided_case(network)
    network.hub.account("admin", "admin", display_name="管理员")
    logins = [(network.village(), "agent"), (network.township, "clerk"), (network.hub, "window"),
              (network.hub, "admin")]
    seen = 0
    for handle, username in logins:
        s = session_for(handle, username)
        for path in _pages(handle, case["case_id"]) + ["/login"]:
            r = s.get(handle.url + path, timeout=10)
            if r.status_code == 403 and username == "window" and path.startswith("/admin"):
                continue  # the node tree is for admins and supervisors
            assert r.status_code == 200, (handle.tier, username, path, r.status_code)
            assert '<html lang="zh-CN">' in r.text, (handle.tier, path)
            assert _external_refs(r.text) == [], (handle.tier, path, _external_refs(r.text))
            for asset in re.findall(r'(?:href|src)="(/assets/[^"]+)"', r.text):
                body = s.get(handle.url + asset, timeout=10)
                assert body.status_code == 200 and _external_refs(body.text) == [], asset
            seen += 1
    assert seen >= 25


def test_the_detector_catches_an_external_host():
    assert _external_refs('<link href="https://cdn.example.com/x.css">')
    assert _external_refs("@import url(//fonts.googleapis.com/css)")
    assert not _external_refs('<a href="http://127.0.0.1:5000/cases">')
    assert not _external_refs("http://localhost:8000/x")


@pytest.mark.browser
def test_every_login_page_is_zh_cn_in_the_browser(network, new_page):
    for handle in network.all_nodes():
        page = new_page(javascript=False)
        requested = []
        page.on("request", lambda req, seen=requested: seen.append(req.url))
        page.goto(handle.url + "/login")
        assert page.get_attribute("html", "lang") == "zh-CN"
        assert page.get_by_label("用户名").is_visible() and page.get_by_label("密码").is_visible()
        assert all(u.startswith(handle.url) for u in requested), requested
    page = new_page()
    login(page, network.village(), "agent")
    assert page.get_attribute("html", "lang") == "zh-CN"


def test_banners_for_offline_wrong_clock_and_stale_catalog(network):
    """The village shows each banner when its condition holds, and none when all is well."""
    village = network.village()
    network.sync_all()
    s = session_for(village, "agent")

    def banners() -> list[str]:
        return re.findall(r'<p class="banner (?:warn|bad) noprint" role="status">([^<]+)</p>',
                          s.get(village.url + "/cases", timeout=10).text)

    assert banners() == []
    conn = village.conn
    old_contact = village.scalar("SELECT value FROM node_meta WHERE key = 'last_parent_contact'")
    old_expires = village.scalar("SELECT expires FROM trusted_metadata WHERE role = 'catalog'")
    try:
        with conn:
            conn.execute("UPDATE node_meta SET value = '2020-01-01T00:00:00Z' WHERE key = 'last_parent_contact'")
            conn.execute("INSERT INTO node_meta(key, value) VALUES ('clock_skew_ms', '-1500000')"
                         " ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            conn.execute("UPDATE trusted_metadata SET expires = '2021-01-01T00:00:00Z' WHERE role = 'catalog'")
        shown = " ".join(banners())
        assert "未连通乡镇便民服务站（离线）" in shown
        assert "本机时钟比乡镇便民服务站慢了约 25 分钟" in shown
        assert "办事指南目录已过有效期（2021-01-01）" in shown
    finally:
        with conn:
            conn.execute("UPDATE node_meta SET value = ? WHERE key = 'last_parent_contact'", (old_contact,))
            conn.execute("UPDATE node_meta SET value = '0' WHERE key = 'clock_skew_ms'")
            conn.execute("UPDATE trusted_metadata SET expires = ? WHERE role = 'catalog'", (old_expires,))
    assert banners() == []
