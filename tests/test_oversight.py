"""电子监察 board, statistics (exact figures), CSV export and the hub admin's pages.

The statistics are the hub's own rules (the service tier, ``tests/service.py``): on pinned clocks
(March 2026, no holidays in the weeks used) four village cases reach the hub's register, are
accepted, decided, refused and served at chosen instants, so every figure has one right value.
Only admins (and supervisors for oversight) reach the admin pages, which create accounts; the
CLI publishes a catalog. Over a real network on real clocks: catalog and calendar publishing
reach a village by sync, and revocation from the page refuses the village's next push.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from faults import cli
from network import case_payload, catalog
from network_session import session_for
from service import VILLAGE, ServiceHub

from shared.core.clock import FixedClock
from shared.services import supervision

RS, YB, CL = "130926-rs", "130926-yb", "130926-cl"


def _at(day: int, hour: int, minute: int = 0) -> FixedClock:
    """A fixed clock at 2026-03-<day> <hour>:<minute> China time."""
    return FixedClock(datetime(2026, 3, day, hour - 8, minute, tzinfo=UTC))


def _file(village, agent, code: str) -> str:
    item = next(i for i in catalog(village, agent) if i["code"] == code)
    response = village.api("POST", "/api/v1/cases", agent, json=case_payload(item))
    assert response.status_code == 201, response.text
    return response.json()["case_id"]


def _csrf(session, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', session.get(url, timeout=10).text).group(1)


def _client_csrf(client, path: str) -> str:
    """The CSRF token of the page at ``path``, read through a signed-in test client."""
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


# ----------------------------------------------------------------------------- statistics (service tier)


@pytest.fixture(scope="module")
def stats_hub(tmp_path_factory):
    """Four known cases (A, B, C, D) of village 130926100201 in a hub's register; see the module docstring."""
    hub = ServiceHub(tmp_path_factory.mktemp("stats-hub"))

    def act(case_id: str, office: str, **body) -> None:
        token = hub.account(f"w_{office}", "chief", office)
        response = hub.act(token, case_id, **body)
        assert response.status_code == 200, response.text

    cases = {}
    # A: filed Mon 03-02 09:00, at the hub 10:00, accepted 11:00, approved Wed 03-04 (2 WD, limit 3): on time.
    hub.node.clock = _at(2, 10)
    cases["A"] = hub.received_case("130926-RS-0001", submitted_at=_at(2, 9).now())
    hub.node.clock = _at(2, 11)
    act(cases["A"], RS, action="accept", comment="")
    # B: filed Mon 03-02 12:00 but reaches the hub only Wed 03-04 10:00 (46 h: not transmitted in a day).
    # C and D: filed Wed 03-04 09:00 and 09:30, at the hub with B at 10:00.
    hub.node.clock = _at(4, 10)
    cases["B"] = hub.received_case("130926-RS-0001", submitted_at=_at(2, 12).now())
    cases["C"] = hub.received_case("130926-YB-0001", submitted_at=_at(4, 9).now())
    cases["D"] = hub.received_case("130926-CL-0001", submitted_at=_at(4, 9, 30).now())
    hub.node.clock = _at(4, 10, 30)
    act(cases["B"], RS, action="accept", comment="")  # deadline Mon 03-09
    hub.node.clock = _at(4, 10, 45)
    act(cases["D"], CL, action="accept", comment="")  # 15 WD: deadline Wed 03-25
    hub.node.clock = _at(4, 11)
    act(cases["C"], YB, action="reject", comment="申请人已在外地参保，不属于本县受理范围")
    hub.node.clock = _at(4, 15)
    act(cases["A"], RS, action="approve", comment="符合条件")
    hub.node.clock = _at(11, 10)
    act(cases["B"], RS, action="approve", comment="符合条件")  # 5 WD after acceptance: late
    # A is served at the village on Thu 03-05 (送达): its event reaches the hub.
    hub.node.clock = _at(5, 9)
    hub.village_event(cases["A"], "deliver", detail={"manner": "直接送达"})
    assert hub.scalar("SELECT status FROM cases WHERE case_id = ?", (cases["A"],)) == "CONCLUDED"
    # Today is Fri 03-27: D (deadline 03-25) is 2 WD overdue, a 黄牌; the scheduled job records it.
    hub.node.clock = _at(27, 10)
    supervision.run(hub.conn, hub.node, hub.node.emit)
    hub.cases = cases
    hub.supervisor = hub.account("sup", "supervisor", display_name="钱监察")
    yield hub
    hub.close()


