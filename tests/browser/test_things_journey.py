"""一件事一次办 in real Chromium: the agent files 新生儿出生一件事 offline on one merged form, prints
one receipt, and follows the overall progress as the hub's decisions start each next step."""

from __future__ import annotations

import pytest
from conftest import login
from network import Network, valid_id_number
from test_journeys import PNG

pytestmark = pytest.mark.browser

NEWBORN = "130926-YJS-0001"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A network of its own: this journey takes the township down and syncs the village, which
    the other journeys' first-contact banners must not see."""
    net = Network.build(tmp_path_factory.mktemp("things-net"), villages=1)
    net.village().account("agent", "agent", display_name="王代办")
    yield net
    net.close()


def _approve(hub, case_id: str, department: str) -> None:
    office = f"130926-{department}"
    for role, action in (("window", "accept"), ("chief", "approve")):
        token = hub.account(f"{role}_{office}", role, office, f"{department}{role}")
        r = hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action, "comment": "符合条件"})
        assert r.status_code == 200, r.text


def test_agent_files_a_thing_once_and_sees_each_next_step_start(network, new_page, shots):
    village, township, hub = network.village(), network.township, network.hub
    township.stop()  # offline: the whole thing is taken on the village PC
    try:
        page = new_page()
        login(page, village, "agent")
        page.goto(village.url + "/catalog")
        page.get_by_role("link", name="一次办：新生儿出生一件事").click()
        assert page.locator("ol.thing-steps li").count() == 3
        assert page.locator("#form_address").count() == 1  # 户籍地址: three items, asked once
        assert page.locator("#material_id_card").count() == 1  # 居民身份证: three items, attached once
        for code, value in (("newborn", "是"), ("subsidized", "否"), ("minor", "是")):
            page.check(f"input[name=situation_{code}][value={value}]")
        page.fill("#applicant_name", "王五")
        page.fill("#applicant_id_number", valid_id_number())
        page.fill("#applicant_phone", "13812345678")
        page.fill("#form_child_name", "王小五")
        page.select_option("#form_child_gender", "男")
        page.fill("#form_birth_date", "2026-11-20")
        page.fill("#form_address", "肃宁县李家庄村")
        for code in ("birth_cert", "hukou", "id_card", "medical_form", "photo", "card_form", "guardian_id"):
            page.set_input_files(f"#material_{code}", files=[{"name": f"{code}.png", "mimeType": "image/png",
                                                              "buffer": PNG}])
        page.check("#entrust_consent")
        shots(page, "village-thing-form")
        page.click("#submit-thing")

        paper = page.locator("article.paper").inner_text()
        assert "新生儿出生一件事 收件回执" in paper and paper.count("130926100201-") >= 3
        assert "等待「出生登记（新生儿落户）」办结后自动开始" in paper
        shots(page, "village-thing-receipt")
        thing_url = page.url.split("?")[0]
    finally:
        township.start()

    network.sync_all()
    steps = village.api("GET", "/api/v1/things/" + thing_url.rsplit("/", 1)[1], village.tokens["agent"]).json()["steps"]
    _approve(hub, steps[0]["case_id"], "ga")
    network.sync_all()
    page.goto(thing_url)
    rows = page.locator("#thing-steps tr")
    assert "准予" in rows.nth(1).inner_text() and "已接件" in rows.nth(2).inner_text()
    assert "等待「城乡居民基本医疗保险参保登记」" in rows.nth(3).inner_text()
