"""电子监察 board and statistics (统计) computed from the hub's database.

No Flask here: every figure is a plain function of the ``cases``, ``case_events`` and
``supervision_alerts`` tables, one :class:`shared.workdays.WorkCalendar` and "today", so the web
pages, the CSV export, the JSON API and the tests all get the same numbers.

Definitions (also in ``docs/domain-rules.md``):

- **period**: the China date a case was submitted (``submitted_at``), inclusive bounds;
- **level**: where the application was taken (受理层级), from the origin's 区划代码
  (12 digits village, 9 township, 6 county); **office**: the deciding office (``route_office``);
  **department**: the item's department (``<hub>-<dept>`` offices, else the catalog);
- **on-time rate** (按时办结率): among accepted cases with a decision (准予/不予许可), those
  decided on or before their deadline (``shared.deadlines.case_clock``: working days, 暂停 and
  延期 included);
- **average working days** (平均办理工作日): working days from the China date of 受理 to the date
  of the decision, over the same cases;
- **share accepted in villages** (村级受理占比): cases whose origin is a village;
- **传送率**: village cases received (接件) by their deciding node within 24 hours of submission;
- **闭合度**: decided cases (准予/不予许可/不予受理) that were served (送达) and, when they got a
  差评 (不满意/非常不满意), whose 回访 is closed (``shared.feedback``'s ``followups``);
- **ratings**: number of 好差评, 差评 (levels 1–2) and 好评率 (levels 3–5: 非常满意/满意/基本满意);
- **cards** (黄牌/红牌): cases that reached the level, recorded by the scheduled job
  (``supervision_alerts``) or reached now (an open case's live clock).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta

from shared.catalog import DEPARTMENTS, LEVEL_LABELS
from shared.clock import CN_TZ, iso, parse_iso
from shared.deadlines import LEVEL_LABELS as SUPERVISION_LABELS
from shared.deadlines import case_clock, cn_day
from shared.errors import ValidationError

SCHEMA = ""  # everything is computed from the case tables; nothing of its own to store

GROUPS = {"department": "部门", "office": "承办机构", "item": "事项", "level": "受理层级", "month": "月份"}
DECISIONS = ("approve", "deny")
REFUSALS = {"reject": "不予受理", "deny": "不予许可"}
TRANSMIT_WITHIN = timedelta(hours=24)

#: Columns of the statistics table and CSV, in order: (key, Chinese header).
COLUMNS = (
    ("cases", "办件数"),
    ("village_accepted", "村级受理数"),
    ("village_share", "村级受理占比"),
    ("decided", "已作出审批决定数"),
    ("on_time", "按时办结数"),
    ("on_time_rate", "按时办结率"),
    ("avg_working_days", "平均办理工作日"),
    ("village_cases", "村级报件数"),
    ("transmitted", "一日内传送数"),
    ("transmission_rate", "传送率"),
    ("closable", "已作出决定数"),
    ("closed", "已送达(闭合)数"),
    ("closure_rate", "闭合度"),
    ("yellow_cards", "黄牌数"),
    ("red_cards", "红牌数"),
    ("ratings", "评价数"),
    ("bad_ratings", "差评数"),
    ("satisfaction", "好评率"),
)
RATE_KEYS = frozenset({"village_share", "on_time_rate", "transmission_rate", "closure_rate", "satisfaction"})


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """What the statistics are restricted to; ``None`` means any."""

    date_from: date | None = None
    date_to: date | None = None
    level: str | None = None
    office: str | None = None
    department: str | None = None
    item: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filters as query-string parameters (for links and the CSV export)."""
        out = {}
        for key, value in asdict(self).items():
            if value:
                out[{"date_from": "from", "date_to": "to"}.get(key, key)] = str(value)
        return out


def _day(value: str, field: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"日期「{value}」格式应为 YYYY-MM-DD") from None