def _stats(hub, **params) -> dict:
    response = hub.api("GET", "/api/v1/stats", hub.supervisor, query_string=params)
    assert response.status_code == 200, response.text
    return response.json


def test_statistics_figures_are_exact(stats_hub):
    data = _stats(stats_hub)
    totals = data["totals"]
    assert data["today"] == "2026-03-27"
    assert {k: totals[k] for k in (
        "cases", "village_accepted", "village_share", "decided", "on_time", "on_time_rate", "avg_working_days",
        "village_cases", "transmitted", "transmission_rate", "closable", "closed", "closure_rate",
        "yellow_cards", "red_cards")} == {
        "cases": 4, "village_accepted": 4, "village_share": 1.0,
        "decided": 2, "on_time": 1, "on_time_rate": 0.5, "avg_working_days": 3.5,
        "village_cases": 4, "transmitted": 3, "transmission_rate": 0.75,
        "closable": 3, "closed": 1, "closure_rate": 0.3333,
        "yellow_cards": 1, "red_cards": 0,
    }
    assert totals["satisfaction"] is None  # nobody rated yet
    groups = {g["key"]: g for g in data["groups"]}
    assert set(groups) == {"rs", "yb", "cl"}
    assert groups["rs"]["label"] == "人力资源和社会保障局"
    assert (groups["rs"]["cases"], groups["rs"]["on_time_rate"], groups["rs"]["avg_working_days"]) == (2, 0.5, 3.5)
    assert (groups["rs"]["transmitted"], groups["rs"]["closed"]) == (1, 1)
    assert (groups["yb"]["closable"], groups["yb"]["closed"], groups["yb"]["decided"]) == (1, 0, 0)
    assert (groups["cl"]["yellow_cards"], groups["cl"]["decided"]) == (1, 0)


def test_statistics_filters(stats_hub):
    assert _stats(stats_hub, department="rs")["totals"]["cases"] == 2
    assert _stats(stats_hub, **{"from": "2026-03-03"})["totals"]["cases"] == 2  # C and D
    assert _stats(stats_hub, to="2026-03-02")["totals"]["on_time_rate"] == 0.5  # A and B
    assert _stats(stats_hub, level="township")["totals"]["cases"] == 0
    assert _stats(stats_hub, level="village")["totals"]["cases"] == 4
    assert _stats(stats_hub, item="130926-CL-0001")["totals"]["yellow_cards"] == 1
    assert _stats(stats_hub, office=YB)["totals"]["closable"] == 1
    by_item = _stats(stats_hub, by="item")
    assert [g["key"] for g in by_item["groups"]] == ["130926-CL-0001", "130926-RS-0001", "130926-YB-0001"]
    by_month = _stats(stats_hub, by="month")
    assert [(g["key"], g["cases"]) for g in by_month["groups"]] == [("2026-03", 4)]
    bad = stats_hub.api("GET", "/api/v1/stats", stats_hub.supervisor, query_string={"from": "03/01/2026"})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "from"
    bad = stats_hub.api("GET", "/api/v1/stats", stats_hub.supervisor, query_string={"level": "county"})
    assert bad.status_code == 400 and "受理层级" in bad.json["error"]["message"]


