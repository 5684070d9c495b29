"""Forms that help, in a real browser (issue 11 points 5 and 6): every field error at once in the
as-you-type words, a disabled action with its reason, 立即同步 that shows it is working and gives
up with a message, and papers that name offices and people. Screenshots for docs/ui.md."""

from __future__ import annotations

import re
import socket

import pytest
from conftest import HUB_OFFICE, login
from network import Network, case_payload

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """This module's own network (the session one is expected fresh by the journey tests)."""
    net = Network.build(tmp_path_factory.mktemp("forms-net"), villages=1)
    net.village().account("agent", "agent", display_name="王代办")
    net.hub.account("window", "window", office=HUB_OFFICE, display_name="赵窗口")
    net.hub.account("chief", "chief", office=HUB_OFFICE, display_name="钱审批")
    yield net
    net.close()

DIBAO = "130926-MZ-0001"
JOINT_CITY = "130926-MZ-0005"


def _file(network, code: str) -> dict:
    village = network.village()
    items = {i["code"]: i for i in village.api("GET", "/api/v1/catalog", village.tokens["agent"]).json()["items"]}
    r = village.api("POST", "/api/v1/cases", village.tokens["agent"], json=case_payload(items[code]))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("javascript", [True, False])
def test_the_wizard_shows_every_error_at_once_in_the_words_typed_against(network, new_page, shots, javascript):
    village = network.village()
    page = new_page(javascript=javascript)
    login(page, village, "agent")
    page.goto(f"{village.url}/cases/new/{DIBAO}")
    page.check("input[name=situation_illness][value='否']")
    page.click("button[value=next]")
    page.fill("#applicant_id_number", "13092619800101123")
    typed = ""
    if javascript:
        page.locator("#applicant_phone").focus()  # blur: the as-you-type check runs
        typed = page.locator("#err-applicant_id_number").inner_text()
        assert typed == "身份证号应为18位"
    page.click("button[value=next]")
    errors = {el.get_attribute("id")[4:]: el.inner_text() for el in page.locator(".field-error").all()
              if el.inner_text()}
    assert {"applicant_name", "applicant_id_number", "applicant_phone", "form_address"} <= errors.keys(), errors
    assert errors["applicant_id_number"] == "身份证号应为18位"
    assert not typed or typed == errors["applicant_id_number"]  # the same words before and after submit
    assert page.locator("[aria-invalid=true]").count() == len(errors)
    if javascript:
        shots(page, "village-wizard-all-errors")


def test_approve_waits_greyed_with_its_reason_while_joint_opinions_are_open(network, new_page, shots):
    hub = network.hub
    assert HUB_OFFICE.endswith("-mz")
    case = _file(network, JOINT_CITY)
    network.sync_all()
    r = hub.api("POST", f"/api/v1/cases/{case['case_id']}/actions", hub.tokens["window"],
                json={"action": "accept", "comment": ""})
    assert r.status_code == 200, r.text
    page = new_page()
    login(page, hub, "chief")  # the chief decides this item (审批决定权)
    page.goto(f"{hub.url}/cases/{case['case_id']}")
    approve = page.get_by_role("button", name="准予", exact=True)
    assert approve.is_visible() and approve.is_disabled()
    assert "联办部门尚未回复意见" in page.locator("#blocked-approve").inner_text()
    assert page.get_by_role("button", name="不予许可").is_enabled()
    assert "节点管理" not in page.locator("nav").inner_text()  # the menu offers only what a chief may open
    shots(page, "hub-case-approve-waiting")


def test_sync_now_says_it_is_working_and_gives_up_with_a_message(network, new_page, shots):
    village = network.village()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    old = village.app.config["PARENT_URL"], village.app.config["SYNC_NOW_TIMEOUT_SECONDS"]
    village.app.config.update(PARENT_URL=f"http://127.0.0.1:{silent.getsockname()[1]}", SYNC_NOW_TIMEOUT_SECONDS=2)
    try:
        page = new_page()
        login(page, village, "agent")
        page.goto(village.url + "/sync-status")
        # What the page shows while the round runs, noted by a listener that runs after liandong.js's
        # (kept in sessionStorage across the navigation that follows).
        page.evaluate("""() => document.querySelector('form[data-busy]').addEventListener('submit', function () {
            sessionStorage.setItem('busy', JSON.stringify([document.querySelector('form[data-busy] button').disabled,
                                                           document.querySelector('.busy-note').textContent]));
        })""")
        page.click("text=立即同步")
        page.wait_for_selector(".flash", timeout=15_000)
        disabled, note = page.evaluate("() => JSON.parse(sessionStorage.getItem('busy'))")
        assert disabled is True and "正在与测试镇便民服务站同步" in note  # greyed, and it says what it is doing
        assert "在 2 秒内没有应答，本次立即同步已放弃" in page.locator(".flash").inner_text()
        trouble = page.locator("#sync-trouble").inner_text()
        assert "测试镇便民服务站" in trouble and not re.search(r"[A-Za-z]{3,}", trouble)
        shots(page, "village-sync-gave-up")
    finally:
        village.app.config.update(PARENT_URL=old[0], SYNC_NOW_TIMEOUT_SECONDS=old[1])
        silent.close()
        state = village.app.extensions["liandong_sync_state"]
        state.last_error, state.next_attempt = None, 0.0


def test_the_receipt_names_the_village_township_hub_office_and_agent(network, new_page, shots):
    village = network.village()
    case = _file(network, DIBAO)
    page = new_page()
    login(page, village, "agent")
    page.goto(f"{village.url}/cases/{case['case_id']}/receipt")
    paper = page.locator("article.paper").inner_text()
    assert "测试村便民服务室" in paper and "测试镇便民服务站" in paper and "测试县政务服务中心" in paper
    assert "民政局" in paper and "收件人：王代办" in paper and "县（市）政务服务中心" not in paper
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日", paper.split("收件人")[1])
    shots(page, "village-receipt")
