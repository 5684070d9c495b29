"""Each role's main journey in real Chromium against real node servers on loopback."""

from __future__ import annotations

import re
import struct
import zlib

import pytest
from conftest import login
from network import case_payload, valid_id_number, wrong_id_number

pytestmark = pytest.mark.browser

DIBAO = "130926-MZ-0001"  # 最低生活保障申请: city-decided (民政局), one 情形 question
RELIEF = "130926-MZ-0003"  # 临时救助申请: decided by the township


def scan_png(width: int = 428, height: int = 270) -> bytes:
    """A real PNG that looks like a scanned card (a frame, a photo box, text lines)."""
    def pixel(x: int, y: int) -> bytes:
        if x < 6 or y < 6 or x >= width - 6 or y >= height - 6:
            return b"\x5a\x7f\xb0"
        if 300 <= x < 400 and 40 <= y < 170:
            return b"\xb8\xc4\xd0"
        if x >= 30 and x < 270 and any(40 + 30 * i <= y < 52 + 30 * i for i in range(6)) and x < 270 - 25 * (y % 3):
            return b"\x55\x55\x55"
        return b"\xf2\xef\xe6"

    raw = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


PNG = scan_png()  # the case page previews it inline
DIBAO_REQUIRED = ("id_card", "hukou", "dibao_application", "check_authorization", "income_statement")


def required_scans(item: dict) -> list[tuple[str, str, bytes]]:
    """A scan of every required material of ``item`` (受理 needs them all)."""
    return [(m["code"], f"{m['code']}.png", PNG) for m in item["materials"] if m["required"]]


def fill_dibao_form(page, id_number: str) -> None:
    page.fill("#applicant_name", "张三")
    page.fill("#applicant_id_number", id_number)
    page.fill("#applicant_phone", "13812345678")
    page.fill("#form_address", "肃宁县某某村3组")
    page.fill("#form_household_size", "3")
    page.fill("#form_monthly_income", "600")
    page.fill("#form_reason", "因病致贫")


def test_agent_files_offline_hub_approves_agent_prints(network, new_page, shots):
    village, township, hub = network.village(), network.township, network.hub
    township.stop()  # the township is unreachable while the agent works
    try:
        page = new_page()
        login(page, village, "agent")

        # 办事指南: search by pinyin initials, see materials and limits.
        page.fill("#q", "zdshbz")
        page.click("form[role=search] button[type=submit]")
        rows = page.locator("table.catalog tbody tr")
        assert rows.count() == 1
        assert "最低生活保障申请" in rows.first.inner_text()
        assert "居民身份证" in rows.first.inner_text() or "身份证" in rows.first.inner_text()
        assert "个工作日" in rows.first.inner_text()
        assert "尚未与乡镇便民服务站连通过" in page.locator(".banner").first.inner_text()
        shots(page, "village-catalog")

        # The wizard: 情形 → 表单 → 材料 → 确认.
        rows.first.get_by_role("link", name=re.compile("收件")).click()
        assert page.locator(".steps li.current").inner_text().endswith("情形")
        page.locator("fieldset input[type=radio]").first.check()
        page.click("button[value=next]")
        assert page.locator(".steps li.current").inner_text().endswith("表单")
        fill_dibao_form(page, valid_id_number())
        shots(page, "village-wizard-form")
        page.click("button[value=next]")
        assert page.locator(".steps li.current").inner_text().endswith("材料")
        # Every required material (the office may accept only a complete application).
        for code in DIBAO_REQUIRED:
            page.set_input_files(f"#material_{code}", files=[{"name": f"{code}.png" if code != "id_card" else "身份证.png",
                                                              "mimeType": "image/png", "buffer": PNG}])
        page.click("button[value=next]")
        assert page.locator(".steps li.current").inner_text().endswith("确认")
        confirm = page.locator("form.wizard-form").inner_text()
        assert "张三" in confirm and "身份证.png" in confirm
        shots(page, "village-wizard-confirm")
        page.click("#submit-case")  # without the villager's 委托 the agent may not file
        assert "委托书" in page.locator("#form-error").inner_text()
        page.check("#entrust_consent")
        page.click("#submit-case")

        # The printable 收件回执.
        receipt_no = page.locator("#receipt-no").inner_text()
        assert re.fullmatch(r"130926100201-\d{8}-\d{4}", receipt_no)
        assert "身份证.png" in page.locator("article.paper").inner_text()
        shots(page, "village-receipt")
        page.emulate_media(media="print")
        assert not page.locator("header.topbar").is_visible()
        assert not page.locator(".toolbar").is_visible()
        assert page.locator("article.paper").is_visible()
        page.emulate_media(media="screen")

        # My cases: 未发送 while the township is down, even after trying to sync.
        page.goto(village.url + "/sync-status")
        page.click("text=立即同步")
        assert "连接不上测试镇便民服务站" in page.locator(".flash").inner_text()  # plain words, no ConnectionError
        page.goto(village.url + "/cases")
        row = page.locator("tr", has_text=receipt_no)
        assert "未发送" in row.inner_text()
    finally:
        township.start()

    # The township is back: the agent syncs, the case is in the township's custody.
    page.goto(village.url + "/sync-status")
    page.click("text=立即同步")
    assert "同步完成" in page.locator(".flash").inner_text()
    page.goto(village.url + "/cases")
    assert "已到乡镇" in page.locator("tr", has_text=receipt_no).inner_text()
    assert page.locator(".banner", has_text="尚未与乡镇").count() == 0
    township.sync()  # custody → hub
    village.sync()  # the hub's acknowledgement comes back through the township
    page.reload()
    assert "已到市中心" in page.locator("tr", has_text=receipt_no).inner_text()
    shots(page, "village-my-cases")

    # The hub's 民政局 window: queue, case page with the material, 受理 and 准予.
    hub_page = new_page()
    login(hub_page, hub, "window")
    hub_page.goto(hub.url + "/queue")
    shots(hub_page, "hub-queue")
    hub_page.get_by_role("link", name=receipt_no).click()
    materials = hub_page.locator("table.materials-list").inner_text()
    assert "身份证.png" in materials and "居民身份证" in materials
    assert hub_page.locator("aside.case-preview img").is_visible()
    assert hub_page.get_by_role("button", name="准予").count() == 0  # not before 受理
    hub_page.get_by_role("button", name="受理", exact=True).click()
    assert "已受理" in hub_page.locator("h1 .status").inner_text()
    assert hub_page.get_by_role("button", name="准予").count() == 0  # 低保: the window does not decide
    case_url = hub_page.url
    # The 首席审批员 holds 初审权 for 低保: his opinion goes to the 部门负责人, who decides.
    chief_page = new_page()
    login(chief_page, hub, "chief")
    chief_page.goto(case_url)
    assert chief_page.get_by_role("button", name="准予").count() == 0
    chief_page.select_option("#opinion", "同意")
    chief_page.fill("#comment", "家庭收入低于当地低保标准，建议准予")
    chief_page.get_by_role("button", name="首席审批员初审").click()
    assert "部门负责人" in chief_page.locator("table").first.inner_text()
    head_page = new_page()
    login(head_page, hub, "head")
    head_page.goto(case_url)
    head_page.fill("#comment", "经审核，符合最低生活保障条件")
    shots(head_page, "hub-case")
    head_page.get_by_role("button", name="准予").click()
    assert "准予" in head_page.locator("h1 .status").inner_text()
    assert "行政审批专用章" in head_page.locator("section.decision").inner_text()

    # The decision travels down; the agent sees it and prints the notice.
    network.sync_all()
    page.goto(village.url + "/cases")
    assert "已办结" in page.locator("tr", has_text=receipt_no).inner_text()
    page.goto(village.url + "/results")
    page.locator("tr", has_text=receipt_no).get_by_role("link", name="打印结果告知书").click()
    assert page.locator("#decision-result").inner_text() == "准予"
    assert "经审核，符合最低生活保障条件" in page.locator("article.paper").inner_text()
    shots(page, "village-notice")


