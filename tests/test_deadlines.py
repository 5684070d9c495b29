"""限时办结 in working days, pauses, extension, supervision levels, deemed acceptance."""

from datetime import date

import pytest

from shared.rules.deadlines import case_clock, notice_overdue, supervision_level
from shared.rules.workdays import WorkCalendar

CAL = WorkCalendar()


def ev(action, at, detail=None):
    return {"action": action, "at": at, "detail": detail}


def test_deadline_counts_working_days_across_national_day():
    # Accepted Wed 2026-09-30 (China time); 3 WD: Oct 8, 9 and the 调休 Saturday Oct 10.
    clock = case_clock([ev("accept", "2026-09-30T02:00:00.000Z")], 3, "ACCEPTED", CAL, date(2026, 10, 8))
    assert clock["deadline"] == "2026-10-10"
    assert clock["remaining_working_days"] == 2
    assert clock["supervision"] == "warning"


def test_accept_time_is_read_in_china_time():
    # 17:00 UTC on Sep 29 is already Sep 30 in China.
    clock = case_clock([ev("accept", "2026-09-29T17:00:00.000Z")], 3, "ACCEPTED", CAL, date(2026, 9, 30))
    assert clock["deadline"] == "2026-10-10"


def test_suspension_does_not_count_and_extension_adds_ten():
    events = [
        ev("accept", "2026-03-02T01:00:00.000Z"),  # Monday
        ev("suspend", "2026-03-04T01:00:00.000Z"),
        ev("resume", "2026-03-11T01:00:00.000Z"),  # 5 working days suspended
        ev("extend", "2026-03-12T01:00:00.000Z"),
    ]
    clock = case_clock(events, 20, "IN_REVIEW", CAL, date(2026, 3, 12))
    assert clock["suspended_working_days"] == 5
    assert clock["extended"] is True
    assert clock["deadline"] == CAL.add_working_days(date(2026, 3, 2), 35).isoformat()


def test_ongoing_suspension_freezes_the_clock():
    events = [ev("accept", "2026-03-02T01:00:00.000Z"), ev("suspend", "2026-03-03T01:00:00.000Z")]
    early = case_clock(events, 3, "SUSPENDED", CAL, date(2026, 3, 4))
    later = case_clock(events, 3, "SUSPENDED", CAL, date(2026, 3, 20))
    assert early["remaining_working_days"] == later["remaining_working_days"]


@pytest.mark.parametrize("remaining, level", [(5, "none"), (2, "warning"), (0, "warning"), (-1, "yellow"),
                                              (-5, "yellow"), (-6, "red")])
def test_supervision_levels(remaining, level):
    assert supervision_level(remaining) == level


def test_closed_cases_are_not_supervised():
    clock = case_clock([ev("accept", "2026-03-02T01:00:00.000Z")], 3, "APPROVED", CAL, date(2026, 6, 1))
    assert clock["supervision"] == "none" and clock["remaining_working_days"] is None


def test_deemed_acceptance_counts_from_receipt():
    events = [ev("accept", "2026-03-20T01:00:00.000Z", '{"effective_at": "2026-03-02T01:00:00.000Z"}')]
    clock = case_clock(events, 3, "ACCEPTED", CAL, date(2026, 3, 20))
    assert clock["accepted_at"] == "2026-03-02T01:00:00.000Z"
    assert clock["deadline"] == "2026-03-05"


def test_notice_overdue_after_five_working_days():
    assert not notice_overdue("2026-03-02T01:00:00.000Z", CAL, date(2026, 3, 9))  # 5 WD later
    assert notice_overdue("2026-03-02T01:00:00.000Z", CAL, date(2026, 3, 10))
