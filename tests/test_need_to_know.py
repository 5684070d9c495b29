"""Need-to-know reads (issue 10 point 2) over a real network of hub, township and village.

The cases reach the hub and the township by sync; the hundreds of reads of each account on each
route are then answered by each node's app in-process (``NodeHandle.local``): what is checked is
the node's answer, not the transport.

Every demo account of the hub and the township is tried on every read route of four cases:
a city case with a 联办 department, a city case of another department (with an ID-card scan),
a township-decided case pushed to its supervising department at the hub, and a case a
项目代办员 filed for its project. Who may read each case is written out here by hand (not
derived from the rule), so a guard removed from any route, list or rule branch fails a test.
"""

from __future__ import annotations

import os

import pytest
from network import case_payload, catalog, valid_id_number
from network_session import session_for

from city_hub import regulation
from city_hub.projects import credit_check_char
from provisioning.demo import _accounts_for_hub, _accounts_for_township
from shared.rules.access import CaseParties, Here, Reader, case_access
from shared.rules.idcard import mask_id_number
from shared.services import case_access as case_access_service

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(64)
JOINT_CITY = "130926-MZ-0005"  # 民政, 联办 with 残联
OTHER_CITY = "130926-RS-0001"  # 人社, no 联办
TOWNSHIP_ITEM = "130926-XZ-0001"  # decided by the township, 联办 with its 自然资源 and 农业农村
PROJECT_ITEM = "130926-WJ-0004"  # filed at the hub by a 项目代办员
ID_NUMBER = valid_id_number()
CREDIT_CODE = "91130926MA0C12345" + credit_check_char("91130926MA0C12345")
# Hub accounts beyond the demo's: the department that supervises the township item after the
# 审管 push, and two 项目代办员.
EXTRA_HUB = [{"username": "xz_window", "role": "window", "office": "130926-xz"},
             {"username": "xmdb", "role": "project_agent", "office": None},
             {"username": "xmdb2", "role": "project_agent", "office": None}]
# Who may read each case at the hub, by username (the hand-written expectation).
def _office_staff(*departments: str) -> set[str]:
    """The demo's window, 首席审批员 and 部门负责人 of each department (one office each)."""
    return {f"{d}_{role}" for d in departments for role in ("window", "chief", "head")}


HUB_READERS = {
    "joint_city": {"admin", "supervisor"} | _office_staff("mz", "cl"),
    "other_city": {"admin", "supervisor"} | _office_staff("rs"),
    "township": {"admin", "supervisor"} | _office_staff("xz"),
    "project": {"admin", "supervisor", "xmdb"} | _office_staff("wj"),
}
# At the township: its own clerk reads its villages' cases; a department clerk only what it is asked.
TOWNSHIP_READERS = {
    "joint_city": {"admin", "clerk"},
    "other_city": {"admin", "clerk"},
    "township": {"admin", "clerk", "nync_clerk", "zrzy_clerk"},
}
CASE_ROUTES = ("/api/v1/cases/{id}", "/cases/{id}", "/cases/{id}/receipt", "/cases/{id}/documents",
               "/api/v1/cases/{id}/opinions", "/api/v1/cases/{id}/site-visits", "/api/v1/cases/{id}/rating")


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def tokens(net):
    hub = {a["username"]: net.hub.account(a["username"], a["role"], a["office"])
           for a in _accounts_for_hub() + EXTRA_HUB}
    township = {a["username"]: net.township.account(a["username"], a["role"], a["office"])
                for a in _accounts_for_township()}
    village = {"agent": net.village().account("agent", "agent", net.village().node_id)}
    return {"hub": hub, "township": township, "village": village}


def _ok(response, status=200):
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text[:300]}"
    return response.json() if "json" in response.headers.get("Content-Type", "") else response


def _file(net, token, code, files=None):  # None: a scan of every required material
    item = next(i for i in catalog(net.village(), token) if i["code"] == code)
    payload = case_payload(item, files, applicant={"name": "张三", "id_number": ID_NUMBER, "phone": "13812345678"})
    return _ok(net.village().api("POST", "/api/v1/cases", token, json=payload), 201)["case_id"]


def _act(handle, token, case_id, action):
    return _ok(handle.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action, "comment": ""}))