@pytest.mark.parametrize("javascript", [False, True], ids=["no-js", "js"])
def test_wrong_id_number_shows_chinese_error_next_to_field(network, new_page, javascript):
    village = network.village()
    page = new_page(javascript=javascript)
    login(page, village, "agent")
    page.goto(f"{village.url}/cases/new/{DIBAO}")
    page.locator("fieldset input[type=radio]").first.check()
    page.click("button[value=next]")
    fill_dibao_form(page, wrong_id_number())
    error = page.locator("#err-applicant_id_number")
    if javascript:  # checked as the agent types, before anything is sent
        page.locator("#applicant_phone").focus()
        assert "校验位" in error.inner_text()
    page.click("button[value=next]")
    # The server refuses the step: the message sits next to the field, the other inputs are kept.
    assert page.locator(".steps li.current").inner_text().endswith("表单")
    assert "身份证号" in error.inner_text()
    assert page.locator("#applicant_id_number").get_attribute("aria-invalid") == "true"
    assert page.locator("#applicant_name").input_value() == "张三"
    assert page.locator("#form_address").input_value() == "肃宁县某某村3组"
    assert page.locator("#form_reason").input_value() == "因病致贫"
    assert page.locator("#applicant_id_number").input_value() == wrong_id_number()


def test_township_clerk_decides_a_township_item(network, new_page, shots):
    village, township = network.village(), network.township
    items = {i["code"]: i for i in village.api("GET", "/api/v1/catalog", village.tokens["agent"]).json()["items"]}
    r = village.api("POST", "/api/v1/cases", village.tokens["agent"],
                    json=case_payload(items[RELIEF], required_scans(items[RELIEF])))
    assert r.status_code == 201, r.text
    receipt_no = r.json()["receipt_no"]
    village.sync()  # up to the township, which decides this item

    page = new_page()
    login(page, township, "clerk")
    page.goto(township.url + "/relay")
    row = page.locator("table.relay tbody tr", has_text=village.app.config["NODE_NAME"])  # villages by name
    assert "正常" in row.inner_text()
    shots(page, "township-relay")
    page.goto(township.url + "/relay/cases")
    assert "临时救助申请" in page.locator("tr", has_text=receipt_no).inner_text()
    shots(page, "township-village-cases")
    page.goto(township.url + "/queue")
    page.get_by_role("link", name=receipt_no).click()
    page.get_by_role("button", name="受理", exact=True).click()
    page.fill("#comment", "情况属实，给予临时救助")
    page.get_by_role("button", name="准予").click()
    assert "准予" in page.locator("h1 .status").inner_text()

    village.sync()
    assert village.scalar("SELECT status FROM cases WHERE receipt_no = ?", (receipt_no,)) == "APPROVED"
