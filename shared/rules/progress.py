"""Where a case is, in the plain words of 我的办件 and the case page (one set for both).

未发送 (queued on this PC) → 已到乡镇 → 已到市中心 → 已受理 → 已办结 for a case the hub decides;
a case the township decides never goes further than the township, so it stops at 已到乡镇
(and at the township's own window it is 待受理 until the township acts).
"""

from __future__ import annotations

from shared.rules import states

ACCEPTED_STATES = frozenset({"ACCEPTED", "ACCEPTED_DEFICIENT", "IN_REVIEW", "SUSPENDED"})
#: Decided cases whose result the agent hands to the applicant (送达).
RESULT_STATES = ("APPROVED", "DENIED", "NOT_ACCEPTED")
#: The word -> the CSS class of its tag.
WORD_CLASSES = {"未发送": "pending", "已到乡镇": "custody", "已到市中心": "acked", "待受理": "custody",
                "已受理": "accepted", "已办结": "done"}
_CITY_WORDS = {"pending": "未发送", "custody": "已到乡镇", "acked": "已到市中心", "hub": "已到市中心"}


def word(status: str, sync_state: str | None, route_level: str | None, filed_at_township: bool = False) -> str:
    """The case's progress word.

    ``filed_at_township``: taken at the township's own window (nothing to send for a case it
    decides itself).
    """
    if status in ("CONCLUDED", *RESULT_STATES):
        return "已办结"
    if status in ACCEPTED_STATES:
        return "已受理"
    if status not in ("SUBMITTED", "RECEIVED"):
        return states.status_label(status)
    if route_level == "township":
        if filed_at_township:
            return "待受理"
        return "未发送" if sync_state == "pending" else "已到乡镇"
    return _CITY_WORDS.get(sync_state or "", "已提交")


def legend(decided_by_township: bool) -> str:
    """The progress line shown above a list or on a case page."""
    if decided_by_township:
        return "未发送（在本机排队）→ 已到乡镇 → 已受理 → 已办结"
    return "未发送（在本机排队）→ 已到乡镇 → 已到市中心 → 已受理 → 已办结"
