"""Stored per-case facts for the statistics (统计), so the page aggregates in SQL.

The figures of :mod:`city_hub.statistics` need, per case, what its events say: the 受理 instant,
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
  code as the statistics always used (:func:`city_hub.statistics.case_facts_where`); the hub's
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
from datetime import date

from shared.core.clock import parse_iso
from shared.rules.deadlines import cn_day

_COLUMNS = ("case_id", "accepted_at", "deadline", "decided_at", "decision", "working_days", "received_at",
            "delivered", "decision_any", "counted", "on_time", "transmitted", "live", "computed_at")
_INSERT = f"INSERT OR REPLACE INTO case_facts({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def has_table(conn: sqlite3.Connection) -> bool:
    """True on a database migrated with :data:`SCHEMA`."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'case_facts'").fetchone() is not None


def calendar_key(calendar) -> str:
    """A fingerprint of the calendar's answers: its loaded schedules and the holiday library version."""
    import chinese_calendar

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
    """The stored row of one :class:`city_hub.statistics.CaseFacts`."""
    from city_hub.statistics import TRANSMIT_WITHIN

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
    from city_hub.statistics import MemoCalendar, _events_by_case, case_facts_where, item_departments
    from shared.core.storage import write_transaction

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
    from shared.core.clock import iso

    return refresh(conn, node.hub_id, node.calendar, node.clock.today_cn(), iso(node.now()), limit=5000)
