"""What keeps the pages fast with a realistic database (10,000+ cases): indexes and a calendar memo.

``SCHEMA`` is one migration (appended to every node's ``MIGRATIONS``): the lists page by
``submitted_at`` within an origin or an office, so those orderings have indexes and a page of
100 rows is read without sorting the whole table.

:func:`memo_calendar` wraps a :class:`shared.workdays.WorkCalendar` with a per-date memo.
Deadline arithmetic walks day by day, and each ``chinese_calendar`` lookup costs ~40 µs (it
validates the date against its whole table every time), so a queue of 500 open cases spent
most of its time there. The wrapper gives the same answers (same algorithm, same
``used_fallback`` bookkeeping on the wrapped calendar); the memo is shared across requests
and dropped whenever the calendar's loaded schedules change.
"""

from __future__ import annotations

import json
import threading
import weakref
from datetime import date, timedelta

SCHEMA = """
CREATE INDEX IF NOT EXISTS cases_origin_submitted ON cases(origin, submitted_at);
CREATE INDEX IF NOT EXISTS cases_office_status_submitted ON cases(route_office, status, submitted_at);
CREATE INDEX IF NOT EXISTS cases_status_submitted ON cases(status, submitted_at);
CREATE INDEX IF NOT EXISTS cases_submitted ON cases(submitted_at);
"""

_ONE = timedelta(days=1)
_memos: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class MemoCalendar:
    """A calendar whose working-day lookups are memoised; everything else is the wrapped one's."""

    def __init__(self, calendar, memo: dict[date, tuple[bool, bool]]):
        self._calendar = calendar
        self._memo = memo

    def __getattr__(self, name):
        return getattr(self._calendar, name)

    def is_working_day(self, d: date) -> bool:
        hit = self._memo.get(d)
        if hit is None:
            hit = (self._calendar.is_working_day(d), not self._calendar.covers(d.year))
            self._memo[d] = hit
        elif hit[1]:
            self._calendar.used_fallback.add(d.year)  # as the plain calendar would record it
        return hit[0]

    def add_working_days(self, start: date, n: int) -> date:
        step = _ONE if n > 0 else -_ONE
        d, remaining = start, abs(n)
        while remaining:
            d += step
            if self.is_working_day(d):
                remaining -= 1
        return d

    def working_days_between(self, start: date, end: date) -> int:
        if end < start:
            return -self.working_days_between(end, start)
        count, d = 0, start
        while d < end:
            d += _ONE
            if self.is_working_day(d):
                count += 1
        return count


def _fingerprint(calendar) -> str:
    return json.dumps(getattr(calendar, "schedules", {}), sort_keys=True, default=str)


def memo_calendar(calendar) -> MemoCalendar:
    """``calendar`` with memoised working-day lookups (memo kept while its schedules are unchanged)."""
    if isinstance(calendar, MemoCalendar):
        return calendar
    fingerprint = _fingerprint(calendar)
    with _lock:
        held = _memos.get(calendar)
        if held is None or held[0] != fingerprint:
            held = (fingerprint, {})
            _memos[calendar] = held
    return MemoCalendar(calendar, held[1])
