"""What people type is stored as they meant it: 身份证号 normalised, invisible characters refused,
CSV cells that a spreadsheet would run as formulas neutralised.

Through the real API of a village and the real wizard form, and the hub's real CSV export.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from network import case_payload, catalog, pick_item, valid_id_number
from network_session import session_for

from city_hub.oversight import filters, statistics
from shared.core.csv_export import safe_cell, to_csv
from shared.core.errors import ValidationError
from shared.rules.idcard import normalise_id_number, validate_id_number
from shared.rules.text import refuse_hidden_characters

CHINESE = re.compile(r"[\u4e00-\u9fff]")
FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
#: One of each kind the module refuses: NUL and other controls, bidi overrides and isolates, zero-width.
HIDDEN = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066",
          "\u2067", "\u2068", "\u2069", "\u200b", "\u200c", "\u200d", "\ufeff", "\u200e", "\u2028"]


@pytest.fixture(scope="module")
def item(village, agent):
    return pick_item(catalog(village, agent), "city")


# ----------------------------------------------------------------------------- 身份证号


@pytest.mark.parametrize("typed", [
    lambda n: n.translate(FULL_WIDTH),                       # full-width digits (IME in full-width mode)
    lambda n: n[:6] + " " + n[6:14] + "\u3000" + n[14:],     # grouped with a space and an ideographic space
    lambda n: n[:17] + "ｘ" if n.endswith("X") else n.translate(FULL_WIDTH).lower(),
])
def test_a_full_width_or_spaced_id_number_is_checked_and_stored_as_ascii(village, agent, item, typed):
    number = valid_id_number("13092619800101123")
    assert number.isascii()
    payload = case_payload(item, applicant={"name": "张三", "id_number": typed(number), "phone": "１３８１２３４５６７８"})
    response = village.api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 201, response.text
    stored = village.scalar("SELECT id_number FROM cases WHERE case_id = ?", (response.json()["case_id"],))
    assert stored == number


def test_other_scripts_digits_are_not_digits_of_an_id_number():
    number = valid_id_number("13092619800101123")
    arabic_indic = number.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    with pytest.raises(ValidationError) as info:
        validate_id_number(arabic_indic)
    assert info.value.code == "id_format"
    assert normalise_id_number(" １２\u3000ｘ ") == "12X"


# ----------------------------------------------------------------------------- invisible characters


@pytest.mark.parametrize("char", HIDDEN)
def test_an_applicant_name_with_an_invisible_character_is_refused(village, agent, item, char):
    before = village.scalar("SELECT COUNT(*) FROM cases")
    payload = case_payload(item, applicant={"name": f"张{char}三", "id_number": valid_id_number(),
                                            "phone": "13812345678"})
    response = village.api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("hidden_characters", "applicant.name")
    assert CHINESE.search(error["message"])
    assert village.scalar("SELECT COUNT(*) FROM cases") == before


def text_field(item: dict) -> dict:
    """A free-text field of the item's form (e.g. 户籍地址)."""
    return next(f for f in item["fields"] if f["type"] in ("text", "textarea") and not f.get("format")
                and f["type"] != "select")


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\x00"])
def test_an_address_with_an_invisible_character_is_refused(village, agent, item, char):
    field = text_field(item)
    payload = case_payload(item)
    payload["form"][field["name"]] = f"河北省{char}沧州市"
    response = village.api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("hidden_characters", f"form.{field['name']}")
    assert field["label"] in error["message"]


def test_the_wizard_refuses_a_bidi_override_in_the_name_with_a_chinese_message(village, item):
    session = session_for(village, "agent")
    page = session.get(f"{village.url}/cases/new/{item['code']}", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "step": "form", "go": "next", "applicant_name": "张\u202e三",
            "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
            **{f"form_{k}": v for k, v in case_payload(item)["form"].items()}}
    response = session.post(f"{village.url}/cases/new/{item['code']}", data=form, timeout=10)
    assert response.status_code == 400
    assert "看不见的控制字符" in response.text


def test_line_breaks_are_allowed_only_where_the_field_is_multi_line():
    assert refuse_hidden_characters("第一行\r\n第二行\t完", "content", "投诉内容", multiline=True)
    with pytest.raises(ValidationError):
        refuse_hidden_characters("张\n三", "name", "姓名")
    with pytest.raises(ValidationError):
        refuse_hidden_characters("第一行\u202e", "content", "投诉内容", multiline=True)


def test_a_complainant_name_with_a_zero_width_space_is_refused(village, agent):
    response = village.api("POST", "/api/v1/complaints", agent, json={
        "office": "rs", "content": "办理太慢", "complainant": {"name": "李\u200b四", "phone": "13812345678"}})
    assert response.status_code == 400 and response.json()["error"]["code"] == "hidden_characters"


# ----------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://evil.example\",\"点击\")", "+1+cmd|' /C calc'!A0",
                                  "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_csv_cell_that_a_spreadsheet_would_evaluate_gets_a_leading_apostrophe(cell):
    assert safe_cell(cell) == "'" + cell
    read_back = list(csv.reader(io.StringIO(to_csv([["事项", "办件数"], [cell, 3]]).decode("utf-8-sig"))))
    assert read_back == [["事项", "办件数"], ["'" + cell, "3"]]


def test_ordinary_cells_are_unchanged():
    assert [safe_cell(v) for v in ("城乡居民养老保险", 12, "12.50%", None, "a=b")] == \
        ["城乡居民养老保险", "12", "12.50%", "", "a=b"]


def test_the_statistics_export_neutralises_an_item_name_chosen_by_a_village():
    empty = {key: 0 for key, _ in filters.COLUMNS}
    stats = {"by": "item", "groups": [{"label": "=HYPERLINK(\"http://evil.example\")", **empty}],
             "totals": dict(empty)}
    rows = list(csv.reader(io.StringIO(statistics.to_csv(stats).decode("utf-8-sig"))))
    assert rows[1][0] == "'=HYPERLINK(\"http://evil.example\")"
    assert statistics.to_csv(stats).startswith("\ufeff".encode())