@pytest.fixture(scope="module")
def cases(net, tokens):
    hub, township, agent = tokens["hub"], tokens["township"], tokens["village"]["agent"]
    ids = {"joint_city": _file(net, agent, JOINT_CITY),
           "other_city": _file(net, agent, OTHER_CITY, [("id_card", "身份证.png", PNG)]),
           "township": _file(net, agent, TOWNSHIP_ITEM)}
    net.sync_all()
    _act(net.hub, hub["mz_window"], ids["joint_city"], "accept")  # asks 残联 for its opinion
    _act(net.township, township["clerk"], ids["township"], "accept")  # asks the township's departments
    for clerk in ("zrzy_clerk", "nync_clerk"):
        _ok(net.township.api("POST", f"/api/v1/cases/{ids['township']}/opinions", township[clerk],
                             json={"opinion": "agree", "comment": "同意"}))
    _act(net.township, township["clerk"], ids["township"], "approve")
    net.sync_all()
    net.hub.apply_accepted()
    regulation.run_scheduled(net.hub.conn, net.hub.node)  # the 审管 push of the township's decision
    assert net.hub.scalar("SELECT office FROM regulator_pushes WHERE case_id = ?", (ids["township"],)) == "130926-xz"
    project = _ok(net.hub.api("POST", "/api/v1/projects", hub["xmdb"], json={
        "enterprise_name": "肃宁测试有限公司", "credit_code": CREDIT_CODE, "project_name": "厂房",
        "location": "肃宁县"}), 201)
    item = next(i for i in catalog(net.village(), agent) if i["code"] == PROJECT_ITEM)
    filed = _ok(net.hub.api("POST", f"/api/v1/projects/{project['project_id']}/cases", hub["xmdb"],
                            json=case_payload(item, applicant={"name": "赵经理", "id_number": ID_NUMBER,
                                                               "phone": "13812345678"})), 201)
    ids["project"] = filed["receipt"]["case_id"]
    return ids


def _paths(case_id: str) -> list[str]:
    return [route.format(id=case_id) for route in CASE_ROUTES]


def test_hub_every_account_reads_only_what_it_needs_on_every_route(net, tokens, cases):
    sha = net.hub.scalar("SELECT sha256 FROM case_materials WHERE case_id = ?", (cases["other_city"],))
    wrong = []
    for name, case_id in cases.items():
        paths = _paths(case_id) + ([f"/cases/{case_id}/materials/{sha}"] if name == "other_city" else [])
        for username, token in tokens["hub"].items():
            for path in paths:
                response = net.hub.local("GET", path, token)
                allowed = username in HUB_READERS[name]
                if allowed != (response.status_code == 200) or (not allowed and response.status_code != 404):
                    wrong.append((username, path, response.status_code))
                if not allowed:
                    assert "张三" not in response.text and "赵经理" not in response.text, (username, path)
    assert wrong == []


def test_township_department_clerk_reads_only_the_cases_it_is_asked_about(net, tokens, cases):
    wrong = []
    for name, readers in TOWNSHIP_READERS.items():
        for username, token in tokens["township"].items():
            for path in _paths(cases[name]):
                status = net.township.local("GET", path, token).status_code
                if (username in readers) != (status == 200) or (username not in readers and status != 404):
                    wrong.append((username, path, status))
    assert wrong == []


