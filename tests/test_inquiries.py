"""首问负责 and 咨询登记 (seeds 000, 003; brief §5): any node records an inquiry with its first
responder, who answers or refers it and closes it; consultation answers are counted; an inquiry
becomes a case through the intake wizard without retyping."""

from __future__ import annotations

import pytest
from network import csrf_token, form_for, login, valid_id_number

from shared.core.errors import RuleError, ValidationError
from shared.rules import inquiries as rules
from shared.rules.catalog import load_seed

ITEMS = {i["code"]: i for i in load_seed()}
TREES = "130926-LY-0002"  # 零星林木采伐咨询: consultation only
PENSION = "130926-RS-0001"


# ----------------------------------------------------------------------------- the rules


def test_an_inquiry_needs_who_asks_and_what():
    ok = rules.clean_inquiry({"asker_name": " 王五 ", "question": "房前屋后的杨树能砍吗？", "item_code": TREES}, ITEMS)
    assert ok["asker_name"] == "王五" and ok["item_name"] == "零星林木采伐咨询" and ok["asker_phone"] == ""
    for bad, field in (({"asker_name": "王五"}, "question"), ({"question": "?"}, "asker_name"),
                       ({"asker_name": "王五", "question": "?", "asker_phone": "123"}, "asker_phone"),
                       ({"asker_name": "王五", "question": "?", "item_code": "NOPE"}, "item_code")):
        with pytest.raises(ValidationError) as err:
            rules.clean_inquiry(bad, ITEMS)
        assert err.value.field == field


def test_closing_answers_or_refers_and_counts_consultations():
    inquiry = {"status": "open"}
    done = rules.check_close(inquiry, "answered", "", None, ITEMS[TREES])
    assert done["consultation"] == 1 and "不需要申请采伐许可证" in done["answer"]
    assert rules.check_close(inquiry, "answered", "请带户口簿来办理", None, ITEMS[PENSION])["consultation"] == 0
    with pytest.raises(ValidationError):
        rules.check_close(inquiry, "answered", "", None, ITEMS[PENSION])  # no answer given
    with pytest.raises(ValidationError):
        rules.check_close(inquiry, "referred", "", "", None)  # to whom?
    with pytest.raises(RuleError):
        rules.check_close({"status": "closed"}, "answered", "x", None, None)
    with pytest.raises(RuleError) as err:
        rules.check_becomes_case(inquiry, ITEMS[TREES], True)
    assert err.value.code == "consultation_only"
    rows = [{"status": "closed", "outcome": "answered", "consultation": 1, "item_name": "零星林木采伐咨询"},
            {"status": "closed", "outcome": "referred", "consultation": 0, "item_name": ""},
            {"status": "open", "outcome": None, "consultation": 0, "item_name": ""}]
    stats = rules.statistics(rows)
    assert stats["consultations"] == 1 and stats["open"] == 1 and stats["consultations_by_item"] == {"零星林木采伐咨询": 1}


# ----------------------------------------------------------------------------- at the hub (service tier)


def test_the_hub_window_records_and_refers(service):
    window = service.account("window", "window", "130926-ly")
    r = service.api("POST", "/api/v1/inquiries", window, json={"asker_name": "赵六", "question": "宅基地怎么批？"})
    assert r.status_code == 201
    done = service.api("POST", f"/api/v1/inquiries/{r.json['inquiry_id']}/close", window,
                       json={"outcome": "referred", "referred_to": "乡镇便民服务站", "answer": "由乡镇审批"})
    assert done.status_code == 200 and done.json["outcome"] == "referred"
    assert service.api("GET", "/api/v1/inquiries?status=closed", window).json["inquiries"]


# ----------------------------------------------------------------------------- at the village, over a real network


@pytest.fixture(scope="module")
def people(net):
    village = net.village()
    return {"agent": village.account("agent", "agent", village.node_id),
            "agent2": village.account("agent2", "agent", village.node_id)}


def test_a_consultation_is_answered_from_the_catalog_and_counted(net, people):
    village = net.village()
    r = village.api("POST", "/api/v1/inquiries", people["agent"],
                    json={"asker_name": "王五", "question": "自留地里的几棵杨树能砍吗？", "item_code": TREES})
    assert r.status_code == 201, r.text
    inquiry = r.json()
    assert inquiry["first_responder"] == "agent" and inquiry["status"] == "open"
    url = f"/api/v1/inquiries/{inquiry['inquiry_id']}/close"
    other = village.api("POST", url, people["agent2"], json={"outcome": "answered", "answer": "可以"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "not_first_responder"
    closed = village.api("POST", url, people["agent"], json={"outcome": "answered"})
    assert closed.status_code == 200 and closed.json()["consultation"] == 1
    assert "森林法" in closed.json()["answer"]
    again = village.api("POST", url, people["agent"], json={"outcome": "answered", "answer": "再答"})
    assert again.status_code == 409
    case = village.api("POST", f"/api/v1/inquiries/{inquiry['inquiry_id']}/case", people["agent"])
    assert case.status_code == 409
    stats = village.api("GET", "/api/v1/inquiries/stats", people["agent"]).json()
    assert stats["consultations"] >= 1 and stats["consultations_by_item"]["零星林木采伐咨询"] >= 1
    assert village.api("GET", "/api/v1/inquiries/stats?month=2026-13", people["agent"]).status_code == 400


def test_an_inquiry_becomes_a_case_without_retyping(net, people):
    village = net.village()
    r = village.api("POST", "/api/v1/inquiries", people["agent"], json={
        "asker_name": "李四", "asker_phone": "13912345678", "question": "想给母亲办养老保险", "item_code": PENSION})
    inquiry_id = r.json()["inquiry_id"]
    turned = village.api("POST", f"/api/v1/inquiries/{inquiry_id}/case", people["agent"])
    assert turned.status_code == 201, turned.text
    wizard_url = turned.json()["wizard_url"]

    s = login(village, "agent")
    page = s.get(village.url + wizard_url, timeout=10)
    assert page.status_code == 200 and 'value="李四"' in page.text and 'value="13912345678"' in page.text
    # The agent adds what the inquiry did not hold and submits (one page post, with the draft).
    token = csrf_token(page.text)
    form = {f"form_{k}": v for k, v in form_for(ITEMS[PENSION]).items()}
    draft_id = turned.json()["draft_id"]
    done = s.post(f"{village.url}/cases/new/{PENSION}", timeout=10, data={
        "csrf_token": token, "draft_id": draft_id, "applicant_name": "李四", "applicant_phone": "13912345678",
        "applicant_id_number": valid_id_number(), "entrust_consent": "yes", "situation_paid_by_government": "否",
        **form})
    assert "/receipt" in done.url, done.text[:500]
    inquiry = village.api("GET", f"/api/v1/inquiries/{inquiry_id}", people["agent"]).json()
    assert inquiry["outcome"] == "case" and inquiry["case_id"]
    assert village.scalar("SELECT applicant_name FROM cases WHERE case_id = ?", (inquiry["case_id"],)) == "李四"
    listing = s.get(village.url + "/inquiries", timeout=10)
    assert listing.status_code == 200 and "咨询登记" in listing.text
