import json
import shutil
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.core.clock import Clock, FixedClock, iso, parse_iso
from shared.rules.workdays import WorkCalendar, fallback_warning, load_schedule, parse_schedule

EXAMPLE_2027 = Path(__file__).resolve().parents[1] / "shared" / "data" / "holidays" / "2027.example.json"


@pytest.fixture
def cal():
    return WorkCalendar()


@pytest.fixture
def schedule_2027(tmp_path):
    path = tmp_path / "2027.json"
    shutil.copy(EXAMPLE_2027, path)
    return load_schedule(path)


# ---------------------------------------------------------------- library years


def test_national_day_2026_with_worked_saturday(cal):
    # Oct 1–7 off, Thu 8 and Fri 9 worked, Sat 10 is a 调休 working day.
    assert cal.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)
    assert cal.is_working_day(date(2026, 10, 10))
    assert not cal.is_working_day(date(2026, 10, 5))  # a Monday inside the holiday
    assert not cal.used_fallback


def test_spring_festival_2026(cal):
    # Sat Feb 14 is worked; Feb 15–23 are off; Sat Feb 28 is worked.
    assert cal.is_working_day(date(2026, 2, 14))
    assert not any(cal.is_working_day(date(2026, 2, d)) for d in range(15, 24))
    assert cal.add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert cal.add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)
    assert cal.is_working_day(date(2026, 2, 28))
    # 20 working days (Art. 42) from accepting on Fri Feb 13: Sat 14, Feb 24–28
    # (Sat 28 worked), then 14 weekdays from Mar 2 end on Thu Mar 19. Counting
    # Mon–Fri only would give Mar 13.
    assert cal.add_working_days(date(2026, 2, 13), 20) == date(2026, 3, 19)
    assert cal.working_days_between(date(2026, 2, 13), date(2026, 3, 19)) == 20


def test_ordinary_weekend_is_not_a_working_day(cal):
    assert not cal.is_working_day(date(2026, 3, 7))  # Saturday
    assert cal.add_working_days(date(2026, 3, 6), 1) == date(2026, 3, 9)


def test_zero_and_negative_counts(cal):
    assert cal.add_working_days(date(2026, 10, 3), 0) == date(2026, 10, 3)
    # Three working days before Mon Oct 12: Sat 10, Fri 9, Thu 8.
    assert cal.add_working_days(date(2026, 10, 12), -3) == date(2026, 10, 8)


def test_between_excludes_start_includes_end_and_is_signed(cal):
    assert cal.working_days_between(date(2026, 3, 2), date(2026, 3, 2)) == 0
    assert cal.working_days_between(date(2026, 3, 2), date(2026, 3, 3)) == 1
    assert cal.working_days_between(date(2026, 3, 3), date(2026, 3, 2)) == -1
    assert cal.working_days_between(date(2026, 9, 30), date(2026, 10, 7)) == 0


def test_between_inverts_add(cal):
    start = date(2026, 9, 25)
    for n in range(0, 30):
        assert cal.working_days_between(start, cal.add_working_days(start, n)) == n


def test_datetimes_are_refused(cal):
    with pytest.raises(TypeError):
        cal.is_working_day(datetime(2026, 3, 2, tzinfo=UTC))


# ---------------------------------------------------------------- fallback


def test_uncovered_year_falls_back_to_weekdays_and_is_recorded(cal):
    assert not cal.covers(2031)
    assert cal.fallback_years([date(2026, 12, 31), date(2031, 1, 1)]) == [2031]
    assert cal.used_fallback == set()  # asking does not count as using
    # 2031-01-01 is a Wednesday: without data it counts as a working day.
    assert cal.is_working_day(date(2031, 1, 1))
    assert cal.used_fallback == {2031}


def test_deadline_running_into_unknown_year_records_fallback(cal):
    # Thu 2026-12-31 + 2: Fri Jan 1 (a holiday in reality, but unknown) and Mon Jan 4.
    if cal.covers(2027):
        pytest.skip("installed chinese_calendar already knows 2027")
    assert cal.add_working_days(date(2026, 12, 31), 2) == date(2027, 1, 4)
    assert cal.used_fallback == {2027}