def parse_filters(args: Mapping[str, str]) -> Filters:
    """Filters from query parameters ``from``, ``to``, ``level``, ``office``, ``department``, ``item``.

    :raises ValidationError: with a Chinese message naming the parameter.
    """
    date_from, date_to = _day(args.get("from", ""), "from"), _day(args.get("to", ""), "to")
    if date_from and date_to and date_from > date_to:
        raise ValidationError("to", "结束日期不能早于开始日期")
    level = (args.get("level") or "").strip() or None
    if level is not None and level not in LEVEL_LABELS:
        raise ValidationError("level", f"受理层级应为 {'/'.join(LEVEL_LABELS)} 之一")
    department = (args.get("department") or "").strip() or None
    if department is not None and department not in DEPARTMENTS:
        raise ValidationError("department", f"未知的部门编码「{department}」")
    return Filters(date_from, date_to, level, (args.get("office") or "").strip() or None, department,
                   (args.get("item") or "").strip() or None)


def parse_group(value: str | None) -> str:
    """The grouping dimension (default ``department``)."""
    value = (value or "").strip() or "department"
    if value not in GROUPS:
        raise ValidationError("by", f"分组应为 {'/'.join(GROUPS)} 之一")
    return value


def _cn_midnight(d: date) -> str:
    return iso(datetime.combine(d, time(0), tzinfo=CN_TZ))


def origin_level(origin: str) -> str:
    """受理层级 of a case from its origin's 区划代码 length."""
    return {12: "village", 9: "township"}.get(len(origin), "city")


def department_of(route_level: str, route_office: str, item_code: str, item_departments: Mapping[str, str]) -> str:
    """The department code of a case: a hub office names it (``130926-rs``), else the catalog does."""
    if route_level == "city" and "-" in route_office:
        return route_office.split("-", 1)[1]
    return item_departments.get(item_code, "xz")


def item_departments(conn: sqlite3.Connection) -> dict[str, str]:
    """``{item_code: department_code}`` over every catalog version the hub published (newest wins)."""
    from sync.trust import catalog_index

    out: dict[str, str] = {}
    for row in conn.execute("SELECT document FROM metadata WHERE role = 'catalog' ORDER BY version"):
        out.update({code: item["department_code"] for code, item in catalog_index(row["document"]).items()})
    return out


class MemoCalendar:
    """A calendar that remembers its answers for one computation over many cases.

    Thousands of cases share their acceptance days, deadlines and "today"; asking the holiday
    tables one date at a time for each of them made the statistics of 10,000 cases take
    seconds. Same answers as :class:`shared.workdays.WorkCalendar` (which it asks per date).
    """

    def __init__(self, calendar) -> None:
        self.calendar = calendar
        self._day: dict[date, bool] = {}
        self._between: dict[tuple[date, date], int] = {}
        self._add: dict[tuple[date, int], date] = {}

    @property
    def used_fallback(self) -> set:
        return self.calendar.used_fallback

    def is_working_day(self, d: date) -> bool:
        known = self._day.get(d)
        if known is None:
            known = self._day[d] = self.calendar.is_working_day(d)
        return known

    def working_days_between(self, start: date, end: date) -> int:
        key = (start, end)
        if key not in self._between:
            if end < start:
                self._between[key] = -self.working_days_between(end, start)
            else:
                one, d, count = timedelta(days=1), start, 0
                while d < end:
                    d += one
                    count += self.is_working_day(d)
                self._between[key] = count
        return self._between[key]

    def add_working_days(self, start: date, n: int) -> date:
        key = (start, n)
        if key not in self._add:
            step, d, remaining = timedelta(days=1 if n > 0 else -1), start, abs(n)
            while remaining:
                d += step
                if self.is_working_day(d):
                    remaining -= 1
            self._add[key] = d
        return self._add[key]


# ----------------------------------------------------------------------------- per-case facts


@dataclass
class CaseFacts:
    """What the statistics need to know about one case."""

    case_id: str
    receipt_no: str
    item_code: str
    item_name: str
    origin: str
    level: str
    office: str
    department: str
    status: str
    submitted_at: str
    accepted_at: str | None
    deadline: str | None
    remaining_working_days: int | None
    supervision: str
    decided_at: str | None
    decision: str | None
    working_days: int | None
    received_at: str | None
    delivered: bool
    decision_any: bool
    cards: set


