"""首席审批员 (审批决定权 / 初审权), 部门负责人 and 窗口首席代表: the rule, and its refusals over a
real hub, and a network for what the village sees (seed 000 §(四), seed 002 §3, 行政许可法 Art. 42)."""

from __future__ import annotations

import pytest
from network import catalog, create_case

from shared.core.errors import Forbidden, RuleError
from shared.rules import decision_rights, states
from sync import envelope

DECIDE = {"chief_authority": "decide", "handling": "承诺件"}
PRE_REVIEW = {"chief_authority": "pre_review", "handling": "承诺件"}
INSTANT = {"chief_authority": "decide", "handling": "即办件"}


# --- the pure rule ---------------------------------------------------------------------------


def test_the_chief_decides_an_item_with_the_power_to_decide():
    basis = decision_rights.check_right(DECIDE, "chief", "approve", ["accept"])
    assert basis["grant_label"] == "审批决定权" and basis["seal"] == "行政审批专用章"


@pytest.mark.parametrize("action", ["approve", "deny"])
def test_a_window_may_not_decide_a_committed_item(action):
    with pytest.raises(Forbidden) as refused:
        decision_rights.check_right(DECIDE, "window", action, ["accept"])
    assert refused.value.code == "not_entitled_role" and refused.value.status == 403


def test_the_window_has_the_final_say_on_an_instant_item():
    basis = decision_rights.check_right(INSTANT, "window", "approve", ["accept"])
    assert basis["grant_label"] == "即办件最终许可权"


def test_a_chief_with_only_pre_review_may_not_decide():
    with pytest.raises(Forbidden):
        decision_rights.check_right(PRE_REVIEW, "chief", "approve", ["accept", "pre_review"])


def test_the_head_decides_only_after_the_chiefs_pre_review():
    with pytest.raises(RuleError) as early:
        decision_rights.check_right(PRE_REVIEW, "head", "approve", ["accept"])
    assert early.value.code == "pre_review_required"
    basis = decision_rights.check_right(PRE_REVIEW, "head", "deny", ["accept", "pre_review"])
    assert basis["role"] == "head" and "初审" in basis["grant_label"]


def test_only_the_chief_pre_reviews_and_only_items_granted_pre_review():
    assert decision_rights.check_right(PRE_REVIEW, "chief", "pre_review", ["accept"])["grant"] == "pre_review"
    with pytest.raises(Forbidden):
        decision_rights.check_right(PRE_REVIEW, "window", "pre_review", ["accept"])
    with pytest.raises(RuleError) as needless:
        decision_rights.check_right(DECIDE, "chief", "pre_review", ["accept"])
    assert needless.value.code == "pre_review_not_needed"


def test_acceptance_belongs_to_the_window_and_those_above_it():
    assert decision_rights.check_right(DECIDE, "window", "accept", []) is None
    with pytest.raises(Forbidden):
        decision_rights.check_right(DECIDE, "supervisor", "accept", [])


def test_an_extension_is_asked_then_approved_by_the_head_only():
    assert decision_rights.check_right(DECIDE, "window", "extend_request", ["accept"]) is None
    with pytest.raises(Forbidden):
        decision_rights.check_right(DECIDE, "head", "extend_request", ["accept"])
    for role in ("window", "chief"):
        with pytest.raises(Forbidden):
            decision_rights.check_right(DECIDE, role, "extend", ["accept", "extend_request"])
    with pytest.raises(RuleError) as unasked:
        decision_rights.check_right(DECIDE, "head", "extend", ["accept"])
    assert unasked.value.code == "extend_request_required"
    assert decision_rights.check_right(DECIDE, "head", "extend", ["accept", "extend_request"])["role"] == "head"


def test_who_holds_the_case_follows_its_events():
    assert decision_rights.holder(PRE_REVIEW, "RECEIVED", ["submit", "receive"]) == "window"
    assert decision_rights.holder(PRE_REVIEW, "IN_REVIEW", ["accept", "start_review"]) == "chief"
    assert decision_rights.holder(PRE_REVIEW, "IN_REVIEW", ["accept", "pre_review"]) == "head"
    assert decision_rights.holder(DECIDE, "IN_REVIEW", ["accept", "pre_review"]) == "chief"
    assert decision_rights.holder(INSTANT, "ACCEPTED", ["accept"]) == "window"
    assert decision_rights.holder(DECIDE, "APPROVED", ["accept", "approve"]) is None


def test_a_pre_review_needs_an_opinion_and_a_reason():
    with pytest.raises(RuleError) as no_opinion:
        states.apply_action("IN_REVIEW", "pre_review", "材料齐全")
    assert no_opinion.value.code == "opinion_required"
    with pytest.raises(RuleError) as no_reason:
        states.apply_action("IN_REVIEW", "pre_review", "", opinion="同意")
    assert no_reason.value.code == "reason_required"
    assert states.apply_action("IN_REVIEW", "pre_review", "材料齐全", opinion="同意") == "IN_REVIEW"


# --- at the hub (service tier: tests/service.py) ------------------------------------------------


def _file(service, code):
    case_id = service.received_case(code)
    return case_id, f"130926-{service.item(code)['department_code']}"


def _as(service, role, office):
    return service.account(f"{role}_{office}", role, office, f"{office}{decision_rights.ROLE_LABELS[role]}")


