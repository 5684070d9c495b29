"""绿色通道 for key projects and 超时默认 for 亿元以上 projects.

Sources (see docs/domain-rules.md):

- seed 002 (荔湾 政务服务中心) §6 重点项目绿色通道制: key projects get a VIP service —
  coordination, supervision, faster handling. Here: an admin marks a project 重点项目 with a
  named 项目代办员; its cases sort first in every queue, carry a 绿色通道 mark and use the
  item's shorter committed limit (``green_channel_limit_wd``) where the catalog gives one.
- seed 004 (泰州 流程优化再造) §8 项目审批超时默认: for 亿元以上 projects, an item not finished
  within the committed limit is deemed done and the project goes on to the next step; the
  receiving office may not refuse for lack of that prerequisite; the late office bears the
  consequences.

Pure functions: no Flask, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.core.errors import RuleError, ValidationError
from shared.rules import states

#: 1 亿元 in 万元, the unit investment is kept in.
HUNDRED_MILLION_WAN = 10_000
#: Steps by which an office refuses or returns an application for something missing.
REFUSING_ACTIONS = frozenset({"reject", "precheck_return", "request_correction", "deny"})
#: States in which a case may be deemed done: its clock runs and the limit has passed.
DEEMABLE_STATES = states.CLOCK_RUNNING_STATES


def check_investment(value: object) -> int | None:
    """The project's investment in 万元 (a whole number ≥ 0), None when not given.

    :raises ValidationError: on ``investment_wan`` for anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 100_000_000:
        raise ValidationError("investment_wan", "总投资须为不小于0的整数（单位：万元）")
    return value


def deemed_done_applies(investment_wan: int | None) -> bool:
    """Whether 超时默认 applies to a project's items: 亿元以上 investment (seed 004 §8)."""
    return investment_wan is not None and investment_wan >= HUNDRED_MILLION_WAN


def green_limit(item: Mapping | None, limit_wd: int) -> int:
    """The committed limit of a key project's case: the item's 绿色通道 limit when shorter."""
    green = (item or {}).get("green_channel_limit_wd")
    return min(limit_wd, green) if isinstance(green, int) and not isinstance(green, bool) else limit_wd


def due_for_deemed_done(status: str, remaining_working_days: int | None, actions: Iterable[str]) -> bool:
    """Whether a case of a 亿元以上 project is now deemed done: its clock runs, the committed
    limit has passed, and it was not deemed done before."""
    return (status in DEEMABLE_STATES and remaining_working_days is not None and remaining_working_days < 0
            and "deemed_done" not in set(actions))


def check_not_refused_for_deemed(action: str, comment: str, missing_items: Iterable[str] | None,
                                 deemed: Iterable[Mapping]) -> None:
    """The office taking the next step may not refuse for lack of a deemed-done prerequisite.

    ``deemed`` are the project's deemed-done cases, each ``{"item_name", "result_name",
    "office"}``; a refusal whose reason or 一次性告知 names one of them is refused.

    :raises RuleError: ``deemed_done_prerequisite``.
    """
    if action not in REFUSING_ACTIONS:
        return
    text = " ".join([comment or "", *[m for m in (missing_items or []) if isinstance(m, str)]])
    for d in deemed:
        names = [n for n in (d.get("item_name"), d.get("result_name")) if n]
        if any(n in text for n in names):
            raise RuleError("deemed_done_prerequisite",
                            f"「{d.get('item_name')}」已超时默认办结（责任单位：{d.get('office')}），"
                            "不得以缺少该前置条件为由拒收或退回")


def queue_order(case: Mapping) -> tuple:
    """Sort key of an office's queue: 绿色通道 cases first, then the nearest deadline, then oldest."""
    remaining = case.get("remaining_working_days")
    return (not case.get("green_channel"), remaining is None, remaining or 0, case.get("submitted_at") or "")
