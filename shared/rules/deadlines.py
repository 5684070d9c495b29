"""限时办结 and 电子监察: a case's statutory clock in working days, and its supervision level.

行政许可法 Art. 42: the limit runs from 受理 in 工作日 (Art. 82); +10 working days once, with the
head's approval (``extend``); Art. 45: 听证/检验/检测/鉴定/专家评审 do not count (SUSPENDED, from
``suspend`` to ``resume``). Supervision (电子监察): a warning ``WARN_WD`` working days before the
deadline, 黄牌 once overdue, 红牌 when still overdue ``RED_AFTER_WD`` working days later (the 督办
deadline). Everything is computed from the case's events and one calendar, so every node and
every test gets the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date

from shared.core.clock import CN_TZ, parse_iso
from shared.rules import states

EXTENSION_WD = 10
WARN_WD = 2
RED_AFTER_WD = 5
NOTICE_WD = 5  # Art. 32: no 补正 notice within 5 days → accepted on receipt

LEVEL_LABELS = {"none": "正常", "warning": "预警", "yellow": "黄牌", "red": "红牌"}


def cn_day(iso_time: str) -> date:
    """The date in China of an ISO timestamp."""
    return parse_iso(iso_time).astimezone(CN_TZ).date()


def case_clock(events: Iterable[Mapping], limit_wd: int, status: str, calendar, today: date) -> dict:
    """The clock of one case from its events (``action``, ``at``), in order.

    :returns: ``accepted_at``, ``deadline`` (ISO date or None), ``remaining_working_days``,
        ``suspended_working_days``, ``extended``, ``supervision`` (none/warning/yellow/red).
    """
    accepted_at = None
    suspended_wd = 0
    suspended_since: date | None = None
    extended = False
    for event in events:
        action = event["action"]
        if action in ("accept", "accept_deficient") and accepted_at is None:
            # Deemed acceptance (Art. 32) counts from receipt, recorded as effective_at.
            accepted_at = _detail(event).get("effective_at") or event["at"]
        elif action == "suspend" and suspended_since is None:
            suspended_since = cn_day(event["at"])
        elif action == "resume" and suspended_since is not None:
            suspended_wd += max(0, calendar.working_days_between(suspended_since, cn_day(event["at"])))
            suspended_since = None
        elif action == "extend":
            extended = True
    result = {"accepted_at": accepted_at, "deadline": None, "remaining_working_days": None,
              "suspended_working_days": suspended_wd, "extended": extended, "supervision": "none"}
    if accepted_at is None:
        return result
    if suspended_since is not None:  # still suspended: the clock stands still up to today
        suspended_wd += max(0, calendar.working_days_between(suspended_since, today))
        result["suspended_working_days"] = suspended_wd
    limit = limit_wd + (EXTENSION_WD if extended else 0) + suspended_wd
    deadline = committed_deadline(calendar, cn_day(accepted_at), limit)
    result["deadline"] = deadline.isoformat()
    if status in states.OPEN_STATES:
        remaining = calendar.working_days_between(today, deadline)
        result["remaining_working_days"] = remaining
        result["supervision"] = supervision_level(remaining)
    return result


def committed_deadline(calendar, accepted_on: date, limit_wd: int) -> date:
    """The committed deadline of a case accepted on ``accepted_on``: ``limit_wd`` working days on
    (Art. 42). The 容缺 due date may not fall after it (the server computes it, never the client)."""
    return calendar.add_working_days(accepted_on, limit_wd)


def _detail(event: Mapping) -> dict:
    detail = event["detail"] if "detail" in event.keys() else None
    if isinstance(detail, str):
        return json.loads(detail or "{}")
    return detail or {}


def supervision_level(remaining_wd: int) -> str:
    """电子监察 level for an open case with ``remaining_wd`` working days left (negative: overdue)."""
    if remaining_wd < -RED_AFTER_WD:
        return "red"
    if remaining_wd < 0:
        return "yellow"
    if remaining_wd <= WARN_WD:
        return "warning"
    return "none"


def notice_overdue(received_at: str, calendar, today: date) -> bool:
    """Art. 32: more than 5 working days since receipt without a 补正 notice."""
    return calendar.working_days_between(cn_day(received_at), today) > NOTICE_WD
