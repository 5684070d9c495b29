"""The 办件 (case) state machine, enforced in one place.

Every change of a case's status goes through :func:`apply_action`, which
knows which actions each state allows and which details each action needs
(a reason for refusals, the owed materials for 容缺受理, one of the statutory
grounds for suspending the clock, …). Callers persist the returned status
and record the event; this module holds no state.

Legal anchors (行政许可法): Art. 32 (受理 / 不予受理 / 一次性告知补正),
Art. 38 (不予许可 must give reasons), Art. 42 (20 working days, one extension
of 10 with the head's approval, reasons told to the applicant), Art. 45
(听证、招标、拍卖、检验、检测、检疫、鉴定和专家评审 are not counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from shared.core.errors import RuleError

STATUS_LABELS: dict[str, str] = {
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

#: Cases still being handled: they can be withdrawn or terminated.
OPEN_STATES: frozenset[str] = frozenset(
    {
        "DRAFT",
        "SUBMITTED",
        "RECEIVED",
        "PRECHECK_RETURNED",
        "SUPPLEMENT",
        "ACCEPTED",
        "ACCEPTED_DEFICIENT",
        "IN_REVIEW",
        "SUSPENDED",
    }
)
#: Decided but not yet served on the applicant (送达 pending).
DECIDED_STATES: frozenset[str] = frozenset({"APPROVED", "DENIED", "NOT_ACCEPTED"})
#: Nothing can happen to these cases any more.
FINAL_STATES: frozenset[str] = frozenset({"CONCLUDED", "WITHDRAWN", "TERMINATED"})
#: States in which the statutory clock runs (from 受理; paused while SUSPENDED).
CLOCK_RUNNING_STATES: frozenset[str] = frozenset({"ACCEPTED", "ACCEPTED_DEFICIENT", "IN_REVIEW"})

#: Statutory grounds for stopping the clock (Art. 45) that a county case meets.
SUSPEND_REASONS: tuple[str, ...] = ("听证", "检验", "检测", "鉴定", "专家评审")

ACTION_LABELS: dict[str, str] = {
    "submit": "提交",
    "receive": "接件",
    "precheck_return": "预审退回",
    "accept": "受理",
    "accept_deficient": "容缺受理",
    "supplement_received": "容缺材料已补齐",
    "request_correction": "一次性告知补齐补正",
    "resubmit": "补正后重新提交",
    "reject": "不予受理",
    "start_review": "开始审查",
    "suspend": "进入特别程序(暂停计时)",
    "resume": "恢复计时",
    "approve": "准予",
    "deny": "不予许可",
    "deliver": "送达",
    "withdraw": "撤回",
    "terminate": "终止",
    "extend_request": "申请延期",
    "extend": "延长办理期限",
    "pre_review": "首席审批员初审",
    "site_visit": "现场核查",
    "deemed_done": "超时默认办结",
    "supplement": "补齐补正材料",
}

_DECIDABLE = frozenset({"ACCEPTED", "ACCEPTED_DEFICIENT", "IN_REVIEW"})

#: action -> (states it may be applied in, resulting state or None for no change)
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    "submit": (frozenset({"DRAFT"}), "SUBMITTED"),
    "receive": (frozenset({"SUBMITTED"}), "RECEIVED"),
    "precheck_return": (frozenset({"SUBMITTED", "RECEIVED"}), "PRECHECK_RETURNED"),
    "accept": (frozenset({"RECEIVED", "SUPPLEMENT"}), "ACCEPTED"),
    "accept_deficient": (frozenset({"RECEIVED"}), "ACCEPTED_DEFICIENT"),
    "supplement_received": (frozenset({"ACCEPTED_DEFICIENT"}), "ACCEPTED"),
    "request_correction": (frozenset({"RECEIVED"}), "SUPPLEMENT"),
    "resubmit": (frozenset({"SUPPLEMENT", "PRECHECK_RETURNED"}), "RECEIVED"),
    "reject": (frozenset({"RECEIVED", "SUPPLEMENT"}), "NOT_ACCEPTED"),
    "start_review": (frozenset({"ACCEPTED"}), "IN_REVIEW"),
    "suspend": (frozenset({"IN_REVIEW"}), "SUSPENDED"),
    "resume": (frozenset({"SUSPENDED"}), "IN_REVIEW"),
    "approve": (_DECIDABLE, "APPROVED"),
    "deny": (_DECIDABLE, "DENIED"),
    "deliver": (DECIDED_STATES, "CONCLUDED"),
    "withdraw": (OPEN_STATES, "WITHDRAWN"),
    "terminate": (OPEN_STATES, "TERMINATED"),
    "extend_request": (frozenset({"ACCEPTED", "IN_REVIEW"}), None),
    "extend": (frozenset({"ACCEPTED", "IN_REVIEW"}), None),
    # 初审 (seed 000 §(四)): the 首席审批员's opinion to the 部门负责人, who then decides.
    "pre_review": (_DECIDABLE, None),
    # 现场核查 (Art. 34): a record in the history, no change of status.
    "site_visit": (frozenset({"RECEIVED", "ACCEPTED", "IN_REVIEW", "SUSPENDED"}), None),
    # 超时默认 (seed 004 §8): a 亿元以上 project's item past its committed limit is deemed done
    # for the project's next steps; the case itself stays open with its office, now late.
    "deemed_done": (CLOCK_RUNNING_STATES, None),
    # 补齐补正 / 容缺材料 sent by the origin (case.supplement): a record in the history; the deciding
    # node's rule then moves the case (resubmit, supplement_received or terminate).
    "supplement": (frozenset({"SUPPLEMENT", "PRECHECK_RETURNED", "ACCEPTED_DEFICIENT"}), None),
}

#: What a 首席审批员 with 初审权 may propose to the 部门负责人.
PRE_REVIEW_OPINIONS: tuple[str, ...] = ("同意", "不同意")

#: Results a 现场核查 may record.
SITE_VISIT_RESULTS: tuple[str, ...] = ("符合", "不符合", "需整改")

# Actions that refuse or end a case must say why (Art. 38; 电子监察 flags
# refusals without reasons). The message names the action.
_REASON_REQUIRED = {
    "reject": "不予受理必须说明理由",
    "deny": "不予许可必须说明理由",
    "terminate": "终止办件必须说明理由",
    "extend": "延长办理期限必须说明理由",
    "extend_request": "申请延期必须说明理由",
    "pre_review": "初审必须写明初审意见的理由",
}


def status_label(status: str) -> str:
    """Chinese label of a status code (the code itself if unknown)."""
    return STATUS_LABELS.get(status, status)


def history_only(action: str) -> bool:
    """Whether ``action`` leaves the case's status as it is (e.g. 现场核查, 延长办理期限)."""
    return action in TRANSITIONS and TRANSITIONS[action][1] is None


