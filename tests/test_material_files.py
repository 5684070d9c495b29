"""Material files are checked by content at every intake path, and downloaded under their name.

A renamed ``setup.exe`` (``MZ``…) and a file whose content is not a format the material accepts
are refused with a Chinese message (``material_type`` in the API) at: the village wizard's upload,
the scanner folder, ``POST /api/v1/cases``, the township window and the hub's project filing.
A download carries the material's name with the extension of its content, that content's
``Content-Type`` and ``nosniff``; bytes of no accepted format (e.g. sent by a tampered village PC)
are not offered at all.
"""

from __future__ import annotations

import base64
import html
import os
import re
from urllib.parse import unquote

import pytest
from faults import material_files
from network import case_payload, catalog, create_case, form_for, valid_id_number
from network_session import session_for

from shared.core.errors import ValidationError
from shared.rules import materials
from sync import outbox

CHINESE = re.compile(r"[\u4e00-\u9fff]")
SETUP_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"This program cannot be run in DOS mode"
DOCX = b"PK\x03\x04\x14\x00\x06\x00" + b"word/document.xml"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(64)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(64)


@pytest.fixture(scope="module")
def item(village, agent):
    """A city item a village may take, without 情形 questions (the wizard starts at the form)."""
    return next(i for i in catalog(village, agent) if not i["situations"] and i["decide_level"] == "city"
                and "village" in i["accept_levels"] and not i.get("consultation_only"))


def blob_files(handle) -> int:
    return sum(1 for p in (handle.data_dir / "blobs").rglob("*") if p.is_file() and p.parent.name != "partial")


# ----------------------------------------------------------------------------- the rules


def test_detection_is_by_content_whatever_the_name():
    assert materials.detect(JPEG).key == "jpeg" and materials.detect(PNG).key == "png"
    assert materials.detect(b"%PDF-1.7\n").key == "pdf" and materials.detect(SETUP_EXE) is None
    material = {"code": "id_card", "name": "居民身份证"}
    assert materials.check_file(PNG, "身份证.jpg", material, "m").key == "png"  # a wrong extension is fine
    with pytest.raises(ValidationError) as info:
        materials.check_file(SETUP_EXE, "身份证.jpg", material, "materials.id_card")
    assert info.value.code == "material_type" and "可执行程序" in info.value.message
    with pytest.raises(ValidationError) as info:
        materials.check_file(DOCX, "身份证.docx", material, "materials.id_card")
    assert "只接受 JPEG、PNG、PDF" in info.value.message


def test_a_material_accepts_only_the_formats_its_catalog_entry_lists():
    from shared.rules.catalog import _validate_material

    entry = {"code": "plan", "name": "平面图", "kind": "原件", "form": "电子", "required": True,
             "source": "申请人自备", "copies": 1, "formats": ["pdf"]}
    material = _validate_material(entry, "materials[0]")
    assert materials.check_file(b"%PDF-1.4", "图.pdf", material, "m").key == "pdf"
    with pytest.raises(ValidationError) as info:
        materials.check_file(JPEG, "图.jpg", material, "materials.plan")
    assert "只接受 PDF" in info.value.message and "JPEG 文件" in info.value.message
    tiff = _validate_material({**entry, "formats": ["tiff", "pdf"]}, "materials[0]")
    assert materials.check_file(b"II*\x00rest", "scan.tif", tiff, "m").key == "tiff"
    with pytest.raises(ValidationError) as info:
        _validate_material({**entry, "formats": ["exe"]}, "materials[0]")
    assert info.value.field == "materials[0].formats"


# ----------------------------------------------------------------------------- intake paths


@pytest.mark.parametrize("content", [SETUP_EXE, DOCX, b"<html><script>alert(1)</script>"])
def test_the_api_refuses_an_executable_or_a_wrong_type_and_stores_nothing(village, agent, item, content):
    code = item["materials"][0]["code"]
    before = (village.scalar("SELECT COUNT(*) FROM cases"), blob_files(village))
    response = village.api("POST", "/api/v1/cases", agent, json=case_payload(item, [(code, "身份证.jpg", content)]))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("material_type", f"materials.{code}")
    assert CHINESE.search(error["message"]) and "身份证.jpg" in error["message"]
    assert (village.scalar("SELECT COUNT(*) FROM cases"), blob_files(village)) == before


