"""The hub's side of the uplink: verify, order, de-duplicate, queue and acknowledge.

One batch is one ``BEGIN IMMEDIATE`` transaction at ``synchronous=FULL``: the acknowledgement a
peer receives is never ahead of what is on disk. Accepted envelopes are queued in
``apply_queue`` in that transaction; sync/apply.py applies their content afterwards.
Idempotency is enforced by the unique keys of ``inbox`` (``(origin, seq)`` and
``envelope_id``), never by looking first: an insert that conflicts is then classified as a
duplicate (same id: answered with the same acknowledgement) or a fork (same number, other
content: a cloned key; quarantined, the node suspended).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.core import canonical
from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.crypto import SignatureError, SigningKey
from sync import blobs, envelope
from sync.hlc import Timestamp
from sync.outbox import GENESIS
from sync.trust import TrustStore

HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_HELD_PER_ORIGIN = 1000


@dataclass
class BatchResult:
    """What one push did: a result per envelope and the acknowledgements to return."""

    results: list[dict] = field(default_factory=list)
    acks: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"results": self.results, "acks": list(self.acks.values())}


def quarantine(conn, origin, seq, envelope_id, reason, detail, document, now) -> None:
    """Keep a refused envelope for an admin, with a typed reason (idempotent)."""
    conn.execute(
        "INSERT INTO quarantine(origin, seq, envelope_id, reason, detail, document, received_at)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT(envelope_id, reason) DO NOTHING",
        (origin, seq, envelope_id, reason, detail, envelope.to_bytes(document) if document else None, iso(now)),
    )


def _check_header(body: dict, signer_node: str, version: int = 1) -> tuple[str, int, str, Timestamp]:
    origin, seq, prev = body.get("origin"), body.get("seq"), body.get("prev")
    if body.get("v") != version:  # the header states the version its payload type names
        raise ValueError("unsupported envelope version")
    if origin != signer_node:
        raise ValueError("envelope signed by a key of another node")
    if not canonical.is_count(seq) or seq < 1:
        raise ValueError("seq must be an integer from 1 to 2^63-1")
    if not isinstance(prev, str) or not HEX64.match(prev):
        raise ValueError("prev must be a sha256 hex digest")
    if not isinstance(body.get("kind"), str) or not isinstance(body.get("body"), dict):
        raise ValueError("kind and body are required")
    if not isinstance(body.get("hlc"), str):
        raise ValueError("hlc must be a string")
    hlc = Timestamp.parse(body["hlc"])  # parsed once: _accept compares its wall clock too
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list) or not all(
        isinstance(a, dict) and HEX64.match(str(a.get("sha256", ""))) and canonical.is_count(a.get("size"))
        for a in attachments
    ):
        raise ValueError("attachments must list sha256 and a size from 0 to 2^63-1")
    return origin, seq, prev, hlc


class Ingestor:
    """Hub ingest for one database, trust state, signing key and set of appliers."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        trust: TrustStore,
        hub_key: SigningKey,
        has_blob: Callable[[str], bool],
        max_skew_ms: int,
        max_attachment_bytes: int = 2**63 - 1,
        held_blobs: Callable[[list[str]], set[str]] | None = None,
    ):
        """``has_blob(sha)``: whether a file is here complete; ``held_blobs(shas)``: which of
        them are, in one lookup (a batch's files asked at once, not one query and stat each)."""
        self.conn = conn
        self.max_attachment_bytes = max_attachment_bytes
        self.trust = trust
        self.hub_key = hub_key
        self.has_blob = has_blob
        self.held_blobs = held_blobs
        self._blobs_asked: set[str] = set()  # the batch's files, looked up at once ...
        self._blobs_here: set[str] = set()  # ... and those of them held
        self.max_skew_ms = max_skew_ms
        self.suspended: set[str] = set()
        self.held_origins: set[str] = set()
        # (seq, envelope_id) of each origin's newest inbox row, read once per origin per batch
        # and kept current by _accept (the only writer of inbox in this transaction).
        self.heads: dict[str, tuple[int, str]] = {}
        self._queued: list[tuple[str, int]] = []  # accepted, for the apply queue
        self._held: dict = {}  # when the relaying township took this batch's envelopes (ingest's ``held``)
        self._stamp: tuple = (None, "")

    def open_all(self, documents: list, ids: list | None = None) -> list:
        """Verify every document against this trust store: an ``Opened`` or the ``SignatureError``
        for each, one Ed25519 check per hash-linked run of an origin (``envelope.open_chained``;
        ``ids``: as it takes them). Pure CPU, no database: callers run it before taking the write lock."""
        return envelope.open_chained(documents, envelope.ENVELOPE_TYPES, self.trust.node_key, ids=ids)

    def _held_at(self, origin: str, seq: int, via: str) -> str | None:
        """When the relaying township says it took this envelope (None: not said, or its own)."""
        runs = self._held.get(origin) if via != origin else None
        if not runs:
            return None
        # Runs sorted by their first seq (wire.held_times): one search, however many runs a push says.
        i = bisect.bisect_right(runs, (seq, 2 ** 63, "")) - 1
        return runs[i][2] if i >= 0 and runs[i][0] <= seq <= runs[i][1] else None

    def _open(self, document):
        try:
            return envelope.open_signed(document, envelope.ENVELOPE_TYPES, self.trust.node_key)
        except SignatureError as exc:
            return exc

    def ingest(self, documents: list, via: str, now, wall_ms: int, opened: list | None = None,
               held: dict | None = None) -> BatchResult:
        """Ingest a batch. Call inside one write transaction.

        ``opened`` is :meth:`open_all` of ``documents``, done earlier with this same trust store
        (done here when not given). ``held``: when ``via`` (a township) took the envelopes it
        forwards (:func:`sync.wire.held_times`), kept beside each (table ``inbox_held``).
        """
        result = BatchResult()
        self._held = held or {}
        touched: set[str] = set()
        if opened is None:
            opened = self.open_all(documents)
        self.held_origins = {r[0] for r in self.conn.execute("SELECT DISTINCT origin FROM held")}
        self._look_up_blobs(opened)
        for i, document in enumerate(documents):
            outcome = self._one(document, via, now, wall_ms, opened=opened[i])
            result.results.append(outcome)
            if outcome.get("origin") and outcome["status"] in ("accepted", "duplicate", "held"):
                touched.add(outcome["origin"])
        self.conn.executemany("INSERT INTO apply_queue(origin, seq) VALUES (?,?)", self._queued)
        self._queued = []
        for origin in touched:
            ack = self.refresh_ack(origin, now)
            if ack:
                result.acks[origin] = ack
        return result

    def _look_up_blobs(self, opened: list) -> None:
        """Which files the batch's envelopes name are here, in one lookup. Inside the batch's
        write transaction, as each envelope's own lookup was: a file registered by a batch of
        files that commits first is seen here; one that commits after finds the envelope
        waiting for it (``inbox_blobs``)."""
        self._blobs_asked, self._blobs_here = set(), set()
        if self.held_blobs is None:
            return
        for one in opened:
            if isinstance(one, SignatureError) or not isinstance(one.body.get("attachments"), list):
                continue
            self._blobs_asked.update(a["sha256"] for a in one.body["attachments"]
                                     if isinstance(a, dict) and isinstance(a.get("sha256"), str))
        if self._blobs_asked:
            self._blobs_here = self.held_blobs(list(self._blobs_asked))

    def _blob_here(self, sha256: str) -> bool:
        if sha256 in self._blobs_asked:
            return sha256 in self._blobs_here
        return self.has_blob(sha256)  # an envelope released from ``held``, not in the batch

    def _one(self, document, via: str, now, wall_ms: int, drain: bool = True, opened=None) -> dict:
        conn = self.conn
        if opened is None:
            opened = self._open(document)
        if isinstance(opened, SignatureError):
            exc = opened
            try:
                envelope_id = envelope.document_id(document)
            except SignatureError as malformed:
                return {"status": "rejected", "reason": "malformed", "detail": str(malformed)}
            try:
                claimed = envelope.peek(document)
            except SignatureError:
                claimed = {}
            origin = claimed.get("origin") if isinstance(claimed.get("origin"), str) else None
            seq = claimed.get("seq") if canonical.is_count(claimed.get("seq")) else None
            # Signed by its origin, but not acceptable JSON (e.g. a seq beyond 64 bits): malformed.
            reason = "malformed" if isinstance(exc, envelope.MalformedPayload) else "bad_signature"
            quarantine(conn, origin, seq, envelope_id, reason, str(exc), document, now)
            return {"envelope_id": envelope_id, "status": "quarantined", "reason": reason}
        envelope_id = opened.doc_id
        node = self.trust.node_of_key(opened.kid)
        try:
            origin, seq, prev, hlc = _check_header(opened.body, node.node_id,
                                                   envelope.ENVELOPE_VERSIONS[opened.payload_type])
        except ValueError as exc:
            quarantine(conn, node.node_id, None, envelope_id, "malformed", str(exc), document, now)
            return {"envelope_id": envelope_id, "status": "quarantined", "reason": "malformed", "detail": str(exc)}
        base = {"envelope_id": envelope_id, "origin": origin, "seq": seq}
        if via != origin and via != node.parent:
            # A node pushes its own envelopes; a township also those of the villages below it.
            quarantine(conn, origin, seq, envelope_id, "wrong_relay", f"pushed by {via}", document, now)
            return {**base, "status": "quarantined", "reason": "wrong_relay"}
        if node.status == "revoked" and (node.revoked_after_seq is None or seq > node.revoked_after_seq):
            quarantine(conn, origin, seq, envelope_id, "revoked", "signed after the node was revoked", document, now)
            return {**base, "status": "quarantined", "reason": "revoked"}
        if node.status == "suspended":
            quarantine(conn, origin, seq, envelope_id, "suspended", "node suspended after a fork", document, now)
            return {**base, "status": "quarantined", "reason": "suspended"}
        return self._chain(opened, document, base, origin, seq, prev, hlc, via, now, wall_ms, drain)

    def _chain(self, opened, document, base, origin, seq, prev, hlc, via, now, wall_ms, drain: bool = True) -> dict:
        conn = self.conn
        head, head_id = self.heads.get(origin) or self._head(origin)
        envelope_id = base["envelope_id"]
        if seq <= head:
            existing = conn.execute("SELECT envelope_id FROM inbox WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
            if existing["envelope_id"] == envelope_id:
                return {**base, "status": "duplicate"}
            return self._fork(base, document, now)
        if seq > head + 1:
            if conn.execute("SELECT COUNT(*) FROM held WHERE origin = ?", (origin,)).fetchone()[0] >= MAX_HELD_PER_ORIGIN:
                return {**base, "status": "rejected", "reason": "gap_buffer_full", "expected_seq": head + 1}
            cur = conn.execute(
                "INSERT INTO held(origin, seq, envelope_id, document, received_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                (origin, seq, envelope_id, envelope.to_bytes(document), iso(now)),
            )
            if cur.rowcount == 0:
                other = conn.execute("SELECT envelope_id FROM held WHERE origin = ? AND seq = ?", (origin, seq)).fetchone()
                if other is not None and other["envelope_id"] != envelope_id:
                    return self._fork(base, document, now)
            self.held_origins.add(origin)
            return {**base, "status": "held", "expected_seq": head + 1}
        outcome = self._accept(opened, document, base, prev, hlc, head_id, via, now, wall_ms)
        if outcome["status"] == "accepted" and drain:
            self._drain_held(origin, seq, via, now, wall_ms)
        return outcome

    def _head(self, origin: str) -> tuple[int, str]:
        last = self.conn.execute(
            "SELECT seq, envelope_id FROM inbox WHERE origin = ? ORDER BY seq DESC LIMIT 1", (origin,)
        ).fetchone()
        self.heads[origin] = (last["seq"], last["envelope_id"]) if last else (0, GENESIS)
        return self.heads[origin]

    def _iso(self, now) -> str:
        """``iso(now)``, formatted once per batch."""
        if self._stamp[0] is not now:
            self._stamp = (now, iso(now))
        return self._stamp[1]

    def _accept(self, opened, document, base, prev, hlc: Timestamp, head_id, via, now, wall_ms) -> dict:
        conn = self.conn
        origin, seq, envelope_id = base["origin"], base["seq"], base["envelope_id"]
        if prev != head_id:
            quarantine(conn, origin, seq, envelope_id, "broken_chain", f"prev should be {head_id}", document, now)
            return {**base, "status": "quarantined", "reason": "broken_chain"}
        attachments = opened.body.get("attachments", [])
        too_large = [a for a in attachments if a["size"] > self.max_attachment_bytes]
        if too_large:
            # Its content is refused at once (quarantined, never applied), but it keeps its place in
            # the chain: waiting for a file no one may send would hold the origin's acks for ever.
            detail = f"attachment of {too_large[0]['size']} bytes exceeds {self.max_attachment_bytes}"
            quarantine(conn, origin, seq, envelope_id, "attachment_too_large", detail, document, now)
            attachments = []
        missing = sorted({a["sha256"] for a in attachments if not self._blob_here(a["sha256"])})
        if attachments:
            blobs.claim_parked(conn, [a["sha256"] for a in attachments])
        conn.execute(
            "INSERT INTO inbox(origin, seq, envelope_id, prev, kind, document, received_at, via, blobs_pending)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (origin, seq, envelope_id, prev, opened.body["kind"], envelope.stored_bytes(opened), self._iso(now), via,
             len(missing)),
        )
        held_at = self._held_at(origin, seq, via)
        if held_at is not None:
            conn.execute("INSERT INTO inbox_held(origin, seq, held_at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                         (origin, seq, held_at))
        self.heads[origin] = (seq, envelope_id)
        if missing:
            conn.executemany(
                "INSERT INTO inbox_blobs(origin, seq, sha256) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                [(origin, seq, sha) for sha in missing],
            )
        result = {**base, "status": "accepted"}
        if too_large:
            result["content"] = "quarantined: attachment_too_large"
        else:
            self._queued.append((origin, seq))  # written in acceptance order by ingest(), in one call
        if hlc.wall_ms > wall_ms + self.max_skew_ms:
            # Never trust a clock from the future: keep the envelope, record the hub's time.
            quarantine(conn, origin, seq, envelope_id, "clock_ahead", opened.body["hlc"], None, now)
            result["clock"] = "ahead"
        if missing:
            result["missing_blobs"] = missing
        return result

    def _drain_held(self, origin, seq, via, now, wall_ms) -> None:
        """Apply envelopes held behind a gap that ``seq`` just closed, in order."""
        if origin not in self.held_origins:
            return
        conn = self.conn
        while True:
            seq += 1
            row = conn.execute(
                "DELETE FROM held WHERE origin = ? AND seq = ? RETURNING document", (origin, seq)
            ).fetchone()
            if row is None:
                return
            outcome = self._one(envelope.from_bytes(row["document"]), via, now, wall_ms, drain=False)
            if outcome["status"] != "accepted":
                return

    def _fork(self, base, document, now) -> dict:
        origin = base["origin"]
        quarantine(self.conn, origin, base["seq"], base["envelope_id"], "fork",
                   "same seq, different content: the node key may be cloned", document, now)
        self.conn.execute("UPDATE nodes SET status = 'suspended' WHERE node_id = ? AND status = 'active'", (origin,))
        entry = self.trust.nodes.get(origin)
        if entry is not None and entry.status == "active":
            # Refuse the rest of this batch too; the caller republishes the registry.
            self.trust.nodes[origin] = dataclasses.replace(entry, status="suspended")
            self.suspended.add(origin)
        audit(self.conn, "system", "node.suspended", origin, json.dumps({"reason": "fork", "seq": base["seq"]}), now)
        return {**base, "status": "quarantined", "reason": "fork"}

    def blob_arrived(self, sha256: str, now) -> list[dict]:
        """A material file was verified: release the envelopes waiting on it; new acks."""
        return [self.refresh_ack(origin, now) for origin in sorted(self.release_blob(sha256))]

    def release_blob(self, sha256: str) -> set[str]:
        """A material file was verified: release the envelopes waiting on it (:meth:`release_blobs`)."""
        return self.release_blobs([sha256])

    def release_blobs(self, shas: list[str]) -> set[str]:
        """Material files were verified: release the envelopes waiting on them, without signing
        acks (a caller releasing many files refreshes each origin's ack once, at the end). One
        statement per 500 files, not three per file; an envelope waiting on two of them loses
        one of its ``blobs_pending`` for each.

        :returns: the origins of the released envelopes.
        """
        conn, rows = self.conn, []
        for i in range(0, len(shas), 500):
            part = shas[i:i + 500]
            rows += conn.execute(f"DELETE FROM inbox_blobs WHERE sha256 IN ({','.join('?' * len(part))})"
                                 " RETURNING origin, seq", part).fetchall()
        conn.executemany("UPDATE inbox SET blobs_pending = blobs_pending - 1 WHERE origin = ? AND seq = ?",
                         [(row["origin"], row["seq"]) for row in rows])
        return {row["origin"] for row in rows}

    def refresh_ack(self, origin: str, now) -> dict:
        """Sign the cumulative acknowledgement for ``origin`` if it moved; return the current one.

        The ack covers the longest run 1..n held with every material file present. The first
        envelope still waiting for a file is the lowest ``inbox_blobs`` row of the origin (a row
        per missing file, deleted as it arrives): one look-up in its primary key, where asking
        ``inbox`` for ``blobs_pending > 0`` read every envelope the origin ever sent, at every push.
        """
        conn = self.conn
        row = conn.execute(
            "SELECT MAX(seq) AS head, (SELECT MIN(seq) FROM inbox_blobs WHERE origin = ?1) AS waiting"
            " FROM inbox WHERE origin = ?1",
            (origin,),
        ).fetchone()
        if row["head"] is None:
            return {}
        acked_seq = row["head"] if row["waiting"] is None else row["waiting"] - 1
        current = conn.execute("SELECT acked_seq, ack_document FROM origin_heads WHERE origin = ?", (origin,)).fetchone()
        if current is not None and current["acked_seq"] == acked_seq:
            return envelope.from_bytes(current["ack_document"])
        if acked_seq == 0:
            return {}
        acked_id = conn.execute(
            "SELECT envelope_id FROM inbox WHERE origin = ? AND seq = ?", (origin, acked_seq)
        ).fetchone()["envelope_id"]
        ack = envelope.sign(
            self.hub_key,
            envelope.ACK,
            {"hub": self.trust.hub_id, "origin": origin, "acked_seq": acked_seq, "acked_id": acked_id, "hub_time": iso(now)},
        )
        conn.execute(
            "INSERT INTO origin_heads(origin, acked_seq, acked_id, ack_document) VALUES (?,?,?,?)"
            " ON CONFLICT(origin) DO UPDATE SET acked_seq = excluded.acked_seq, acked_id = excluded.acked_id,"
            " ack_document = excluded.ack_document",
            (origin, acked_seq, acked_id, envelope.to_bytes(ack)),
        )
        return ack