def _events_by_case(conn: sqlite3.Connection, where: str, params: tuple) -> dict[str, list]:
    events: dict[str, list] = {}
    for e in conn.execute(
        f"SELECT e.case_id, e.at, e.node, e.action, e.comment, e.detail FROM case_events e"
        f" JOIN cases c ON c.case_id = e.case_id WHERE {where} ORDER BY e.case_id, e.at, e.rowid", params
    ):
        events.setdefault(e["case_id"], []).append(e)
    return events


def _alerts(conn: sqlite3.Connection) -> dict[str, set]:
    out: dict[str, set] = {}
    for row in conn.execute("SELECT case_id, level FROM supervision_alerts"):
        out.setdefault(row["case_id"], set()).add(row["level"])
    return out


def _where(filters: Filters, item_depts: Mapping[str, str]) -> tuple[str, tuple]:
    clauses, params = ["1 = 1"], []
    if filters.date_from:
        clauses.append("c.submitted_at >= ?")
        params.append(_cn_midnight(filters.date_from))
    if filters.date_to:
        clauses.append("c.submitted_at < ?")
        params.append(_cn_midnight(filters.date_to + timedelta(days=1)))
    if filters.level:
        clauses.append("length(c.origin) = ?")
        params.append({"village": 12, "township": 9, "city": 6}[filters.level])
    if filters.office:
        clauses.append("c.route_office = ?")
        params.append(filters.office)
    if filters.item:
        clauses.append("c.item_code = ?")
        params.append(filters.item)
    if filters.department:
        codes = [code for code, dept in item_depts.items() if dept == filters.department]
        clauses.append(f"((c.route_level = 'city' AND c.route_office LIKE ?) OR (c.route_level != 'city'"
                       f" AND c.item_code IN ({','.join('?' * len(codes)) or 'NULL'})))")
        params.extend(["%-" + filters.department, *codes])
    return " AND ".join(clauses), tuple(params)


def case_facts(conn: sqlite3.Connection, hub_id: str, calendar, today: date, filters: Filters = Filters(),
               item_depts: Mapping[str, str] | None = None) -> list[CaseFacts]:
    """The facts of every case at the hub that matches ``filters``."""
    item_depts = item_departments(conn) if item_depts is None else item_depts
    where, params = _where(filters, item_depts)
    return case_facts_where(conn, hub_id, calendar, today, where, params, item_depts)


def case_facts_where(conn: sqlite3.Connection, hub_id: str, calendar, today: date, where: str, params: tuple,
                     item_depts: Mapping[str, str]) -> list[CaseFacts]:
    """The facts of the cases ``c`` meeting an SQL condition, oldest submission first."""
    rows = conn.execute(f"SELECT c.* FROM cases c WHERE {where} ORDER BY c.submitted_at, c.case_id", params).fetchall()
    events = _events_by_case(conn, where, params)
    alerts = _alerts(conn)
    calendar = calendar if isinstance(calendar, MemoCalendar) else MemoCalendar(calendar)
    facts = []
    for row in rows:
        evs = events.get(row["case_id"], [])
        clock = case_clock(evs, row["limit_wd"], row["status"], calendar, today)
        deciding_node = hub_id if row["route_level"] == "city" else row["route_office"]
        decided = next((e for e in evs if e["action"] in DECISIONS), None)
        received = next((e["at"] for e in evs if e["action"] == "receive" and e["node"] == deciding_node), None)
        working_days = None
        if decided is not None and clock["accepted_at"]:
            working_days = calendar.working_days_between(cn_day(clock["accepted_at"]), cn_day(decided["at"]))
        cards = set(alerts.get(row["case_id"], ()))
        if clock["supervision"] in ("yellow", "red"):
            cards.add(clock["supervision"])
        facts.append(CaseFacts(
            case_id=row["case_id"], receipt_no=row["receipt_no"], item_code=row["item_code"],
            item_name=row["item_name"], origin=row["origin"], level=origin_level(row["origin"]),
            office=row["route_office"],
            department=department_of(row["route_level"], row["route_office"], row["item_code"], item_depts),
            status=row["status"], submitted_at=row["submitted_at"], accepted_at=clock["accepted_at"],
            deadline=clock["deadline"], remaining_working_days=clock["remaining_working_days"],
            supervision=clock["supervision"], decided_at=decided["at"] if decided else None,
            decision=decided["action"] if decided else None, working_days=working_days, received_at=received,
            delivered=any(e["action"] == "deliver" for e in evs),
            decision_any=any(e["action"] in ("approve", "deny", "reject") for e in evs), cards=cards,
        ))
    return facts


