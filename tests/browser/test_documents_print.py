"""Every 制式文书 prints on one A4 page in Chromium, with its QR code, and the printed QR text
verifies at a village that never received the decision."""

from __future__ import annotations

import re

import pytest
from conftest import HUB_OFFICE, login
from network import Network, catalog, create_case

from shared.services import documents
from sync import envelope

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A network of its own: the journeys share the session one and expect a village that has
    never reached its township."""
    net = Network.build(tmp_path_factory.mktemp("documents-net"), villages=1)
    net.village().account("agent", "agent", display_name="王代办")
    net.hub.account("window", "window", office=HUB_OFFICE, display_name="赵窗口")
    yield net
    net.close()


def _decided_case(network, action: str, comment: str) -> str:
    village, hub = network.village(), network.hub
    agent = village.tokens["agent"]
    item = next(i for i in catalog(village, agent) if f"130926-{i['department_code']}" == HUB_OFFICE
                and "village" in i["accept_levels"] and not i.get("consultation_only"))
    case_id = create_case(village, agent, item)["case_id"]
    network.sync_all()
    window = hub.tokens["window"]
    steps = [("request_correction", "请补充户口簿首页")] if action == "request_correction" else \
        [("accept", ""), (action, comment)] if action in ("approve", "deny") else [(action, comment)]
    for step, text in steps:
        r = hub.api("POST", f"/api/v1/cases/{case_id}/actions", window, json={"action": step, "comment": text})
        assert r.status_code == 200, r.text
    network.sync_all()
    return case_id


@pytest.mark.parametrize("action, comment", [("approve", "符合条件"), ("deny", "家庭收入超过当地低保标准"),
                                             ("reject", "不属于本机关职权范围"), ("request_correction", "")])
def test_documents_print_on_one_a4_page(network, new_page, shots, action, comment):
    case_id = _decided_case(network, action, comment)
    village = network.village()
    held = {envelope.peek(d)["kind"]: d for d in documents.for_case(village.conn, case_id)}
    assert action in held and "receipt" in held
    page = new_page()
    login(page, village, "agent")
    for kind in ("receipt", action):
        page.goto(f"{village.url}/documents/{envelope.document_id(held[kind])}")
        assert page.locator(".doc-qr svg").count() == 1
        assert documents.verification_code(held[kind]) in page.content()
        shots(page, f"document-{kind}")
        pdf = page.pdf(format="A4", print_background=True)
        pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
        assert pages == 1, f"{kind} printed on {pages} pages"
