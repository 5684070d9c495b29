"""The push size adapts to the link (sync/node_sync.py ``push_size``, ``next_push_size``):
SYNC_BATCH at first, doubled after a full push answered fast, halved after a slow one, back to
SYNC_BATCH after a failure, never above SYNC_BATCH_MAX (docs/sync-protocol.md §5.3)."""

from __future__ import annotations

import pytest
from faults import city_item
from network import create_case

from sync import outbox
from sync.node_sync import SyncState, next_push_size, push_size, run_round


@pytest.mark.parametrize(("size", "pushed", "seconds", "expected"), [
    (200, 200, 0.3, 400),   # a full push answered within half the target: doubled
    (800, 800, 0.3, 1000),  # never above the top
    (400, 150, 0.3, 400),   # not full (the backlog is gone): kept
    (400, 400, 1.5, 400),   # full, between half the target and the target: kept
    (800, 800, 2.5, 400),   # slower than the target: halved
    (200, 200, 9.0, 200),   # never below the floor
])
def test_the_next_push_size(size, pushed, seconds, expected):
    assert next_push_size(size, pushed, seconds, target=2.0, floor=200, top=1000) == expected


def _queue(village, n: int) -> None:
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for _ in range(n):
        create_case(village, agent, item)


def _push_sizes(village, state: SyncState) -> list[int]:
    sizes = []
    while outbox.counts(village.conn)["pending"]:
        summary = run_round(village.conn, village.node, state, force=True)
        assert "error" not in summary, summary
        sizes.append(summary["pushed"])
    return sizes


def _village(net, monkeypatch, push_seconds: float):
    """The network's village pushing 4 envelopes at first, at most 16, one push a round (pushing
    ahead, a round would carry the whole backlog: tests/test_push_ahead.py)."""
    village = net.village()
    for name, value in (("SYNC_BATCH", 4), ("SYNC_BATCH_MAX", 16), ("SYNC_PUSH_SECONDS", push_seconds),
                        ("SYNC_PUSH_AHEAD", False)):
        monkeypatch.setitem(village.node.config, name, value)
    return village


def test_a_backlog_on_a_fast_link_drains_in_growing_pushes(build_network, monkeypatch):
    village = _village(build_network(villages=1), monkeypatch, 60.0)
    _queue(village, 40)
    state = SyncState()
    assert _push_sizes(village, state) == [4, 8, 16, 12]
    assert push_size(village.node, state) == 16  # the last push was not full: the size is kept


def test_a_slow_link_keeps_small_pushes(build_network, monkeypatch):
    village = _village(build_network(villages=1), monkeypatch, 0.000001)  # every push is "slow"
    _queue(village, 12)
    assert _push_sizes(village, SyncState()) == [4, 4, 4]


def test_a_failed_push_starts_small_again(build_network, monkeypatch):
    net = build_network(villages=1)
    village = _village(net, monkeypatch, 60.0)
    _queue(village, 4)
    state = SyncState(batch=16)
    net.township.stop()
    try:
        assert "error" in run_round(village.conn, village.node, state, force=True)
    finally:
        net.township.start()
    assert push_size(village.node, state) == 4
    assert _push_sizes(village, state) == [4]