def test_csv_export_has_bom_and_chinese_headers(stats_hub):
    session = stats_hub.login("sup")
    response = session.get("/admin/stats.csv", query_string={"by": "department"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.data.startswith(b"\xef\xbb\xbf")
    lines = response.data.decode("utf-8-sig").split("\r\n")
    header = lines[0].split(",")
    assert header[:4] == ["部门", "办件数", "村级受理数", "村级受理占比"]
    assert "按时办结率" in header and "传送率" in header and "闭合度" in header and "黄牌数" in header
    total = dict(zip(header, lines[-2].split(","), strict=True))
    assert total["部门"] == "合计" and total["办件数"] == "4" and total["按时办结率"] == "50.00%"
    assert total["平均办理工作日"] == "3.5" and total["传送率"] == "75.00%" and total["闭合度"] == "33.33%"
    assert any(line.startswith("人力资源和社会保障局,2,") for line in lines)


def test_supervisor_board_lists_the_yellow_card_and_the_refusal(stats_hub):
    session = stats_hub.login("sup")
    page = session.get("/admin/supervision")
    assert page.status_code == 200
    html = page.text
    assert '<svg role="img" class="chart"' in html and "各部门预警与红黄牌" in html
    assert 'id="count-yellow">1<' in html and 'id="count-red">0<' in html and 'id="count-reject">1<' in html
    alerts = html.split('id="alerts"')[1].split("</table>")[0]
    receipt_d = stats_hub.scalar("SELECT receipt_no FROM cases WHERE case_id = ?", (stats_hub.cases["D"],))
    assert receipt_d in alerts and "黄牌" in alerts and "残疾人联合会" in alerts
    receipt_a = stats_hub.scalar("SELECT receipt_no FROM cases WHERE case_id = ?", (stats_hub.cases["A"],))
    assert receipt_a not in alerts
    groups = html.split('id="groups"')[1].split("</table>")[0]
    assert "残疾人联合会" in groups and "130926-cl" not in groups  # offices by name, not code
    refusals = html.split('id="refusals"')[1].split("</table>")[0]
    assert "不予受理" in refusals and "不属于本县受理范围" in refusals
    # The statistics page draws its charts on the server too.
    stats_page = session.get("/admin/stats").text
    assert stats_page.count("<svg") == 2
    assert 'data-key="on_time_rate">50.0% <span class="muted">(1/2)</span>' in stats_page
    assert 'data-key="transmission_rate">75.0% <span class="muted">(3/4)</span>' in stats_page


def test_board_flags_a_refusal_without_reason(stats_hub):
    from city_hub.oversight import board as oversight_board
    from shared.core.storage import write_transaction

    hub = stats_hub
    # A refusal recorded without a reason (as an old import might hold): the board must flag it.
    with write_transaction(hub.conn):
        hub.conn.execute(
            "INSERT INTO case_events(event_id, case_id, at, node, actor, action, from_status, to_status, comment)"
            " VALUES ('noreason-test', ?, '2026-03-05T02:00:00.000Z', '130926', 'legacy', 'deny', 'IN_REVIEW',"
            " 'DENIED', '')", (stats_hub.cases["D"],))
    try:
        board = oversight_board.board(hub.conn, "130926", hub.node.calendar, hub.node.clock.today_cn())
        assert board["refusal_counts"] == {"reject": 1, "deny": 1, "no_reason": 1}
        assert [r["reason"] for r in board["refusals"] if r["kind"] == "deny"] == [""]
        page = hub.login("sup").get("/admin/supervision").text
        assert 'id="count-noreason">1<' in page and "未说明理由</strong>" in page
    finally:
        with write_transaction(hub.conn):
            hub.conn.execute("DELETE FROM case_events WHERE event_id = 'noreason-test'")


def test_ratings_and_followups_enter_the_figures(stats_hub):
    from shared.core.storage import write_transaction

    hub, cases = stats_hub, stats_hub.cases
    if hub.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('case_ratings', 'followups')") != 2:
        pytest.skip("the feedback tables are not in this build")
    rating = ("INSERT INTO case_ratings(case_id, level, comment, channel, node, recorded_by, office, rated_at,"
              " received_at) VALUES (?, ?, '', 'village', '130926100201', 'agent', ?, '2026-03-05T02:00:00.000Z',"
              " '2026-03-05T02:00:00.000Z')")
    with write_transaction(hub.conn):
        hub.conn.execute(rating, (cases["A"], 2, RS))  # 不满意: A needs its 回访 before it counts as closed
        hub.conn.execute(rating, (cases["B"], 5, RS))
        hub.conn.execute("INSERT INTO followups(followup_id, case_id, level, office, opened_at, deadline)"
                         " VALUES ('fu-test', ?, 2, ?, '2026-03-05T02:00:00.000Z', '2026-03-26')", (cases["A"], RS))
    try:
        totals = _stats(stats_hub)["totals"]
        assert (totals["ratings"], totals["bad_ratings"], totals["satisfaction"]) == (2, 1, 0.5)
        assert (totals["closable"], totals["closed"], totals["closure_rate"]) == (3, 0, 0.0)
        with write_transaction(hub.conn):
            hub.conn.execute("UPDATE followups SET status = 'closed' WHERE followup_id = 'fu-test'")
        assert _stats(stats_hub)["totals"]["closed"] == 1
    finally:
        with write_transaction(hub.conn):
            hub.conn.execute("DELETE FROM followups WHERE followup_id = 'fu-test'")
            hub.conn.execute("DELETE FROM case_ratings WHERE case_id IN (?, ?)", (cases["A"], cases["B"]))


# ----------------------------------------------------------------------------- admin pages (service tier)


@pytest.fixture(scope="module")
def admin_hub(service):
    service.account("admin", "admin", display_name="孙管理")
    service.account("sup2", "supervisor")
    service.account("win", "window", RS)
    return service


def test_only_admins_reach_admin_pages_and_only_supervisors_and_admins_oversight(admin_hub):
    hub = admin_hub
    for path in ("/admin/accounts", "/admin/catalog", "/admin/calendar", "/admin/catalog/v1.json"):
        for user in ("win", "sup2"):
            assert hub.api("GET", path, hub.tokens[user]).status_code == 403, (path, user)
        assert hub.api("GET", path, hub.tokens["admin"]).status_code == 200, path
    for path in ("/admin/supervision", "/admin/stats", "/admin/stats.csv", "/api/v1/stats"):
        assert hub.api("GET", path, hub.tokens["win"]).status_code == 403, path
        assert hub.api("GET", path, hub.tokens["sup2"]).status_code == 200, path
    assert hub.api("GET", "/admin/catalog/v99.json", hub.tokens["admin"]).status_code == 404
    exported = hub.api("GET", "/admin/stats.json", hub.tokens["sup2"])
    assert exported.status_code == 200 and exported.json["totals"]["cases"] == 0
    village_id = VILLAGE
    refused = hub.api("POST", f"/admin/nodes/{village_id}/revoke", hub.tokens["sup2"])
    assert refused.status_code == 403
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village_id,)) == "active"
    # A form post without its CSRF token is refused.
    session = hub.login("admin")
    assert session.post(f"/admin/nodes/{village_id}/revoke").status_code == 400
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village_id,)) == "active"


