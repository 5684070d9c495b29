"""补齐补正 and 容缺 answered from the village over a real network (issue 11, points 1 and 2):
the signed ``case.supplement`` travels up once, the deciding node records what changed and runs
the rules; the 容缺 and 受理 guards refuse what the law does not allow."""

from __future__ import annotations

import base64
import os
from datetime import date, timedelta

import pytest
from network import case_payload, catalog

from shared.core.clock import Clock, FixedClock
from shared.core.errors import RuleError
from shared.rules import supplements as rules
from shared.services import supervision, supplements
from sync import envelope

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(48)
PENSION = "130926-RS-0001"  # 参保登记: id_card, hukou, enroll_form required; nothing 容缺可
ELDERLY = "130926-MZ-0004"  # 高龄津贴: id_card, hukou required, bank_card 容缺可


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(48)


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=2)


@pytest.fixture(scope="module")
def agent(net):
    return net.village().account("agent", "agent", net.village().node_id)


@pytest.fixture(scope="module")
def items(net, agent):
    return {i["code"]: i for i in catalog(net.village(), agent)}


def _file(net, agent, item, codes, **form):
    payload = case_payload(item, [(c, f"{c}.png", _png()) for c in codes])
    payload["form"].update(form)
    response = net.village().api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 201, response.text
    net.sync_all()
    return response.json()["case_id"]


def _office(item):
    return f"130926-{item['department_code']}"


def _hub(net, item):
    return net.hub.account(f"w_{_office(item)}", "window", _office(item))


def _act(net, item, case_id, **body):
    return net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", _hub(net, item), json=body)


def _hub_case(net, item, case_id):
    return net.hub.api("GET", f"/api/v1/cases/{case_id}", _hub(net, item)).json()


def _supplement(net, agent, case_id, form=None, files=(), village=None):
    body = {"form": form or {}, "materials": [
        {"code": c, "filename": f"{c}.png", "content_base64": base64.b64encode(_png()).decode()} for c in files]}
    return (village or net.village()).api("POST", f"/api/v1/cases/{case_id}/supplement", agent, json=body)


def test_accept_with_a_required_material_missing_is_refused(net, agent, items):
    item = items[PENSION]
    case_id = _file(net, agent, item, ["id_card", "enroll_form"])
    response = _act(net, item, case_id, action="accept")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "materials_missing" and "户口簿" in error["message"]
    assert "hukou" not in error["message"]
    assert _hub_case(net, item, case_id)["status"] == "RECEIVED"


def test_correction_loop_from_the_village(net, agent, items):
    item = items[PENSION]
    field = item["fields"][0]["name"]
    case_id = _file(net, agent, item, ["id_card", "enroll_form"])
    told = ["户口簿首页及本人页", f"申请表「{item['fields'][0]['label']}」填写有误"]
    assert _act(net, item, case_id, action="request_correction", comment="请补正", missing_items=told).status_code == 200
    net.sync_all()
    village = net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()
    assert village["status"] == "SUPPLEMENT"
    page = net.village().api("GET", f"/cases/{case_id}", agent).text
    assert all(t in page for t in told) and "提交补齐补正" in page

    before = village["form"][field]
    response = _supplement(net, agent, case_id, {field: "更正后的内容"}, ["hukou"])
    assert response.status_code == 201, response.text
    assert net.village().scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'case.supplement' AND case_id = ?",
                                (case_id,)) == 1
    net.sync_all()
    at_hub = _hub_case(net, item, case_id)
    assert at_hub["status"] == "RECEIVED"  # received anew: the Art. 32 period counts from here
    assert [h["action"] for h in at_hub["history"]][-2:] == ["supplement", "resubmit"]
    change = at_hub["history"][-2]["detail"]["changes"][0]
    assert (change["field"], change["before"], change["after"]) == (field, before, "更正后的内容")
    assert at_hub["form"][field] == "更正后的内容"
    assert "hukou" in {m["code"] for m in at_hub["materials"]}
    assert at_hub["supplements"][0]["detail"]["materials"][0]["code"] == "hukou"
    page = net.hub.api("GET", f"/cases/{case_id}", _hub(net, item)).text
    assert "补齐补正记录" in page and "更正后的内容" in page and before in page

    assert _act(net, item, case_id, action="accept").status_code == 200
    net.sync_all()
    assert net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()["status"] == "ACCEPTED"
    # Sent exactly once: a second sync adds nothing at the hub.
    net.sync_all()
    assert net.hub.scalar("SELECT COUNT(*) FROM case_events WHERE case_id = ? AND action = 'supplement'",
                          (case_id,)) == 1


