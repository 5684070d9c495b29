"""No English, no raw JSON and no internal id on any page or error message.

A real network (hub, township, village on loopback) with decided, refused and township-decided
cases, a complaint and a follow-up; then every page of every role of every node is fetched, with
the pages of each case and document, and the error paths (404, 403, a 400 form, sync failures, a
revoked PC). The visible text (text nodes and the title/alt/placeholder/aria-label a person
reads) must hold no Latin word outside a short allow-list, no JSON, no 32-character id and no
office or material code.
"""

from __future__ import annotations

import html
import re

import pytest
from network import HUB_ID, TOWNSHIP_ID, case_payload
from network_session import session_for

from shared.rules import link_trouble
from sync.node_sync import SyncState

DIBAO = "130926-MZ-0001"          # 最低生活保障 (给付, decided by the county's 民政局)
HOMESTEAD = "130926-XZ-0001"      # 农村宅基地申请 (许可, decided by the 乡镇人民政府)
SKIP_PREFIXES = ("/api/", "/sync/", "/enrol/", "/healthz", "/metrics", "/logout", "/assets/", "/static/",
                 "/favicon.ico", "/text-size")
#: Latin words a villager meets anyway (file formats, keys, units); everything else is English.
ALLOWED = {"sydj", "zdshbz", "yl", "ldbundle", "JSON", "PDF", "JPEG", "JPG", "PNG", "GIF", "TIFF", "API", "QR", "IE", "KB", "MB", "GB", "Ctrl", "CSV", "USB",
           "Excel", "WPS", "Windows", "ID", "OK"}
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z_]+")
#: Codes printed on purpose: the 核验码 (CYZ4-I35V-27EM-263A), the 事项编码 (130926-MZ-0001), the
#: 文书 token and a 统一社会信用代码 — removed before looking for words.
PRINTED_CODES = re.compile(r"\b[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}\b|\b\d{6}-[A-Z]+-\d{4}\b|\b[0-9A-Z]{18}\b")
#: File names of scans as the agent's PC named them (IMG_0012.jpg) are the agent's own words.
FILE_NAMES = re.compile(r"[\w.-]+\.(?:jpe?g|png|pdf|gif|tiff?)\b", re.I)
RAW = [
    (re.compile(r"\{\s*\"|\"\s*:\s*[\"{\[]"), "raw JSON"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "an internal 32-character id"),
    (re.compile(r"\b\d{6}-[a-z]{2,5}\b"), "an office code"),
    (re.compile(r"(?<![\d*-])(?:\d{9}|\d{12})(?![\d*-])"), "a node's 区划代码 instead of its name"),
    (re.compile(r"\b[a-z]+_[a-z_]+\b"), "a snake_case code"),
    (re.compile(r"\b(?:HTTP|Traceback|Exception|Error|None|null|True|False)\b"), "a programmer's word"),
]
VISIBLE_ATTRS = re.compile(r"""\s(?:title|alt|placeholder|aria-label)="([^"]*)\"""")


def visible_text(page: str) -> str:
    """What a person reads on a page: text nodes and the attributes read out or shown on hover.

    Elements marked ``translate="no"`` (a login name on the accounts page) hold identifiers a
    person types as they are, and a ``<textarea>`` holds what the person typed: both are left out.
    """
    page = re.sub(r"(?is)<(script|style|svg|textarea)\b.*?</\1>", " ", page)
    page = re.sub(r'(?is)<(\w+)[^>]*\btranslate="no"[^>]*>.*?</\1>', " ", page)
    shown = VISIBLE_ATTRS.findall(page)
    text = re.sub(r"(?s)<!--.*?-->", " ", page)
    text = re.sub(r"(?s)<[^>]+>", " ", text)
    return html.unescape(" ".join([text, *shown]))


def findings(page: str) -> list[str]:
    """The English words, JSON and codes in a page's visible text."""
    text = PRINTED_CODES.sub(" ", FILE_NAMES.sub(" ", visible_text(page)))
    found = [f"{why}: {m.group(0)}" for pattern, why in RAW for m in pattern.finditer(text)]
    found += [f"English: {w}" for w in LATIN_WORD.findall(text) if w not in ALLOWED]
    return found


def test_the_detector_catches_english_json_and_codes():
    assert findings("<p>ReadTimeout: HTTPConnectionPool(host=127.0.0.1)</p>")
    assert findings('<td>HTTP 401: {"error":{"code":"node_auth"}}</td>')
    assert findings("<td>承办机构 130926-rs</td>")
    assert findings("<td>收件地 130926100201</td>") and not findings("<td>130926100201-20261202-0001</td>")
    assert findings("<li>bank_card</li>")
    assert findings("<td>办件状态 ACCEPTED</td>")
    assert findings("<td>9f86d081884c7d659a2feaa0c55ad015</td>")
    assert findings('<button title="Submit">提交</button>')
    assert not findings("<p>核验码 CYZ4-I35V-27EM-263A，事项编码 130926-MZ-0001，PDF 不超过 10 MB</p>")
    assert not findings('<script>var x = {"a": 1};</script><p>请按 Ctrl+P 打印</p>')


