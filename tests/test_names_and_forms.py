"""Names, not codes, on every paper (issue 11 point 4), and forms that help (point 6).

Over a real hub, township and village on loopback: what the printed documents, receipts and
case pages say, and how the wizard, the case page's buttons, the menu and the progress words
behave for each role.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from network import HUB_ID, TOWNSHIP_ID, case_payload, catalog, valid_id_number
from network_session import session_for

from shared.rules import progress
from shared.rules.idcard import validate_id_number
from shared.services import documents, names
from sync import envelope

DIBAO = "130926-MZ-0001"        # 给付: a 办理结果通知书, never a 准予许可决定书
HOMESTEAD = "130926-XZ-0001"    # 许可 decided by the township, joint with 自然资源 and 农业农村
PENSION = "130926-RS-0001"      # 缴费档次 (a money choice)
JOINT_CITY = "130926-MZ-0005"   # 民政 leads, 残联 gives an opinion
DATE_ONLY = re.compile(r"\d{4}年\d{1,2}月\d{1,2}日")
CLOCK_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=1)
    village, township, hub = net.village(), net.township, net.hub
    village.account("agent", "agent", village.node_id, display_name="王代办")
    township.account("clerk", "clerk", TOWNSHIP_ID, display_name="李站员")
    hub.account("window", "window", f"{HUB_ID}-mz", display_name="赵窗口")
    hub.account("chief", "chief", f"{HUB_ID}-mz", display_name="钱首席")
    hub.account("head", "head", f"{HUB_ID}-mz", display_name="孙局长")
    hub.account("admin", "admin", None, display_name="吴管理员")
    return net


@pytest.fixture(scope="module")
def items(net):
    return {i["code"]: i for i in catalog(net.village(), net.village().tokens["agent"])}


def _file(net, items, code: str) -> dict:
    village = net.village()
    r = village.api("POST", "/api/v1/cases", village.tokens["agent"], json=case_payload(items[code]))
    assert r.status_code == 201, r.text
    return r.json()


def _act(handle, token, case_id, action, comment=""):
    r = handle.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action, "comment": comment})
    assert r.status_code == 200, r.text
    return r.json()


def _docs(handle, case_id) -> dict:
    return {envelope.peek(d)["kind"]: d for d in documents.for_case(handle.conn, case_id)}


def _page(handle, username, path) -> str:
    r = session_for(handle, username).get(handle.url + path, timeout=10)
    assert r.status_code == 200, (path, r.status_code)
    return r.text


@pytest.fixture(scope="module")
def decided(net, items):
    """A 低保 case approved at the hub, one refused, and a 宅基地 case approved at the township."""
    approved, refused, homestead = _file(net, items, DIBAO), _file(net, items, DIBAO), _file(net, items, HOMESTEAD)
    net.sync_all()
    window = net.hub.tokens["window"]
    _act(net.hub, window, approved["case_id"], "accept")
    # 低保: the chief holds only 初审权; the head decides (shared/rules/decision_rights.py).
    r = net.hub.api("POST", f"/api/v1/cases/{approved['case_id']}/actions", net.hub.tokens["chief"],
                    json={"action": "pre_review", "opinion": "同意", "comment": "初审通过"})
    assert r.status_code == 200, r.text
    _act(net.hub, net.hub.tokens["head"], approved["case_id"], "approve", "符合条件")
    _act(net.hub, window, refused["case_id"], "reject", "不属于本机关职权范围")
    net.sync_all()
    return {"approved": approved, "refused": refused, "homestead": homestead}


# ----------------------------------------------------------------------------- 4. names on paper


def test_a_benefit_gets_a_result_notice_in_the_departments_name_dated_without_a_clock(net, decided, items):
    signed = _docs(net.village(), decided["approved"]["case_id"])["approve"]
    body = envelope.peek(signed)
    assert items[DIBAO]["item_type"] == "给付"
    assert body["title"] == "办理结果通知书" and body["item_type"] == "给付"
    assert body["issuer_name"] == items[DIBAO]["implementing_body"]  # 肃宁县民政局, the catalog's 实施主体
    assert "130926" not in body["number"] and "mz" not in body["number"]
    page = _page(net.village(), "agent", f"/documents/{envelope.document_id(signed)}")
    issuer = page.split('class="doc-issuer"')[1].split("</div>")[0]
    assert body["issuer_name"] in issuer and DATE_ONLY.search(issuer) and not CLOCK_TIME.search(issuer)
    assert 'class="seal-position"' in issuer and "行政审批专用章" in issuer
    assert "本机关决定予以办理" in page and "准予许可" not in page
    assert "符合条件。" in page  # the remark ends with a full stop


def test_a_refusal_names_the_review_body_and_the_court_and_ends_its_reason(net, decided):
    body = envelope.peek(_docs(net.hub, decided["refused"]["case_id"])["reject"])
    assert body["review_body"] == "测试县人民政府" and body["court"] == "测试县人民法院"
    assert "向测试县人民政府申请行政复议" in body["rights"] and "向测试县人民法院提起行政诉讼" in body["rights"]
    doc_id = envelope.document_id(_docs(net.village(), decided["refused"]["case_id"])["reject"])
    page = _page(net.village(), "agent", f"/documents/{doc_id}")
    assert "理由：不属于本机关职权范围。" in page
    notice = _page(net.village(), "agent", f"/cases/{decided['refused']['case_id']}/notice")
    assert "测试县人民政府申请行政复议" in notice and "测试县人民法院提起行政诉讼" in notice
    assert "不属于本机关职权范围。" in notice and not CLOCK_TIME.search(notice.split("paper-sign")[1])


def test_configured_review_body_and_court_are_used(net, items):
    net.hub.app.config.update(RECONSIDERATION_BODY="测试市人民政府", COURT_NAME="测试铁路运输法院")
    try:
        case = _file(net, items, DIBAO)
        net.sync_all()
        _act(net.hub, net.hub.tokens["window"], case["case_id"], "reject", "材料不全")
        body = envelope.peek(_docs(net.hub, case["case_id"])["reject"])
    finally:
        net.hub.app.config.update(RECONSIDERATION_BODY="", COURT_NAME="")
    assert (body["review_body"], body["court"]) == ("测试市人民政府", "测试铁路运输法院")


def test_a_township_decision_is_issued_by_the_township_government(net, decided):
    case_id = decided["homestead"]["case_id"]
    clerk = net.township.tokens["clerk"]
    _act(net.township, clerk, case_id, "accept")
    body = envelope.peek(_docs(net.township, case_id)["accept"])
    assert body["issuer_name"] == "测试镇人民政府"  # not 测试镇便民服务站: a station is no administrative organ
    page = _page(net.township, "clerk", f"/cases/{case_id}")
    table = page.split("<h1>")[1].split("</table>")[0]
    assert "测试镇人民政府" in table and "测试村便民服务室" in table and f">{TOWNSHIP_ID}<" not in table


def test_receipt_and_case_page_name_the_real_offices_places_and_people(net, decided, items):
    case_id = decided["approved"]["case_id"]
    receipt = _page(net.village(), "agent", f"/cases/{case_id}/receipt")
    assert "县（市）政务服务中心" not in receipt
    assert "测试村便民服务室" in receipt and "经测试镇便民服务站报送测试县政务服务中心" in receipt
    assert items[DIBAO]["implementing_body"] in receipt and "收件人：王代办" in receipt
    assert not CLOCK_TIME.search(receipt.split("paper-sign")[1])
    for handle, username in ((net.village(), "agent"), (net.hub, "window")):
        page = _page(handle, username, f"/cases/{case_id}")
        table = page.split("</table>")[0]
        assert items[DIBAO]["implementing_body"] in table and "测试村便民服务室" in table and "王代办" in table
        assert f"{HUB_ID}-mz" not in page and case_id not in page.split("<h1>")[1].split("</table>")[0]
    hub_page = _page(net.hub, "window", f"/cases/{case_id}")
    history = hub_page.split("办理过程")[1]
    assert "赵窗口" in history and "测试县政务服务中心" in history and "系统自动" in history


def test_the_delivery_receipt_names_the_document_the_manner_and_the_remark(net, decided):
    village = net.village()
    case_id = decided["approved"]["case_id"]
    s = session_for(village, "agent")
    page = s.get(f"{village.url}/cases/{case_id}", timeout=10).text
    assert '<select id="deliver_manner" name="manner">' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{village.url}/cases/{case_id}/deliver", timeout=10,
               data={"csrf_token": token, "manner": "委托送达", "comment": "由其子张小三代领"})
    assert r.status_code == 200
    docs = _docs(village, case_id)
    served = envelope.peek(docs["approve"])
    body = envelope.peek(docs["deliver"])
    assert body["details"]["served"] == {"title": served["title"], "number": served["number"]}
    assert body["details"]["manner"] == "委托送达" and body["comment"] == "由其子张小三代领"
    paper = s.get(f"{village.url}/documents/{envelope.document_id(docs['deliver'])}", timeout=10).text
    assert f"{served['title']}（{served['number']}）" in paper and "委托送达" in paper and "由其子张小三代领" in paper
    bad = s.post(f"{village.url}/cases/{decided['refused']['case_id']}/deliver", timeout=10,
                 data={"csrf_token": token, "manner": "扔在门口"})
    assert "请选择送达方式" in bad.text


def test_names_rules():
    assert names.township_government("肃宁镇便民服务站") == "肃宁镇人民政府"
    assert names.county_of("肃宁县政务服务中心") == "肃宁县"
    assert names.with_full_stop("材料不全") == "材料不全。" and names.with_full_stop("材料不全！") == "材料不全！"
    item = {"department_code": "fg", "implementing_body": "肃宁县行政审批局"}
    assert names.office_name(None, "130926-fg", item, "肃宁县政务服务中心") == "肃宁县行政审批局"
    assert names.office_name(None, "130926-mz", None, "肃宁县政务服务中心") == "肃宁县民政局"
    assert documents.title_for("approve", "许可") == "准予许可决定书"
    assert documents.title_for("approve", "公共服务") == documents.title_for("deny", "给付") == "办理结果通知书"


# ----------------------------------------------------------------------------- 6. forms that help


def test_the_wizard_reports_every_field_error_at_once(net, items):
    village = net.village()
    s = session_for(village, "agent")
    page = s.get(f"{village.url}/cases/new/{DIBAO}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{village.url}/cases/new/{DIBAO}", timeout=10,
               data={"csrf_token": token, "step": "form", "go": "next", "applicant_id_number": "13092619800101123"})
    assert r.status_code == 400
    shown = dict(re.findall(r'<span class="field-error" id="err-([\w]+)" aria-live="polite">([^<]+)</span>', r.text))
    required = [f"form_{f['name']}" for f in items[DIBAO]["fields"] if f["required"]]
    assert {"applicant_name", "applicant_id_number", "applicant_phone", *required} <= shown.keys(), shown
    assert shown["applicant_id_number"] == "身份证号应为18位"
    assert r.text.count('aria-invalid="true"') == len(shown) and r.text.count(" autofocus") == 1


def test_the_server_and_the_as_you_type_check_use_the_same_words():
    script = (Path(__file__).resolve().parent.parent / "shared/web/static/liandong.js").read_text(encoding="utf-8")
    number = valid_id_number()
    wrong_check = number[:17] + ("0" if number[17] != "0" else "1")
    for typed in ("", "1309261980", "13092619800101123A", wrong_check):
        try:
            validate_id_number(typed, field="id")
        except Exception as exc:  # noqa: BLE001 - every refusal's words
            assert f'"{exc.message}"' in script, exc.message
        else:
            raise AssertionError(typed)
    assert '"请填写联系电话"' in script and '"联系电话格式不正确，应为11位手机号或带区号的固定电话"' in script


def test_no_money_choice_is_preselected(net):
    village = net.village()
    s = session_for(village, "agent")
    first = s.get(f"{village.url}/cases/new/{PENSION}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', first).group(1)
    page = s.post(f"{village.url}/cases/new/{PENSION}", timeout=10, data={
        "csrf_token": token, "step": "situation", "go": "next", "situation_paid_by_government": "否"}).text
    select = re.search(r'<select id="form_contribution_grade".*?</select>', page, re.S)
    assert '<option value="">请选择</option>' in select.group(0) and "selected" not in select.group(0)


def test_approve_is_shown_disabled_with_the_reason_while_joint_opinions_are_open(net, items):
    case = _file(net, items, JOINT_CITY)
    net.sync_all()
    _act(net.hub, net.hub.tokens["window"], case["case_id"], "accept")
    page = _page(net.hub, "chief", f"/cases/{case['case_id']}")  # the chief decides this item (审批决定权)
    button = re.search(r'<button type="submit" name="action" value="approve"[^>]*>', page).group(0)
    assert "disabled" in button and 'aria-describedby="blocked-approve"' in button
    reason = re.search(r'id="blocked-approve">([^<]+)<', page).group(1)
    assert "联办部门尚未回复意见" in reason and "残疾人联合会" in reason


def test_menus_show_only_what_the_role_may_open(net):
    window = _page(net.hub, "window", "/queue")
    admin = _page(net.hub, "admin", "/admin/nodes")
    assert "节点管理" not in window.split("</nav>")[0] and "电子监察" not in window.split("</nav>")[0]
    assert "节点管理" in admin.split("</nav>")[0]
    # Every link the menu offers opens for that role.
    for handle, username in ((net.hub, "window"), (net.hub, "admin"), (net.township, "clerk"), (net.village(), "agent")):
        s = session_for(handle, username)
        nav = s.get(handle.url + "/", timeout=10).text.split('aria-label="主菜单"')[1].split("</nav>")[0]
        for href in re.findall(r'href="([^"]+)"', nav):
            assert s.get(handle.url + href, timeout=10).status_code == 200, (handle.tier, username, href)


def test_a_township_decided_case_never_says_it_reached_the_city(net, items):
    case = _file(net, items, HOMESTEAD)
    village = net.village()
    assert progress.word("SUBMITTED", "pending", "township") == "未发送"
    net.sync_all()
    assert village.scalar("SELECT sync_state FROM cases WHERE case_id = ?", (case["case_id"],)) in ("custody", "acked")
    row = _page(village, "agent", "/cases").split(case["receipt_no"])[1].split("</tr>")[0]
    assert "已到乡镇" in row and "已到市中心" not in row
    detail = _page(village, "agent", f"/cases/{case['case_id']}")
    assert '<strong class="progress-word">已到乡镇</strong>' in detail and "已到市中心" not in detail
    assert progress.word("RECEIVED", "acked", "city") == "已到市中心"
    assert progress.word("SUBMITTED", "pending", "township", filed_at_township=True) == "待受理"
