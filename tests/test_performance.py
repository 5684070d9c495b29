"""绩效考核 (seeds 002 §二(四)10, 000 §四(一), 003): monthly scores per window, office, township and
village from the statistics' figures, admin weights with the formula shown, a ranking, CSV, and
a published month frozen with later changes shown as corrections. The hub's rules, on the service
tier (``tests/service.py``: one real hub, its village's cases and complaints sent up to it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from network import TOWNSHIP_ID
from service import VILLAGE

from shared.core.errors import ValidationError
from shared.rules import performance as rules

W = dict(rules.DEFAULT_WEIGHTS)


# ----------------------------------------------------------------------------- the rules


def test_the_score_weighs_the_rates_a_group_has_and_deducts_cards():
    full = {"on_time_rate": 1.0, "satisfaction": 0.5, "transmission_rate": 1.0, "closure_rate": 1.0,
            "village_share": 1.0, "yellow_cards": 0, "red_cards": 0}
    assert rules.score(full, W) == pytest.approx(100 * (40 + 12.5 + 15 + 15 + 5) / 100)
    window = {**full, "transmission_rate": None, "village_share": None, "satisfaction": None}  # takes no village cases
    assert rules.score(window, W) == 100.0  # not punished for what it never had to do
    assert rules.score({**full, "yellow_cards": 3, "red_cards": 1}, W) == pytest.approx(87.5 - 6 - 5)
    assert rules.score({**full, "on_time_rate": 0, "satisfaction": 0, "transmission_rate": 0, "closure_rate": 0,
                        "village_share": 0, "red_cards": 9}, W) == 0.0  # floored
    assert rules.score({k: None for k in full}, W) is None


def test_ranking_ties_share_a_rank_and_weights_are_checked():
    rows = rules.ranking([{"key": "a", "on_time_rate": 0.5}, {"key": "b", "on_time_rate": 1.0},
                          {"key": "c", "on_time_rate": 0.5}, {"key": "d"}], W)
    assert [(r["key"], r["rank"]) for r in rows] == [("b", 1), ("a", 2), ("c", 2), ("d", None)]
    with pytest.raises(ValidationError):
        rules.clean_weights({**W, "on_time_rate": 101})
    with pytest.raises(ValidationError):
        rules.clean_weights({k: 0 for k in W})
    text = rules.formula(W)
    assert text.startswith("得分 = 100 × (按时办结率×40 + 好评率×25") and "红牌数×5" in text
    frozen = [{"key": "a", "label": "A", "score": 80.0}]
    assert rules.corrections(frozen, [{"key": "a", "label": "A", "score": 90.0}]) == [
        {"key": "a", "label": "A", "published": 80.0, "current": 90.0}]
    assert rules.corrections(frozen, [{"key": "a", "label": "A", "score": 80.0}]) == []


# ----------------------------------------------------------------------------- at the hub (service tier)


@pytest.fixture(scope="module")
def people(service):
    hub = service
    item = hub.item("130926-RS-0001")
    today = hub.node.clock.today_cn()
    first = today.replace(day=1)
    last_month = (first - timedelta(days=1)).replace(day=15)
    return {"item": item, "window": hub.account("window", "window", "130926-rs"),
            "chief": hub.account("chief", "chief", "130926-rs"),  # 承诺件: the chief decides
            "admin": hub.account("admin", "admin"), "supervisor": hub.account("supervisor", "supervisor"),
            "last_month": last_month.strftime("%Y-%m"), "this_month": first.strftime("%Y-%m"),
            "last_month_at": datetime(last_month.year, last_month.month, 15, 2, tzinfo=UTC)}


def _decided_case(hub, people, dated: datetime | None = None, deliver: bool = False) -> str:
    case_id = hub.received_case(people["item"]["code"], submitted_at=dated)
    for action, who in (("accept", "window"), ("approve", "chief")):
        r = hub.act(people[who], case_id, action=action)
        assert r.status_code == 200, r.text
    if deliver:
        hub.village_event(case_id, "deliver", detail={"manner": "直接送达"})
    return case_id


def test_the_months_ranking_by_window_township_and_village(service, people):
    hub = service
    _decided_case(hub, people)
    for by, key in (("office", "130926-rs"), ("township", TOWNSHIP_ID), ("origin", VILLAGE),
                    ("staff", "chief")):  # the staff member who decided
        r = hub.api("GET", f"/api/v1/performance?month={people['this_month']}&by={by}", people["supervisor"])
        assert r.status_code == 200, r.text
        row = next(x for x in r.json["rows"] if x["key"] == key)
        assert row["rank"] == 1 and row["score"] is not None and row["on_time_rate"] == 1.0
        assert not r.json["published"] and r.json["formula"].startswith("得分")
    assert hub.api("GET", "/api/v1/performance?by=person", people["supervisor"]).status_code == 400
    assert hub.api("GET", "/api/v1/performance", people["window"]).status_code == 403
    csv = hub.api("GET", f"/admin/performance.csv?month={people['this_month']}", people["supervisor"])
    assert csv.status_code == 200 and "按时办结率" in csv.data.decode("utf-8-sig")
    page = hub.login("admin").get(f"/admin/performance?month={people['this_month']}")
    assert page.status_code == 200 and "计分公式" in page.text and "<svg" in page.text and "权重设置" in page.text


def test_weights_are_set_by_an_admin_and_a_published_month_is_frozen(service, people):
    hub = service
    month = people["last_month"]
    _decided_case(hub, people, dated=people["last_month_at"])
    not_over = hub.api("POST", "/api/v1/performance/publish", people["admin"], json={"month": people["this_month"]})
    assert not_over.status_code == 409 and not_over.json["error"]["code"] == "month_not_over"
    assert hub.api("POST", "/api/v1/performance/weights", people["supervisor"], json=W).status_code == 403
    published = hub.api("POST", "/api/v1/performance/publish", people["admin"], json={"month": month, "by": "office"})
    assert published.status_code == 201, published.text
    frozen = next(r for r in published.json["rows"] if r["key"] == "130926-rs")
    again = hub.api("POST", "/api/v1/performance/publish", people["admin"], json={"month": month, "by": "office"})
    assert again.status_code == 409 and again.json["error"]["code"] == "already_published"

    # New weights apply to months not yet published; the published one keeps its own.
    set_w = hub.api("POST", "/api/v1/performance/weights", people["admin"], json={**W, "closure_rate": 60})
    assert set_w.status_code == 200 and "闭合度×60" in set_w.json["formula"]
    # A late case of that month, served this time, changes the figures: shown as a correction.
    _decided_case(hub, people, dated=people["last_month_at"], deliver=True)
    report = hub.api("GET", f"/api/v1/performance?month={month}&by=office", people["supervisor"]).json
    assert report["published"] and "闭合度×60" not in report["formula"]
    assert next(r for r in report["rows"] if r["key"] == "130926-rs")["score"] == frozen["score"]
    [correction] = [c for c in report["corrections"] if c["key"] == "130926-rs"]
    assert correction["published"] == frozen["score"] and correction["current"] != frozen["score"]


def test_a_complaint_found_upheld_costs_the_office_points(service, people):
    hub = service
    url = f"/api/v1/performance?month={people['this_month']}&by=office"
    before = next(r for r in hub.api("GET", url, people["supervisor"]).json["rows"] if r["key"] == "130926-rs")
    case_id = _decided_case(hub, people)
    after_case = next(r for r in hub.api("GET", url, people["supervisor"]).json["rows"] if r["key"] == "130926-rs")
    complaint_id = hub.village_complaint({"case_id": case_id, "complainant": {"name": "张三", "phone": "13812345678"},
                                          "content": "窗口推诿"})
    bad = hub.api("POST", f"/api/v1/complaints/{complaint_id}/answer", people["supervisor"],
                  json={"answer": "经核实属实，已责令整改", "upheld": "yes"})
    assert bad.status_code == 400  # a boolean, not text
    r = hub.api("POST", f"/api/v1/complaints/{complaint_id}/answer", people["supervisor"],
                json={"answer": "经核实属实，已责令整改", "upheld": True})
    assert r.status_code == 200, r.text
    row = next(r for r in hub.api("GET", url, people["supervisor"]).json["rows"] if r["key"] == "130926-rs")
    assert row["complaints_upheld"] == 1 and before["complaints_upheld"] == 0
    assert row["score"] == pytest.approx(after_case["score"] - W["complaints_upheld"])