# ----------------------------------------------------------------------------- 好差评 and 回访 (shared/feedback.py)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _chunks(ids: list[str], size: int = 500):
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def ratings_summary(conn: sqlite3.Connection, case_ids: Iterable[str]) -> dict | None:
    """好差评 of these cases from ``case_ratings``: ``count``, ``good`` (非常满意/满意/基本满意), ``bad``.

    None on a database without the feedback tables (the columns then stay empty).
    """
    if conn is None or not _has_table(conn, "case_ratings"):
        return None
    out = {"count": 0, "good": 0, "bad": 0}
    for chunk in _chunks(list(case_ids)):
        row = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(level >= 3), 0), COALESCE(SUM(level <= 2), 0) FROM case_ratings"
            f" WHERE case_id IN ({','.join('?' * len(chunk))})", chunk).fetchone()
        out["count"] += row[0]
        out["good"] += row[1]
        out["bad"] += row[2]
    return out


def followed_up(conn: sqlite3.Connection, case_ids: Iterable[str]) -> set[str] | None:
    """Of these cases, those whose 回访 is done or not needed (no 差评, or its follow-up closed).

    None on a database without the feedback tables (闭合度 then counts 送达 only).
    """
    if conn is None or not _has_table(conn, "followups"):
        return None
    ids = list(case_ids)
    pending: set[str] = set()
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        pending.update(r[0] for r in conn.execute(
            f"SELECT r.case_id FROM case_ratings r LEFT JOIN followups f ON f.case_id = r.case_id"
            f" WHERE r.case_id IN ({marks}) AND r.level <= 2 AND COALESCE(f.status, 'open') != 'closed'", chunk))
    return set(ids) - pending


# ----------------------------------------------------------------------------- figures


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def figures(facts: list[CaseFacts], conn: sqlite3.Connection | None = None) -> dict:
    """Every statistic of one set of cases (see the module docstring for definitions)."""
    n = len(facts)
    village = [f for f in facts if f.level == "village"]
    decided = [f for f in facts if f.decided_at and f.accepted_at and f.deadline]
    on_time = [f for f in decided if cn_day(f.decided_at).isoformat() <= f.deadline]
    transmitted = [f for f in village if f.received_at
                   and parse_iso(f.received_at) - parse_iso(f.submitted_at) <= TRANSMIT_WITHIN]
    closable = [f for f in facts if f.decision_any]
    closed = [f for f in closable if f.delivered]
    if conn is not None and closed:
        done = followed_up(conn, [f.case_id for f in closed])
        if done is not None:
            closed = [f for f in closed if f.case_id in done]
    ratings = ratings_summary(conn, [f.case_id for f in facts]) if conn is not None else None
    days = [f.working_days for f in decided]
    return {
        "cases": n,
        "village_accepted": len(village),
        "village_share": _rate(len(village), n),
        "decided": len(decided),
        "on_time": len(on_time),
        "on_time_rate": _rate(len(on_time), len(decided)),
        "avg_working_days": round(sum(days) / len(days), 2) if days else None,
        "village_cases": len(village),
        "transmitted": len(transmitted),
        "transmission_rate": _rate(len(transmitted), len(village)),
        "closable": len(closable),
        "closed": len(closed),
        "closure_rate": _rate(len(closed), len(closable)),
        "yellow_cards": sum(1 for f in facts if f.cards & {"yellow", "red"}),
        "red_cards": sum(1 for f in facts if "red" in f.cards),
        "ratings": ratings["count"] if ratings else None,
        "bad_ratings": ratings["bad"] if ratings else None,
        "satisfaction": _rate(ratings["good"], ratings["count"]) if ratings else None,
    }


