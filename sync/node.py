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
from shared.rules.workdays import WorkCalendar
from sync import trust as trustmod
from sync.blobs import BlobStore
from sync.hlc import HybridClock
from sync.nodeauth import NonceSource

TIERS = ("hub", "township", "village")
NODE_KEY_FILE = "keys/node.pem"
HUB_SIGNING_KEY_FILE = "keys/hub-signing.pem"
ROOT_KEY_FILE = "keys/root.pem"


class Node:
    """Identity and shared machinery of one running node."""

    def __init__(self, config, data_dir: str | Path):
        self.config = config
        self.data_dir = Path(data_dir)
        self.node_id: str = config["NODE_ID"]
        self.tier: str = config["TIER"]
        self.hub_id: str = config.get("HUB_ID") or (self.node_id if self.tier == "hub" else None)
        self.clock = Clock.from_settings(config.get("CLOCK_START"), config.get("CLOCK_SPEED", 1.0))
        self.hlc = HybridClock(self.node_id, self.wall_ms)
        self.nonces = NonceSource(self.wall_ms, self.data_dir / "keys" / "nonce")
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.calendar = WorkCalendar(load_calendar_overrides(self.data_dir))
        self.emit = None  # set by deciding nodes: how a case event travels on
        self._key: SigningKey | None = None
        self._trust: trustmod.TrustStore | None = None
        self._trust_version: object = None
        self._lock = threading.Lock()

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
            name = HUB_SIGNING_KEY_FILE if self.tier == "hub" else NODE_KEY_FILE
            self._key = SigningKey.load(self.data_dir / name)
        return self._key

    def reload_key(self) -> None:
        """Forget the cached key (after a rotation)."""
        self._key = None

    def trust(self, conn: sqlite3.Connection) -> trustmod.TrustStore | None:
        """The current trust store, rebuilt only when the registry version changes."""
        if self.tier == "hub":
            from city_hub.registry import hub_trust, registry_version

            version = registry_version(conn)
            loader = lambda: hub_trust(conn, self)  # noqa: E731
        else:
            row = conn.execute(
                "SELECT group_concat(role || ':' || version) AS v FROM trusted_metadata WHERE role IN ('root', 'registry')"
            ).fetchone()
            version = row["v"]
            loader = lambda: trustmod.load_node_trust(conn)  # noqa: E731
        with self._lock:
            if self._trust is None or version != self._trust_version:
                self._trust = loader()
                self._trust_version = version
            return self._trust

    def forget_trust(self) -> None:
        """Drop the cached trust store (after enrolment or a registry change)."""
        with self._lock:
            self._trust = None


def load_calendar_overrides(data_dir: Path) -> dict[int, dict]:
    """Holiday schedules an admin loaded into ``<data>/calendar/<year>.json``."""
    from shared.rules.workdays import load_schedule

    folder = Path(data_dir) / "calendar"
    schedules: dict[int, dict] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            schedule = load_schedule(path)
            schedules[schedule["year"]] = schedule
    return schedules
