"""The admin and the supervisor in Chromium: node tree, catalog publish, 电子监察 board with its chart.

A network of its own (the session network of the other browser tests keeps catalog version 1).
"""

from __future__ import annotations

import json
from datetime import date, datetime, time

import pytest
from conftest import login
from network import case_payload, catalog

from shared.core.clock import CN_TZ, FixedClock
from shared.services import supervision

OFFICE = "130926-cl"  # 残疾人联合会: 残疾人证新办, 15 working days


@pytest.fixture(scope="module")
def admin_network(build_network):
    net = build_network(villages=1)
    net.hub.account("admin", "admin", display_name="孙管理")
    net.hub.account("sup", "supervisor", display_name="钱监察")
    window = net.hub.account("cl_window", "window", OFFICE)
    village = net.village()
    agent = village.account("agent", "agent")
    item = next(i for i in catalog(village, agent) if i["code"] == "130926-CL-0001")
    response = village.api("POST", "/api/v1/cases", agent, json=case_payload(item))
    assert response.status_code == 201, response.text
    net.case_id = response.json()["case_id"]
    net.sync_all()
    net.window = window
    accepted = net.hub.api("POST", f"/api/v1/cases/{net.case_id}/actions", window, json={"action": "accept"})
    assert accepted.status_code == 200, accepted.text
    return net


def accepted_deadline(net) -> str:
    case = net.hub.api("GET", f"/api/v1/cases/{net.case_id}", net.window).json()
    assert case["status"] == "ACCEPTED" and case["deadline"], case
    return case["deadline"]


@pytest.mark.browser
def test_admin_publishes_a_catalog_and_the_supervisor_sees_the_board(admin_network, new_page, shots, tmp_path):
    hub = admin_network.hub
    page = new_page()
    login(page, hub, "admin")
    # Admins land on the node tree: hub, township, village.
    assert page.url.endswith("/admin/nodes")
    tree = page.locator("#node-tree")
    for node_id in ("130926", "130926100", admin_network.village().node_id):
        assert tree.locator(f"#node-{node_id}").is_visible()
    assert tree.get_by_role("button", name=f"吊销 {admin_network.village().node.config['NODE_NAME']}").is_visible()
    shots(page, "hub-admin-nodes")

    page.get_by_role("link", name="事项目录").first.click()
    assert page.locator("#catalog-version").inner_text() == "第 1 版"
    exported = page.request.get(hub.url + "/admin/catalog/v1.json").json()
    item = next(i for i in exported["items"] if i["code"] == "130926-RS-0001")
    item["name"] = "城乡居民养老保险参保登记（浏览器发布）"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(exported, ensure_ascii=False), encoding="utf-8")
    page.set_input_files("#catalog_file", str(path))
    page.get_by_role("button", name="校验并发布").click()
    page.wait_for_load_state()
    assert page.locator("#catalog-version").inner_text() == "第 2 版"
    assert page.get_by_role("alert").first.inner_text().startswith("事项目录第 2 版已签名发布")
    assert page.locator("#catalog-items").get_by_text("城乡居民养老保险参保登记（浏览器发布）").is_visible()
    shots(page, "hub-admin-catalog")

    # One working day past its deadline the accepted 残疾人证 case is overdue: a 黄牌 on the board.
    node = hub.node
    deadline = date.fromisoformat(accepted_deadline(admin_network))
    overdue = node.calendar.add_working_days(deadline, 1)
    clock = node.clock
    node.clock = FixedClock(datetime.combine(overdue, time(10), tzinfo=CN_TZ))
    try:
        supervision.run(hub.conn, node, node.emit)
        supervisor = new_page()
        login(supervisor, hub, "sup")
        assert supervisor.url.endswith("/admin/supervision")
        chart = supervisor.locator("svg.chart")
        assert chart.count() == 1 and chart.is_visible()
        assert chart.locator("rect").count() >= 2  # a 黄牌 bar and the legend
        assert "残疾人联合会" in chart.text_content()
        assert supervisor.locator("#count-yellow").inner_text() == "1"
        row = supervisor.locator("#alerts tr.alert-yellow")
        assert row.count() == 1 and "残疾人证新办" in row.inner_text()
        shots(supervisor, "hub-supervision-board")
        supervisor.get_by_role("link", name="统计分析").first.click()
        supervisor.wait_for_load_state()
        assert supervisor.locator("svg.chart").count() == 2
        assert supervisor.locator('#stats tr.total td[data-key="cases"]').inner_text() == "1"
        assert supervisor.locator('#stats tr.total td[data-key="yellow_cards"]').inner_text() == "1"
        shots(supervisor, "hub-stats")
    finally:
        node.clock = clock
