"""The scanner folder (issue 5 item 1): scans saved by the scanner software are listed in the
wizard's 材料 step, newest first, attached per material from the server-side folder by name,
moved to ``done/``, filed with the case and synced to the hub; anything but a plain file name
of an image/PDF directly in that folder is refused (``../``, subfolders, absolute paths, links).
"""

from __future__ import annotations

import hashlib
import html
import os
import re

import pytest
from network import catalog, form_for, valid_id_number
from network_session import session_for

from shared.services import scanner


def _hidden(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(n), html.unescape(v)) for n, v in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)]


@pytest.fixture(scope="module")
def setup(build_network, tmp_path_factory):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = next(i for i in catalog(village, agent) if not i["situations"] and i["decide_level"] == "city"
                and "village" in i["accept_levels"] and not i.get("consultation_only") and len(i["materials"]) >= 2)
    folder = tmp_path_factory.mktemp("scans") / "扫描"
    folder.mkdir()
    village.app.config["SCANNER_FOLDER"] = str(folder)
    village.app.config["MAX_ATTACHMENT_BYTES"] = 64 * 1024
    return net, village, item, folder


def _write(path, data: bytes, mtime: int):
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _materials_page(s, village, item):
    page = s.get(f"{village.url}/cases/new/{item['code']}").text
    data = {"csrf_token": dict(_hidden(page))["csrf_token"], "step": "form", "go": "next",
            "applicant_name": "扫描李", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
            **{f"form_{k}": str(v) for k, v in form_for(item).items()}}
    r = s.post(f"{village.url}/cases/new/{item['code']}", data=data)
    assert r.ok and 'name="step" value="materials"' in r.text, r.text[:800]
    return r.text


def test_scans_are_listed_attached_moved_and_filed(setup):
    net, village, item, folder = setup
    older, newer = b"%PDF-1.4 scan of the hukou " + os.urandom(32), b"\x89PNG\r\n\x1a\n id card " + os.urandom(32)
    _write(folder / "户口簿.pdf", older, 1_700_000_000)
    _write(folder / "身份证.png", newer, 1_700_000_100)
    _write(folder / "notes.txt", b"not a scan", 1_700_000_200)
    _write(folder / ".~lock.pdf", b"%PDF hidden", 1_700_000_300)
    _write(folder / "太大.pdf", b"%PDF" + b"0" * (70 * 1024), 1_700_000_050)
    (folder / "sub").mkdir()
    _write(folder / "sub" / "nested.pdf", b"%PDF nested", 1_700_000_400)

    s = session_for(village, "agent")
    page = _materials_page(s, village, item)
    first, second = item["materials"][0]["code"], item["materials"][1]["code"]
    listed = re.findall(rf'name="scan_{first}" value="([^"]+)"', page)
    assert listed == ["身份证.png", "太大.pdf", "户口簿.pdf"]  # newest first; no txt, hidden file or subfolder
    assert re.search(rf'name="scan_{first}" value="太大.pdf" disabled', page)
    assert 'id="scan_move_done"' in page

    form = [(n, v) for n, v in _hidden(page) if n != "step"]
    r = s.post(f"{village.url}/cases/new/{item['code']}", data=[
        *form, ("step", "materials"), ("go", "stay"), ("scan_move_done", "yes"),
        (f"scan_{first}", "户口簿.pdf"), (f"scan_{second}", "身份证.png")])
    assert r.status_code == 200, r.text[:800]
    assert "户口簿.pdf" in r.text.split("已收")[1] and 'aria-label="移除 身份证.png"' in r.text
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["户口簿.pdf", "身份证.png"]
    assert not (folder / "户口簿.pdf").exists()
    assert re.findall(rf'name="scan_{first}" value="([^"]+)"', r.text) == ["太大.pdf"]

    kept = [(n, v) for n, v in _hidden(r.text) if n != "step"]
    r = s.post(f"{village.url}/cases/new/{item['code']}", data=[*kept, ("step", "materials"), ("go", "next")])
    assert 'name="step" value="confirm"' in r.text and "户口簿.pdf" in r.text
    kept = [(n, v) for n, v in _hidden(r.text) if n != "step"]
    r = s.post(f"{village.url}/cases/new/{item['code']}",
               data=[*kept, ("step", "confirm"), ("go", "submit"), ("entrust_consent", "yes")])
    assert r.ok and "/receipt" in r.url, r.text[:800]
    case_id = village.scalar("SELECT case_id FROM cases WHERE applicant_name = '扫描李'")
    filed = {(row[0], row[1], row[2]) for row in village.query(
        "SELECT code, filename, sha256 FROM case_materials WHERE case_id = ?", (case_id,))}
    assert filed == {(first, "户口簿.pdf", hashlib.sha256(older).hexdigest()),
                     (second, "身份证.png", hashlib.sha256(newer).hexdigest())}
    net.sync_all()
    assert net.hub.scalar("SELECT COUNT(*) FROM case_materials WHERE case_id = ?", (case_id,)) == 2
    assert net.hub.node.blobs.read(hashlib.sha256(older).hexdigest()) == older


def test_names_outside_the_folder_are_refused(setup, tmp_path):
    net, village, item, folder = setup
    secret = folder.parent / "secret.pdf"
    secret.write_bytes(b"%PDF-1.4 not for the wizard")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "nested.pdf").write_bytes(b"%PDF nested")
    link = folder / "link.pdf"
    if not link.exists():
        os.symlink(secret, link)
    s = session_for(village, "agent")
    page = _materials_page(s, village, item)
    assert 'value="link.pdf"' not in page  # links are not listed
    form = [(n, v) for n, v in _hidden(page) if n != "step"]
    code = item["materials"][0]["code"]
    before = village.scalar("SELECT COUNT(*) FROM blobs")
    for name in ("../secret.pdf", "..\\secret.pdf", "sub/nested.pdf", str(secret), "C:secret.pdf", "..",
                 "link.pdf", "missing.pdf", "notes.txt"):
        r = s.post(f"{village.url}/cases/new/{item['code']}", data=[
            *form, ("step", "materials"), ("go", "stay"), (f"scan_{code}", name)])
        assert r.status_code == 400, name
        message = re.search(r'id="form-error">([^<]+)<', r.text).group(1)
        assert "只能选择扫描仪文件夹中的" in message or "扫描仪文件夹中没有文件" in message, (name, message)
        assert "secret" not in r.text.split("已收")[1].split("</table>")[0], name
    assert not [v for n, v in _hidden(r.text) if n == "kept_material"]
    assert secret.exists() and village.scalar("SELECT COUNT(*) FROM blobs") == before
    with pytest.raises(Exception, match="扫描仪文件夹"):
        scanner.read_scan(folder, "../secret.pdf", 1 << 20)


def test_without_the_setting_only_the_file_picker_shows(setup):
    net, village, item, folder = setup
    saved = village.app.config["SCANNER_FOLDER"]
    village.app.config["SCANNER_FOLDER"] = None
    try:
        page = _materials_page(session_for(village, "agent"), village, item)
        assert "扫描仪文件夹" not in page and 'type="file"' in page
        assert scanner.list_scans(scanner.folder_of(None), 1 << 20) == []
    finally:
        village.app.config["SCANNER_FOLDER"] = saved