def test_a_document_is_read_only_by_the_readers_of_its_case(net, tokens, cases):
    doc_id = net.township.scalar("SELECT doc_id FROM documents WHERE case_id = ? AND kind != 'receipt'",
                                 (cases["township"],))
    assert doc_id is not None and net.hub.scalar("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,))
    for username, token in tokens["hub"].items():
        status = net.hub.local("GET", f"/documents/{doc_id}", token).status_code
        assert status == (200 if username in HUB_READERS["township"] else 404), username


def test_lists_show_only_readable_cases(net, tokens, cases):
    rs = net.hub.api("GET", "/queue", tokens["hub"]["rs_window"]).text
    receipts = {name: net.hub.scalar("SELECT receipt_no FROM cases WHERE case_id = ?", (cid,))
                for name, cid in cases.items()}
    assert receipts["other_city"] in rs and receipts["joint_city"] not in rs
    # The queue lists the office's cases only to the accounts that handle them.
    misfiled = net.hub.account("misfiled", "project_agent", "130926-rs")
    assert receipts["other_city"] not in net.hub.api("GET", "/queue", misfiled).text
    relay = {u: net.township.api("GET", "/relay/cases", t).text for u, t in tokens["township"].items()}
    assert all(receipts[n] in relay["clerk"] for n in TOWNSHIP_READERS)
    assert receipts["township"] in relay["zrzy_clerk"]
    assert receipts["other_city"] not in relay["zrzy_clerk"] and "张三" in relay["zrzy_clerk"]
    assert receipts["other_city"] not in relay["nync_clerk"]


def test_the_sql_filter_says_what_the_rule_says_for_every_account(net, tokens, cases):
    for handle, accounts in ((net.hub, tokens["hub"]), (net.township, tokens["township"]),
                             (net.village(), tokens["village"])):
        conn, here = handle.conn, case_access_service.here_of(handle.node)
        for username in accounts:
            reader = case_access_service.reader_of(conn.execute(
                "SELECT * FROM accounts WHERE username = ?", (username,)).fetchone())
            where, params = case_access_service.readable_where(reader, here)
            by_sql = {r[0] for r in conn.execute(f"SELECT case_id FROM cases c WHERE {where}", params)}
            by_rule = {r["case_id"] for r in conn.execute("SELECT * FROM cases")
                       if case_access(reader, case_access_service.parties(conn, r), here).read}
            assert by_sql == by_rule, (handle.node_id, username)


def test_id_number_is_masked_for_readers_who_do_not_need_it(net, tokens, cases):
    def id_of(handle, token, case_id):
        return _ok(handle.api("GET", f"/api/v1/cases/{case_id}", token))["applicant"]["id_number"]

    hub = tokens["hub"]
    assert id_of(net.hub, hub["rs_window"], cases["other_city"]) == ID_NUMBER  # the handling office
    assert id_of(net.village(), tokens["village"]["agent"], cases["other_city"]) == ID_NUMBER  # who took it
    masked = mask_id_number(ID_NUMBER)
    assert masked != ID_NUMBER
    assert id_of(net.hub, hub["cl_window"], cases["joint_city"]) == masked  # asked for an opinion
    assert id_of(net.hub, hub["supervisor"], cases["other_city"]) == masked
    assert id_of(net.hub, hub["xz_window"], cases["township"]) == masked  # supervising after the push
    assert id_of(net.township, tokens["township"]["clerk"], cases["other_city"]) == masked  # relays it
    for page in (net.township.api("GET", "/relay/cases", tokens["township"]["clerk"]).text,
                 net.village().api("GET", "/cases", tokens["village"]["agent"]).text):
        assert ID_NUMBER not in page and masked in page


def test_supervisor_reads_are_audited_with_their_reason(net, tokens, cases):
    before = net.hub.scalar("SELECT MAX(id) FROM audit_log")
    _ok(net.hub.api("GET", f"/api/v1/cases/{cases['other_city']}", tokens["hub"]["supervisor"]))
    assert [tuple(r) for r in net.hub.query("SELECT actor, action, target, detail FROM audit_log WHERE id > ?",
                                            (before,))] == [
        ("supervisor", "case.read", cases["other_city"], "oversight")]
    session = session_for(net.hub, "supervisor")
    assert session.get(f"{net.hub.url}/cases/{cases['joint_city']}", timeout=10).status_code == 200
    assert net.hub.scalar("SELECT detail FROM audit_log WHERE actor = 'supervisor' AND target = ?"
                          " ORDER BY id DESC LIMIT 1", (cases["joint_city"],)) == "oversight"


def test_list_pages_with_personal_data_are_audited(net, tokens, cases):
    before = net.township.scalar("SELECT MAX(id) FROM audit_log")
    net.township.api("GET", "/relay/cases", tokens["township"]["clerk"])
    [(action, target, detail)] = net.township.query(
        "SELECT action, target, detail FROM audit_log WHERE id > ? AND actor = 'clerk'", (before,))
    assert (action, target) == ("case.list", "relay.cases") and cases["other_city"] in detail
    before = net.hub.scalar("SELECT MAX(id) FROM audit_log")
    net.hub.api("GET", "/queue", tokens["hub"]["rs_window"])
    assert [tuple(r) for r in net.hub.query("SELECT action, target FROM audit_log WHERE id > ?", (before,))] == [
        ("case.list", "queue")]
    before = net.hub.scalar("SELECT MAX(id) FROM audit_log")
    _ok(net.hub.api("GET", "/api/v1/followups?all=1", tokens["hub"]["supervisor"]))  # 回访: names and phones
    assert [tuple(r) for r in net.hub.query("SELECT action, target FROM audit_log WHERE id > ?", (before,))] == [
        ("case.list", "followups")]


def test_a_case_linked_to_a_project_does_not_open_it_to_the_project_agent(net, tokens, cases):
    agent = tokens["hub"]["xmdb2"]
    project = _ok(net.hub.api("POST", "/api/v1/projects", agent, json={
        "enterprise_name": "另一公司", "credit_code": CREDIT_CODE, "project_name": "仓库", "location": "肃宁县"}), 201)
    _ok(net.hub.api("POST", f"/api/v1/projects/{project['project_id']}/cases", agent,
                    json={"case_id": cases["other_city"]}), 201)
    assert net.hub.api("GET", f"/api/v1/cases/{cases['other_city']}", agent).status_code == 404
    assert "张三" not in net.hub.api("GET", f"/api/v1/projects/{project['project_id']}", agent).text


# ------------------------------------------------------------------ the rule, branch by branch

HERE_HUB = Here("130926", "city")
HERE_TOWNSHIP = Here("130926100", "township", relays_villages=True)
CITY_CASE = CaseParties("city", "130926-mz", "130926100201", frozenset({"130926-cl"}))


@pytest.mark.parametrize("reader, case, here, expected", [
    (Reader("w", "window", "130926-mz"), CITY_CASE, HERE_HUB, (True, True, "handling")),
    (Reader("w", "window", "130926-mz"), CITY_CASE, HERE_TOWNSHIP, (False, False, "none")),  # not decided there
    (Reader("w", "window", "130926-rs"), CITY_CASE, HERE_HUB, (False, False, "none")),
    (Reader("c", "window", "130926-cl"), CITY_CASE, HERE_HUB, (True, False, "joint")),
    (Reader("s", "supervisor", None), CITY_CASE, HERE_HUB, (True, False, "oversight")),
    (Reader("a", "admin", None), CITY_CASE, HERE_TOWNSHIP, (True, False, "oversight")),
    (Reader("t", "clerk", "130926100"), CITY_CASE, HERE_TOWNSHIP, (True, False, "relay")),
    (Reader("t", "clerk", "130926100-zrzy"), CITY_CASE, HERE_TOWNSHIP, (False, False, "none")),
    (Reader("t", "clerk", "130926101"), CITY_CASE, Here("130926101", "township", True), (False, False, "none")),
    (Reader("v", "agent", "130926100201"), CITY_CASE, Here("130926100201", None), (True, True, "origin")),
    (Reader("v", "agent", "130926100202"), CITY_CASE, Here("130926100202", None), (False, False, "none")),
    (Reader("v", "agent", None), CITY_CASE, Here("130926100201", None), (True, True, "origin")),  # no office
    (Reader("v", "agent", "130926100202"), CITY_CASE, Here("130926100201", None), (False, False, "none")),
    (Reader("x", "window", "130926-xz"), CaseParties("township", "130926100", "130926100201",
                                                     supervising_office="130926-xz"), HERE_HUB,
     (True, False, "supervising")),
    (Reader("p", "project_agent", None), CaseParties("city", "130926-wj", "130926", project_agent="p"), HERE_HUB,
     (True, False, "project")),
    (Reader("q", "project_agent", None), CaseParties("city", "130926-wj", "130926", project_agent="p"), HERE_HUB,
     (False, False, "none")),
    (Reader("p", "project_agent", None), CaseParties("city", "130926-wj", "130926100201", project_agent="p"),
     HERE_HUB, (False, False, "none")),  # linked, not filed: not opened by the link
    (Reader("p", "project_agent", None), CITY_CASE, HERE_HUB, (False, False, "none")),
    # An office's own supervisor or a misfiled account reads as its role says, not as the office.
    (Reader("s", "supervisor", "130926-mz"), CITY_CASE, HERE_HUB, (True, False, "oversight")),
    (Reader("p", "project_agent", "130926-mz"), CITY_CASE, HERE_HUB, (False, False, "none")),
])
def test_rule(reader, case, here, expected):
    got = case_access(reader, case, here)
    assert (got.read, got.unmasked, got.reason) == expected


def test_township_walk_in_cases_stay_with_the_township_staff(net, tokens, cases):
    township = tokens["township"]
    item = next(i for i in catalog(net.township, township["clerk"]) if i["code"] == TOWNSHIP_ITEM)
    walk_in = _ok(net.township.api("POST", "/api/v1/cases", township["clerk"], json=case_payload(item)), 201)
    receipt = walk_in["receipt_no"]
    for path in ("/cases", "/site-visits"):  # 我的办件 and the site-visit candidates
        assert receipt in net.township.api("GET", path, township["clerk"]).text, path
        for clerk in ("zrzy_clerk", "nync_clerk"):  # not asked about it (not accepted yet)
            page = net.township.api("GET", path, township[clerk])
            assert page.status_code == 200 and receipt not in page.text, (clerk, path)
    assert net.township.api("GET", f"/cases/{walk_in['case_id']}", township["nync_clerk"]).status_code == 404