# ----------------------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def _items(handle, token) -> dict:
    return {i["code"]: i for i in handle.api("GET", "/api/v1/catalog", token).json()["items"]}


@pytest.fixture(scope="module")
def world(net):
    """Accounts of every role, and cases in every state worth showing."""
    village, township, hub = net.village(), net.township, net.hub
    logins = [
        (village, "agent", "agent", village.node_id, "王代办"), (village, "vadmin", "admin", village.node_id, "村管理员"),
        (township, "clerk", "clerk", TOWNSHIP_ID, "李站员"), (township, "tsuper", "supervisor", TOWNSHIP_ID, "乡镇监察员"),
        (township, "tadmin", "admin", TOWNSHIP_ID, "乡镇管理员"), (hub, "window", "window", f"{HUB_ID}-mz", "赵窗口"),
        (hub, "chief", "chief", f"{HUB_ID}-mz", "钱首席"), (hub, "head", "head", f"{HUB_ID}-mz", "孙局长"),
        (hub, "supervisor", "supervisor", None, "周监察"), (hub, "admin", "admin", None, "吴管理员"),
        (hub, "projects", "project_agent", None, "郑代办"),
    ]
    for handle, username, role, office, name in logins:
        handle.account(username, role, office, display_name=name)
    agent = village.tokens["agent"]
    items = _items(village, agent)
    made = {}
    for name in ("approved", "refused", "waiting"):
        r = village.api("POST", "/api/v1/cases", agent, json=case_payload(items[DIBAO]))
        assert r.status_code == 201, r.text
        made[name] = r.json()
    r = village.api("POST", "/api/v1/cases", agent, json=case_payload(items[HOMESTEAD]))
    assert r.status_code == 201, r.text
    made["township"] = r.json()
    net.sync_all()
    window, chief, head = hub.tokens["window"], hub.tokens["chief"], hub.tokens["head"]
    # 低保: the window accepts, the chief (初审权 only) gives his opinion, the head decides.
    for key, steps in (("approved", [(window, {"action": "accept"}),
                                     (chief, {"action": "pre_review", "opinion": "同意", "comment": "初审通过"}),
                                     (head, {"action": "approve", "comment": "符合条件"})]),
                       ("refused", [(window, {"action": "reject", "comment": "不属于本机关职权范围"})])):
        for token, body in steps:
            r = hub.api("POST", f"/api/v1/cases/{made[key]['case_id']}/actions", token, json=body)
            assert r.status_code == 200, r.text
    net.sync_all()
    r = village.api("POST", "/api/v1/complaints", agent, json={
        "receipt_no": made["approved"]["receipt_no"], "content": "办理太慢",
        "complainant": {"name": "李四", "phone": "13812345678"}})
    assert r.status_code == 201, r.text
    net.sync_all()
    return {"logins": [(handle, username, role) for handle, username, role, _, _ in logins], "cases": made}


def _pages(handle, cases: dict) -> list[str]:
    """Every GET page without arguments, plus every page of each case, document and complaint held here."""
    paths = [rule.rule for rule in handle.app.url_map.iter_rules()
             if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith(SKIP_PREFIXES)]
    for case in cases.values():
        cid = case["case_id"]
        paths += [f"/cases/{cid}", f"/cases/{cid}/receipt", f"/cases/{cid}/documents", f"/cases/{cid}/rating",
                  f"/cases/{cid}/site-visit", f"/cases/{cid}/opinions"]
        if handle.scalar("SELECT decision FROM cases WHERE case_id = ?", (cid,)):
            paths.append(f"/cases/{cid}/notice")
    paths += [f"/documents/{d}" for (d,) in handle.query("SELECT doc_id FROM documents")]
    paths += [f"/complaints/{c}" for (c,) in handle.query("SELECT complaint_id FROM complaints")]
    if handle.tier != "hub":
        paths += [f"/catalog/{DIBAO}", f"/cases/new/{DIBAO}", "/catalog?q=zdshbz", "/complaints/new"]
    return sorted(set(paths))


def test_every_page_of_every_role_speaks_chinese(net, world):
    seen, bad = 0, []
    for handle, username, role in world["logins"]:
        s = handle.local_login(username)  # the pages as the node's app renders them, in-process
        for path in _pages(handle, world["cases"]):
            r = s.get(path, follow_redirects=True)
            if r.status_code == 404 and "/cases/" in path:
                continue  # a case this node does not hold (e.g. the township's own list)
            assert r.status_code < 500, (handle.tier, role, path, r.status_code)
            if "text/html" not in r.headers.get("Content-Type", ""):
                continue
            bad += [(handle.tier, role, path, f) for f in findings(r.text)]
            seen += 1
    assert seen > 150
    unique = sorted({(tier, role if "/cases/" not in path else "*", re.sub(r"[0-9a-f]{32,64}", "<id>", path), f)
                     for tier, role, path, f in bad})
    assert unique == [], "\n".join(map(str, unique))


