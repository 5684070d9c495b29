"""Working-day calendar for statutory deadlines (行政许可法 Arts. 42–45 count 工作日).

Working days follow the State Council's yearly holiday notice (国务院办公厅关于
某年部分节假日安排的通知): public holidays are off even on weekdays, and 调休
weekend days are worked. Three sources are consulted, in this order:

1. a schedule loaded by the administrator for that year (overrides everything);
2. the ``chinese_calendar`` package (PyPI ``chinesecalendar``), which ships
   the notices for the years it knows;
3. otherwise Monday–Friday. This fallback is recorded in
   :attr:`WorkCalendar.used_fallback` so pages can warn that the deadline is
   only an estimate (:func:`fallback_warning`).

The notice for year N is published around November of N-1, before any
package release, so administrators import it as a schedule file, which the
hub signs and distributes to every node.

Schedule file format (UTF-8 JSON)::

    {
      "year": 2027,
      "source": "国办发明电〔2026〕N号",
      "holidays": [
        {"name": "元旦", "start": "2027-01-01", "end": "2027-01-01"},
        {"name": "春节", "start": "2027-02-05", "end": "2027-02-12"}
      ],
      "workdays": ["2027-02-07"]
    }

- ``year``: the year the schedule governs; every date must fall in it.
- ``source``: the notice it transcribes (non-empty, for the audit trail).
- ``holidays``: named inclusive date ranges that are off, weekends included.
- ``workdays``: Saturdays/Sundays that are worked (调休); weekdays are
  rejected because listing one changes nothing and is almost always a typo.
- Dates are ``YYYY-MM-DD``; holiday ranges may not overlap and no date may be
  both a holiday and a workday.

A 调休 day that falls in the previous December (it has happened for 元旦) is
entered by re-issuing that previous year's schedule with the extra workday.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path

import chinese_calendar

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_day(value: object, where: str, year: int) -> date:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"{where}：日期应写成 YYYY-MM-DD（如 2027-01-01），现为「{value}」")
    try:
        d = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}：「{value}」不是有效的日期") from None
    if d.year != year:
        raise ValueError(f"{where}：{value} 不在本安排的年份 {year} 年内")
    return d


def parse_schedule(obj: object) -> dict:
    """Validate an already-parsed schedule and return it normalised.

    The result has exactly the keys ``year``, ``source``, ``holidays`` (sorted
    by start) and ``workdays`` (sorted), with dates as ISO strings, so it can
    be re-serialised, signed and distributed unchanged.

    :raises ValueError: with a Chinese message naming the defect (shown on the admin page and by the CLI).
    """
    if not isinstance(obj, Mapping):
        raise ValueError("节假日安排应为一个 JSON 对象")
    year = obj.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1900 <= year <= 2200:
        raise ValueError(f"年份（year）应为整数年份，现为「{year}」")
    source = obj.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("来源（source）应写明所依据的国务院办公厅放假通知")
    holidays = obj.get("holidays")
    workdays = obj.get("workdays", [])
    if not isinstance(holidays, list):
        raise ValueError("放假安排（holidays）应为列表")
    if not isinstance(workdays, list):
        raise ValueError("调休上班日（workdays）应为列表")

    off: dict[date, str] = {}
    ranges = []
    for i, h in enumerate(holidays):
        where = f"第{i + 1}个放假安排"
        if not isinstance(h, Mapping):
            raise ValueError(f"{where}：应包含名称（name）、开始（start）和结束（end）日期")
        name = h.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}：节日名称（name）不能为空")
        start = _parse_day(h.get("start"), f"{where}的开始日期", year)
        end = _parse_day(h.get("end"), f"{where}的结束日期", year)
        if start > end:
            raise ValueError(f"{where}：开始日期 {start} 晚于结束日期 {end}")
        d = start
        while d <= end:
            if d in off:
                raise ValueError(f"{where}：{d} 已在「{off[d]}」假期内（放假日期重叠）")
            off[d] = name
            d += timedelta(days=1)
        ranges.append({"name": name.strip(), "start": start.isoformat(), "end": end.isoformat()})

    worked: set[date] = set()
    for i, w in enumerate(workdays):
        where = f"第{i + 1}个调休上班日"
        d = _parse_day(w, where, year)
        if d in off:
            raise ValueError(f"{where}：{d} 既是放假日（{off[d]}）又是调休上班日")
        if d.weekday() < 5:
            raise ValueError(f"{where}：{d} 是星期{'一二三四五六日'[d.weekday()]}，调休上班日只列需要上班的周六、周日")
        if d in worked:
            raise ValueError(f"{where}：{d} 重复列出")
        worked.add(d)

    return {
        "year": year,
        "source": source.strip(),
        "holidays": sorted(ranges, key=lambda r: r["start"]),
        "workdays": sorted(d.isoformat() for d in worked),
    }


def load_schedule(path: str | Path) -> dict:
    """Read, validate and normalise a schedule file (see the module docstring).

    :raises ValueError: if the file is not valid JSON or not a valid schedule.
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p.name}: not valid JSON ({exc})") from None
    try:
        return parse_schedule(obj)
    except ValueError as exc:
        raise ValueError(f"{p.name}: {exc}") from None