def group_key(fact: CaseFacts, by: str) -> str:
    """The value of ``fact`` in the grouping dimension ``by``."""
    if by == "month":
        return parse_iso(fact.submitted_at).astimezone(CN_TZ).strftime("%Y-%m")
    return {"department": fact.department, "office": fact.office, "item": fact.item_code, "level": fact.level}[by]


def group_label(key: str, by: str, names: Mapping[str, str]) -> str:
    """Chinese label of a group key (``names``: node and item names)."""
    if by == "department":
        return DEPARTMENTS.get(key, key)
    if by == "level":
        return LEVEL_LABELS.get(key, key)
    if by == "office":
        if "-" in key:
            return f"{DEPARTMENTS.get(key.split('-', 1)[1], key)}（{key}）"
        return f"{names.get(key, key)}（{key}）"
    if by == "item":
        return f"{names.get(key, key)}（{key}）"
    return key


def statistics(conn: sqlite3.Connection, hub_id: str, calendar, today: date, filters: Filters = Filters(),
               by: str = "department") -> dict:
    """Totals and per-group figures; what the page, the CSV and ``GET /api/v1/stats`` show.

    Aggregated in SQL over the stored per-case facts (:mod:`shared.case_facts`, refreshed first
    for the cases that changed); same figures as :func:`statistics_in_python`.
    """
    from shared import case_facts

    if not case_facts.has_table(conn):
        return statistics_in_python(conn, hub_id, calendar, today, filters, by)
    memo = calendar if isinstance(calendar, MemoCalendar) else MemoCalendar(calendar)
    case_facts.refresh(conn, hub_id, memo, today, iso(datetime.now(CN_TZ)))
    item_depts = item_departments(conn)
    where, params = _where(filters, item_depts)
    groups = _aggregate(conn, hub_id, memo, today, where, params, by, item_depts)
    _note_fallback_years(conn, memo, today)
    names = {r["node_id"]: r["name"] for r in conn.execute("SELECT node_id, name FROM nodes")}
    if by == "item":
        names.update({r[0]: r[1] for r in conn.execute(
            f"SELECT c.item_code, c.item_name, MAX(c.submitted_at || ' ' || c.case_id) FROM cases c"
            f" WHERE {where} GROUP BY c.item_code", params)})
    ratings = _has_table(conn, "case_ratings")
    totals = _Sums()
    for sums in groups.values():
        totals.merge(sums)
    return _report(filters, by, today, names, totals.figures(ratings),
                   {key: sums.figures(ratings) for key, sums in groups.items()})


def _report(filters: Filters, by: str, today: date, names: Mapping[str, str], totals: dict,
            groups: dict[str, dict]) -> dict:
    """The statistics answer: the filters, the totals and each group's figures with its label."""
    return {
        "filters": {"from": filters.date_from.isoformat() if filters.date_from else None,
                    "to": filters.date_to.isoformat() if filters.date_to else None,
                    "level": filters.level, "office": filters.office, "department": filters.department,
                    "item": filters.item},
        "by": by,
        "today": today.isoformat(),
        "totals": totals,
        "groups": [{"key": key, "label": group_label(key, by, names), **groups[key]} for key in sorted(groups)],
    }


#: SQL of the grouping key per dimension (the department is derived in Python from the three columns).
_KEY_SQL = {
    "department": "c.route_level, c.route_office, c.item_code",
    "office": "c.route_office",
    "item": "c.item_code",
    "level": "length(c.origin)",
    "month": "strftime('%Y-%m', c.submitted_at, '+8 hours')",  # China has no daylight saving time
}
_SUM_FIELDS = ("cases", "village", "decided", "on_time", "working_days", "transmitted", "closable", "closed",
               "yellow", "red", "ratings", "good", "bad")