def _post(service, token, case_id, **body):
    return service.act(token, case_id, **body)


def test_over_the_api_a_window_accepts_and_may_not_approve_the_chief_decides(service):
    case_id, office = _file(service, "130926-RS-0001")  # chief_authority: decide
    assert _post(service, _as(service, "window", office), case_id, action="accept").status_code == 200
    refused = _post(service, _as(service, "window", office), case_id, action="approve", comment="符合条件")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "not_entitled_role"
    done = _post(service, _as(service, "chief", office), case_id, action="approve", comment="符合条件")
    assert done.status_code == 200, done.text
    decision = done.json["case"]["decision"]
    assert decision["decided_under"]["grant_label"] == "审批决定权"
    assert decision["decided_under"]["seal"] == "行政审批专用章"
    signed = service.scalar("SELECT document FROM documents WHERE case_id = ? AND kind = 'approve'", (case_id,))
    page = service.api("GET", f"/cases/{case_id}", _as(service, "chief", office))
    assert "审批决定权" in page.text and "行政审批专用章" in page.text
    body = envelope.peek(envelope.from_bytes(signed))  # the signed 准予许可决定书 names decider, grant and seal
    assert body["decided_under"] == {"role_label": "首席审批员", "grant_label": "审批决定权",
                                     "name": f"{office}首席审批员", "seal": "行政审批专用章"}


def test_an_extension_is_two_events_the_head_approving_with_his_own_account(service):
    case_id, office = _file(service, "130926-LY-0001")
    window, head = _as(service, "window", office), _as(service, "head", office)
    before = _post(service, window, case_id, action="accept").json["case"]["deadline"]
    unasked = _post(service, head, case_id, action="extend", comment="需现场核查")
    assert unasked.status_code == 409 and unasked.json["error"]["code"] == "extend_request_required"
    assert _post(service, window, case_id, action="extend_request", comment="需现场核查").status_code == 200
    self_approved = _post(service, window, case_id, action="extend", comment="需现场核查", approved_by="局长")
    assert self_approved.status_code == 403
    approved = _post(service, head, case_id, action="extend", comment="同意延期", approved_by="别人")
    assert approved.status_code == 200, approved.text
    case = approved.json["case"]
    assert case["deadline"] > before
    extend = next(h for h in case["history"] if h["action"] == "extend")
    assert extend["detail"]["approved_by"] == f"{office}部门负责人"  # the head's own account, not the typed name
    assert [h["action"] for h in case["history"]][-2:] == ["extend_request", "extend"]


def test_the_case_page_offers_only_the_accounts_own_steps(service):
    case_id, office = _file(service, "130926-MZ-0001")
    _post(service, _as(service, "window", office), case_id, action="accept")
    page = service.api("GET", f"/cases/{case_id}", _as(service, "window", office)).text
    assert 'value="approve"' not in page and 'value="extend_request"' in page
    chief_page = service.api("GET", f"/cases/{case_id}", _as(service, "chief", office)).text
    assert 'value="pre_review"' in chief_page and 'value="approve"' not in chief_page
    assert "当前办理人" in chief_page and "首席审批员" in chief_page


# --- over a real network: the village sees the steps -----------------------------------------


# The module's network and village agent are conftest's defaults (net, agent).


def _file_at_village(net, agent, code):
    item = next(i for i in catalog(net.village(), agent) if i["code"] == code)
    case_id = create_case(net.village(), agent, item)["case_id"]
    net.sync_all()
    return case_id, f"130926-{item['department_code']}"


def _as_at_hub(net, role, office):
    return net.hub.account(f"{role}_{office}", role, office, f"{office}{decision_rights.ROLE_LABELS[role]}")


def _post_at_hub(net, token, case_id, **body):
    return net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json=body)


def test_over_the_api_pre_review_then_the_head_decides(net, agent):
    case_id, office = _file_at_village(net, agent, "130926-MZ-0001")  # chief_authority: pre_review
    chief, head = _as_at_hub(net, "chief", office), _as_at_hub(net, "head", office)
    assert _post_at_hub(net, _as_at_hub(net, "window", office), case_id, action="accept").status_code == 200
    assert net.hub.api("GET", f"/api/v1/cases/{case_id}", chief).json()["holder"]["role"] == "chief"
    refused = _post_at_hub(net, chief, case_id, action="approve", comment="符合条件")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_entitled_role"
    early = _post_at_hub(net, head, case_id, action="approve", comment="符合条件")
    assert early.status_code == 409 and early.json()["error"]["code"] == "pre_review_required"
    reviewed = _post_at_hub(net, chief, case_id, action="pre_review", opinion="同意", comment="家庭收入低于标准")
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["case"]["holder"]["role"] == "head"
    decided = _post_at_hub(net, head, case_id, action="approve", comment="同意初审意见")
    assert decided.status_code == 200, decided.text
    assert decided.json()["case"]["decision"]["decided_under"]["role"] == "head"
    net.sync_all()
    village = net.village().api("GET", f"/api/v1/cases/{case_id}", agent).json()
    assert "pre_review" in [h["action"] for h in village["history"]]
    assert village["decision"]["decided_under"]["role_label"] == "部门负责人"
