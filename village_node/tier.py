"""The village room as a tier: it takes applications and decides nothing; results come back down."""

from __future__ import annotations

import sqlite3

from shared.services import casework, origin, retention
from sync.tier import Tier


class VillageTier(Tier):
    """村便民服务室: offline intake; its cases' states follow the custody receipts and the hub's acks."""

    name = "village"
    label = "村便民服务室"
    parent_label = "乡镇便民服务站"
    takes_applications = True
    files_on_behalf = True
    purges_personal_data = True
    # One or two agents on one PC: one malloc arena (no thread contends for it long enough to
    # matter) and a small page cache per connection (each request opens its own, so the cache
    # only serves that request's own re-reads; the rest comes from the OS file cache).
    # docs/performance.md, "The village process".
    malloc_arenas = 1
    gc_young_threshold = 700  # Python's own: 10,000 kept ~2.8 MiB more garbage resident here
    sqlite_cache_kib = 512
    release_db_cache = True  # a village PC's memory: pages are read again from the OS's cache
    # No file batches arrive here (an agent's scan upload spills to a temporary file past it):
    # waitress's own 512 KiB, so open connections cannot fill a small PC's memory.
    request_body_in_memory_bytes = 512 * 1024

    def message_handlers(self, node) -> dict:
        return origin.handlers(node)

    def on_custody(self, conn: sqlite3.Connection, envelope_ids: list[str], custodian: str) -> None:
        casework.mark_in_custody(conn, envelope_ids, custodian)

    def on_acked(self, conn: sqlite3.Connection, node, origin_id: str, acked_seq: int, after_seq: int = 0) -> None:
        casework.mark_own_at_hub(conn, node, acked_seq, after_seq)

    def scheduled_rules(self, node, sync_server=None) -> list:
        return [("retention", lambda conn: retention.run(conn, node))]


TIER = VillageTier()
