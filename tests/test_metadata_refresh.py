"""Unchanged metadata is re-signed before it expires, so nodes never fall back to stale trust."""

from __future__ import annotations

from datetime import timedelta

from city_hub import registry
from city_hub.tier import refresh_metadata as refresh_hub_metadata
from shared.core.clock import Clock, FixedClock
from shared.core.storage import write_transaction


def _versions(handle):
    return dict(handle.query("SELECT role, version FROM trusted_metadata WHERE role != 'root'"))


def test_metadata_is_resigned_at_half_life_and_reaches_the_village(build_network):
    net = build_network(villages=1)
    hub = net.hub
    before = _versions(net.village())
    with write_transaction(hub.conn):
        assert registry.refresh_metadata(hub.conn, hub.node) == []  # fresh: nothing to do
    hub.node.clock = FixedClock(Clock().now() + timedelta(days=16))  # past half of the 30-day TTL
    try:
        refresh_hub_metadata(hub.conn, hub.node)
        latest = {role: registry.latest(hub.conn, role)[0] for role in ("registry", "catalog")}
        assert latest["registry"] > before["registry"] and latest["catalog"] > before["catalog"]
        with write_transaction(hub.conn):
            assert registry.refresh_metadata(hub.conn, hub.node) == []  # renewed once, not every pass
    finally:
        hub.node.clock = Clock()
    net.sync_all()
    after = _versions(net.village())
    assert after["catalog"] == latest["catalog"] and after["registry"] == latest["registry"]