def test_intake_submit_itself_refuses_an_executable(village, item):
    """The domain function every village/township application goes through (drafts included)."""
    from shared.services import intake

    payload = case_payload(item)
    with pytest.raises(ValidationError) as info:
        intake.submit(village.conn, village.node, payload, [(item["materials"][0]["code"], "a.pdf", SETUP_EXE)], "x")
    assert info.value.code == "material_type"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _hidden(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(n), html.unescape(v)) for n, v in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)]


def materials_step(session, handle, item) -> str:
    """Fill the wizard's form step; the materials step page."""
    page = session.get(f"{handle.url}/cases/new/{item['code']}", timeout=10).text
    data = {"csrf_token": _csrf(page), "step": "form", "go": "next", "applicant_name": "王五",
            "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
            **{f"form_{k}": str(v) for k, v in form_for(item).items()}}
    response = session.post(f"{handle.url}/cases/new/{item['code']}", data=data, timeout=10)
    assert 'name="step" value="materials"' in response.text, response.text[:500]
    return response.text


def upload_in_wizard(handle, username: str, item, filename: str, content: bytes):
    session = session_for(handle, username)
    page = materials_step(session, handle, item)
    code = item["materials"][0]["code"]
    data = [*_hidden(page), ("step", "materials"), ("go", "next")]
    return session.post(f"{handle.url}/cases/new/{item['code']}", data=data, timeout=10,
                        files={f"material_{code}": (filename, content, "image/jpeg")})


def test_the_village_wizard_refuses_a_renamed_setup_exe_at_the_materials_step(village, agent, item):
    before = blob_files(village)
    response = upload_in_wizard(village, "agent", item, "身份证.jpg", SETUP_EXE)
    assert response.status_code == 400
    assert "可执行程序" in response.text and 'name="step" value="materials"' in response.text
    assert blob_files(village) == before  # never stored
    accepted = upload_in_wizard(village, "agent", item, "身份证.jpg", JPEG)
    assert accepted.status_code == 200 and "可执行程序" not in accepted.text


def test_the_township_window_refuses_a_renamed_setup_exe(net):
    township = net.township
    clerk = township.account("clerk", "clerk", township.node_id)
    item = next(i for i in catalog(township, clerk) if not i["situations"] and "township" in i["accept_levels"]
                and not i.get("consultation_only") and i["materials"])
    before = blob_files(township)
    response = upload_in_wizard(township, "clerk", item, "营业执照.pdf", SETUP_EXE)
    assert response.status_code == 400 and "可执行程序" in response.text
    assert blob_files(township) == before


def test_a_scan_in_the_scanner_folder_that_is_not_an_image_or_pdf_is_refused(village, item, tmp_path):
    folder = tmp_path / "扫描"
    folder.mkdir()
    (folder / "身份证.pdf").write_bytes(SETUP_EXE)
    village.app.config["SCANNER_FOLDER"] = str(folder)
    try:
        session = session_for(village, "agent")
        page = materials_step(session, village, item)
        code = item["materials"][0]["code"]
        data = [*_hidden(page), ("step", "materials"), ("go", "next"), (f"scan_{code}", "身份证.pdf")]
        response = session.post(f"{village.url}/cases/new/{item['code']}", data=data, timeout=10)
    finally:
        village.app.config["SCANNER_FOLDER"] = None
    assert response.status_code == 400 and "可执行程序" in response.text
    assert (folder / "身份证.pdf").exists()  # left where it was, not moved to done/


def test_the_hub_project_filing_refuses_a_renamed_setup_exe(net):
    from city_hub.projects import credit_check_char

    hub = net.hub
    token = hub.account("pa", "project_agent", None)
    project = hub.api("POST", "/api/v1/projects", token, json={
        "enterprise_name": "沧州测试有限公司", "credit_code": "91130926MA0C12345" + credit_check_char("91130926MA0C12345"),
        "project_name": "仓库建设", "location": "肃宁县"})
    assert project.status_code == 201, project.text
    from city_hub.registry import current_catalog

    item = current_catalog(hub.conn)[1]["130926-FG-0001"]  # 企业投资项目备案, filed at the hub by the project agent
    response = hub.api("POST", f"/api/v1/projects/{project.json()['project_id']}/cases", token, json={
        "item_code": item["code"], "applicant": {"name": "赵经理", "id_number": valid_id_number(), "phone": "13812345678"},
        "form": {"scale_content": "新建仓库", "total_investment": 800, "restricted_industry": "否",
                 "needs_approval": "否"},
        "materials": [{"code": item["materials"][0]["code"], "filename": "备案表.pdf",
                       "content_base64": base64.b64encode(SETUP_EXE).decode("ascii")}]})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "material_type"
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE item_code = ?", (item["code"],)) == 0