def test_admin_creates_and_deactivates_an_account(admin_hub):
    hub = admin_hub
    session = hub.login("admin")
    url = "/admin/accounts"
    form = {"csrf_token": _client_csrf(session, url), "username": "zhou", "display_name": "周首席", "role": "chief",
            "office": RS, "password": "long-password-1"}
    page = session.post(url, data=form, follow_redirects=True).text
    token = re.search(r'id="api-token">([^<]+)<', page).group(1)
    assert hub.api("GET", "/queue", token).status_code == 200
    again = session.post(url, data=form, follow_redirects=True).text
    assert "已存在" in again
    no_office = session.post(url, data={**form, "username": "wu", "office": ""}, follow_redirects=True).text
    assert "审批人员必须选择所属部门窗口" in no_office
    assert hub.scalar("SELECT COUNT(*) FROM accounts WHERE username = 'wu'") == 0
    session.post(url + "/zhou/deactivate", data={"csrf_token": _client_csrf(session, url)}, follow_redirects=True)
    assert hub.scalar("SELECT active FROM accounts WHERE username = 'zhou'") == 0
    assert hub.api("GET", "/queue", token).status_code == 401
    own = session.post(url + "/admin/deactivate", data={"csrf_token": _client_csrf(session, url)}, follow_redirects=True).text
    assert "不能停用自己的账号" in own
    actions = {r[0] for r in hub.query("SELECT action FROM audit_log WHERE target = 'zhou'")}
    assert {"account.created", "account.deactivated"} <= actions


