"""``POST /api/v1/cases`` at a village: field-precise Chinese errors, and nothing stored on refusal."""

from __future__ import annotations

import re

import pytest
from network import case_payload, catalog, pick_item, valid_id_number, wrong_id_number

CHINESE = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def item(village, agent):
    return pick_item(catalog(village, agent), "city")


def stored(village) -> dict:
    """What a request could have left behind at the village."""
    counts = {t: village.scalar(f"SELECT COUNT(*) FROM {t}")
              for t in ("cases", "outbox", "case_events", "case_materials", "blobs")}
    blob_dir = village.data_dir / "blobs"
    # The scans' bytes: rows of blob_bytes (small ones) and files (sync/blobs.py).
    counts["blobs_kept"] = village.scalar("SELECT COUNT(*) FROM blob_bytes") + sum(
        1 for p in blob_dir.rglob("*") if p.is_file() and p.parent.name != "partial")
    counts["outbox_seq"] = village.scalar("SELECT value FROM node_meta WHERE key = 'outbox_seq'")
    return counts


def post(village, agent, payload):
    return village.api("POST", "/api/v1/cases", agent, json=payload)


def refusal(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert CHINESE.search(error["message"]), error
    return error


def test_a_wrong_id_check_digit_is_refused_on_the_applicant_field(village, agent, item):
    before = stored(village)
    applicant = {"name": "张三", "id_number": wrong_id_number(), "phone": "13812345678"}
    error = refusal(post(village, agent, case_payload(item, applicant=applicant)))
    assert error["field"] == "applicant.id_number"
    assert stored(village) == before


def bad_material(item, **change):
    material = {"code": item["materials"][0]["code"], "filename": "a.jpg", "content_base64": "aGVsbG8="}
    material.update(change)
    return [material]


@pytest.mark.parametrize("change, field", [
    (lambda item: {"item_code": "130926-NOPE-0001"}, "item_code"),
    (lambda item: {"materials": bad_material(item, content_base64="这不是base64!!")}, "materials[0].content_base64"),
    (lambda item: {"materials": bad_material(item, content_base64="aGVsbG8")}, "materials[0].content_base64"),
    (lambda item: {"materials": bad_material(item, code="no_such_material")}, "materials[0].code"),
    (lambda item: {"materials": bad_material(item, filename="")}, "materials[0].filename"),
    (lambda item: {"applicant": {"name": "", "id_number": valid_id_number(), "phone": "13812345678"}},
     "applicant.name"),
    (lambda item: {"applicant": {"name": "张三", "id_number": valid_id_number(), "phone": "12345"}},
     "applicant.phone"),
    (lambda item: {"form": {}}, "form.<first required field>"),
], ids=["unknown_item", "base64_chars", "base64_padding", "foreign_material", "no_filename", "no_name",
        "bad_phone", "missing_form_field"])
def test_refused_requests_name_the_field_and_store_nothing(village, agent, item, change, field):
    if field == "form.<first required field>":
        field = "form." + next(f["name"] for f in item["fields"] if f["required"])
    before = stored(village)
    error = refusal(post(village, agent, case_payload(item, **change(item))))
    assert error["field"] == field
    assert stored(village) == before


def test_a_body_that_is_not_an_object_is_refused(village, agent):
    before = stored(village)
    error = refusal(village.api("POST", "/api/v1/cases", agent, data="[1, 2]",
                                headers={"Content-Type": "application/json"}))
    assert error["field"] == "body"
    assert stored(village) == before


def test_an_item_not_accepted_at_a_village_is_refused(village, agent):
    city_only = next(i for i in catalog(village, agent) if "village" not in i["accept_levels"])
    before = stored(village)
    error = refusal(post(village, agent, case_payload(city_only)), status=409)
    assert error["code"] == "not_accepted_here"
    assert stored(village) == before


def test_a_valid_request_is_stored_once_with_its_envelope(village, agent, item):
    before = stored(village)
    data = b"\xff\xd8\xff\xe0 scan of an ID card"
    response = post(village, agent, case_payload(item, files=[(item["materials"][0]["code"], "a.jpg", data)]))
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["status"] == "SUBMITTED" and receipt["receipt_no"].startswith(village.node_id + "-")
    after = stored(village)
    for table in ("cases", "outbox", "case_events", "case_materials", "blobs", "blobs_kept"):
        assert after[table] == before[table] + 1, table
    assert village.scalar("SELECT case_id FROM outbox WHERE seq = ?", (int(after["outbox_seq"]),)) == receipt["case_id"]