def allowed_actions(status: str) -> list[str]:
    """Actions that may be applied in ``status``, in :data:`ACTION_LABELS` order."""
    return [a for a in ACTION_LABELS if status in TRANSITIONS[a][0]]


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _non_empty_items(value: object) -> list:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return []
    return [v for v in value if not _blank(v)]


def _as_date(value: object) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def apply_action(status: str, action: str, comment: str = "", **details: object) -> str:
    """Check that ``action`` may be applied to a case in ``status``; return the new status.

    Details each action needs (passed as keyword arguments):

    - ``precheck_return`` / ``request_correction``: ``missing_items`` (a
      non-empty list) or a non-empty ``comment`` — the 一次性告知 must say
      what is missing.
    - ``accept_deficient``: ``due_date`` (date or ISO string) and
      ``owed_materials`` (non-empty list); optional ``promise_end_date``, which
      ``due_date`` may not exceed (owed materials are due within the
      committed limit).
    - ``reject`` / ``deny`` / ``terminate``: a non-empty ``comment`` (the reason).
    - ``suspend``: ``reason`` (or ``comment``) equal to one of
      :data:`SUSPEND_REASONS`.
    - ``extend_request`` / ``pre_review``: a non-empty ``comment``; ``pre_review`` also
      ``opinion``, one of :data:`PRE_REVIEW_OPINIONS`.
    - ``site_visit``: ``inspectors`` (at least two names: Art. 34 has the
      agency send two or more staff to verify on site) and ``result`` (one of
      :data:`SITE_VISIT_RESULTS`).
    - ``extend``: a non-empty ``comment`` (reason told to the applicant),
      ``approved_by`` (the head who approved) and ``already_extended`` (bool):
      the limit may be extended only once.

    :returns: the new status (unchanged for ``extend``).
    :raises RuleError: ``unknown_status``, ``unknown_action``,
        ``invalid_transition``, ``reason_required``, ``missing_items_required``,
        ``owed_materials_required``, ``due_date_required``, ``due_date_too_late``,
        ``invalid_suspend_reason``, ``approval_required``, ``already_extended``,
        ``inspectors_required``, ``invalid_site_visit_result`` or ``opinion_required``.
    """
    if status not in STATUS_LABELS:
        raise RuleError("unknown_status", f"未知的办件状态「{status}」")
    if action not in TRANSITIONS:
        raise RuleError("unknown_action", f"未知的操作「{action}」")
    sources, target = TRANSITIONS[action]
    if status not in sources:
        raise RuleError(
            "invalid_transition",
            f"当前状态「{STATUS_LABELS[status]}」不能执行「{ACTION_LABELS[action]}」",
        )

    if action in _REASON_REQUIRED and _blank(comment):
        raise RuleError("reason_required", _REASON_REQUIRED[action])

    if action in ("precheck_return", "request_correction"):
        if not _non_empty_items(details.get("missing_items")) and _blank(comment):
            raise RuleError("missing_items_required", "一次性告知必须列明需要补齐补正的全部内容")

    elif action == "accept_deficient":
        if not _non_empty_items(details.get("owed_materials")):
            raise RuleError("owed_materials_required", "容缺受理必须列明容缺的材料")
        due = _as_date(details.get("due_date"))
        if due is None:
            raise RuleError("due_date_required", "容缺受理必须写明补齐材料的期限")
        limit = _as_date(details.get("promise_end_date"))
        if limit is not None and due > limit:
            raise RuleError("due_date_too_late", "容缺材料补齐期限不得晚于承诺办结期限")

    elif action == "suspend":
        reason = details.get("reason", comment)
        reason = reason.strip() if isinstance(reason, str) else reason
        if reason not in SUSPEND_REASONS:
            raise RuleError(
                "invalid_suspend_reason",
                "暂停计时的理由必须是" + "、".join(SUSPEND_REASONS) + "之一",
            )

    elif action == "extend":
        if "already_extended" not in details:
            # A silent default would let a caller extend twice by forgetting it.
            raise TypeError("extend requires already_extended=<bool>")
        if details["already_extended"]:
            raise RuleError("already_extended", "办理期限只能延长一次")
        if _blank(details.get("approved_by")):
            raise RuleError("approval_required", "延长办理期限须经本机关负责人批准")

    elif action == "pre_review":
        if details.get("opinion") not in PRE_REVIEW_OPINIONS:
            raise RuleError("opinion_required", "初审意见须为" + "或".join(f"「{o}」" for o in PRE_REVIEW_OPINIONS))

    elif action == "site_visit":
        names = {v.strip() for v in _non_empty_items(details.get("inspectors")) if isinstance(v, str)}
        if len(names) < 2:
            raise RuleError("inspectors_required", "现场核查须由两名以上工作人员进行（行政许可法第三十四条）")
        if details.get("result") not in SITE_VISIT_RESULTS:
            raise RuleError("invalid_site_visit_result", "核查结果须为" + "、".join(SITE_VISIT_RESULTS) + "之一")

    return status if target is None else target
