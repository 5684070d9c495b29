from datetime import date

import pytest

from shared.core.errors import RuleError
from shared.rules.states import (
    ACTION_LABELS,
    CLOCK_RUNNING_STATES,
    DECIDED_STATES,
    FINAL_STATES,
    OPEN_STATES,
    STATUS_LABELS,
    SUSPEND_REASONS,
    TRANSITIONS,
    allowed_actions,
    apply_action,
)

EXPECTED_LABELS = {
    "DRAFT": "暂存",
    "SUBMITTED": "已提交",
    "RECEIVED": "已接件",
    "PRECHECK_RETURNED": "预审退回",
    "SUPPLEMENT": "待补齐补正",
    "ACCEPTED": "已受理",
    "ACCEPTED_DEFICIENT": "容缺受理",
    "NOT_ACCEPTED": "不予受理",
    "IN_REVIEW": "审查中",
    "SUSPENDED": "特别程序(暂停计时)",
    "APPROVED": "准予",
    "DENIED": "不予许可",
    "CONCLUDED": "已办结(已送达)",
    "WITHDRAWN": "撤回",
    "TERMINATED": "终止",
}


def run(status, *actions):
    """Apply actions that need no details in order; return the final status."""
    for action in actions:
        status = apply_action(status, action)
    return status


def test_status_labels_are_exactly_the_specified_ones():
    assert STATUS_LABELS == EXPECTED_LABELS


def test_state_groups_partition_all_states():
    assert OPEN_STATES | DECIDED_STATES | FINAL_STATES == set(STATUS_LABELS)
    assert not OPEN_STATES & DECIDED_STATES
    assert not OPEN_STATES & FINAL_STATES
    assert not DECIDED_STATES & FINAL_STATES
    assert CLOCK_RUNNING_STATES <= OPEN_STATES and "SUSPENDED" not in CLOCK_RUNNING_STATES


def test_every_action_has_a_label_and_a_transition():
    assert set(ACTION_LABELS) == set(TRANSITIONS)
    for sources, target in TRANSITIONS.values():
        assert sources <= set(STATUS_LABELS)
        assert target is None or target in STATUS_LABELS


def test_final_states_allow_nothing():
    for status in FINAL_STATES:
        assert allowed_actions(status) == []


def test_simple_flow_accept_then_approve():
    assert run("DRAFT", "submit", "receive", "accept", "approve", "deliver") == "CONCLUDED"


def test_full_flow_with_review_suspension_and_extension():
    status = run("SUBMITTED", "receive", "accept", "start_review")
    assert status == "IN_REVIEW"
    status = apply_action(status, "suspend", reason="专家评审")
    assert status == "SUSPENDED"
    assert allowed_actions(status) == ["resume", "withdraw", "terminate", "site_visit"]
    status = apply_action(status, "resume")
    assert (
        apply_action(status, "extend", "需组织现场核查", approved_by="张局长", already_extended=False)
        == "IN_REVIEW"
    )
    assert apply_action(status, "deny", "不符合法定条件") == "DENIED"


def test_correction_loop_and_deficient_acceptance():
    status = apply_action("RECEIVED", "request_correction", missing_items=["户口簿"])
    assert status == "SUPPLEMENT"
    assert apply_action(status, "resubmit") == "RECEIVED"
    assert apply_action(status, "accept") == "ACCEPTED"
    status = apply_action("RECEIVED", "accept_deficient", owed_materials=["结婚证"], due_date="2026-03-10")
    assert status == "ACCEPTED_DEFICIENT"
    assert apply_action(status, "supplement_received") == "ACCEPTED"
    assert apply_action(status, "approve") == "APPROVED"
    assert apply_action(status, "terminate", "逾期未补齐容缺材料") == "TERMINATED"


def test_precheck_return_and_resubmit():
    status = apply_action("SUBMITTED", "precheck_return", "身份证复印件不清晰")
    assert status == "PRECHECK_RETURNED"
    assert apply_action(status, "resubmit") == "RECEIVED"


def test_invalid_transition_names_state_and_action_in_chinese():
    with pytest.raises(RuleError) as exc:
        apply_action("ACCEPTED", "reject", "材料不全")
    assert exc.value.code == "invalid_transition"
    assert exc.value.message == "当前状态「已受理」不能执行「不予受理」"
    assert exc.value.status == 409


@pytest.mark.parametrize(
    "status, action",
    [
        ("DRAFT", "receive"),
        ("SUBMITTED", "accept"),
        ("RECEIVED", "start_review"),
        ("ACCEPTED_DEFICIENT", "start_review"),
        ("IN_REVIEW", "accept"),
        ("SUSPENDED", "approve"),
        ("APPROVED", "withdraw"),
        ("APPROVED", "approve"),
        ("NOT_ACCEPTED", "resubmit"),
        ("CONCLUDED", "deliver"),
        ("SUPPLEMENT", "accept_deficient"),
        ("ACCEPTED", "suspend"),
        ("ACCEPTED_DEFICIENT", "extend"),
    ],
)
def test_forbidden_transitions(status, action):
    assert action not in allowed_actions(status)
    with pytest.raises(RuleError) as exc:
        apply_action(status, action, "理由", reason="鉴定", approved_by="x", already_extended=False)
    assert exc.value.code == "invalid_transition"


def test_allowed_actions_match_apply_action():
    details = {
        "missing_items": ["户口簿"],
        "owed_materials": ["结婚证"],
        "due_date": date(2026, 3, 10),
        "reason": "鉴定",
        "approved_by": "负责人",
        "already_extended": False,
        "inspectors": ["王林", "李森"],
        "result": "符合",
        "opinion": "同意",
    }
    for status in STATUS_LABELS:
        for action in ACTION_LABELS:
            allowed = action in allowed_actions(status)
            try:
                apply_action(status, action, "理由", **details)
            except RuleError as exc:
                assert not allowed and exc.code == "invalid_transition", (status, action)
            else:
                assert allowed, (status, action)


