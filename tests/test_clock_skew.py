"""Wrong PC clocks (issue 3 item 2): a village days off still works; the hub never trusts the future.

The village's clock is set with the node setting ``CLOCK_START`` (what a PC with a wrong clock
looks like to the software). Its envelopes are accepted; the hub records a ``clock_ahead``
note for a timestamp beyond ``MAX_CLOCK_SKEW_SECONDS``; after a pull the village knows its
offset from its parent (``node_meta.clock_skew_ms``, behind the wrong-clock banner).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from faults import city_item, new_case, outbox_states

from shared.core.clock import iso, parse_iso

DAY_MS = 24 * 3600 * 1000
TOLERANCE_MS = 120 * 1000


def set_clock(handle, offset: timedelta) -> None:
    """Restart the node with its clock ``offset`` away from the real time."""
    handle.close()
    with open(handle.data_dir / "config.py", "a", encoding="utf-8") as fh:
        fh.write(f"CLOCK_START = {iso(datetime.now(UTC) + offset)!r}\n")
    handle.app = None
    handle.serve()


def _skew(village) -> int:
    return int(village.scalar("SELECT value FROM node_meta WHERE key = 'clock_skew_ms'"))


def _clock_notes(hub, origin: str) -> list[tuple]:
    return [tuple(r) for r in hub.query(
        "SELECT seq, reason FROM quarantine WHERE origin = ? ORDER BY seq", (origin,))]


def _case_from_three_days_ahead(build_network):
    """A network whose village clock is 3 days ahead, and one city case synced from it."""
    net = build_network(villages=1)
    village = net.village()
    set_clock(village, timedelta(days=3))
    agent = village.account("agent", "agent")
    receipt, _ = new_case(village, agent, city_item(village, agent))
    net.sync_all()
    return net, village, receipt


def test_a_village_three_days_ahead_is_accepted_and_noted(build_network):
    net, village, receipt = _case_from_three_days_ahead(build_network)

    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 1
    assert _clock_notes(net.hub, village.node_id) == [(1, "clock_ahead")]
    assert outbox_states(village) == {1: "acked"}
    assert abs(_skew(village) - 3 * DAY_MS) < TOLERANCE_MS


def test_the_hub_does_not_trust_a_time_from_the_future(build_network):
    net, village, receipt = _case_from_three_days_ahead(build_network)
    submitted = parse_iso(net.hub.scalar("SELECT submitted_at FROM cases WHERE case_id = ?", (receipt["case_id"],)))
    assert submitted <= net.hub.node.now() + timedelta(seconds=600)


def test_a_village_three_days_behind_works(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    new_case(village, agent, item)
    net.sync_all()  # requests signed with a correct clock first: the township remembers their nonces
    assert outbox_states(village) == {1: "acked"}

    set_clock(village, timedelta(days=-3))  # the CMOS battery died
    receipt, _ = new_case(village, agent, item)
    net.sync_all()
    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (receipt["case_id"],)) == 1
    assert outbox_states(village) == {1: "acked", 2: "acked"}
    assert _clock_notes(net.hub, village.node_id) == []
    assert abs(_skew(village) + 3 * DAY_MS) < TOLERANCE_MS
    # The village's HLC moved past the parent's time: its next event does not sort before the hub's.
    assert village.node.hlc.now().wall_ms >= net.hub.node.wall_ms() - TOLERANCE_MS


def test_nonces_stay_above_every_one_given_across_a_restart_with_the_clock_gone_back(tmp_path, monkeypatch):
    """The bound in the file is written a reserve ahead, once, not per request; a node started
    again (its clock now three days behind) still signs above every nonce it gave before."""
    import os as os_module

    from sync import nodeauth

    writes = []
    replace = os_module.replace
    monkeypatch.setattr(nodeauth.os, "replace", lambda a, b: (writes.append(b), replace(a, b)))
    now = [1_800_000_000_000]
    source = nodeauth.NonceSource(lambda: now[0], tmp_path / "nonce")
    given = [source.next() for _ in range(100)]
    assert given == sorted(set(given)) and len(writes) == 1  # strictly increasing; one write
    now[0] += nodeauth.NonceSource.RESERVE + 1  # past the bound: written again
    given += [source.next() for _ in range(10)]
    assert len(writes) == 2
    restarted = nodeauth.NonceSource(lambda: now[0] - 3 * DAY_MS, tmp_path / "nonce")
    assert restarted.next() > max(given)