def test_fallback_warning_text():
    assert fallback_warning([]) == ""
    assert fallback_warning({2027}) == (
        "警告：2027年节假日安排未加载，期限按周一至周五推算，请管理员导入国务院办公厅放假通知。"
    )
    assert fallback_warning([2028, 2027, 2028]).startswith("警告：2027年、2028年节假日安排未加载")


# ---------------------------------------------------------------- loaded schedules


def test_example_file_is_marked_illustrative(schedule_2027):
    assert schedule_2027["year"] == 2027
    assert "示例" in schedule_2027["source"] and "非官方" in schedule_2027["source"]


def test_loaded_2027_schedule_drives_deadlines(schedule_2027):
    cal = WorkCalendar({2027: schedule_2027})
    assert cal.covers(2027)
    # Oct 1–7 off, Fri 8 worked, Sat 9 is 调休, Sun 10 off, Mon 11.
    assert cal.add_working_days(date(2027, 9, 30), 3) == date(2027, 10, 11)
    assert cal.is_working_day(date(2027, 9, 26))  # worked Sunday
    assert not cal.is_working_day(date(2027, 2, 8))  # Monday in 春节
    # Across the year boundary: Thu 2026-12-31 → Jan 1–3 off → Mon Jan 4, Tue Jan 5.
    assert cal.add_working_days(date(2026, 12, 31), 2) == date(2027, 1, 5)
    assert cal.used_fallback == set()


def test_loaded_schedule_overrides_the_library():
    # Pretend a (hypothetical) revised notice moves 2026's 调休 Saturday.
    revised = {
        "year": 2026,
        "source": "测试用假想通知",
        "holidays": [{"name": "国庆节", "start": "2026-10-01", "end": "2026-10-08"}],
        "workdays": ["2026-10-11"],
    }
    cal = WorkCalendar({2026: revised})
    assert not cal.is_working_day(date(2026, 10, 8))
    assert not cal.is_working_day(date(2026, 10, 10))
    assert cal.is_working_day(date(2026, 10, 11))
    # Fri Oct 9 (1), Sat 10 off, Sun 11 worked (2).
    assert cal.add_working_days(date(2026, 9, 30), 2) == date(2026, 10, 11)


def test_add_schedule_at_runtime_clears_the_warning(cal, schedule_2027):
    cal.is_working_day(date(2027, 3, 1))
    assert cal.used_fallback == {2027} or cal.covers(2027)
    cal.add_schedule(schedule_2027)
    assert 2027 not in cal.used_fallback
    assert not cal.is_working_day(date(2027, 10, 4))


def test_schedule_filed_under_wrong_year_is_refused(schedule_2027):
    with pytest.raises(ValueError, match="filed under 2028"):
        WorkCalendar({2028: schedule_2027})


def test_parse_schedule_normalises_order():
    parsed = parse_schedule(
        {
            "year": 2027,
            "source": " 测试 ",
            "holidays": [
                {"name": "国庆节", "start": "2027-10-01", "end": "2027-10-07"},
                {"name": "元旦", "start": "2027-01-01", "end": "2027-01-01"},
            ],
            "workdays": ["2027-10-09", "2027-09-26"],
        }
    )
    assert [h["name"] for h in parsed["holidays"]] == ["元旦", "国庆节"]
    assert parsed["workdays"] == ["2027-09-26", "2027-10-09"]
    assert parsed["source"] == "测试"


