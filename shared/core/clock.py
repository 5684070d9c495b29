"""The one clock every rule takes time from.

Rules never call ``datetime.now()`` themselves: they receive a :class:`Clock`,
so tests can pin time (:class:`FixedClock`) and demos can run a simulated
clock that starts at a chosen instant and runs faster than real time (days of
casework in minutes).

All datetimes are timezone-aware UTC. Naive datetimes are refused rather than
guessed at, because a naive local time silently read as UTC shifts every
deadline by eight hours. The calendar date that matters for working-day
deadlines is the date in China (UTC+8, no daylight saving), given by
:meth:`Clock.today_cn`.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone

# China has used a fixed +8 offset without DST since 1991, so a fixed offset
# is exact for any date a case can have and avoids depending on tzdata.
CN_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


def _require_aware(dt: datetime, what: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {dt!r})")
    return dt.astimezone(UTC)


class Clock:
    """Wall clock, real or simulated.

    ``Clock()`` is the real UTC clock. ``Clock(start=..., speed=...)`` starts
    at ``start`` when constructed and advances ``speed`` times faster than
    real time (demo and simulation only). A speed other than 1 without a
    start runs fast from the real current time.

    :param start: aware datetime the simulated clock starts at.
    :param speed: simulated seconds per real second; must be positive.
    """

    def __init__(self, start: datetime | None = None, speed: float = 1.0) -> None:
        speed = float(speed)
        if not speed > 0:
            raise ValueError(f"clock speed must be positive (got {speed})")
        self.speed = speed
        self._simulated = start is not None or speed != 1.0
        self._origin = _require_aware(start, "start") if start else datetime.now(UTC)
        # Monotonic time, so a simulated clock is immune to the PC's own
        # clock being changed while it runs.
        self._origin_mono = time.monotonic()

    @classmethod
    def from_settings(cls, start_iso: str | None, speed: float | str = 1.0) -> Clock:
        """Build a clock from configuration values.

        :param start_iso: ISO-8601 instant with a timezone (e.g.
            ``2026-03-02T01:00:00Z``), or empty/``None`` for the real clock.
        :param speed: simulation speed; strings from the environment are accepted.
        """
        start = parse_iso(start_iso) if start_iso and start_iso.strip() else None
        return cls(start=start, speed=float(speed))

    @property
    def is_simulated(self) -> bool:
        """True when this clock does not follow real time."""
        return self._simulated

    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        if not self._simulated:
            return datetime.now(UTC)
        elapsed = time.monotonic() - self._origin_mono
        return self._origin + timedelta(seconds=elapsed * self.speed)

    def today_cn(self) -> date:
        """Return today's date in China (Asia/Shanghai, UTC+8)."""
        return self.now().astimezone(CN_TZ).date()

    def __repr__(self) -> str:
        if not self._simulated:
            return "Clock()"
        return f"Clock(start={iso(self._origin)!r}, speed={self.speed})"


class FixedClock(Clock):
    """A clock that only moves when told to; for tests.

    :param dt: the instant to show; defaults to 2026-03-02 09:00 China time
        (a Monday working day).
    """

    DEFAULT = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

    def __init__(self, dt: datetime | None = None) -> None:
        super().__init__(start=dt or self.DEFAULT)
        self._now = self._origin

    def now(self) -> datetime:
        """Return the pinned instant."""
        return self._now

    def set(self, dt: datetime) -> None:
        """Pin the clock to ``dt`` (aware)."""
        self._now = _require_aware(dt, "dt")

    def advance(self, **kwargs: float) -> datetime:
        """Move the clock forward by ``timedelta(**kwargs)`` and return the new time."""
        self._now = self._now + timedelta(**kwargs)
        return self._now

    def __repr__(self) -> str:
        return f"FixedClock({iso(self._now)!r})"


def iso(dt: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with milliseconds and ``Z``.

    ``iso(datetime(2026, 3, 2, 1, 0, tzinfo=UTC)) == "2026-03-02T01:00:00.000Z"``.
    Sub-millisecond digits are truncated, so the string sorts like the instant.
    """
    u = dt if dt.tzinfo is UTC else _require_aware(dt, "dt")
    # isoformat truncates to milliseconds as strftime did, at half its cost (a few per event).
    return u.isoformat(timespec="milliseconds")[:23] + "Z"


def parse_iso(s: str) -> datetime:
    """Parse an ISO-8601 instant that carries a timezone; return aware UTC.

    Accepts ``Z`` or ``±hh:mm`` offsets.

    :raises ValueError: for malformed strings or a missing timezone.
    """
    try:
        dt = datetime.fromisoformat(s.strip())
    except (AttributeError, ValueError):
        raise ValueError(f"not an ISO-8601 timestamp: {s!r}") from None
    return _require_aware(dt, f"timestamp {s!r}")
