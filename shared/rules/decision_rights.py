"""Who decides a case inside the deciding office: 窗口首席代表, 首席审批员 and 部门负责人.

Sources (see docs/domain-rules.md):

- seed 000 (城陵矶 三集中三到位) §(四) 完成审批授权: for each item the department grants its
  首席审批员 either 审批决定权 (items decided on the papers, the site record, test results or
  expert opinions) or 初审权 (items the 主要负责人 or a collective must decide); approval
  documents carry the 行政审批专用章, whose use is granted to the 首席审批员.
- seed 002 (荔湾 政务服务中心) §3 窗口首席代表制: the 窗口首席代表 holds 受理决定权 and the
  final say (最终许可权) on 即办件.
- 行政许可法 Art. 42: one extension of 10 working days, approved by the agency's head.

The catalog item's ``chief_authority`` (``decide`` | ``pre_review``) is the grant. Roles are
the account roles of the office (``window``, ``chief``, ``head``; ``clerk`` at a township,
which decides the items delegated to it as one office). Pure functions: no Flask, no SQL;
callers pass the actions already recorded on the case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.core.errors import Forbidden, RuleError

GRANT_LABELS = {"decide": "审批决定权", "pre_review": "初审权"}
ROLE_LABELS = {"window": "窗口首席代表", "chief": "首席审批员", "head": "部门负责人", "clerk": "乡镇便民服务站"}
#: The seal every decision document of the office carries (seed 000 §(四)).
DECISION_SEAL = "行政审批专用章"

#: Steps of 受理 (受理决定权, seed 002 §3).
ACCEPTANCE_ACTIONS = frozenset({"accept", "accept_deficient", "reject", "request_correction", "precheck_return",
                                "supplement_received"})
#: The decisions on the application itself.
DECISION_ACTIONS = frozenset({"approve", "deny"})

#: Steps only the node's own rules take (never a person).
SYSTEM_ACTIONS = frozenset({"deemed_done"})

# Who may do what at the hub (a township's clerk holds every right of its own office).
_ACCEPTERS = frozenset({"window", "chief", "head"})
_EXTEND_REQUESTERS = frozenset({"window", "chief"})


def _refuse(message: str) -> None:
    raise Forbidden(message, code="not_entitled_role")


def grant_of(item: Mapping | None) -> str:
    """The 首席审批员's grant for ``item``: ``decide`` (审批决定权) or ``pre_review`` (初审权)."""
    return (item or {}).get("chief_authority") or "decide"


def instant(item: Mapping | None) -> bool:
    """Whether ``item`` is a 即办件 (decided on the spot at the window)."""
    return (item or {}).get("handling") == "即办件"


def holder(item: Mapping | None, status: str, actions: Iterable[str]) -> str | None:
    """The role that holds the case now (``window``, ``chief`` or ``head``), None once decided.

    ``actions`` are the case's recorded actions, oldest first: a 初审 (``pre_review``) hands a
    ``pre_review`` item from the 首席审批员 to the 部门负责人.
    """
    if status in ("SUBMITTED", "RECEIVED", "SUPPLEMENT", "PRECHECK_RETURNED"):
        return "window"
    if status not in ("ACCEPTED", "ACCEPTED_DEFICIENT", "IN_REVIEW", "SUSPENDED"):
        return None
    if instant(item):
        return "window"
    if grant_of(item) == "pre_review" and "pre_review" in set(actions):
        return "head"
    return "chief"


def check_right(item: Mapping | None, role: str, action: str, actions: Iterable[str]) -> dict | None:
    """Whether an account of the deciding office with ``role`` may take ``action``.

    ``actions`` are the case's recorded actions. Returns, for a decision (准予 / 不予许可), a 初审
    or a 延期批准, the basis recorded with the event: ``{"role", "role_label", "grant",
    "grant_label", "seal"?}``; None for other steps.

    - 受理 steps: the 窗口首席代表 (受理决定权), or the 首席审批员 / 部门负责人 above it.
    - 即办件: the 窗口首席代表 has the final say; the 首席审批员 and 部门负责人 may also decide.
    - 承诺件 with 审批决定权: the 首席审批员 (or the 部门负责人) decides; a window may not.
    - 承诺件 with 初审权: the 首席审批员 records a 初审 (``pre_review``); only then does the
      部门负责人 decide. The 首席审批员 may not decide it.
    - 延期: the window or the 首席审批员 asks (``extend_request``); the 部门负责人 approves
      (``extend``) with his own account, only after a request.

    :raises Forbidden: code ``not_entitled_role`` (403) for a role without the right.
    :raises RuleError: ``pre_review_required`` / ``extend_request_required`` for a step out of order.
    """
    done = list(actions)
    grant = grant_of(item)
    if action in SYSTEM_ACTIONS:
        _refuse("超时默认办结由系统按规则认定，不能手工办理")
    if role == "clerk":  # a township office decides its delegated items as one office
        basis = {"role": role, "role_label": ROLE_LABELS[role], "grant": "delegated", "grant_label": "乡镇承接审批权"}
        if action == "extend" and "extend_request" not in done:
            raise RuleError("extend_request_required", "延长办理期限须先提出延期申请")
        if action in DECISION_ACTIONS:
            return {**basis, "seal": DECISION_SEAL}
        return basis if action in ("pre_review", "extend") else None
    if role not in ROLE_LABELS:
        _refuse("该账号没有办理审批事项的权限")
    base = {"role": role, "role_label": ROLE_LABELS[role]}
    if action in ACCEPTANCE_ACTIONS:
        if role not in _ACCEPTERS:
            _refuse("受理决定由窗口首席代表作出")
        return None
    if action == "pre_review":
        if instant(item) or grant != "pre_review":
            raise RuleError("pre_review_not_needed", "该事项由首席审批员直接作出审批决定，无需初审")
        if role != "chief":
            _refuse("初审由本部门首席审批员进行")
        return {**base, "grant": grant, "grant_label": GRANT_LABELS[grant]}
    if action == "extend_request":
        if role not in _EXTEND_REQUESTERS:
            _refuse("延期申请由窗口首席代表或首席审批员提出，部门负责人直接批准")
        return None
    if action == "extend":
        if role != "head":
            _refuse("延长办理期限须经部门负责人本人批准")
        if "extend_request" not in done:
            raise RuleError("extend_request_required", "延长办理期限须先提出延期申请")
        return {**base, "grant": "head", "grant_label": "部门负责人批准"}
    if action in DECISION_ACTIONS:
        return {**_decision_basis(item, role, grant, done), "seal": DECISION_SEAL}
    return None


def _decision_basis(item: Mapping | None, role: str, grant: str, done: list[str]) -> dict:
    base = {"role": role, "role_label": ROLE_LABELS[role]}
    if instant(item):
        if role == "window":
            return {**base, "grant": "instant", "grant_label": "即办件最终许可权"}
        return {**base, "grant": grant, "grant_label": GRANT_LABELS[grant] if role == "chief" else "部门负责人决定"}
    if role == "window":
        _refuse("窗口首席代表只对即办件有最终许可权，承诺件由首席审批员或部门负责人决定")
    if grant == "decide":
        if role == "chief":
            return {**base, "grant": grant, "grant_label": GRANT_LABELS[grant]}
        return {**base, "grant": "head", "grant_label": "部门负责人决定"}
    if role == "chief":
        _refuse("首席审批员对该事项只有初审权，审批决定由部门负责人作出")
    if "pre_review" not in done:
        raise RuleError("pre_review_required", "该事项须先经首席审批员初审，再由部门负责人决定")
    return {**base, "grant": "head", "grant_label": "首席审批员初审、部门负责人决定"}

