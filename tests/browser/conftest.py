"""Browser fixtures: one real network on loopback and Debian's Chromium driven by Playwright.

The network comes from ``tests/network.py`` (hub, township, village enrolled for real, served by
werkzeug threads, the scheduler off: tests drive sync rounds explicitly). Screenshots go to a
temporary folder, or to ``docs/screenshots/`` when ``LIANDONG_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from network import PASSWORD, Network
from network_session import session_for  # noqa: F401 - re-exported for the browser tests

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}
HUB_OFFICE = "130926-mz"  # 民政局 at the hub: 最低生活保障申请 is decided there
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def pytest_collection_modifyitems(items):
    for item in items:
        if "browser" in item.keywords and not os.path.exists(CHROMIUM):
            item.add_marker(pytest.mark.skip(reason=f"Chromium not installed at {CHROMIUM} (apt-get install chromium)"))


@pytest.fixture(scope="session")
def network(tmp_path_factory):
    """Hub 130926, township 130926100, village 130926100201, with one account per role."""
    net = Network.build(tmp_path_factory.mktemp("browser-net"), villages=1)
    village, township, hub = net.village(), net.township, net.hub
    village.account("agent", "agent", display_name="王代办")
    township.account("clerk", "clerk", office=township.node_id, display_name="李站员")
    # 民政局: 窗口首席代表 accepts; 低保 gives the 首席审批员 only 初审权, the 部门负责人 decides.
    hub.account("window", "window", office=HUB_OFFICE, display_name="赵窗口")
    hub.account("chief", "chief", office=HUB_OFFICE, display_name="钱审批")
    hub.account("head", "head", office=HUB_OFFICE, display_name="孙局长")
    yield net
    net.close()


def decide_at_hub(hub, case_id: str, action: str, comment: str) -> None:
    """受理 by the window, 初审 by the chief, then ``action`` by the head (a 初审权 item)."""
    steps = [("window", {"action": "accept"}),
             ("chief", {"action": "pre_review", "opinion": "同意" if action == "approve" else "不同意",
                        "comment": comment or "初审意见"}),
             ("head", {"action": action, "comment": comment})]
    for username, body in steps:
        r = hub.api("POST", f"/api/v1/cases/{case_id}/actions", hub.tokens[username], json=body)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """``new_page(javascript=True)``: a fresh browser context (its own cookies) at 1366×768."""
    contexts = []

    def make(javascript: bool = True):
        context = browser.new_context(viewport=VIEWPORT, locale="zh-CN", java_script_enabled=javascript)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory):
    """``shots(page, name)`` saves a full-page PNG screenshot."""
    folder = DOCS_SCREENSHOTS if os.environ.get("LIANDONG_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot


def login(page, handle, username: str) -> None:
    """Sign in through the node's login form."""
    page.goto(handle.url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.locator("main").inner_text()[:300]


