"""The village agent's loop closes in Chromium: 补齐补正 and 容缺 answered from the village room,
seen and acted on by the hub's window (issue 11, point 9)."""

from __future__ import annotations

import pytest
from conftest import HUB_OFFICE, login
from network import Network, case_payload, catalog
from test_journeys import PNG

pytestmark = pytest.mark.browser

DIBAO = "130926-MZ-0001"  # 最低生活保障申请 (民政局): nothing 容缺可
ELDERLY = "130926-MZ-0004"  # 高龄津贴 (民政局): 社会保障卡或本人银行卡 容缺可


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    net = Network.build(tmp_path_factory.mktemp("supplement-net"), villages=1)
    net.village().account("agent", "agent", display_name="王代办")
    net.hub.account("window", "window", office=HUB_OFFICE, display_name="赵窗口")
    yield net
    net.close()


def _file(network, code: str, leave_out: str, **form) -> tuple[str, str]:
    village = network.village()
    item = next(i for i in catalog(village, village.tokens["agent"]) if i["code"] == code)
    payload = case_payload(item, [(m["code"], f"{m['code']}.png", PNG) for m in item["materials"]
                                  if m["required"] and m["code"] != leave_out])
    payload["form"].update(form)
    r = village.api("POST", "/api/v1/cases", village.tokens["agent"], json=payload)
    assert r.status_code == 201, r.text
    network.sync_all()
    return r.json()["case_id"], r.json()["receipt_no"]


def _hub_case_page(network, new_page, receipt_no: str):
    page = new_page()
    login(page, network.hub, "window")
    page.goto(network.hub.url + "/queue")
    page.get_by_role("link", name=receipt_no).click()
    return page


def _decide_and_open_at_the_village(network, new_page, hub_page, button: str, status: str, case_id: str):
    """The window clicks ``button``; the case shows ``status``; sync; the agent's case page."""
    hub_page.get_by_role("button", name=button, exact=True).click()
    assert status in hub_page.locator("h1 .status").inner_text()
    network.sync_all()
    village = network.village()
    page = new_page()
    login(page, village, "agent")
    page.goto(f"{village.url}/cases/{case_id}")
    return page, page.locator("#supplement")


def test_correction_asked_at_the_hub_answered_at_the_village(network, new_page, shots):
    case_id, receipt_no = _file(network, DIBAO, leave_out="hukou")
    hub_page = _hub_case_page(network, new_page, receipt_no)
    hub_page.get_by_role("button", name="受理", exact=True).click()  # refused: 户口簿 is missing
    assert "未能受理：尚缺必需的申请材料：户口簿（首页及本人页）" in hub_page.content()
    hub_page.fill("#comment", "请补交户口簿首页及本人页\n家庭住址请写到村民小组")
    page, answer = _decide_and_open_at_the_village(network, new_page, hub_page, "一次性告知补齐补正", "待补齐补正",
                                                   case_id)
    assert "请补交户口簿首页及本人页" in answer.inner_text() and "家庭住址请写到村民小组" in answer.inner_text()
    page.fill("#sf_address", "肃宁县某某村3组")
    page.set_input_files("#sm_hukou", files=[{"name": "户口簿.png", "mimeType": "image/png", "buffer": PNG}])
    shots(page, "village-supplement")
    page.get_by_role("button", name="提交补齐补正").click()
    assert "已提交补齐补正" in page.content()
    assert page.locator("#supplement").count() == 0  # answered: nothing left to send …
    assert "等待承办机构处理" in page.locator("#supplement-sent").inner_text()  # … until the office acts
    network.sync_all()

    hub_page.reload()
    assert "已接件" in hub_page.locator("h1 .status").inner_text()  # received anew
    log = hub_page.locator("#supplements").inner_text()
    assert "户籍地址" in log and "肃宁县某某村3组" in log and "户口簿（首页及本人页）" in log
    shots(hub_page, "hub-case-supplemented")
    hub_page.get_by_role("button", name="受理", exact=True).click()
    assert "已受理" in hub_page.locator("h1 .status").inner_text()
    network.sync_all()
    page.reload()
    assert "已受理" in page.locator("h1 .status").inner_text()


def test_deficiency_accepted_at_the_hub_supplied_at_the_village(network, new_page, shots):
    case_id, receipt_no = _file(network, ELDERLY, leave_out="bank_card", age=70)
    hub_page = _hub_case_page(network, new_page, receipt_no)
    boxes = hub_page.locator("input[name=owed_materials]")
    assert boxes.count() == 1  # only what the catalog marks 容缺可 (not 居民身份证)
    boxes.first.check()
    hub_page.fill("#due_date", hub_page.locator("#due_date").get_attribute("max"))
    hub_page.fill("#comment", "申请人已签署容缺承诺书")
    page, answer = _decide_and_open_at_the_village(network, new_page, hub_page, "容缺受理", "容缺受理", case_id)
    assert "社会保障卡或本人银行卡" in answer.inner_text() and "bank_card" not in answer.inner_text()
    assert page.locator("#supplement input[type=file]").count() == 1  # only the owed material
    page.set_input_files("#sm_bank_card", files=[{"name": "银行卡.png", "mimeType": "image/png", "buffer": PNG}])
    page.get_by_role("button", name="提交补齐补正").click()
    assert "已提交补齐补正" in page.content()
    network.sync_all()

    hub_page.reload()
    assert "已受理" in hub_page.locator("h1 .status").inner_text()  # supplied by the due date
    assert "社会保障卡或本人银行卡" in hub_page.locator("#supplements").inner_text()
    hub_page.get_by_role("button", name="开始审查").click()
    assert "审查中" in hub_page.locator("h1 .status").inner_text()
    network.sync_all()
    page.reload()
    assert "审查中" in page.locator("h1 .status").inner_text() or "已受理" in page.locator("h1 .status").inner_text()
