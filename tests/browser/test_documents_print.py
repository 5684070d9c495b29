"""Every 制式文书 prints on one A4 page in Chromium, with its QR code, and the printed QR text
verifies at a village that never received the decision."""

from __future__ import annotations

import re

import pytest
from conftest import HUB_OFFICE, decide_at_hub, login
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
    net.hub.account("chief", "chief", office=HUB_OFFICE, display_name="钱审批")
    net.hub.account("head", "head", office=HUB_OFFICE, display_name="孙局长")
    yield net
    net.close()


def _decided_case(network, action: str, comment: str) -> str:
    village, hub = network.village(), network.hub
    agent = village.tokens["agent"]
    item = next(i for i in catalog(village, agent) if f"130926-{i['department_code']}" == HUB_OFFICE
                and "village" in i["accept_levels"] and not i.get("consultation_only"))
    case_id = create_case(village, agent, item)["case_id"]
    network.sync_all()
    if action in ("approve", "deny"):
        decide_at_hub(hub, case_id, action, comment)
    else:
        text = "请补充户口簿首页" if action == "request_correction" else comment
        r = hub.api("POST", f"/api/v1/cases/{case_id}/actions", hub.tokens["window"],
                    json={"action": action, "comment": text})
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


def _open_decision(network, new_page):
    """A fresh 准予许可决定书 opened at the village in a browser without JavaScript."""
    case_id = _decided_case(network, "approve", "符合条件")
    village = network.village()
    signed = next(d for d in documents.for_case(village.conn, case_id) if envelope.peek(d)["kind"] == "approve")
    page = new_page(javascript=False)
    login(page, village, "agent")
    page.goto(f"{village.url}/documents/{envelope.document_id(signed)}")
    return page, signed


def test_the_printed_qr_scans_and_verifies_where_the_decision_never_arrived(network, new_page, tmp_path):
    """Render the printed 准予许可决定书 in Chromium (print media), screenshot it, decode the QR from
    the image with a real decoder (zxing-cpp), and verify the decoded token at a village enrolled
    after the decision, which holds nothing of the case, only the keys every node holds."""
    import zxingcpp
    from PIL import Image

    page, signed = _open_decision(network, new_page)
    page.emulate_media(media="print")
    qr = page.locator(".doc-qr svg")
    modules = int(qr.get_attribute("viewBox").split()[2])
    width_px = qr.bounding_box()["width"]
    module_mm = width_px * 25.4 / 96 / modules
    assert module_mm >= 0.4, f"{module_mm:.2f} mm a module"
    # The page as printed, at screen resolution (96 dpi, under 3 px a module: coarser than a phone's photo).
    path = tmp_path / "printed.png"
    page.set_viewport_size({"width": 1000, "height": 1400})
    page.screenshot(path=str(path), full_page=True)
    found = zxingcpp.read_barcodes(Image.open(path))
    tokens = [b.text for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]
    assert tokens == [documents.qr_text(signed)], [b.text for b in found]
    # A village enrolled after the decision: it holds only the keys every node holds.
    stranger = network.add_village("130926100209", "后来村便民服务室")
    assert stranger.conn.execute("SELECT 1 FROM documents WHERE doc_id = ?",
                                 (envelope.document_id(signed),)).fetchone() is None
    account = stranger.account("verifier", "agent", stranger.node_id)
    r = stranger.api("POST", "/api/v1/documents/verify", account, json={"token": tokens[0]})
    assert r.status_code == 200, r.text
    assert r.json()["token"]["title"].startswith("准予决定") and not r.json()["held"]  # the token names no item type
    print(f"QR {modules} modules at {module_mm:.2f} mm, token {len(tokens[0])} characters")


def test_printing_needs_no_javascript(network, new_page):
    """The 打印 button is a link: without JavaScript it opens the print view of the same page
    (no menus, a hint to press Ctrl+P), which prints the same A4 page."""
    page, _ = _open_decision(network, new_page)
    assert page.locator(".topbar").is_visible()
    page.get_by_role("link", name="打印", exact=True).click()
    page.wait_for_load_state()
    assert "print=1" in page.url
    assert not page.locator(".topbar").is_visible() and page.locator(".print-hint").is_visible()
    assert page.locator(".doc-qr svg").is_visible()
    page.emulate_media(media="print")
    assert not page.locator(".print-hint").is_visible()
    pdf = page.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
