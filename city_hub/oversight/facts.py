"""Per-case facts for the statistics (统计) and the 电子监察 board, and their stored copy.

:func:`case_facts_where` reads, per case, what its events say; the figures of
:mod:`city_hub.oversight.statistics` need, per case, what its events say: the 受理 instant,
the deadline (working days, 暂停 and 延期 included), the decision and its day, the working days
from 受理 to decision, whether it was received by its deciding node within 24 hours, served
(送达), refused or decided. Computing that for 10,000 cases on every request took ~0.5 s
(fetching ~80,000 events, parsing their timestamps, one clock per case).

Here those facts are computed once per change of a case and kept in ``case_facts``:

- **Invalidation is exact and immediate**: triggers delete a case's row whenever the case row
  is updated or deleted, or any of its events is updated or deleted; an event that moves the
  case is recorded with an update of the case row (``casework.record_event``), so of inserted
  events only those that leave the status as it is (history-only steps such as 延期 or 现场核查,
  ``from_status = to_status``) need their own trigger. A new case has no row to delete, so
  inserting cases (and their first events) costs the hub's ingest nothing here. A
  change of the working-day calendar (a loaded holiday schedule, another ``chinesecalendar``
  release) empties the table (``case_facts_meta.calendar``).
- **Refilled incrementally**: :func:`refresh` computes the rows that are missing, with the same
  code as the statistics always used (:func:`case_facts_where`); the hub's
  scheduled pass calls it (:func:`run_scheduled`) and so does every statistics request, so the
  figures are exact even between passes (the request then computes only what changed since).
- **What stays live**: everything that depends on today. An open case's 黄牌/红牌 comes from its
  stored deadline and today (one working-day count per distinct deadline); a case whose clock
  is still stopped (暂停 without 恢复) has a deadline that moves with today, so it is stored with
  ``live = 1`` and computed in full per request (few cases); 黄牌/红牌 recorded by the
  supervision job, 好差评 and 回访 are read from their own tables by the aggregate query.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import chinese_calendar

from city_hub.oversight.filters import Filters, where_clause
from shared.core.clock import iso, parse_iso
from shared.core.storage import write_transaction
from shared.rules.deadlines import case_clock, cn_day
from sync.trust import catalog_index

DECISIONS = ("approve", "deny")

TRANSMIT_WITHIN = timedelta(hours=24)


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
    out: dict[str, str] = {}
    for row in conn.execute("SELECT document FROM metadata WHERE role = 'catalog' ORDER BY version"):
        out.update({code: item["department_code"] for code, item in catalog_index(row["document"]).items()})
    return out


class MemoCalendar:
    """A calendar that remembers its answers for one computation over many cases.

    Thousands of cases share their acceptance days, deadlines and "today"; asking the holiday
    tables one date at a time for each of them made the statistics of 10,000 cases take
    seconds. Same answers as :class:`shared.rules.workdays.WorkCalendar` (which it asks per date).
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


def case_facts(conn: sqlite3.Connection, hub_id: str, calendar, today: date, filters: Filters = Filters(),
               item_depts: Mapping[str, str] | None = None) -> list[CaseFacts]:
    """The facts of every case at the hub that matches ``filters``."""
    item_depts = item_departments(conn) if item_depts is None else item_depts
    where, params = where_clause(filters, item_depts)
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


# ----------------------------------------------------------------------------- the stored table (case_facts)


_COLUMNS = ("case_id", "accepted_at", "deadline", "decided_at", "decision", "working_days", "received_at",
            "delivered", "decision_any", "counted", "on_time", "transmitted", "live", "computed_at")
_INSERT = f"INSERT OR REPLACE INTO case_facts({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def has_table(conn: sqlite3.Connection) -> bool:
    """True on a database migrated with :data:`SCHEMA`."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'case_facts'").fetchone() is not None


def calendar_key(calendar) -> str:
    """A fingerprint of the calendar's answers: its loaded schedules and the holiday library version."""
    inner = getattr(calendar, "calendar", calendar)  # a MemoCalendar wraps the WorkCalendar
    schedules = getattr(inner, "schedules", {})
    text = json.dumps({"schedules": {str(k): v for k, v in sorted(schedules.items())},
                       "library": getattr(chinese_calendar, "__version__", "")}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _stopped_clock(events) -> bool:
    """True when the clock is stopped at the last event (暂停 without 恢复), as ``case_clock`` reads it."""
    accepted, since = False, False
    for event in events:
        action = event["action"]
        if action in ("accept", "accept_deficient"):
            accepted = True
        elif action == "suspend":
            since = True
        elif action == "resume":
            since = False
    return accepted and since


def row_of(fact, stopped: bool, now: str) -> tuple:
    """The stored row of one :class:`CaseFacts`."""
    counted = bool(fact.decided_at and fact.accepted_at and fact.deadline)
    on_time = counted and cn_day(fact.decided_at).isoformat() <= fact.deadline
    transmitted = bool(fact.received_at) and (
        parse_iso(fact.received_at) - parse_iso(fact.submitted_at) <= TRANSMIT_WITHIN)
    return (fact.case_id, fact.accepted_at, None if stopped else fact.deadline, fact.decided_at, fact.decision,
            fact.working_days, fact.received_at, int(fact.delivered), int(fact.decision_any), int(counted),
            int(on_time), int(transmitted), int(stopped), now)


def refresh(conn: sqlite3.Connection, hub_id: str, calendar, today: date, now: str, limit: int | None = None) -> int:
    """Compute and store the facts of every case that has none (or all, after a calendar change).

    :param limit: at most this many cases per call (the scheduled pass spreads a first fill).
    :returns: how many cases were computed.
    """
    key = calendar_key(calendar)
    with write_transaction(conn):
        stored = conn.execute("SELECT value FROM case_facts_meta WHERE key = 'calendar'").fetchone()
        if stored is None or stored[0] != key:
            conn.execute("DELETE FROM case_facts")
            conn.execute("INSERT OR REPLACE INTO case_facts_meta(key, value) VALUES ('calendar', ?)", (key,))
        missing = "c.case_id NOT IN (SELECT case_id FROM case_facts)"
        if limit is not None:
            missing = (f"c.case_id IN (SELECT c2.case_id FROM cases c2 WHERE c2.case_id NOT IN"
                       f" (SELECT case_id FROM case_facts) LIMIT {int(limit)})")
        if conn.execute(f"SELECT 1 FROM cases c WHERE {missing} LIMIT 1").fetchone() is None:
            return 0
        memo = calendar if isinstance(calendar, MemoCalendar) else MemoCalendar(calendar)
        facts = case_facts_where(conn, hub_id, memo, today, missing, (), item_departments(conn))
        events = _events_by_case(conn, missing, ())
        conn.executemany(_INSERT, [row_of(f, _stopped_clock(events.get(f.case_id, ())), now) for f in facts])
        return len(facts)


def run_scheduled(conn: sqlite3.Connection, node, emit=None) -> int:
    """The hub's scheduled pass (city_hub/tier.py): fill what changed since the last pass."""
    if not has_table(conn):
        return 0
    return refresh(conn, node.hub_id, node.calendar, node.clock.today_cn(), iso(node.now()), limit=5000)