class _Sums:
    """Additive counts of one group, from which :func:`figures`' values follow exactly."""

    def __init__(self) -> None:
        for name in _SUM_FIELDS:
            setattr(self, name, 0)

    def merge(self, other: _Sums) -> None:
        for name in _SUM_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self, ratings: bool) -> dict:
        return {
            "cases": self.cases,
            "village_accepted": self.village,
            "village_share": _rate(self.village, self.cases),
            "decided": self.decided,
            "on_time": self.on_time,
            "on_time_rate": _rate(self.on_time, self.decided),
            "avg_working_days": round(self.working_days / self.decided, 2) if self.decided else None,
            "village_cases": self.village,
            "transmitted": self.transmitted,
            "transmission_rate": _rate(self.transmitted, self.village),
            "closable": self.closable,
            "closed": self.closed,
            "closure_rate": _rate(self.closed, self.closable),
            "yellow_cards": self.yellow,
            "red_cards": self.red,
            "ratings": self.ratings if ratings else None,
            "bad_ratings": self.bad if ratings else None,
            "satisfaction": _rate(self.good, self.ratings) if ratings else None,
        }


def _key_of(row, by: str, item_depts: Mapping[str, str]) -> str:
    if by == "department":
        return department_of(row[0], row[1], row[2], item_depts)
    if by == "level":
        return {12: "village", 9: "township"}.get(row[0], "city")
    return row[0]


def _aggregate(conn: sqlite3.Connection, hub_id: str, memo: MemoCalendar, today: date, where: str, params: tuple,
               by: str, item_depts: Mapping[str, str]) -> dict[str, _Sums]:
    """Per-group sums: stored facts in SQL, open cases' cards from their deadline, stopped clocks live."""
    from shared import states
    from shared.case_facts import row_of
    from shared.deadlines import supervision_level

    key_sql, width = _KEY_SQL[by], 3 if by == "department" else 1
    ratings = _has_table(conn, "case_ratings")
    followups = ratings and _has_table(conn, "followups")
    rating_join = "LEFT JOIN case_ratings r ON r.case_id = c.case_id" if ratings else ""
    rating_cols = ("TOTAL(r.case_id IS NOT NULL), TOTAL(r.level >= 3), TOTAL(r.level <= 2)" if ratings
                   else "0, 0, 0")
    pending = "0"
    if followups:
        pending = ("(COALESCE(r.level, 5) <= 2 AND COALESCE((SELECT u.status FROM followups u WHERE u.case_id = c.case_id),"
                   " 'open') != 'closed')")
    alert = "EXISTS (SELECT 1 FROM supervision_alerts a WHERE a.case_id = c.case_id AND a.level IN ({}))"
    yellow_alert, red_alert = alert.format("'yellow', 'red'"), alert.format("'red'")
    groups: dict[str, _Sums] = {}

    def sums(key: str) -> _Sums:
        return groups.setdefault(key, _Sums())

    stored = f"FROM cases c JOIN case_facts f ON f.case_id = c.case_id {rating_join} WHERE {where} AND f.live = 0"
    for row in conn.execute(
        f"SELECT {key_sql}, COUNT(*), TOTAL(length(c.origin) = 12), TOTAL(f.counted), TOTAL(f.on_time),"
        f" TOTAL(CASE WHEN f.counted THEN f.working_days ELSE 0 END), TOTAL(f.transmitted AND length(c.origin) = 12),"
        f" TOTAL(f.decision_any), TOTAL(f.decision_any AND f.delivered AND NOT {pending}),"
        f" TOTAL({yellow_alert}), TOTAL({red_alert}), {rating_cols} {stored} GROUP BY {key_sql}", params
    ):
        target = sums(_key_of(row, by, item_depts))
        values = [int(v) for v in tuple(row)[width:]]
        for name, value in zip(_SUM_FIELDS, values, strict=True):
            setattr(target, name, getattr(target, name) + value)
    # Open cases: 黄牌/红牌 reached now, from the stored deadline and today (one count per deadline).
    open_states = tuple(states.OPEN_STATES)
    levels: dict[str, str] = {}
    for row in conn.execute(
        f"SELECT {key_sql}, f.deadline, {yellow_alert}, {red_alert}, COUNT(*) FROM cases c"
        f" JOIN case_facts f ON f.case_id = c.case_id WHERE {where} AND f.live = 0 AND f.deadline IS NOT NULL"
        f" AND c.status IN ({','.join('?' * len(open_states))}) GROUP BY {key_sql}, f.deadline, {width + 2}, {width + 3}",
        (*params, *open_states)
    ):
        deadline, has_yellow, has_red, count = tuple(row)[width:]
        level = levels.get(deadline)
        if level is None:
            level = levels[deadline] = supervision_level(memo.working_days_between(today, date.fromisoformat(deadline)))
        target = sums(_key_of(row, by, item_depts))
        if level in ("yellow", "red") and not has_yellow:
            target.yellow += count
        if level == "red" and not has_red:
            target.red += count
    # Cases without stored facts, or whose clock is stopped (the deadline moves with today): in full.
    ids = [r[0] for r in conn.execute(
        f"SELECT c.case_id FROM cases c LEFT JOIN case_facts f ON f.case_id = c.case_id"
        f" WHERE {where} AND (f.case_id IS NULL OR f.live = 1)", params)]
    live = case_facts_where(conn, hub_id, memo, today, "c.case_id IN (SELECT value FROM json_each(?))",
                            (json.dumps(ids),), item_depts) if ids else []
    if live:
        ids = [f.case_id for f in live]
        done = followed_up(conn, ids)
        rated = {}
        if ratings:
            for chunk in _chunks(ids):
                rated.update({r[0]: r[1] for r in conn.execute(
                    f"SELECT case_id, level FROM case_ratings WHERE case_id IN ({','.join('?' * len(chunk))})", chunk)})
        for fact in live:
            target = sums(group_key(fact, by))
            _, _, _, _, _, working_days, _, delivered, decision_any, counted, on_time, transmitted, _, _ = row_of(
                fact, False, "")
            target.cases += 1
            village = fact.level == "village"
            target.village += village
            target.decided += counted
            target.on_time += on_time
            target.working_days += working_days if counted else 0
            target.transmitted += transmitted and village
            target.closable += decision_any
            target.closed += bool(decision_any and delivered and (done is None or fact.case_id in done))
            target.yellow += bool(fact.cards & {"yellow", "red"})
            target.red += "red" in fact.cards
            if fact.case_id in rated:
                target.ratings += 1
                target.good += rated[fact.case_id] >= 3
                target.bad += rated[fact.case_id] <= 2
    return groups