def _schedule(**overrides):
    base = {
        "year": 2027,
        "source": "测试",
        "holidays": [{"name": "元旦", "start": "2027-01-01", "end": "2027-01-01"}],
        "workdays": ["2027-02-07"],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"year": "2027"}, "年份（year）应为整数"),
        ({"source": ""}, "来源（source）应写明"),
        ({"holidays": {}}, "放假安排（holidays）应为列表"),
        (
            {"holidays": [{"name": "元旦", "start": "2028-01-01", "end": "2028-01-01"}]},
            "不在本安排的年份",
        ),
        ({"holidays": [{"name": "元旦", "start": "2027/01/01", "end": "2027-01-01"}]}, "YYYY-MM-DD"),
        ({"holidays": [{"name": "元旦", "start": "2027-02-30", "end": "2027-02-30"}]}, "不是有效的日期"),
        ({"holidays": [{"name": "春节", "start": "2027-02-12", "end": "2027-02-05"}]}, "晚于结束日期"),
        ({"holidays": [{"name": "", "start": "2027-01-01", "end": "2027-01-01"}]}, "名称（name）"),
        (
            {
                "holidays": [
                    {"name": "A", "start": "2027-05-01", "end": "2027-05-05"},
                    {"name": "B", "start": "2027-05-05", "end": "2027-05-06"},
                ]
            },
            "放假日期重叠",
        ),
        ({"workdays": ["2027-01-01"]}, "既是放假日"),
        ({"holidays": [], "workdays": ["2027-01-01"]}, "只列需要上班的周六、周日"),
        ({"workdays": ["2027-02-07", "2027-02-07"]}, "重复列出"),
        ({"workdays": ["2026-12-27"]}, "不在本安排的年份"),
    ],
)
def test_invalid_schedules_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(_schedule(**overrides))


def test_load_schedule_reports_the_file(tmp_path):
    bad = tmp_path / "2027.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="2027.json: not valid JSON"):
        load_schedule(bad)
    bad.write_text(json.dumps(_schedule(workdays=["2027-01-01"])), encoding="utf-8")
    with pytest.raises(ValueError, match="2027.json: 第1个调休上班日"):
        load_schedule(bad)


# ---------------------------------------------------------------- clock


def test_real_clock_is_aware_utc():
    clock = Clock()
    assert not clock.is_simulated
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


def test_today_cn_rolls_over_at_utc_16():
    clock = FixedClock(datetime(2026, 9, 30, 15, 59, tzinfo=UTC))
    assert clock.today_cn() == date(2026, 9, 30)
    clock.advance(minutes=1)
    assert clock.today_cn() == date(2026, 10, 1)


def test_fixed_clock_set_and_advance():
    clock = FixedClock()
    assert clock.is_simulated
    start = clock.now()
    assert clock.now() == start  # does not move on its own
    assert clock.advance(days=2, hours=3) == start + timedelta(days=2, hours=3)
    clock.set(datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=8))))
    assert clock.now() == datetime(2026, 12, 31, 16, tzinfo=UTC)
    with pytest.raises(ValueError):
        clock.set(datetime(2027, 1, 1))


def test_simulated_clock_starts_at_start_and_runs_fast():
    clock = Clock.from_settings("2026-03-02T09:00:00+08:00", "3600")
    assert clock.is_simulated
    first = clock.now()
    assert datetime(2026, 3, 2, 1, tzinfo=UTC) <= first < datetime(2026, 3, 2, 2, tzinfo=UTC)
    time.sleep(0.05)
    # 0.05 real seconds at 3600× is at least 3 simulated minutes.
    assert clock.now() - first >= timedelta(minutes=3)


def test_from_settings_without_start_is_real():
    assert not Clock.from_settings(None, 1.0).is_simulated
    assert not Clock.from_settings("  ", 1).is_simulated
    with pytest.raises(ValueError):
        Clock(speed=0)


def test_iso_round_trip_with_millisecond_precision():
    dt = datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=UTC)
    assert iso(dt) == "2026-03-02T01:02:03.456Z"
    assert parse_iso(iso(dt)) == dt.replace(microsecond=456000)
    assert iso(datetime(2026, 3, 2, 9, tzinfo=timezone(timedelta(hours=8)))) == "2026-03-02T01:00:00.000Z"


def test_parse_iso_requires_a_timezone():
    assert parse_iso("2026-03-02T09:00:00+08:00") == datetime(2026, 3, 2, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_iso("2026-03-02T01:00:00")
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_iso("yesterday")
    with pytest.raises(ValueError):
        iso(datetime(2026, 3, 2))
