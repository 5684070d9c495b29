"""What kind of node this is: the behaviour each tier plugs into the shared machinery.

Shared code never asks "which tier am I?". It asks the node's :class:`Tier` for what differs:
its key, its trust and catalog, how its case events travel on, what it does with each kind of
message that arrives, and its scheduled rules. Each tier package subclasses it once
(``city_hub/tier.py``, ``township_node/tier.py``, ``village_node/tier.py``); the base is a node
below the hub that keeps no custody for others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sync import trust as trustmod

NODE_KEY_FILE = "keys/node.pem"
HUB_SIGNING_KEY_FILE = "keys/hub-signing.pem"
ROOT_KEY_FILE = "keys/root.pem"

# handler(conn, body) for one kind of message addressed to this node.
Handler = Callable[[sqlite3.Connection, dict], object]
# emit(conn, case_row, event, decision): how a case event decided here travels on.
Emit = Callable[[sqlite3.Connection, sqlite3.Row, dict, "dict | None"], None]
# rule(conn): one scheduled rule, run by the web process's scheduler and by `liandong hub jobs`.
Rule = Callable[[sqlite3.Connection], object]


def count_rows(conn: sqlite3.Connection, table: str, where: str = "") -> int | None:
    """Rows of ``table`` (``None`` if this database has no such table yet: an older schema read
    as it is, e.g. by ``liandong node status``)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
        return None
    return conn.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0]


class Tier:
    """A node below the hub (village-like): trust and catalog from the hub's signed metadata."""

    name = ""
    key_file = NODE_KEY_FILE
    label = ""  # the tier's name on pages, e.g. 村便民服务室
    parent_label = ""  # what its parent is called on pages
    takes_applications = False  # intake here: 办事指南, 收件, 我的办件
    intake_label = "我的办件"  # the list of the cases taken here
    files_on_behalf = False  # applications are 代办, taken under the villager's 委托
    decides = False  # some cases are decided here (see deciding_scope)
    ingests = False  # envelopes end their journey here: verified, chained, acknowledged, applied (the hub)
    supervises = False  # 电子监察 here: complaints answered, 回访 of bad ratings (the county hub)
    records_site_visits = False  # 现场核查 is recorded here (the township)
    relays_villages = False  # the cases of the villages below are relayed here (the township; need-to-know reads)
    publishes_appointments = False  # its windows publish 预约 slots and decide requests (the hub)
    purges_personal_data = False  # closed cases' personal data leaves this PC after the retention time (the village)
    # Memory of the node's process where the settings MALLOC_ARENAS / SQLITE_CACHE_KIB /
    # GC_YOUNG_THRESHOLD are empty (docs/operations.md, "Memory"): a township or hub serves many
    # callers at once.
    malloc_arenas = 2  # glibc malloc arenas of `liandong node serve` (Linux)
    # Python's youngest generation collected every this many new objects (Python's own: 700): a
    # push of 200 envelopes allocates enough for several collections at 700.
    gc_young_threshold = 10000
    sqlite_cache_kib: int | None = None  # page cache of each SQLite connection; None: SQLite's 2,000 KiB
    # Free a kept connection's page cache after each request (PRAGMA shrink_memory): the serving
    # thread keeps the connection (no schema parse per request) but not its pages in memory.
    release_db_cache = False
    # Statement journals in memory (PRAGMA temp_store=MEMORY): a batch written inside a savepoint
    # (a township's push, its cases followed) journals every page it first touches, which went
    # to a temporary file past 64 KiB, a write(2) per page. Off where memory is tight (a village).
    sqlite_temp_in_memory = False
    # A request body up to this size stays in memory while waitress receives it (its
    # ``inbuf_overflow``); a larger one goes to a temporary file. A township or hub receives file
    # batches of 4 MiB, which the app reads whole anyway. The bound is per connection, before
    # anyone is authenticated: waitress's 100 connections could hold 100 times it.
    request_body_in_memory_bytes = 8 * 1024 * 1024

    def hub_id(self, config) -> str | None:
        """The county hub's code this node belongs to."""
        return config.get("HUB_ID")

    def trust_version(self, conn: sqlite3.Connection) -> object:
        """A value that changes whenever the trust store must be rebuilt."""
        return conn.execute(
            "SELECT group_concat(role || ':' || version) FROM trusted_metadata WHERE role IN ('root', 'registry')"
        ).fetchone()[0]

    def load_trust(self, conn: sqlite3.Connection, node) -> trustmod.TrustStore | None:
        """The trust store built from this node's database."""
        return trustmod.load_node_trust(conn)

    def catalog(self, conn: sqlite3.Connection) -> tuple[int, dict[str, dict]]:
        """(version, {code: item}) of the catalog this node goes by now."""
        return trustmod.trusted_catalog(conn)

    def catalog_item(self, conn: sqlite3.Connection, code: str, version: int | None = None) -> dict | None:
        """The item of a case filed under catalog ``version`` (a node below the hub holds only the current one)."""
        return self.catalog(conn)[1].get(code)

    def things(self, conn: sqlite3.Connection) -> dict[str, dict]:
        """``{code: thing}``: the 一件事 bundles of the catalog this node goes by now."""
        return trustmod.trusted_things(conn)

    def deciding_scope(self, node) -> tuple[str, str] | None:
        """(route level, office LIKE pattern) of the cases this node decides (``None``: none)."""
        return None

    def emitter(self, node) -> Emit | None:
        """How a case event decided at this node travels on (``None``: this node decides nothing)."""
        return None

    def relay(self, node):
        """The custody relay of a node that keeps envelopes for nodes below it (``None``: none)."""
        return None

    def message_handlers(self, node) -> dict[str, Handler]:
        """What this node does with each kind of downlink message addressed to it."""
        return {}

    def on_custody(self, conn: sqlite3.Connection, envelope_ids: list[str], custodian: str) -> None:
        """The parent ``custodian`` holds these envelopes of this node (custody receipt verified)."""

    def on_acked(self, conn: sqlite3.Connection, node, origin: str, acked_seq: int, after_seq: int = 0) -> None:
        """The hub acknowledged ``origin``'s envelopes up to ``acked_seq`` (ack verified); for this
        node's own chain, ``after_seq`` is what the previous acknowledgement covered."""

    def queue_counts(self, conn: sqlite3.Connection) -> dict[str, int | None]:
        """What waits in this node's queues: what an operator watches grow when something is
        stuck (``liandong node status``, ``/healthz``, ``/metrics``)."""
        return {"outbox_unacked": count_rows(conn, "outbox", "WHERE state != 'acked'")}

    def scheduled_rules(self, node, sync_server=None) -> list[tuple[str, Rule]]:
        """(name, rule) of this node's periodic rules, in the order they run."""
        return []