def test_cli_publishes_a_catalog_file(admin_hub, tmp_path):
    hub = admin_hub
    exported = cli("catalog", "export", "--data", hub.data_dir).output
    path = tmp_path / "catalog.json"
    path.write_text(exported, encoding="utf-8")
    before = hub.scalar("SELECT MAX(version) FROM metadata WHERE role = 'catalog'")
    out = cli("catalog", "publish", path, "--data", hub.data_dir).output
    assert f"catalog version {before + 1} published" in out
    bad = json.loads(exported)
    bad["items"][0]["department_code"] = "nope"
    path.write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
    result = cli("catalog", "publish", path, "--data", hub.data_dir, ok=False)
    assert result.exit_code != 0 and "第1项" in result.output and "department_code" in result.output
    assert hub.scalar("SELECT MAX(version) FROM metadata WHERE role = 'catalog'") == before + 1


# ----------------------------------------------------------------------------- admin network


@pytest.fixture(scope="module")
def admin_net(build_network):
    net = build_network(villages=1)
    net.hub.account("admin", "admin", display_name="孙管理")
    net.agent = net.village().account("agent", "agent")
    return net


def test_admin_publishes_a_catalog_version_that_reaches_the_village(admin_net):
    hub, village, agent = admin_net.hub, admin_net.village(), admin_net.agent
    old_case = _file(village, agent, "130926-RS-0001")
    admin_net.sync_all()
    assert hub.scalar("SELECT catalog_version FROM cases WHERE case_id = ?", (old_case,)) == 1
    session = session_for(hub, "admin")
    url = hub.url + "/admin/catalog"
    exported = session.get(url + "/v1.json", timeout=10).json()
    assert exported["version"] == 1
    items = exported["items"]
    # A broken item is refused with the item and the field named, in Chinese; nothing is published.
    broken = json.loads(json.dumps(items))
    broken[2]["materials"][0]["kind"] = "扫描件"
    page = session.post(url, data={"csrf_token": _csrf(session, url), "catalog_json": json.dumps(broken)},
                        timeout=10).text
    error = re.search(r'id="catalog-error">([^<]+)<', page).group(1)
    assert error.startswith("第3项（" + items[2]["code"]) and "materials[0].kind" in error and "原件" in error
    assert hub.scalar("SELECT MAX(version) FROM metadata WHERE role = 'catalog'") == 1
    # A valid edit, uploaded as a file, becomes version 2.
    rs = next(i for i in items if i["code"] == "130926-RS-0001")
    rs["promise_limit_wd"] = 2
    rs["name"] = "城乡居民养老保险参保登记（新版）"
    upload = {"catalog_file": ("catalog.json", json.dumps({"items": items}, ensure_ascii=False).encode(), "application/json")}
    page = session.post(url, data={"csrf_token": _csrf(session, url)}, files=upload, timeout=10).text
    assert "第 2 版" in page and "城乡居民养老保险参保登记（新版）" in page
    admin_net.sync_all()
    assert village.scalar("SELECT version FROM trusted_metadata WHERE role = 'catalog'") == 2
    assert next(i for i in catalog(village, agent) if i["code"] == "130926-RS-0001")["promise_limit_wd"] == 2
    new_case = _file(village, agent, "130926-RS-0001")
    admin_net.sync_all()
    assert village.scalar("SELECT catalog_version FROM cases WHERE case_id = ?", (old_case,)) == 1
    assert hub.scalar("SELECT catalog_version FROM cases WHERE case_id = ?", (old_case,)) == 1
    assert hub.scalar("SELECT catalog_version, limit_wd FROM cases WHERE case_id = ?", (new_case,)) == 2
    assert hub.scalar("SELECT limit_wd FROM cases WHERE case_id = ?", (new_case,)) == 2
    assert hub.scalar("SELECT limit_wd FROM cases WHERE case_id = ?", (old_case,)) == 3