def test_supplement_when_nothing_was_asked_is_refused(net, agent, items):
    case_id = _file(net, agent, items[PENSION], ["id_card", "hukou", "enroll_form"])
    response = _supplement(net, agent, case_id, files=["hukou"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_transition"


def _deadline(net, item) -> date:
    return net.hub.node.calendar.add_working_days(net.hub.node.clock.today_cn(), item["promise_limit_wd"])


def test_deficiency_guards(net, agent, items):
    item = items[ELDERLY]
    case_id = _file(net, agent, item, ["id_card", "hukou"], age=70)
    deadline = _deadline(net, item)
    late = (deadline + timedelta(days=30)).isoformat()
    # The server computes the bound: no promise_end_date, or a client's false one, changes nothing.
    for extra in ({}, {"promise_end_date": "2099-12-31"}):
        response = _act(net, item, case_id, action="accept_deficient", owed_materials=["bank_card"],
                        due_date=late, **extra)
        assert response.status_code == 409 and response.json()["error"]["code"] == "due_date_too_late", response.text
    response = _act(net, item, case_id, action="accept_deficient", owed_materials=["id_card"],
                    due_date=deadline.isoformat())
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_deficiency_allowed"
    assert "居民身份证" in response.json()["error"]["message"]


def test_deficient_acceptance_may_not_leave_other_materials_missing(net, agent, items):
    item = items[ELDERLY]
    case_id = _file(net, agent, item, ["id_card"], age=70)
    response = _act(net, item, case_id, action="accept_deficient", owed_materials=["bank_card"],
                    due_date=_deadline(net, item).isoformat())
    assert response.status_code == 409 and response.json()["error"]["code"] == "materials_missing"


def test_deficiency_loop_from_the_village(net, agent, items):
    item = items[ELDERLY]
    case_id = _file(net, agent, item, ["id_card", "hukou"], age=70)
    response = _act(net, item, case_id, action="accept_deficient", owed_materials=["社会保障卡或本人银行卡"],
                    due_date=_deadline(net, item).isoformat())
    assert response.status_code == 200, response.text
    deadline = response.json()["case"]["deadline"]
    assert response.json()["event"]["detail"]["owed_materials"] == ["bank_card"]
    net.sync_all()
    # The 容缺受理通知书 names the material, never its code.
    row = net.village().query("SELECT document FROM documents WHERE case_id = ? AND kind = 'accept_deficient'",
                              (case_id,))[0]
    details = envelope.peek(envelope.from_bytes(row["document"]))["details"]
    assert details["owed_materials"] == ["社会保障卡或本人银行卡"]
    page = net.village().api("GET", f"/cases/{case_id}", agent).text
    assert "补交容缺材料" in page and "社会保障卡或本人银行卡" in page

    assert _supplement(net, agent, case_id, files=["bank_card"]).status_code == 201
    net.sync_all()
    at_hub = _hub_case(net, item, case_id)
    assert at_hub["status"] == "ACCEPTED" and at_hub["deadline"] == deadline
    assert [h["action"] for h in at_hub["history"]][-2:] == ["supplement", "supplement_received"]
    assert net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()["status"] == "ACCEPTED"


def test_owed_materials_supplied_after_the_due_date_terminate(net, agent, items):
    item = items[ELDERLY]
    case_id = _file(net, agent, item, ["id_card", "hukou"], age=70)
    due = net.hub.node.clock.today_cn().isoformat()
    assert _act(net, item, case_id, action="accept_deficient", owed_materials=["bank_card"],
                due_date=due).status_code == 200
    net.sync_all()
    later = Clock().now() + timedelta(days=3)
    net.village().node.clock = net.hub.node.clock = FixedClock(later)
    try:
        assert _supplement(net, agent, case_id, files=["bank_card"]).status_code == 201
        net.sync_all()
    finally:
        net.village().node.clock = net.hub.node.clock = Clock()
    assert _hub_case(net, item, case_id)["status"] == "TERMINATED"


def test_only_the_origin_may_send_a_supplement(net, agent, items):
    item = items[PENSION]
    case_id = _file(net, agent, item, ["id_card"])
    assert _act(net, item, case_id, action="request_correction", missing_items=["户口簿"]).status_code == 200
    net.sync_all()
    other = net.village(1)
    other_agent = other.account("agent", "agent", other.node_id)
    # Not at another node's API (it does not hold the case) …
    assert _supplement(net, other_agent, case_id, files=["hukou"], village=other).status_code == 404
    # … and a supplement signed by another village is refused by the rule the hub and township apply.
    row = net.hub.query("SELECT * FROM cases WHERE case_id = ?", (case_id,))[0]
    with pytest.raises(RuleError) as exc:
        supplements.apply_received(net.hub.conn, net.hub.node, {"case_id": case_id, "event": {
            "event_id": "f" * 32, "action": "supplement", "node": other.node_id, "at": row["updated_at"],
            "detail": {}}}, other.node_id, net.hub.node.emit)
    assert exc.value.code == "not_entitled"
    # The township holds the village's case too, but its clerk is not the origin.
    clerk = net.township.account("clerk", "clerk", net.township.node_id)
    response = net.township.api("POST", f"/api/v1/cases/{case_id}/supplement", clerk,
                                json={"form": {}, "materials": []})
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_entitled", response.text
    # Nor can the deciding office record one as an action of its own.
    response = _act(net, item, case_id, action="supplement")
    assert response.status_code == 409 and response.json()["error"]["code"] == "origin_only", response.text
    # The hub's own window account cannot send one for a village case either.
    response = net.hub.api("POST", f"/api/v1/cases/{case_id}/supplement", _hub(net, item), json={"form": {}})
    assert response.status_code in (403, 409)


def test_the_rules_are_pure():
    item = {"materials": [{"code": "id_card", "name": "居民身份证", "required": True, "deficiency_allowed": False},
                          {"code": "bank_card", "name": "银行卡", "required": True, "deficiency_allowed": True}],
            "fields": [{"name": "addr", "label": "住址"}]}
    assert rules.owed_material_codes(item, ["银行卡", "bank_card"]) == ["bank_card"]
    with pytest.raises(RuleError, match="居民身份证"):
        rules.owed_material_codes(item, ["id_card"])
    with pytest.raises(RuleError) as exc:
        rules.check_acceptance(item, {"id_card"}, "accept")
    assert exc.value.code == "materials_missing" and "银行卡" in exc.value.message
    rules.check_acceptance(item, {"id_card"}, "accept_deficient", ["bank_card"])
    day = date(2026, 3, 10)
    assert rules.supplement_outcome("SUPPLEMENT", [], set(), None, day) == "resubmit"
    assert rules.supplement_outcome("ACCEPTED_DEFICIENT", ["bank_card"], {"bank_card"}, "2026-03-10", day) \
        == "supplement_received"
    assert rules.supplement_outcome("ACCEPTED_DEFICIENT", ["bank_card"], set(), "2026-03-10", day) is None
    assert rules.supplement_outcome("ACCEPTED_DEFICIENT", ["bank_card"], {"bank_card"}, "2026-03-09", day) \
        == "terminate"
    assert rules.field_changes(item, {"addr": "a"}, {"addr": "b"}) == [
        {"field": "addr", "label": "住址", "before": "a", "after": "b"}]


HOMESTEAD = "130926-XZ-0001"  # 宅基地: decided at the township


def test_a_township_decided_case_is_corrected_at_the_township_and_recorded_at_the_hub(net, agent, items):
    item = items[HOMESTEAD]
    required = [m["code"] for m in item["materials"] if m["required"]]
    case_id = _file(net, agent, item, [c for c in required if c != "village_opinion"])
    township = net.township
    clerk = township.account("clerk", "clerk", township.node_id)
    response = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk,
                            json={"action": "request_correction", "missing_items": ["村民小组会议讨论意见及公示材料"]})
    assert response.status_code == 200, response.text
    net.sync_all()
    assert _supplement(net, agent, case_id, files=["village_opinion"]).status_code == 201
    net.sync_all()
    at_township = township.api("GET", f"/api/v1/cases/{case_id}", clerk).json()
    assert at_township["status"] == "RECEIVED"
    assert [h["action"] for h in at_township["history"]][-2:] == ["supplement", "resubmit"]
    accepted = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk, json={"action": "accept"})
    assert accepted.status_code == 200, accepted.text
    net.sync_all()
    hub_actions = [r["action"] for r in net.hub.query(
        "SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,))]
    assert hub_actions.count("supplement") == 1 and "resubmit" in hub_actions and hub_actions[-1] == "accept"
    assert net.hub.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "ACCEPTED"
    assert net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()["status"] == "ACCEPTED"


def test_a_township_window_answers_its_own_case(net, items):
    item = items[HOMESTEAD]
    township = net.township
    clerk = township.account("clerk", "clerk", township.node_id)
    payload = case_payload(item, [(m["code"], "s.png", _png()) for m in item["materials"]
                                  if m["required"] and m["code"] != "hukou"])
    case_id = township.api("POST", "/api/v1/cases", clerk, json=payload).json()["case_id"]
    response = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk,
                            json={"action": "request_correction", "missing_items": ["户口簿"]})
    assert response.status_code == 200, response.text
    response = township.api("POST", f"/api/v1/cases/{case_id}/supplement", clerk, json={"materials": [
        {"code": "hukou", "filename": "户口簿.png", "content_base64": base64.b64encode(_png()).decode()}]})
    assert response.status_code == 201, response.text
    assert response.json()["case"]["status"] == "RECEIVED"  # decided here: the rule ran at once
    net.sync_all()
    hub_actions = [r["action"] for r in net.hub.query(
        "SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,))]
    assert hub_actions.count("supplement") == 1 and hub_actions[-1] == "resubmit"
    assert "hukou" in {r["code"] for r in net.hub.query("SELECT code FROM case_materials WHERE case_id = ?",
                                                        (case_id,))}


def test_the_deciding_node_refuses_a_supplement_it_did_not_ask_for_or_that_changes_what_the_item_lacks(
        net, agent, items):
    item = items[PENSION]
    case_id = _file(net, agent, item, ["id_card", "hukou", "enroll_form"])
    row = net.hub.query("SELECT * FROM cases WHERE case_id = ?", (case_id,))[0]
    origin = net.village().node_id

    def supplement(detail, n):
        return {"case_id": case_id, "event": {"event_id": f"{n:032x}", "action": "supplement", "node": origin,
                                              "at": row["updated_at"], "detail": detail}}

    with pytest.raises(RuleError) as exc:  # RECEIVED: nothing was asked
        supplements.apply_received(net.hub.conn, net.hub.node, supplement({}, 1), origin, net.hub.node.emit)
    assert exc.value.code == "invalid_transition"
    assert _act(net, item, case_id, action="request_correction", missing_items=["户口簿"]).status_code == 200
    for n, detail in enumerate(({"changes": [{"field": "no_such_field", "after": "x"}]},
                                {"materials": [{"code": "no_such_material", "filename": "a.png",
                                                "sha256": "0" * 64, "size": 1}]}), start=2):
        with pytest.raises(RuleError) as exc:
            supplements.apply_received(net.hub.conn, net.hub.node, supplement(detail, n), origin, net.hub.node.emit)
        assert exc.value.code == "invalid_supplement"
    net.hub.conn.rollback()


def _accept_notice(net, agent, case_id) -> tuple[dict, str]:
    row = net.village().query("SELECT doc_id, document FROM documents WHERE case_id = ? AND kind = 'accept'",
                              (case_id,))[0]
    page = net.village().api("GET", f"/documents/{row['doc_id']}", agent).text
    return envelope.peek(envelope.from_bytes(row["document"]))["details"], page


def test_the_acceptance_notice_says_materials_are_complete_only_when_they_are(net, agent, items):
    item = items[PENSION]
    complete = _file(net, agent, item, ["id_card", "hukou", "enroll_form"])
    assert _act(net, item, complete, action="accept").status_code == 200
    lacking = _file(net, agent, item, ["id_card"])
    node = net.hub.node
    node.clock = FixedClock(node.now() + timedelta(days=10))  # no notice within five working days
    try:
        supervision.run(net.hub.conn, node, node.emit)  # Art. 32: deemed accepted on receipt
    finally:
        node.clock = Clock()
    net.sync_all()
    details, page = _accept_notice(net, agent, complete)
    assert details["materials_complete"] is True and "申请材料齐全、符合法定形式" in page
    details, page = _accept_notice(net, agent, lacking)
    assert details == {"materials_complete": False, "deemed": True}
    assert "申请材料齐全" not in page and "第三十二条" in page
