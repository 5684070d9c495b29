"""The county hub as a tier: its key, trust and catalog, how its decisions travel, its rules."""

from __future__ import annotations

import sqlite3

from city_hub import projects, registry, regulation
from city_hub.ingest import apply_all_queued, make_appliers, notify_origin
from city_hub.oversight import facts as case_facts
from shared.core.storage import write_transaction
from shared.services import joint, supervision
from sync import blobs
from sync import trust as trustmod
from sync.tier import HUB_SIGNING_KEY_FILE, Tier, count_rows


def refresh_metadata(conn: sqlite3.Connection, node) -> list[str]:
    """Keep the hub's signed metadata from expiring (re-signed at half-life); the roles renewed."""
    with write_transaction(conn):
        refreshed = registry.refresh_metadata(conn, node)
    if refreshed:
        node.forget_trust()
    return refreshed


class HubTier(Tier):
    """市(县)政务服务中心: signs with its online key, decides city items, keeps the registry."""

    name = "hub"
    key_file = HUB_SIGNING_KEY_FILE
    label = "市（县）政务服务中心"
    decides = True
    ingests = True
    supervises = True
    publishes_appointments = True

    def hub_id(self, config) -> str:
        return config["NODE_ID"]

    def trust_version(self, conn: sqlite3.Connection) -> object:
        return registry.registry_version(conn)

    def load_trust(self, conn: sqlite3.Connection, node) -> trustmod.TrustStore:
        return registry.hub_trust(conn, node)

    def catalog(self, conn: sqlite3.Connection) -> tuple[int, dict[str, dict]]:
        return registry.current_catalog(conn)

    def catalog_item(self, conn: sqlite3.Connection, code: str, version: int | None = None) -> dict | None:
        """The version the case was filed under where the hub still has it, else the current one."""
        current, items = registry.current_catalog(conn)
        if version and version != current:
            older = registry.published_catalog(conn, version)
            if older is not None and code in older:
                return older[code]
        return items.get(code)

    def things(self, conn: sqlite3.Connection) -> dict[str, dict]:
        return registry.current_things(conn)

    def deciding_scope(self, node) -> tuple[str, str]:
        """(route level, office LIKE pattern) of the cases this node decides: every city office."""
        return "city", "%"

    def emitter(self, node):
        return lambda conn, row, event, decision: notify_origin(conn, node, row, event, decision)

    def appliers(self, node) -> dict:
        """What the hub does with each kind of envelope it ingests (city_hub/ingest.py)."""
        return make_appliers(node)

    def queue_counts(self, conn: sqlite3.Connection) -> dict:
        return {"apply_queue": count_rows(conn, "apply_queue"),
                "quarantine": count_rows(conn, "quarantine", "WHERE resolved_at IS NULL")}

    def scheduled_rules(self, node, sync_server=None) -> list[tuple[str, object]]:
        """The hub's rules, in order: the apply queue first, so the rules see every accepted case."""
        appliers = sync_server.appliers if sync_server is not None else make_appliers(node)
        return [
            ("apply_queue", lambda conn: apply_all_queued(conn, node, appliers)),
            ("supervision", lambda conn: supervision.run(conn, node, node.emit)),
            ("metadata", lambda conn: refresh_metadata(conn, node)),
            ("joint", lambda conn: joint.run_scheduled(conn, node, node.emit)),
            ("regulation", lambda conn: regulation.run_scheduled(conn, node)),
            ("case_facts", lambda conn: case_facts.run_scheduled(conn, node)),
            ("deemed_done", lambda conn: projects.run_deemed_done(conn, node)),  # 超时默认 (seed 004 §8)
            ("blob_parking", blobs.parking_rule(node)),
        ]


TIER = HubTier()
