"""Case and event ids sort by the time they were made (shared/core/ids.py): a register's indexes
grow at their right edge, not at a random page per case (docs/performance.md, tenth round)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from network import catalog, create_case, pick_item

from shared.core.ids import time_ordered_id
from shared.services import casework


def test_an_id_is_a_uuid_version_7_of_its_millisecond():
    ms = 1_796_180_707_501
    made = time_ordered_id(ms)
    parsed = uuid.UUID(made)
    assert len(made) == 32 and made == made.lower() and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert int(made[:12], 16) == ms  # the first 48 bits are the time
    for bad in (-1, 1 << 48):
        with pytest.raises(ValueError):
            time_ordered_id(bad)


def test_ids_sort_by_time_and_never_repeat_within_a_millisecond():
    start = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    by_time = [casework.new_id(start + timedelta(milliseconds=k)) for k in range(2000)]
    assert by_time == sorted(by_time)
    same_ms = {time_ordered_id(1_796_180_707_501) for _ in range(20000)}
    assert len(same_ms) == 20000  # 74 random bits each


def test_a_case_and_its_events_taken_at_a_village_get_time_ordered_ids(village, agent):
    item = pick_item(catalog(village, agent), "city")
    first, second = (create_case(village, agent, item, materials=[])["case_id"] for _ in range(2))
    assert uuid.UUID(first).version == uuid.UUID(second).version == 7 and first < second
    submitted = village.scalar("SELECT submitted_at FROM cases WHERE case_id = ?", (first,))
    made = datetime.fromtimestamp(int(first[:12], 16) / 1000, UTC)
    assert abs(made - datetime.fromisoformat(submitted.replace("Z", "+00:00"))) < timedelta(seconds=1)