def _note_fallback_years(conn: sqlite3.Connection, memo: MemoCalendar, today: date) -> None:
    """Record in the calendar the years the stored facts span that have no holiday data (for the page's warning)."""
    row = conn.execute("SELECT MIN(substr(accepted_at, 1, 4)), MAX(substr(deadline, 1, 4)),"
                       " MAX(substr(decided_at, 1, 4)) FROM case_facts").fetchone()
    if row[0] is None:
        return
    last = max(int(v) for v in (row[1] or row[0], row[2] or row[0], today.year))
    for year in range(int(row[0]), last + 1):
        if not memo.calendar.covers(year):
            memo.used_fallback.add(year)


def statistics_in_python(conn: sqlite3.Connection, hub_id: str, calendar, today: date, filters: Filters = Filters(),
               by: str = "department") -> dict:
    """:func:`statistics` computed from every case's events in Python (reference; ~0.5 s per 10,000 cases)."""
    facts = case_facts(conn, hub_id, calendar, today, filters)
    names = {r["node_id"]: r["name"] for r in conn.execute("SELECT node_id, name FROM nodes")}
    names.update({f.item_code: f.item_name for f in facts})
    groups: dict[str, list[CaseFacts]] = {}
    for fact in facts:
        groups.setdefault(group_key(fact, by), []).append(fact)
    return _report(filters, by, today, names, figures(facts, conn),
                   {key: figures(group, conn) for key, group in groups.items()})


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key in RATE_KEYS:
        return f"{value * 100:.2f}%"
    return str(value)