@pytest.mark.parametrize(
    "status, action, message",
    [
        ("IN_REVIEW", "deny", "不予许可必须说明理由"),
        ("ACCEPTED", "deny", "不予许可必须说明理由"),
        ("RECEIVED", "reject", "不予受理必须说明理由"),
        ("SUPPLEMENT", "reject", "不予受理必须说明理由"),
        ("ACCEPTED_DEFICIENT", "terminate", "终止办件必须说明理由"),
    ],
)
@pytest.mark.parametrize("comment", ["", "   ", "\n\t"])
def test_refusals_need_a_reason(status, action, message, comment):
    with pytest.raises(RuleError) as exc:
        apply_action(status, action, comment)
    assert exc.value.code == "reason_required"
    assert exc.value.message == message


def test_one_time_notice_must_list_what_is_missing():
    for status, action in (("RECEIVED", "request_correction"), ("SUBMITTED", "precheck_return")):
        with pytest.raises(RuleError) as exc:
            apply_action(status, action, " ", missing_items=["", "  "])
        assert exc.value.code == "missing_items_required"
        assert apply_action(status, action, "", missing_items=["户口簿首页"]) != status


def test_deficient_acceptance_needs_owed_materials_and_due_date():
    with pytest.raises(RuleError) as exc:
        apply_action("RECEIVED", "accept_deficient", due_date="2026-03-10")
    assert exc.value.code == "owed_materials_required"
    with pytest.raises(RuleError) as exc:
        apply_action("RECEIVED", "accept_deficient", owed_materials=["结婚证"])
    assert exc.value.code == "due_date_required"
    with pytest.raises(RuleError) as exc:
        apply_action("RECEIVED", "accept_deficient", owed_materials=["结婚证"], due_date="下周")
    assert exc.value.code == "due_date_required"


def test_deficient_due_date_within_committed_limit():
    with pytest.raises(RuleError) as exc:
        apply_action(
            "RECEIVED",
            "accept_deficient",
            owed_materials=["结婚证"],
            due_date=date(2026, 3, 20),
            promise_end_date="2026-03-19",
        )
    assert exc.value.code == "due_date_too_late"
    status = apply_action(
        "RECEIVED",
        "accept_deficient",
        owed_materials=["结婚证"],
        due_date=date(2026, 3, 19),
        promise_end_date="2026-03-19",
    )
    assert status == "ACCEPTED_DEFICIENT"


@pytest.mark.parametrize("reason", SUSPEND_REASONS)
def test_each_statutory_suspension_reason_is_accepted(reason):
    assert apply_action("IN_REVIEW", "suspend", reason=reason) == "SUSPENDED"
    assert apply_action("IN_REVIEW", "suspend", reason) == "SUSPENDED"


@pytest.mark.parametrize("reason", ["", "领导出差", "等待材料", None])
def test_other_suspension_reasons_are_refused(reason):
    with pytest.raises(RuleError) as exc:
        apply_action("IN_REVIEW", "suspend", reason=reason)
    assert exc.value.code == "invalid_suspend_reason"


def test_extension_needs_reason_head_approval_and_happens_once():
    with pytest.raises(RuleError) as exc:
        apply_action("IN_REVIEW", "extend", "", approved_by="张局长", already_extended=False)
    assert exc.value.code == "reason_required"
    with pytest.raises(RuleError) as exc:
        apply_action("IN_REVIEW", "extend", "情况复杂", approved_by=" ", already_extended=False)
    assert exc.value.code == "approval_required"
    with pytest.raises(RuleError) as exc:
        apply_action("IN_REVIEW", "extend", "情况复杂", approved_by="张局长", already_extended=True)
    assert exc.value.code == "already_extended"
    assert exc.value.message == "办理期限只能延长一次"
    with pytest.raises(TypeError):
        apply_action("IN_REVIEW", "extend", "情况复杂", approved_by="张局长")


def test_withdraw_from_every_open_state_only():
    for status in STATUS_LABELS:
        if status in OPEN_STATES:
            assert apply_action(status, "withdraw") == "WITHDRAWN"
        else:
            with pytest.raises(RuleError):
                apply_action(status, "withdraw")


def test_unknown_status_and_action():
    with pytest.raises(RuleError) as exc:
        apply_action("LOST", "accept")
    assert exc.value.code == "unknown_status"
    with pytest.raises(RuleError) as exc:
        apply_action("RECEIVED", "fast_track")
    assert exc.value.code == "unknown_action"


@pytest.mark.parametrize(
    "details, code",
    [
        ({"inspectors": ["王林"], "result": "符合"}, "inspectors_required"),
        ({"inspectors": ["王林", " 王林 "], "result": "符合"}, "inspectors_required"),
        ({"inspectors": "王林、李森", "result": "符合"}, "inspectors_required"),
        ({"inspectors": ["王林", "李森"], "result": "合格"}, "invalid_site_visit_result"),
    ],
)
def test_site_visit_needs_two_inspectors_and_a_result(details, code):
    with pytest.raises(RuleError) as exc:
        apply_action("IN_REVIEW", "site_visit", "现场查看", **details)
    assert exc.value.code == code


def test_site_visit_keeps_the_status():
    for status in ("RECEIVED", "ACCEPTED", "IN_REVIEW", "SUSPENDED"):
        assert apply_action(status, "site_visit", "", inspectors=["王林", "李森"], result="需整改") == status
    with pytest.raises(RuleError) as exc:
        apply_action("APPROVED", "site_visit", "", inspectors=["王林", "李森"], result="符合")
    assert exc.value.code == "invalid_transition"
