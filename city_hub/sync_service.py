"""The hub's sync service: ingest pushes, serve acknowledgements, downlink and metadata."""

from __future__ import annotations

import contextlib

from city_hub import registry
from city_hub.ingest import apply_all_queued, apply_queued
from shared.core.clock import iso
from shared.core.storage import write_transaction
from sync import apply, blobs, downlink, envelope
from sync.ingest import Ingestor
from sync.nodeauth import keys_for


def ingestor_for(node, conn) -> Ingestor:
    """The hub's ingest with its current trust store, key, blobs and limits."""
    return Ingestor(conn, node.trust(conn), node.key, node.blobs.has,
                    int(node.config["MAX_CLOCK_SKEW_SECONDS"]) * 1000, int(node.config["MAX_ATTACHMENT_BYTES"]),
                    held_blobs=node.blobs.held)


class HubSync:
    """Installed as ``app.extensions["liandong_sync"]`` on the hub."""

    def __init__(self, node, connect):
        """``connect()`` opens a new connection to the hub's database (for the apply worker)."""
        self.node = node
        self.connect = connect
        self.appliers = node.kind.appliers(node)  # what the hub does with each kind of envelope
        self.worker = apply.ApplyWorker(self._apply_chunk, float(node.config["APPLY_QUIET_SECONDS"]),
                                        float(node.config["APPLY_MAX_LAG_SECONDS"]))
        self._worker_conn = None

    def resolve_caller_key(self, trust):
        """Any active township or village may call the hub (villages reach it through relays)."""

        def resolve(node_id: str, kid: str):
            entry = trust.nodes.get(node_id)
            if entry is None or entry.status != "active":
                return None
            return keys_for(entry.keys, kid)  # a full or a short (compact header) key id

        return resolve

    def ingestor(self, conn) -> Ingestor:
        return ingestor_for(self.node, conn)

    def prepare_push(self, conn, node, documents: list, ids: list | None = None) -> tuple:
        """Verify every envelope before the write lock: (trust store used, opened or error each);
        ``ids``: the documents' ids already computed (``envelope.restore_links_and_ids``)."""
        ingestor = self.ingestor(conn)
        return ingestor.trust, ingestor.open_all(documents, ids)

    def push(self, conn, node, caller: str, documents: list, prepared: tuple | None = None,
             receipt: str | None = None, held: dict | None = None) -> dict:
        """Ingest a batch in one transaction; answer per envelope plus the acks (``receipt``: the
        custody receipt form a caller asks a township for; the hub signs none; ``held``: when the
        calling township took the envelopes it forwards, :func:`sync.wire.held_times`).

        ``prepared`` (from :meth:`prepare_push`) is used if the trust store has not changed since.
        The accepted envelopes are applied afterwards by the apply worker (sync/apply.py).
        """
        with write_transaction(conn):  # re-entrant: the push request holds it already
            return self._push(conn, node, caller, documents, prepared, held)

    def pushing(self):
        """Context of one push request (``shared/web/sync_api.py``): the apply worker waits until pushes pause,
        and is woken when the last one ends."""
        return self.worker.pushing()

    def receiving_files(self):
        """Context of one file batch: nothing to hold back (the apply worker waits for pushes
        only; with a county's uploads never pausing, waiting for files too delayed the register
        to APPLY_MAX_LAG_SECONDS: ``liandong sim --throughput`` 145 → 103 cases/s)."""
        return contextlib.nullcontext()

    def _apply_chunk(self) -> int:
        """One chunk of the apply queue, on the worker thread's own long-lived connection."""
        if self._worker_conn is None:
            self._worker_conn = self.connect()
        return self.apply_pending(self._worker_conn)

    def apply_pending(self, conn, limit: int = 200) -> int:
        """Apply up to ``limit`` accepted envelopes now; returns how many."""
        return apply_queued(conn, self.node, self.appliers, limit)

    def apply_all(self, conn) -> int:
        """Apply everything queued (jobs, CLI and tests); returns how many."""
        return apply_all_queued(conn, self.node, self.appliers)

    def _push(self, conn, node, caller: str, documents: list, prepared: tuple | None, held: dict | None = None) -> dict:
        ingestor = self.ingestor(conn)
        opened = prepared[1] if prepared is not None and prepared[0] is ingestor.trust else None
        result = ingestor.ingest(documents, via=caller, now=node.now(), wall_ms=node.wall_ms(), opened=opened,
                                 held=held)
        for ack in self._release_arrived_blobs(conn, ingestor):
            result.acks[envelope.peek(ack)["origin"]] = ack
        if ingestor.suspended:
            registry.publish_registry(conn, node)  # townships stop relaying for it too
            node.forget_trust()
        return {**result.to_json(), "server": node.node_id, "server_time": iso(node.now())}

    def _release_arrived_blobs(self, conn, ingestor) -> list[dict]:
        """Blobs on disk that envelopes still wait for (the process died between writing the
        file and recording it, or the recording transaction failed): release them now, so no
        acknowledgement stays stuck.

        Only what holds an acknowledgement back is looked at: each origin's waiting envelopes
        from its lowest on, up to the first with a file really missing (its ack cannot pass that
        one anyway). That is one file test per waiting origin per push, not one per waiting file:
        a township pushing a batch whose 200 scans follow had the hub test all 200 on every push.
        """
        now, released = self.node.now(), set()
        for origin, seq in conn.execute("SELECT origin, MIN(seq) FROM inbox_blobs GROUP BY origin").fetchall():
            while seq is not None:
                waiting = [r[0] for r in conn.execute(
                    "SELECT sha256 FROM inbox_blobs WHERE origin = ? AND seq = ?", (origin, seq))]
                arrived = [sha for sha in waiting if self.node.blobs.has(sha)]
                for sha in arrived:
                    blobs.register(conn, sha, self.node.blobs.received(sha), now)
                    released |= ingestor.release_blob(sha)
                if len(arrived) < len(waiting):
                    break
                seq = conn.execute("SELECT MIN(seq) FROM inbox_blobs WHERE origin = ? AND seq > ?",
                                   (origin, seq)).fetchone()[0]
        return [ack for ack in (ingestor.refresh_ack(origin, now) for origin in sorted(released)) if ack]

    def pull(self, conn, node, caller: str, cursors: dict, have: dict, acked: dict | None = None,
             in_push: bool = False) -> dict:
        """Acks for origins in the caller's subtree (only those newer than ``acked``), their
        downlink, newer metadata (``in_push``: the pull rides in a push's answer; the same answer)."""
        self.worker.poke()  # after a restart, what was accepted but not yet applied is applied now
        subtree = node.trust(conn).subtree(caller)
        marks = ",".join("?" * len(subtree))
        acked = acked or {}
        acks = [
            envelope.from_bytes(r["ack_document"])
            for r in conn.execute(f"SELECT origin, acked_seq, ack_document FROM origin_heads WHERE origin IN ({marks})",
                                  sorted(subtree))
            if r["acked_seq"] > int(acked.get(r["origin"], 0) or 0)
        ]
        return {
            "server": node.node_id,
            "server_time": iso(node.now()),
            "acks": acks,
            "downlink": downlink.messages_for(conn, subtree, cursors),
            "metadata": registry.newer_than(conn, have),
        }

    def blobs_expected(self, conn, shas: list[str]) -> set[str]:
        """Which of ``shas`` an accepted envelope waits for (an upload no envelope names is parked)."""
        found: set[str] = set()
        for i in range(0, len(shas), 500):
            part = shas[i:i + 500]
            found.update(r[0] for r in conn.execute(
                f"SELECT DISTINCT sha256 FROM inbox_blobs WHERE sha256 IN ({','.join('?' * len(part))})", part))
        return found

    def blob_complete(self, conn, node, sha256: str, size: int) -> list[dict]:
        """A material file arrived whole: envelopes waiting on it may now be acknowledged."""
        with write_transaction(conn):
            return self.blobs_complete(conn, node, [(sha256, size)])

    def blobs_complete(self, conn, node, files: list[tuple[str, int]]) -> list[dict]:
        """Material files arrived whole (call inside a write transaction): the newest
        acknowledgement of each origin they released, one per origin."""
        ingestor, now = self.ingestor(conn), node.now()
        blobs.register_many(conn, files, now)
        released = ingestor.release_blobs(list(dict.fromkeys(sha256 for sha256, _ in files)))
        # Each origin's ack once, after every file of the batch: refreshed per file, a batch of
        # 200 scans of one village signed (and stored) up to 200 acks, each one step further.
        return [ack for ack in (ingestor.refresh_ack(origin, now) for origin in sorted(released)) if ack]
