"""Stored per-case facts (city_hub/oversight/facts.py): the SQL statistics equal the Python reference.

A real hub (the service tier, ``tests/service.py``: no network) gets a few hundred cases with a
year of history in its register (as ``benchmarks/bench_pages.py`` fills one: 接件, 受理, 审查,
准予/不予许可/不予受理, 补正, 送达), 黄牌/红牌 from the supervision job,
ratings and 回访, and cases whose clock is stopped (暂停); every grouping and filter of
:func:`city_hub.oversight.statistics.statistics` must give exactly what :func:`statistics_in_python` (the
per-request computation from every event) gives, also after new events, a calendar change
and the scheduled pass.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from city_hub.oversight import facts as case_facts
from city_hub.oversight import statistics as oversight
from city_hub.oversight.filters import GROUPS, Filters
from shared.core.clock import iso
from shared.core.storage import write_transaction
from shared.rules import states
from shared.services import casework, supervision


@pytest.fixture(scope="module")
def hub(service):
    hub = service
    hub.fill(400, seed=11)
    review = [r[0] for r in hub.query("SELECT case_id FROM cases WHERE status = 'IN_REVIEW' ORDER BY case_id")]
    # Short limits make open cases overdue: some recorded by the supervision job, some only live.
    short = "UPDATE cases SET limit_wd = 1 WHERE case_id IN (SELECT case_id FROM cases WHERE status = 'IN_REVIEW'"
    with write_transaction(hub.conn):
        hub.conn.execute(short + " ORDER BY case_id LIMIT 10 OFFSET 10)")
    supervision.run(hub.conn, hub.node, hub.node.emit)  # records 黄牌/红牌 of the overdue open cases
    with write_transaction(hub.conn):
        hub.conn.execute(short + " ORDER BY case_id LIMIT 10 OFFSET 20)")
    now = hub.node.now()
    decided = [r[0] for r in hub.query("SELECT case_id FROM cases WHERE status = 'CONCLUDED' ORDER BY case_id")]
    with write_transaction(hub.conn):
        # Two clocks stopped for 鉴定 (one of them long ago), one resumed.
        for i, case_id in enumerate(review[:3]):
            at = now - timedelta(days=30 * (i + 1))
            event = casework.new_event(hub.node_id, "window", "suspend", "IN_REVIEW",
                                       states.apply_action("IN_REVIEW", "suspend", "送检", reason="鉴定"), at, "送检",
                                       {"reason": "鉴定"})
            casework.record_event(hub.conn, case_id, event)
        event = casework.new_event(hub.node_id, "window", "resume", "SUSPENDED", "IN_REVIEW", now - timedelta(days=5),
                                   "鉴定完毕", None)
        casework.record_event(hub.conn, review[2], event)
        # Ratings: good and bad, one bad one with its 回访 closed.
        for i, case_id in enumerate(decided[:12]):
            hub.conn.execute(
                "INSERT INTO case_ratings(case_id, level, comment, channel, node, recorded_by, office, rated_at,"
                " received_at) VALUES (?, ?, '', 'village', ?, 'agent', 'x', ?, ?)",
                (case_id, 1 + i % 5, "130926100201", iso(now), iso(now)))
        for i, case_id in enumerate(decided[:12:5]):
            hub.conn.execute(
                "INSERT INTO followups(followup_id, case_id, level, office, opened_at, deadline, status)"
                " VALUES (?, ?, 1, 'x', ?, '2099-01-01', ?)", (f"fu{i}", case_id, iso(now), ("open", "closed")[i % 2]))
    hub.review = review
    return hub


FILTERS = [Filters(), Filters(level="village"), Filters(department="rs"),
           Filters(office="130926100")]


def _both(hub, filters=Filters(), by="department"):
    today = hub.node.clock.today_cn()
    fast = oversight.statistics(hub.conn, hub.node_id, hub.node.calendar, today, filters, by)
    slow = oversight.statistics_in_python(hub.conn, hub.node_id, hub.node.calendar, today, filters, by)
    return fast, slow


def test_sql_statistics_equal_the_python_reference(hub):
    for by in GROUPS:
        for filters in FILTERS:
            fast, slow = _both(hub, filters, by)
            assert fast == slow, (by, filters)
    totals = _both(hub)[0]["totals"]
    # The data exercise every figure (a test on empty figures would prove nothing).
    assert totals["cases"] == 400 and totals["decided"] > 50 and 0 < totals["on_time"] < totals["decided"]
    assert totals["closed"] > 0 and totals["yellow_cards"] > 0 and totals["red_cards"] > 0
    assert totals["ratings"] == 12 and totals["transmitted"] > 0
    # Every case has its stored facts; the two stopped clocks are computed live.
    assert hub.scalar("SELECT COUNT(*) FROM case_facts") == 400
    assert {r[0] for r in hub.query("SELECT case_id FROM case_facts WHERE live = 1")} == set(hub.review[:2])


def test_a_new_event_invalidates_the_stored_facts(hub):
    case_id = hub.review[5]
    _both(hub)
    assert hub.scalar("SELECT COUNT(*) FROM case_facts WHERE case_id = ?", (case_id,)) == 1
    now = hub.node.now()
    with write_transaction(hub.conn):
        event = casework.new_event(hub.node_id, "window", "approve", "IN_REVIEW", "APPROVED", now, "准予", None)
        casework.record_event(hub.conn, case_id, event, {"result": "approve"})
    assert hub.scalar("SELECT COUNT(*) FROM case_facts WHERE case_id = ?", (case_id,)) == 0
    # A history-only step (延期) records an event without touching the case row: watched too.
    other = hub.review[6]
    with write_transaction(hub.conn):
        event = casework.new_event(hub.node_id, "window", "extend", "IN_REVIEW", "IN_REVIEW", now, "延期", None)
        casework.record_event(hub.conn, other, event)
    assert hub.scalar("SELECT COUNT(*) FROM case_facts WHERE case_id = ?", (other,)) == 0
    fast, slow = _both(hub)
    assert fast == slow
    assert hub.scalar("SELECT decided_at FROM case_facts WHERE case_id = ?", (case_id,)) == iso(now)


def test_a_calendar_change_recomputes_every_case(hub):
    _both(hub)
    before = hub.scalar("SELECT value FROM case_facts_meta WHERE key = 'calendar'")
    year = hub.node.clock.today_cn().year
    calendar = hub.node.calendar
    saved = calendar.schedules.get(year)
    # A made-up week of holidays in the middle of the period moves deadlines and working days.
    start = hub.node.clock.today_cn() - timedelta(days=40)
    if start.year != year:
        start = hub.node.clock.today_cn() - timedelta(days=3)
    end = start + timedelta(days=6)
    calendar.add_schedule({"year": year, "source": "测试通知", "holidays": [
        {"name": "测试假期", "start": start.isoformat(), "end": end.isoformat()}], "workdays": []})
    try:
        fast, slow = _both(hub)
        assert fast == slow
        assert hub.scalar("SELECT value FROM case_facts_meta WHERE key = 'calendar'") != before
    finally:
        if saved is None:
            calendar.schedules.pop(year)
            calendar._off.pop(year)
            calendar._worked.pop(year)
        else:
            calendar.add_schedule(saved)
    assert _both(hub)[0] == _both(hub)[1]
    assert hub.scalar("SELECT value FROM case_facts_meta WHERE key = 'calendar'") == before


def test_the_scheduled_pass_fills_the_table(hub):
    with write_transaction(hub.conn):
        hub.conn.execute("DELETE FROM case_facts")
    assert case_facts.run_scheduled(hub.conn, hub.node) == 400
    assert hub.scalar("SELECT COUNT(*) FROM case_facts") == 400
    assert case_facts.run_scheduled(hub.conn, hub.node) == 0  # nothing changed since
    assert "case_facts" in dict(hub.node.kind.scheduled_rules(hub.node))


def test_cards_come_from_the_job_and_from_the_live_clock(hub):
    recorded = {r[0] for r in hub.query("SELECT case_id FROM supervision_alerts WHERE level = 'red'")}
    totals = _both(hub)[0]["totals"]
    assert recorded and totals["red_cards"] > len(recorded)  # the cases shortened after the job are red only live
    assert totals == _both(hub)[1]["totals"]
