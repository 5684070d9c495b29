"""The runtime of one node, independent of Flask: identity, keys, clock, blobs, trust.

A web app, a scheduler job and a CLI command each build one :class:`Node` from the node's
settings and share it; per-request database connections come from the package's ``db``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from shared.core.clock import Clock
from shared.core.crypto import SigningKey
from shared.rules.workdays import WorkCalendar, load_schedule
from sync import trust as trustmod
from sync.blobs import BlobStore
from sync.hlc import HybridClock
from sync.nodeauth import NonceSource
from sync.tier import HUB_SIGNING_KEY_FILE, NODE_KEY_FILE, ROOT_KEY_FILE, Tier

__all__ = ["Node", "HUB_SIGNING_KEY_FILE", "NODE_KEY_FILE", "ROOT_KEY_FILE"]


class Node:
    """Identity and shared machinery of one running node."""

    def __init__(self, config, data_dir: str | Path, kind: Tier):
        self.config = config
        self.data_dir = Path(data_dir)
        self.node_id: str = config["NODE_ID"]
        self.kind = kind  # what this tier does differently (sync/tier.py)
        self.tier: str = kind.name
        if config["TIER"] != kind.name:
            raise ValueError(f"{data_dir} holds a {config['TIER']} node, not a {kind.name}")
        self.hub_id: str | None = kind.hub_id(config)
        self.clock = Clock.from_settings(config.get("CLOCK_START"), config.get("CLOCK_SPEED", 1.0))
        self.hlc = HybridClock(self.node_id, self.wall_ms)
        self.nonces = NonceSource(self.wall_ms, self.data_dir / "keys" / "nonce")
        # Small material files are rows of the node's database, the others files (sync/blobs.py).
        self.blobs = BlobStore(self.data_dir / "blobs", self.data_dir / config["DATABASE"],
                               int(config["BLOB_INLINE_MAX_BYTES"]))
        self.calendar = WorkCalendar(load_calendar_overrides(self.data_dir))
        self._key: SigningKey | None = None
        self._trust: trustmod.TrustStore | None = None
        self._trust_version: object = None
        self._lock = threading.Lock()
        self.emit = kind.emitter(self)  # how a case event decided here travels on (None: decides nothing)
        self.relay = kind.relay(self)  # custody for the nodes below (None: keeps none)
        self.handlers = kind.message_handlers(self)  # downlink message kind -> handler

    def wall_ms(self) -> int:
        """Milliseconds since the epoch by this node's clock."""
        return int(self.clock.now().timestamp() * 1000)

    def now(self):
        """The node's current time (aware UTC)."""
        return self.clock.now()

    @property
    def key(self) -> SigningKey:
        """This node's signing key: the hub's online signing key, or the node's own key."""
        if self._key is None:
            self._key = SigningKey.load(self.data_dir / self.kind.key_file)
        return self._key

    def reload_key(self) -> None:
        """Forget the cached key (after a rotation)."""
        self._key = None

    def trust(self, conn: sqlite3.Connection) -> trustmod.TrustStore | None:
        """The current trust store, rebuilt only when the registry version changes."""
        version = self.kind.trust_version(conn)
        with self._lock:
            if self._trust is None or version != self._trust_version:
                self._trust = self.kind.load_trust(conn, self)
                self._trust_version = version
            return self._trust

    def catalog(self, conn: sqlite3.Connection) -> tuple[int, dict[str, dict]]:
        """(version, {code: item}) of the catalog this node goes by now."""
        return self.kind.catalog(conn)

    def catalog_item(self, conn: sqlite3.Connection, code: str, version: int | None = None) -> dict | None:
        """The catalog item of a case (filed under ``version`` where the node still holds it)."""
        return self.kind.catalog_item(conn, code, version)

    def things(self, conn: sqlite3.Connection) -> dict[str, dict]:
        """``{code: thing}``: the 一件事 bundles of the catalog this node goes by now."""
        return self.kind.things(conn)

    def forget_trust(self) -> None:
        """Drop the cached trust store (after enrolment or a registry change)."""
        with self._lock:
            self._trust = None


def load_calendar_overrides(data_dir: Path) -> dict[int, dict]:
    """Holiday schedules an admin loaded into ``<data>/calendar/<year>.json``."""

    folder = Path(data_dir) / "calendar"
    schedules: dict[int, dict] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            schedule = load_schedule(path)
            schedules[schedule["year"]] = schedule
    return schedules