def fallback_warning(years: Iterable[int]) -> str:
    """Chinese warning for pages whose deadlines used the Monday–Friday fallback.

    Returns an empty string when ``years`` is empty.
    """
    ys = sorted(set(years))
    if not ys:
        return ""
    listed = "、".join(f"{y}年" for y in ys)
    return f"警告：{listed}节假日安排未加载，期限按周一至周五推算，请管理员导入国务院办公厅放假通知。"


class WorkCalendar:
    """Decides which dates are working days and does deadline arithmetic.

    :param schedules: ``{year: schedule}`` where each schedule is the parsed
        JSON of a schedule file; it is validated with :func:`parse_schedule`
        and overrides ``chinese_calendar`` for that year.
    :raises ValueError: if a schedule is invalid or filed under the wrong year.
    """

    def __init__(self, schedules: Mapping[int, Mapping] | None = None) -> None:
        self._off: dict[int, frozenset[date]] = {}
        self._worked: dict[int, frozenset[date]] = {}
        self.schedules: dict[int, dict] = {}
        #: Years for which a lookup fell back to Monday–Friday.
        self.used_fallback: set[int] = set()
        self._library_years: dict[int, bool] = {}
        self._library_days: dict[date, bool] = {}
        for key, schedule in (schedules or {}).items():
            added = self.add_schedule(schedule)
            if int(key) != added["year"]:
                raise ValueError(f"schedule filed under {key} is for year {added['year']}")

    def add_schedule(self, schedule: Mapping) -> dict:
        """Validate and install a schedule (replacing any for its year); return it."""
        parsed = parse_schedule(schedule)
        year = parsed["year"]
        off = set()
        for h in parsed["holidays"]:
            d, end = date.fromisoformat(h["start"]), date.fromisoformat(h["end"])
            while d <= end:
                off.add(d)
                d += timedelta(days=1)
        self._off[year] = frozenset(off)
        self._worked[year] = frozenset(date.fromisoformat(w) for w in parsed["workdays"])
        self.schedules[year] = parsed
        self.used_fallback.discard(year)
        return parsed

    def _library_covers(self, year: int) -> bool:
        known = self._library_years.get(year)
        if known is None:
            try:
                chinese_calendar.is_workday(date(year, 6, 1))
                known = True
            except NotImplementedError:
                known = False
            self._library_years[year] = known
        return known

    def covers(self, year: int) -> bool:
        """True if real holiday data (a loaded schedule or the package) exists for ``year``."""
        return year in self._off or self._library_covers(year)

    def fallback_years(self, dates: Iterable[date]) -> list[int]:
        """Sorted years among ``dates`` that are not covered (would use Monday–Friday)."""
        return sorted({d.year for d in dates if not self.covers(d.year)})

    def is_working_day(self, d: date) -> bool:
        """True if ``d`` is a working day.

        :param d: a calendar date in China; datetimes are refused because
            their date depends on the timezone (use ``Clock.today_cn()``).
        """
        if isinstance(d, datetime) or not isinstance(d, date):
            raise TypeError(f"is_working_day needs a date, got {type(d).__name__}")
        year = d.year
        if year in self._off:
            if d in self._worked[year]:
                return True
            return d.weekday() < 5 and d not in self._off[year]
        if self._library_covers(year):
            # The library scans its whole table per call (~18 µs); a queue page asks thousands.
            answer = self._library_days.get(d)
            if answer is None:
                answer = self._library_days[d] = chinese_calendar.is_workday(d)
            return answer
        self.used_fallback.add(year)
        return d.weekday() < 5

    def add_working_days(self, start: date, n: int) -> date:
        """Return the date ``n`` working days after ``start``.

        ``start`` itself does not count, so accepting on a Monday with a
        limit of 1 gives Tuesday; ``n == 0`` returns ``start``; a negative
        ``n`` counts backwards (e.g. for a warning some days before a deadline).
        """
        step = timedelta(days=1 if n > 0 else -1)
        d = start
        remaining = abs(n)
        while remaining:
            d += step
            if self.is_working_day(d):
                remaining -= 1
        return d

    def working_days_between(self, start: date, end: date) -> int:
        """Number of working days in ``(start, end]``; negative if ``end < start``.

        This is the inverse of :meth:`add_working_days` for working-day ends:
        ``working_days_between(s, add_working_days(s, n)) == n``.
        """
        if end < start:
            return -self.working_days_between(end, start)
        count = 0
        d = start
        one = timedelta(days=1)
        while d < end:
            d += one
            if self.is_working_day(d):
                count += 1
        return count