def csv_rows(stats: dict) -> list[list[str]]:
    """The statistics as CSV rows: a Chinese header, one row per group, then 合计."""
    rows = [[GROUPS[stats["by"]], *(header for _, header in COLUMNS)]]
    for group in stats["groups"]:
        rows.append([group["label"], *(_cell(k, group[k]) for k, _ in COLUMNS)])
    rows.append(["合计", *(_cell(k, stats["totals"][k]) for k, _ in COLUMNS)])
    return rows


def to_csv(stats: dict) -> bytes:
    """The statistics as a CSV file (:func:`shared.csv_export.to_csv`: BOM, CRLF, no formulas)."""
    from shared.csv_export import to_csv as csv_file

    return csv_file(csv_rows(stats))


# ----------------------------------------------------------------------------- the 电子监察 board


def _reason(comment: str, detail: str | None) -> str:
    extra = json.loads(detail or "{}").get("reason") if detail else None
    return " ".join(part for part in ((comment or "").strip(), str(extra or "").strip()) if part)


def board(conn: sqlite3.Connection, hub_id: str, calendar, today: date, refusal_limit: int = 200) -> dict:
    """What the supervisor sees: open cases at 预警/黄牌/红牌 by department and office, refusals.

    :returns: ``alerts`` (cases, most overdue first), ``groups`` (department, office, counts per
        level), ``counts`` (per level), ``refusals`` (newest first, with their reasons and a flag
        when none was given) and ``refusal_counts`` (per kind, plus ``no_reason``).
    """
    from shared import states

    open_states = tuple(states.OPEN_STATES)
    item_depts = item_departments(conn)
    names = {r["node_id"]: r["name"] for r in conn.execute("SELECT node_id, name FROM nodes")}
    where = f"c.status IN ({','.join('?' * len(open_states))}) AND c.accepted_at IS NOT NULL"
    facts = case_facts_where(conn, hub_id, calendar, today, where, open_states, item_depts)
    alerts = [f for f in facts if f.supervision != "none"]
    order = {"red": 0, "yellow": 1, "warning": 2}
    alerts.sort(key=lambda f: (order[f.supervision], f.remaining_working_days or 0, f.submitted_at))
    groups: dict[tuple[str, str], dict] = {}
    for f in alerts:
        group = groups.setdefault((f.department, f.office), {
            "department": f.department, "department_label": DEPARTMENTS.get(f.department, f.department),
            "office": f.office, "office_label": group_label(f.office, "office", names),
            "warning": 0, "yellow": 0, "red": 0})
        group[f.supervision] += 1
    refusals = []
    counts = {"reject": 0, "deny": 0, "no_reason": 0}
    for e in conn.execute(
        "SELECT e.case_id, e.at, e.node, e.actor, e.action, e.comment, e.detail, c.receipt_no, c.item_name,"
        " c.route_office FROM case_events e JOIN cases c ON c.case_id = e.case_id"
        " WHERE e.action IN ('reject', 'deny') ORDER BY e.at DESC, e.rowid DESC"
    ):
        reason = _reason(e["comment"], e["detail"])
        counts[e["action"]] += 1
        counts["no_reason"] += 0 if reason else 1
        if len(refusals) < refusal_limit:
            refusals.append({"case_id": e["case_id"], "receipt_no": e["receipt_no"], "item_name": e["item_name"],
                             "office": e["route_office"], "office_label": group_label(e["route_office"], "office", names),
                             "kind": e["action"], "kind_label": REFUSALS[e["action"]], "at": e["at"],
                             "actor": e["actor"], "reason": reason})
    return {
        "today": today.isoformat(),
        "alerts": [asdict(f) | {"cards": sorted(f.cards), "level_label": SUPERVISION_LABELS[f.supervision],
                                "office_label": group_label(f.office, "office", names),
                                "department_label": DEPARTMENTS.get(f.department, f.department)} for f in alerts],
        "groups": sorted(groups.values(), key=lambda g: (g["department"], g["office"])),
        "counts": {level: sum(1 for f in alerts if f.supervision == level) for level in ("warning", "yellow", "red")},
        "refusals": refusals,
        "refusal_counts": counts,
    }
