"""Hybrid logical clock: (wall milliseconds, counter, node) that never goes backwards.

A village PC's clock may be wrong by days. Events are ordered by HLC, which follows the wall
clock when it moves forward and a counter when it does not; the hub refuses to *trust* a
timestamp more than ``MAX_CLOCK_SKEW_SECONDS`` ahead of its own (CockroachDB's max-offset
check) and records its own receive time instead. Text form: ``0001763800000000-0000-<node>``,
which sorts correctly as a string.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Timestamp:
    """One HLC reading."""

    wall_ms: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.wall_ms:016d}-{self.counter:04d}-{self.node}"

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse the text form; raises ValueError."""
        wall, counter, node = text.split("-", 2)
        if len(wall) != 16 or len(counter) != 4:
            raise ValueError("malformed HLC timestamp")
        return cls(int(wall), int(counter), node)


class HybridClock:
    """The HLC of one node; thread-safe."""

    def __init__(self, node: str, wall_ms, last: str | None = None):
        self.node = node
        self._wall_ms = wall_ms
        self._last = Timestamp.parse(last) if last else Timestamp(0, 0, node)
        self._lock = threading.Lock()

    def now(self) -> Timestamp:
        """A new timestamp for a local event."""
        with self._lock:
            wall = self._wall_ms()
            if wall > self._last.wall_ms:
                self._last = Timestamp(wall, 0, self.node)
            else:
                self._last = Timestamp(self._last.wall_ms, self._last.counter + 1, self.node)
            return self._last

    def observe(self, remote: str | Timestamp) -> None:
        """Move past a timestamp received from a trusted peer (the hub's acknowledgements)."""
        ts = Timestamp.parse(remote) if isinstance(remote, str) else remote
        with self._lock:
            if ts.wall_ms > self._last.wall_ms:
                self._last = Timestamp(ts.wall_ms, ts.counter, self.node)

    @property
    def last(self) -> str:
        """The last timestamp issued, for persisting."""
        return str(self._last)


def skew_ms(remote_hlc: str, local_wall_ms: int) -> int:
    """How far ``remote_hlc`` is ahead of the local wall clock (negative when behind)."""
    return Timestamp.parse(remote_hlc).wall_ms - local_wall_ms
