"""The township station as a tier: custody for its villages, window intake, delegated decisions."""

from __future__ import annotations

import sqlite3

from shared.services import casework, joint, origin, supervision, things
from sync import blobs
from sync.tier import Tier, count_rows
from township_node.relay_service import TownshipSync, township_emit


class TownshipRelay:
    """What the township makes of the hub's downlink it relays to its villages."""

    def __init__(self, node):
        self.node = node

    def follow(self, conn: sqlite3.Connection, message: dict) -> None:
        """A verified hub message for a village below: the station follows that village's case
        (one still in its follow queue, a backlog's: once it is followed, relay_service.py)."""
        if message["kind"] == "case.update":
            case_id = message["body"]["case_id"]
            # The queue first: nearly always empty, so the usual message costs one index probe more.
            if (conn.execute("SELECT 1 FROM follow_queue WHERE case_id = ?", (case_id,)).fetchone()
                    and conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)).fetchone() is None):
                conn.execute("INSERT INTO follow_waiting(issuer, dest, seq, case_id) VALUES (?,?,?,?)"
                             " ON CONFLICT DO NOTHING", (message["issuer"], message["dest"], message["seq"], case_id))
                return
            casework.apply_update(conn, message["body"], self.node.trust(conn))
            # 一件事: a hub decision may start (or end) a later step this station decides.
            things.on_status(conn, self.node, case_id, message["body"]["event"]["action"],
                             self.node.emit)


class TownshipTier(Tier):
    """乡镇便民服务站: keeps its villages' envelopes in custody, takes window cases, decides delegated items."""

    name = "township"
    label = "乡镇便民服务站"
    parent_label = "市（县）政务服务中心"
    takes_applications = True
    intake_label = "窗口收件"
    decides = True
    records_site_visits = True
    relays_villages = True
    publishes_appointments = True  # its own window's 预约, decided as custody takes the requests
    sqlite_temp_in_memory = True  # each push writes its cases inside savepoints (sync/tier.py)

    def deciding_scope(self, node) -> tuple[str, str]:
        """(route level, office LIKE pattern) of the cases this node decides: its own delegated items."""
        return "township", node.node_id

    def emitter(self, node):
        return township_emit(node)

    def relay(self, node) -> TownshipRelay:
        return TownshipRelay(node)

    def message_handlers(self, node) -> dict:
        return origin.handlers(node)  # its own window cases

    def on_custody(self, conn: sqlite3.Connection, envelope_ids: list[str], custodian: str) -> None:
        casework.mark_in_custody(conn, envelope_ids, custodian)

    def on_acked(self, conn: sqlite3.Connection, node, origin_id: str, acked_seq: int, after_seq: int = 0) -> None:
        if origin_id == node.node_id:
            casework.mark_own_at_hub(conn, node, acked_seq, after_seq)
        else:
            casework.mark_origin_at_hub(conn, node, origin_id)

    def queue_counts(self, conn: sqlite3.Connection) -> dict:
        return {**super().queue_counts(conn), "custody": count_rows(conn, "custody"),
                "follow_queue": count_rows(conn, "follow_queue")}

    def scheduled_rules(self, node, sync_server=None) -> list:
        """The station's rules, in order: what custody queued is followed first (also with no
        village calling after a restart), so the rules see every case."""
        service = sync_server if sync_server is not None else TownshipSync(node)
        return [
            ("follow_queue", service.follow_all),
            ("supervision", lambda conn: supervision.run(conn, node, node.emit)),
            ("joint", lambda conn: joint.run_scheduled(conn, node, node.emit)),
            ("blob_parking", blobs.parking_rule(node)),
        ]


TIER = TownshipTier()
