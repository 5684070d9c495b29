"""预审 with field-level marks (issue 5 item 2): the township clerk marks fields and materials of a
village's submission; ONE 一次性告知 lists every mark and reaches the village over the real network."""

from __future__ import annotations

import json
import re

import pytest
from network import catalog, create_case, pick_item
from network_session import session_for

from shared.core.errors import ValidationError
from shared.rules import precheck


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture(scope="module")
def setup(build_network):
    net = build_network()
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    township.account("clerk", "clerk", township.node_id)
    item = pick_item(catalog(village, agent), "township")
    return net, village, township, agent, item


def _submitted(net, village, agent, item) -> str:
    receipt = create_case(village, agent, item, [(item["materials"][0]["code"], "scan.png", b"\x89PNG\r\n\x1a\nx")])
    village.sync()  # the township takes custody and, deciding the item, receives it
    return receipt["case_id"]


def test_marks_become_one_notice_that_the_village_sees(setup):
    net, village, township, agent, item = setup
    case_id = _submitted(net, village, agent, item)
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "RECEIVED"
    clerk = session_for(township, "clerk")
    page = clerk.get(f"{township.url}/cases/{case_id}").text
    assert "预审标注（一次性告知）" in page and f'name="mark_field_{item["fields"][0]["name"]}"' in page
    field, material = item["fields"][0], item["materials"][-1]
    r = clerk.post(f"{township.url}/cases/{case_id}/precheck", data={
        "csrf_token": _csrf(page), "action": "request_correction",
        f"mark_field_{field['name']}": "1", f"note_field_{field['name']}": "与户口簿不一致",
        f"mark_material_{material['code']}": "1", f"note_material_{material['code']}": "",
        "mark_field_applicant_phone": "1", "other": "请申请人本人签字", "comment": "",
    })
    assert r.ok and "一次性告知 4 项" in r.text
    detail = township.scalar("SELECT detail FROM case_events WHERE case_id = ? AND action = 'request_correction'",
                             (case_id,))
    expected = [f"申请表「{field['label']}」：与户口簿不一致", "申请表「联系电话」：填写有误，请核实更正",
                f"材料「{material['name']}」：缺少或不符合要求，请补齐", "请申请人本人签字"]
    assert sorted(json.loads(detail)["missing_items"]) == sorted(expected)
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "SUPPLEMENT"

    village.sync()  # the notice comes down with the township's downlink
    assert village.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "SUPPLEMENT"
    seen = session_for(village, "agent").get(f"{village.url}/cases/{case_id}").text
    assert "一次性告知：请补齐补正以下全部内容" in seen
    for text in (f"申请表：{field['label']}", "与户口簿不一致", f"材料：{material['name']}", "请申请人本人签字"):
        assert text in seen
    assert "预审标注（一次性告知）" not in seen  # the village marks nothing


def test_no_mark_sends_nothing(setup):
    net, village, township, agent, item = setup
    case_id = _submitted(net, village, agent, item)
    clerk = session_for(township, "clerk")
    page = clerk.get(f"{township.url}/cases/{case_id}").text
    r = clerk.post(f"{township.url}/cases/{case_id}/precheck",
                   data={"csrf_token": _csrf(page), "action": "request_correction"})
    assert "请至少标注一项" in r.text
    assert township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "RECEIVED"


def test_build_missing_items_refuses_unknown_marks():
    item = {"fields": [{"name": "addr", "label": "住址"}], "materials": [{"code": "M1", "name": "户口簿"}]}
    assert precheck.build_missing_items(item, {"addr": ""}, {}) == ["申请表「住址」：填写有误，请核实更正"]
    with pytest.raises(ValidationError):
        precheck.build_missing_items(item, {"nope": "x"}, {})
    with pytest.raises(ValidationError):
        precheck.build_missing_items(item, {}, {"M9": ""})
    parsed = precheck.parse_item("材料「户口簿」：复印件不清晰")
    assert parsed == {"kind": "material", "name": "户口簿", "note": "复印件不清晰"}