def test_error_pages_speak_chinese(net, world):
    village, hub = net.village(), net.hub
    s = session_for(village, "agent")
    checks = [
        s.get(village.url + "/no-such-page", timeout=10),                       # 404
        s.get(village.url + "/cases/" + "0" * 32, timeout=10),                  # 404: no such case
        s.get(village.url + f"/cases/{world['cases']['waiting']['case_id']}/notice", timeout=10),  # 400: no result
        s.get(village.url + "/documents/" + "f" * 64, timeout=10),              # 404: no such document
    ]
    window = session_for(hub, "window")
    checks.append(window.get(hub.url + "/admin/nodes", timeout=10))            # 403 for a window
    checks.append(window.get(hub.url + "/oversight", timeout=10))
    page = s.get(f"{village.url}/cases/new/{DIBAO}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    checks.append(s.post(f"{village.url}/cases/new/{DIBAO}", data={"csrf_token": token, "step": "form"}, timeout=10))
    page = s.get(f"{village.url}/complaints/new", timeout=10).text
    checks.append(s.post(f"{village.url}/complaints/new", timeout=10, data={
        "csrf_token": token, "receipt_no": "不存在的编号", "name": "李四", "phone": "123", "content": "慢"}))
    admin = session_for(hub, "admin")
    page = admin.get(hub.url + "/admin/calendar", timeout=10).text
    admin_token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    schedule = ('{"year": 2027, "source": "国办发明电〔2026〕1号", "workdays": ["2027-01-04"],'
                ' "holidays": [{"name": "元旦", "start": "2027-01-01", "end": "2027-01-01"}]}')
    refused = admin.post(hub.url + "/admin/calendar", data={"csrf_token": admin_token, "schedule_json": schedule},
                         timeout=10)
    assert "第1个调休上班日：2027-01-04 是星期一" in refused.text  # a wrong schedule, said in Chinese
    checks.append(refused)
    statuses = [r.status_code for r in checks]
    assert 404 in statuses and 403 in statuses and 400 in statuses, statuses
    for r in checks:
        assert findings(r.text) == [], (r.url, r.status_code, findings(r.text))


@pytest.mark.parametrize("raw", [
    "ReadTimeout: HTTPConnectionPool(host='127.0.0.1', port=9): Read timed out. (read timeout=10)",
    "ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded",
    'HTTP 401: {"error":{"code":"node_auth","message":"\\u8282\\u70b9"}}',
    'HTTP 403: {"error":{"code":"node_revoked","message":"\\u672c\\u673a"}}',
    "HTTP 502: <html><body>Bad Gateway</body></html>",
    "parent answered with something that is not JSON",
    "internal",
])
def test_sync_failures_are_explained_in_chinese_with_what_to_do(net, world, raw):
    village = net.village()
    state = village.app.extensions.setdefault("liandong_sync_state", SyncState())
    state.last_error = raw
    try:
        page = session_for(village, "agent").get(village.url + "/sync-status", timeout=10).text
    finally:
        state.last_error = None
    trouble = re.search(r'id="sync-trouble">([^<]+)<', page).group(1)
    assert "测试镇便民服务站" in trouble or "本机" in trouble
    assert trouble.endswith("。") and findings(page) == [], findings(page)
    assert link_trouble.explain(raw, "测试镇便民服务站") == html.unescape(trouble)


def test_sync_now_gives_up_after_the_short_wait_with_a_message(net, world):
    """The township accepts the connection but never answers: 立即同步 stops after its short limit."""
    import socket
    import time

    village = net.village()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    old_url, old_wait = village.app.config["PARENT_URL"], village.app.config["SYNC_NOW_TIMEOUT_SECONDS"]
    village.app.config.update(PARENT_URL=f"http://127.0.0.1:{silent.getsockname()[1]}", SYNC_NOW_TIMEOUT_SECONDS=1)
    try:
        s = session_for(village, "agent")
        page = s.get(village.url + "/sync-status", timeout=10).text
        assert "data-busy=" in page  # liandong.js shows it and disables the button while waiting
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        started = time.monotonic()
        r = s.post(village.url + "/sync-status/now", data={"csrf_token": token}, timeout=30)
        took = time.monotonic() - started
    finally:
        village.app.config.update(PARENT_URL=old_url, SYNC_NOW_TIMEOUT_SECONDS=old_wait)
        silent.close()
        village.app.extensions["liandong_sync_state"].last_error = None
        village.app.extensions["liandong_sync_state"].next_attempt = 0.0
    assert took < 8, took  # not the background round's 10 s a request
    assert "测试镇便民服务站在 1 秒内没有应答，本次立即同步已放弃" in r.text
    assert findings(r.text) == []
