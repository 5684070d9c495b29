"""Attacks the county must refuse: forged envelopes (an unenrolled key; a real key claiming
another origin), replayed envelopes and HTTP requests, and a village revoked mid-run that keeps
taking cases.
"""

from __future__ import annotations

import os
import time

import requests

from city_hub.lifecycle import revoke
from provisioning import nodes
from provisioning.sim.county import HUB_ID, Village, random_id_number, random_phone
from shared.core import canonical, storage
from shared.core.clock import Clock, iso
from shared.core.crypto import SigningKey
from sync import envelope, hlc
from sync.client import ParentClient
from sync.node_sync import SyncState, run_round
from sync.nodeauth import sign_request


class Attacks:
    """Forged, replayed and revoked senders (a part of :class:`provisioning.sim.loop.Simulation`)."""

    def _direct_client(self, village: Village, base_url: str, server_id: str) -> ParentClient:
        """The village's own key, talking straight to ``base_url`` (an attacker on the path has it)."""
        return ParentClient(base_url, server_id, village.node_id, village.node.key, village.node.nonces, timeout=20)

    def forge(self) -> None:
        """Envelopes the county must refuse: an unenrolled key; a real key claiming another origin."""
        villages = [v for v in self.villages.values() if v.node_id != self.revoked]
        signer = self.rng.choice([v for v in villages if v.township_id not in self.down] or villages)
        target = self.rng.choice([v for v in villages if v is not signer])
        hub_head = self._hub_head(target.node_id)
        forged = []
        for key, claimed_origin in ((SigningKey.generate(), target.node_id), (signer.node.key, target.node_id)):
            case_id = os.urandom(16).hex()
            body = {"case_id": case_id, "receipt_no": f"{claimed_origin}-forged", "item_code": target.items[0]["code"],
                    "item_name": target.items[0]["name"], "catalog_version": 1, "limit_wd": 1,
                    "route": {"level": "city", "office": f"{HUB_ID}-rs"},
                    "applicant": {"name": "冒名", "id_number": random_id_number(self.rng), "phone": random_phone(self.rng)},
                    "form": {}, "materials": [], "agent": "forger", "submitted_at": iso(Clock().now())}
            document = envelope.sign(key, envelope.ENVELOPE, {
                "v": 1, "origin": claimed_origin, "seq": hub_head + 1, "prev": "0" * 64, "hlc": _hlc_now(), "kind": "case.submit", "body": body, "attachments": []})
            forged.append(document)
            self.forged_ids.add(envelope.document_id(document))
            self.forged_cases.add(case_id)
        for document in forged:
            for base_url, server_id in ((self.hub.url, HUB_ID),
                                        (self.townships[signer.township_id].url, signer.township_id)):
                try:
                    answer = self._direct_client(signer, base_url, server_id).push([document])
                    status = answer.get("results", [{}])[0].get("status")
                except Exception as exc:  # noqa: BLE001 - a refusal at the door is what we want
                    status = f"refused ({str(exc)[:60]})"
                self.stats.add("forged.sent")
                self.say(f"forged envelope for {target.node_id} pushed to {server_id}: {status}")

    def replay(self) -> bool:
        """Old envelopes pushed again, and a captured HTTP request sent a second time."""
        candidates = [v for v in self.villages.values() if v.node_id != self.revoked]
        self.rng.shuffle(candidates)
        done = 0
        for village in candidates:
            with village.lock:
                rows = village.conn.execute(
                    "SELECT seq, document FROM outbox WHERE state = 'acked' ORDER BY seq LIMIT 2").fetchall()
            if not rows:
                continue
            old = [envelope.from_bytes(r["document"]) for r in rows]
            try:
                answer = self._direct_client(village, self.hub.url, HUB_ID).push(old)
                statuses = [r.get("status") for r in answer.get("results", [])]
            except Exception as exc:  # noqa: BLE001
                statuses = [f"refused ({str(exc)[:60]})"]
            self.replayed_sent += len(old)
            # An acknowledged envelope must come back as a duplicate (or be refused), never be taken again.
            self.replayed_accepted += statuses.count("accepted") + statuses.count("held")
            self.say(f"replayed {len(old)} acknowledged envelopes of {village.node_id} to the hub: {statuses}")
            # A captured request, byte for byte, sent again: the nonce must refuse it.
            for base_url, server_id in ((self.hub.url, HUB_ID),
                                        (self.townships[village.township_id].url, village.township_id)):
                body = canonical.dumps({"envelopes": old[:1]})
                headers = sign_request(village.node.key, village.node_id, server_id, "POST", "/sync/v1/push", body,
                                       village.node.nonces.next())
                headers["Content-Type"] = "application/json"
                try:
                    first = requests.post(base_url + "/sync/v1/push", data=body, headers=headers, timeout=20)
                    again = requests.post(base_url + "/sync/v1/push", data=body, headers=headers, timeout=20)
                except requests.RequestException as exc:
                    self.say(f"request replay to {server_id} not tried: {exc}")
                    continue
                self.replayed_sent += 1
                if 200 <= again.status_code < 300:
                    self.replayed_accepted += 1
                self.say(f"captured request replayed to {server_id}: first {first.status_code}, again {again.status_code}")
            done += 1
            if done >= 2:
                break
        return done > 0

    def choose_revoked(self) -> None:
        """Pick the village to revoke: it takes no new cases until its queue is drained."""
        candidates = sorted(v for v in self.villages if self.villages[v].skew_days == 0)
        reachable = [v for v in candidates if self.villages[v].township_id not in self.down]
        self.revoking = self.rng.choice(reachable or candidates)
        self.say(f"village {self.revoking} will be revoked once the hub holds its queue")

    def maybe_revoke(self) -> None:
        """Revoke the chosen village at the hub as soon as everything it sent is acknowledged."""

        if self.revoking is None or self.revoked is not None:
            return
        village = self.villages[self.revoking]
        if village.busy or not village.lock.acquire(blocking=False):
            return
        try:
            if village.conn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0]:
                return
            hub_dir = self.hub.data_dir
            conn = nodes.open_db(hub_dir, "hub")
            try:
                with storage.write_transaction(conn):
                    result = revoke(conn, nodes.node_for(hub_dir), village.node_id, None, "sim")
            finally:
                conn.close()
            self.revoked = village.node_id  # no more scheduled rounds for it
        finally:
            village.lock.release()
        self.stats.add("revoked")
        self.say(f"village {village.node_id} revoked after seq {result['revoked_after_seq']}; it keeps taking cases")

    def revoked_village_works_on(self, count: int) -> None:
        """The revoked PC takes more cases and tries to send them (it must be refused)."""
        village = self.villages[self.revoked]
        while len(self.after_revocation) < count:
            self.create_case(village, record=self.after_revocation)
        for _ in range(3):
            with village.lock:
                run_round(village.conn, village.node, SyncState(), village.client, force=True)

    def _hub_head(self, origin: str) -> int:
        return self._scalar(self.hub.data_dir, "SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE origin = ?", (origin,))


def _hlc_now() -> str:
    return str(hlc.Timestamp(int(time.time() * 1000), 0, "forger"))