# ----------------------------------------------------------------------------- downloads


def test_a_download_carries_the_material_name_extension_type_and_nosniff(net, village, agent, item):
    files = material_files(item, "dl")
    code = files[0][0]
    files[0] = (code, "IMG_0001.PNG", PNG)
    receipt = create_case(village, agent, item, files)
    net.sync_all()
    name = next(m["name"] for m in item["materials"] if m["code"] == code)
    for handle in (village, net.hub):
        session = session_for(handle, "agent" if handle is village else _hub_reader(net, item))
        response = session.get(f"{handle.url}/cases/{receipt['case_id']}/materials/{materials_sha(PNG)}", timeout=10)
        assert response.status_code == 200, response.text[:300]
        assert response.content == PNG
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith("attachment; filename=")
        encoded = re.search(r"filename\*=UTF-8''(\S+)", disposition).group(1)
        assert unquote(encoded) == f"{name}.png"
        assert re.search(r'filename="[A-Za-z0-9_-]+\.png"', disposition)  # ASCII fallback, same extension


def _hub_reader(net, item) -> str:
    office = net.hub.scalar("SELECT route_office FROM cases ORDER BY rowid DESC LIMIT 1")
    net.hub.account("reader", "window", office)
    return "reader"


def materials_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_a_forged_executable_material_is_not_offered_for_download_at_the_hub(net, village, item):
    """A tampered village PC signs a case whose 'ID card scan' is setup.exe, bypassing its own checks."""
    from shared.core.storage import write_transaction
    from shared.services import casework
    from sync import blobs

    node = village.node
    sha = node.blobs.put(SETUP_EXE)
    payload = case_payload(item)
    with write_transaction(village.conn):
        blobs.register(village.conn, sha, len(SETUP_EXE), node.now())
        body, _ = casework.capture(
            village.conn, node_id=node.node_id, item=item, catalog_version=1,
            route={"level": "city", "office": net.hub.scalar("SELECT route_office FROM cases LIMIT 1")},
            applicant=payload["applicant"], form=payload["form"],
            materials=[{"code": item["materials"][0]["code"], "filename": "身份证.jpg", "sha256": sha,
                        "size": len(SETUP_EXE)}], agent="agent", now=node.now())
        outbox.append(village.conn, node.key, node.node_id, "case.submit", body, str(node.hlc.now()), node.now(),
                      case_id=body["case_id"], attachments=[{"sha256": sha, "size": len(SETUP_EXE)}], version=1)
    net.sync_all()
    assert net.hub.node.blobs.has(sha)
    session = session_for(net.hub, _hub_reader(net, item))
    response = session.get(f"{net.hub.url}/cases/{body['case_id']}/materials/{sha}", timeout=10)
    assert response.status_code == 415
    assert "不提供下载" in response.text and b"This program" not in response.content
    assert "Content-Disposition" not in response.headers
    view = session.get(f"{net.hub.url}/cases/{body['case_id']}/materials/{sha}/view", timeout=10)
    assert b"This program" not in view.content


def test_a_kept_material_with_a_non_ascii_size_is_ignored_not_a_500(village, item):
    session = session_for(village, "agent")
    page = materials_step(session, village, item)
    code = item["materials"][0]["code"]
    held = village.node.blobs.put(JPEG)  # a file this node holds, so the entry is read as far as its size
    data = [*_hidden(page), ("step", "materials"), ("go", "stay"), ("kept_material", f"{code}:{held}:²:x.jpg")]
    response = session.post(f"{village.url}/cases/new/{item['code']}", data=data, timeout=10)
    assert response.status_code == 200