SCHEDULE_2031 = {
    "year": 2031, "source": "国办发明电〔2030〕1号（测试）",
    "holidays": [{"name": "元旦", "start": "2031-01-01", "end": "2031-01-01"},
                 {"name": "劳动节", "start": "2031-05-01", "end": "2031-05-05"}],
    "workdays": ["2031-04-27"],
}


def test_admin_loads_a_holiday_schedule_that_reaches_the_village(admin_net):
    hub, village = admin_net.hub, admin_net.village()
    session = session_for(hub, "admin")
    url = hub.url + "/admin/calendar"
    bad = {**SCHEDULE_2031, "workdays": ["2031-04-28"]}  # a Monday: not a 调休 day
    page = session.post(url, data={"csrf_token": _csrf(session, url), "schedule_json": json.dumps(bad)},
                        timeout=10).text
    assert "节假日安排有误" in page and "2031-04-28" in page
    assert hub.scalar("SELECT COUNT(*) FROM metadata WHERE role = 'calendar'") == 0
    upload = {"schedule_file": ("2031.json", json.dumps(SCHEDULE_2031, ensure_ascii=False).encode(), "application/json")}
    page = session.post(url, data={"csrf_token": _csrf(session, url)}, files=upload, timeout=10).text
    assert "2031年节假日安排已导入" in page and "国办发明电〔2030〕1号（测试）" in page
    assert (hub.data_dir / "calendar" / "2031.json").exists()
    assert hub.node.calendar.is_working_day(datetime(2031, 4, 27).date())
    admin_net.sync_all()
    assert village.scalar("SELECT version FROM trusted_metadata WHERE role = 'calendar'") == 1
    assert 2031 in village.node.calendar.schedules
    assert not village.node.calendar.is_working_day(datetime(2031, 5, 2).date())  # a Friday off
    assert (village.data_dir / "calendar" / "2031.json").exists()


def test_revoke_from_the_page_refuses_the_villages_next_push(admin_net):
    hub, village, agent = admin_net.hub, admin_net.village(), admin_net.agent
    session = session_for(hub, "admin")
    url = hub.url + "/admin/nodes"
    page = session.post(f"{url}/{village.node_id}/revoke", data={"csrf_token": _csrf(session, url)}, timeout=10).text
    assert "已吊销节点" in page
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "revoked"
    row = page.split(f'id="node-{village.node_id}"')[1].split("</tr>")[0]
    assert "已吊销" in row and "恢复" in row
    admin_net.township.sync()  # the township learns the new registry
    _file(village, agent, "130926-RS-0001")
    result = village.sync()
    assert "HTTP 403" in result.get("error", "") and "node_revoked" in result["error"], result
    # Reinstating from the page lets it push again.
    session.post(f"{url}/{village.node_id}/reinstate", data={"csrf_token": _csrf(session, url)}, timeout=10)
    assert hub.scalar("SELECT status FROM nodes WHERE node_id = ?", (village.node_id,)) == "active"
    admin_net.township.sync()
    assert "error" not in village.sync()
