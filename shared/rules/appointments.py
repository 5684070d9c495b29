"""预约: appointment slots a window publishes per working day, and how requests are decided.

Sources: seed 002 §二(一)4 ("行政许可申报事项数量少的部门，其行政许可事项可在区政务服务中心的综合受理
窗口预约受理"); seed 003 §四 五 (首问负责、一次告知 … **预约服务**、全程代办). A window (an office of
the node that owns it) publishes slots on working days only (holidays and 调休 from the calendar,
``shared/rules/workdays.py``), each with a capacity. A village agent asks for a slot for a villager,
also offline: the request travels as a signed envelope and the owning node decides requests in the
order it receives them, a seat per confirmed booking (the owner's unique constraints make a double
booking impossible, whatever the network delivered twice or out of order).
"""

from __future__ import annotations

import re
from datetime import date

from shared.core.errors import RuleError, ValidationError
from shared.rules.idcard import validate_phone
from shared.rules.text import clean_text
from shared.rules.workdays import WorkCalendar

#: The half-day times a window usually opens (the publish form's default).
DEFAULT_TIMES = ("09:00", "10:00", "11:00", "14:00", "15:00", "16:00")
MAX_CAPACITY = 200
MAX_DAYS = 31
STATUS_LABELS = {"pending": "待确认", "confirmed": "已预约", "refused": "未约上", "cancelled": "已取消",
                 "arrived": "已到场", "no_show": "未到场"}
#: Who may move a booking where: the window records arrivals and no-shows; both sides may cancel.
TRANSITIONS = {"cancel": ({"pending", "confirmed"}, "cancelled"), "arrive": ({"confirmed"}, "arrived"),
               "no_show": ({"confirmed"}, "no_show")}
ACTION_LABELS = {"cancel": "取消", "arrive": "登记到场", "no_show": "登记未到场"}
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


def parse_day(value, field: str = "day") -> date:
    """A day given as YYYY-MM-DD."""
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(field, "日期格式应为 YYYY-MM-DD")


def slot_days(first: date, last: date, calendar: WorkCalendar, today: date) -> list[date]:
    """The working days from ``first`` to ``last`` on which slots may be published (none in the past)."""
    if last < first:
        raise ValidationError("last_day", "结束日期不能早于开始日期")
    if first < today:
        raise ValidationError("first_day", "不能发布今天以前的预约时段")
    if (last - first).days >= MAX_DAYS:
        raise ValidationError("last_day", f"一次最多发布{MAX_DAYS}天")
    days = [date.fromordinal(n) for n in range(first.toordinal(), last.toordinal() + 1)]
    return [d for d in days if calendar.is_working_day(d)]


def clean_times(times) -> list[str]:
    """Slot start times ``HH:MM``, distinct, in order."""
    if not isinstance(times, list) or not times or not all(isinstance(t, str) and _TIME.fullmatch(t) for t in times):
        raise ValidationError("times", "时段应为 HH:MM 格式的列表，如 09:00")
    return sorted(set(times))


def clean_capacity(value) -> int:
    """Seats per slot: 1 … :data:`MAX_CAPACITY`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CAPACITY:
        raise ValidationError("capacity", f"每个时段可预约人数应为1到{MAX_CAPACITY}")
    return value


def clean_request(body: dict, calendar: WorkCalendar, today: date) -> dict:
    """What an agent asks for: office, a future working day, a start time, the villager, the item."""
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    day = parse_day(body.get("day"))
    if day < today:
        raise ValidationError("day", "不能预约今天以前的日期")
    if not calendar.is_working_day(day):
        raise RuleError("not_a_working_day", f"{day.isoformat()} 不是工作日（节假日或周末），请另选日期")
    start = body.get("start")
    if not isinstance(start, str) or not _TIME.fullmatch(start):
        raise ValidationError("start", "请选择预约时段，如 09:00")
    return {
        "office": clean_text(body.get("office"), "office", "预约窗口", 40),
        "day": day.isoformat(), "start": start,
        "villager_name": clean_text(body.get("villager_name"), "villager_name", "办事人姓名", 50),
        "villager_phone": validate_phone(body.get("villager_phone"), field="villager_phone"),
        "item_code": clean_text(body.get("item_code"), "item_code", "办理事项", 40, required=False),
    }


def decide(slot: dict | None, taken: set[int], already_booked: bool) -> tuple[str, int | None, str]:
    """The owner's answer to one request, given the slot (None: not published), the seats taken and
    whether this villager already holds a seat in it: (status, seat, reason)."""
    if slot is None:
        return "refused", None, "该时段未开放预约，请另选时段"
    if already_booked:
        return "refused", None, "该办事人已预约此时段"
    free = [n for n in range(1, slot["capacity"] + 1) if n not in taken]
    if not free:
        return "refused", None, "该时段已约满，请另选时段"
    return "confirmed", free[0], ""


def check_transition(status: str, action: str, day: date, today: date) -> str:
    """The status after ``action`` (cancel, arrive, no_show); arrivals and no-shows on the day or later."""
    if action not in TRANSITIONS:
        raise ValidationError("action", "action 必须是 cancel、arrive 或 no_show")
    allowed, new = TRANSITIONS[action]
    if status not in allowed:
        raise RuleError("invalid_transition", f"{STATUS_LABELS.get(status, status)}的预约不能{ACTION_LABELS[action]}")
    if action != "cancel" and day > today:
        raise RuleError("not_yet", "预约日期未到，不能登记到场或未到场")
    return new
