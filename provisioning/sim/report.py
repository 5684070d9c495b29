"""The count at the end: what reached the hub, what was lost, duplicated or wrongly accepted,
whether the county is quiescent, and progress lines while it runs.
"""

from __future__ import annotations

import json
from collections import Counter

from provisioning.sim.county import DECIDED
from shared.core import storage
from sync import envelope


class Report:
    """Counting the county (a part of :class:`provisioning.sim.loop.Simulation`)."""

    def diagnose(self, vid: str) -> str:
        """Where each unacknowledged envelope of a village is: village, township custody, hub."""
        village = self.villages[vid]
        with village.lock:
            rows = village.conn.execute(
                "SELECT seq, envelope_id, state FROM outbox WHERE state != 'acked' ORDER BY seq").fetchall()
        township = self.townships[village.township_id].data_dir
        parts = [f"last error {village.state.last_error!r}"]
        for r in rows[:5]:
            custody = self._scalar(township, "SELECT COUNT(*) FROM custody WHERE envelope_id = ?", (r["envelope_id"],))
            inbox = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM inbox WHERE origin = ? AND seq = ?"
                                 " AND envelope_id = ?", (vid, r["seq"], r["envelope_id"]))
            held = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM held WHERE envelope_id = ?", (r["envelope_id"],))
            ack = self._scalar(self.hub.data_dir, "SELECT acked_seq FROM origin_heads WHERE origin = ?", (vid,))
            parts.append(f"seq {r['seq']} {r['state']}: custody {custody}, hub inbox {inbox}, held {held}, hub ack {ack}")
        return "; ".join(parts)

    def _hub_inbox_count(self, origin: str) -> int:
        return self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM inbox WHERE origin = ?", (origin,))

    def progress(self) -> None:
        at_hub = self._scalar(self.hub.data_dir, "SELECT COUNT(*) FROM cases")
        decided = self._scalar(self.hub.data_dir,
                               "SELECT COUNT(*) FROM cases WHERE status IN ('APPROVED','DENIED','NOT_ACCEPTED')")
        pending = sum(v.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]
                      for v in self.villages.values())
        down = ",".join(sorted(self.down)) or "-"
        self.say(f"created {len(self.created) + len(self.after_revocation)}/{self.cfg.cases}  at hub {at_hub}"
                 f"  decided {decided}  village unacked {pending}  down {down}  {self.stats.snapshot()}")

    def waiting_for(self) -> str | None:
        """What the county is still waiting for (None: quiescent): nothing queued anywhere,
        nothing undecided, every decision back at its village."""
        for v in self.villages.values():
            if v.node_id == self.revoked:
                continue
            with v.lock:
                n = v.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]
            if n:
                return f"{n} unacknowledged envelopes at {v.node_id} ({v.state.last_error or 'no error'})"
        for t in self.townships.values():
            # Envelopes of the revoked node that a township took before it learnt of the revocation
            # are refused by the hub and never acknowledged: counted apart (``custody_stuck``).
            n = self._scalar(t.data_dir, "SELECT COUNT(*) FROM custody WHERE origin IS NOT ?", (self.revoked,))
            if n:
                return f"{n} envelopes in custody at {t.node_id}"
            n = self._scalar(t.data_dir, "SELECT COUNT(*) FROM outbox WHERE state != 'acked'")
            if n:
                return f"{n} unacknowledged envelopes of {t.node_id} itself"
            n = self._scalar(t.data_dir, "SELECT COUNT(*) FROM follow_queue")
            if n:
                return f"{n} envelopes not yet followed in the register of {t.node_id}"
        counts = self.count()
        if counts["cases_at_hub"] != len(self.created):
            return f"{len(self.created) - counts['cases_at_hub']} cases not at the hub"
        if counts["undecided"]:
            return f"{counts['undecided']} cases not decided yet"
        if counts["decisions_missing"]:
            return f"{counts['decisions_missing']} decisions not back at their village"
        return None

    def count(self) -> dict:
        hub = storage.connect(self.hub.data_dir / "node.sqlite3")
        try:
            hub_cases = {r["case_id"]: dict(r) for r in hub.execute(
                "SELECT case_id, origin, status, decision, route_level, receipt_no FROM cases")}
            submits = Counter()
            inbox_ids = set()
            for r in hub.execute("SELECT envelope_id, kind, document FROM inbox"):
                inbox_ids.add(r["envelope_id"])
                if r["kind"] == "case.submit":
                    submits[envelope.peek(envelope.from_bytes(r["document"]))["body"]["case_id"]] += 1
            revoked_after = None
            if self.revoked:
                revoked_after = hub.execute("SELECT revoked_after_seq FROM nodes WHERE node_id = ?",
                                            (self.revoked,)).fetchone()[0]
                revoked_inbox = hub.execute("SELECT COUNT(*) FROM inbox WHERE origin = ? AND seq > ?",
                                            (self.revoked, revoked_after)).fetchone()[0]
            else:
                revoked_inbox = 0
            quarantine = dict(hub.execute(
                "SELECT reason, COUNT(*) FROM quarantine GROUP BY reason").fetchall())
        finally:
            hub.close()
        decisions: dict[str, dict] = {}  # case_id -> decision at the deciding node
        undecided = 0
        for cid, row in hub_cases.items():
            if row["route_level"] == "city" and cid in self.created:
                if row["decision"]:
                    decisions[cid] = json.loads(row["decision"])
                elif row["status"] not in DECIDED and row["origin"] != self.revoked:
                    undecided += 1
        for t in self.townships.values():
            conn = storage.connect(t.data_dir / "node.sqlite3")
            try:
                for r in conn.execute("SELECT case_id, status, decision, origin FROM cases WHERE route_level = 'township'"):
                    if r["case_id"] not in self.created:
                        continue
                    if r["decision"]:
                        decisions[r["case_id"]] = json.loads(r["decision"])
                    elif r["origin"] != self.revoked:
                        undecided += 1
            finally:
                conn.close()
        returned = missing = repeated = 0
        for v in self.villages.values():
            if v.node_id == self.revoked:
                continue
            with v.lock:
                rows = v.conn.execute("SELECT case_id, decision FROM cases").fetchall()
                repeated += v.conn.execute(
                    "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM case_events"
                    " WHERE action IN ('approve', 'deny', 'reject') GROUP BY case_id)").fetchone()[0]
            for r in rows:
                if r["case_id"] not in decisions:
                    continue
                back = json.loads(r["decision"]) if r["decision"] else None
                if back is not None and back.get("result") == decisions[r["case_id"]].get("result"):
                    returned += 1
                else:
                    missing += 1
        custody_stuck = sum(self._scalar(t.data_dir, "SELECT COUNT(*) FROM custody") for t in self.townships.values())
        expected = set(self.created)
        at_hub = expected & set(hub_cases)
        unknown = set(hub_cases) - expected - set(self.after_revocation) - self.forged_cases
        duplicated = sum(n - 1 for n in submits.values() if n > 1) + repeated + len(unknown)
        skewed = {v.node_id for v in self.villages.values() if v.skew_days}
        return {
            "cases_created": len(self.created) + len(self.after_revocation),
            "cases_at_hub": len(at_hub),
            "lost": len(expected - at_hub),
            "duplicated": duplicated,
            "decisions_made": len(decisions),
            "decisions_returned": returned,
            "decisions_missing": missing,
            "undecided": undecided,
            "forged_sent": self.stats.snapshot().get("forged.sent", 0),
            "forged_accepted": len(self.forged_ids & inbox_ids) + len(self.forged_cases & set(hub_cases)),
            "replayed_sent": self.replayed_sent,
            "replayed_accepted": self.replayed_accepted,
            "revoked_node": self.revoked,
            "revoked_after_seq": revoked_after,
            "revoked_created": len(self.after_revocation),
            "revoked_accepted": len(set(self.after_revocation) & set(hub_cases)) + revoked_inbox,
            "skewed_villages": len(skewed),
            "skewed_cases_at_hub": sum(1 for c in at_hub if self.created[c] in skewed),
            "skewed_cases_created": sum(1 for o in self.created.values() if o in skewed),
            "hub_quarantine": quarantine,
            "custody_stuck": custody_stuck,
        }


def failed(summary: dict) -> bool:
    """True if the run lost, duplicated or wrongly accepted anything."""
    return bool(summary["lost"] or summary["duplicated"] or summary["forged_accepted"]
                or summary["replayed_accepted"] or summary["revoked_accepted"]
                or summary.get("decisions_missing"))
