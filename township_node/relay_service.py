"""The township's sync service towards its villages: custody, relayed acks and downlink.

It also follows every case of its villages (so the station sees where each one is) and takes
the items delegated to it for decision, also while its own uplink to the hub is down.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator

from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.crypto import SignatureError
from shared.core.errors import RuleError
from shared.core.storage import write_transaction
from shared.rules import authority
from shared.services import appointments, casework, documents, joint, submission, supplements, things
from sync import apply, blobs, downlink, envelope, outbox, relay
from sync.nodeauth import keys_for

_SHA256_IN_TEXT = re.compile(r"[0-9a-f]{64}")


def township_emit(node):
    """How a decision taken at the township travels: down to the village, up to the hub."""

    def emit(conn: sqlite3.Connection, row: sqlite3.Row, event: dict, decision: dict | None) -> None:
        joint.on_event(conn, node, row, event)  # 联办 opinion requests on 受理
        issued = documents.for_event(conn, node, row, event)
        # The automatic 接件 is sent neither down nor up on its own: the village records it from
        # the signed custody receipt (casework.mark_in_custody), the hub from this station's
        # forward (authority.received_at_custody), and the station's own event rides with the
        # next step; a 秒批's 受理 rides with its 准予 (docs/sync-protocol.md §7.2). Two
        # signatures per delegated case fewer, four per 秒批 case.
        if not authority.rides_with_next_step(event):
            earlier, carried = casework.riding_with(conn, row["case_id"], event)
            body = casework.update_message(row, event, decision, [*carried, *issued], earlier)
            now = node.now()
            if row["origin"] != node.node_id:
                downlink.issue(conn, node.key, node.node_id, row["origin"], "case.update", body, now)
            outbox.append(conn, node.key, node.node_id, "case.event", body, str(node.hlc.now()), now,
                          case_id=row["case_id"])
        things.on_status(conn, node, row["case_id"], event["action"], emit)  # 一件事: the next step

    return emit


class VerifiedPush:
    """The envelopes of one push, verified as the hub verifies them (``envelope.open_chained``: one
    Ed25519 check per hash-linked run) the first time the station applies one of them itself:
    custody took the caller's envelopes on its request signature alone (docs/sync-protocol.md
    §5.3.1), what the station decides or applies it verifies end to end, by the hub's rule."""

    def __init__(self, documents: list, trust, opened: list | None = None):
        self.documents, self.trust = documents, trust
        self._opened: dict[int, object] | None = None
        if opened is not None:  # opened by prepare_push with this trust store, before the write lock
            self._opened = {id(d): o for d, o in zip(documents, opened, strict=True)}

    def check(self, document: dict) -> None:
        """:raises SignatureError: ``document`` (one of the push's) does not verify."""
        if self._opened is None:
            opened = envelope.open_chained(self.documents, envelope.ENVELOPE_TYPES, self.trust.node_key)
            self._opened = {id(d): o for d, o in zip(self.documents, opened, strict=True)}
        result = self._opened[id(document)]  # custody hands on the push's own document objects
        if isinstance(result, SignatureError):
            raise result


class TownshipSync:
    """Installed as ``app.extensions["liandong_sync"]`` on a township."""

    def __init__(self, node, connect=None, after_follow=None):
        """``connect()`` opens a connection for the follow worker; ``after_follow()`` is called
        after a queued chunk is followed (the app kicks its sync round: what the station decided
        goes up and down at once)."""
        self.node = node
        self.connect = connect
        self.after_follow = after_follow
        # Without ``connect`` (a CLI bundle import) no worker: the caller follows what it queued.
        self.worker = apply.ApplyWorker(self._follow_chunk, float(node.config["FOLLOW_QUIET_SECONDS"]),
                                        float(node.config["FOLLOW_MAX_LAG_SECONDS"]), paced=True) if connect else None
        self._worker_conn = None

    def resolve_caller_key(self, trust):
        """Only active villages registered below this township may call it."""

        def resolve(node_id: str, kid: str):
            entry = trust.nodes.get(node_id) if trust else None
            if entry is None or entry.parent != self.node.node_id or entry.status != "active":
                return None
            return keys_for(entry.keys, kid)  # a full or a short (compact header) key id

        return resolve

    def pushing(self):
        """Context of one push request: the follow worker waits until pushes pause, and is woken
        when the last one ends (as the hub's apply worker)."""
        return self.worker.pushing() if self.worker else contextlib.nullcontext()

    def receiving_files(self):
        """Context of one file batch: the follow worker waits for it as for a push (a village
        sends a case's scans right after its push)."""
        return self.pushing()

    def prepare_push(self, conn, node, documents: list, ids: list | None = None) -> tuple:
        """Open the push's envelopes before the write lock, as the hub does (one Ed25519 check per
        hash-linked run, every payload parsed strictly once): (trust store used, opened or error
        each). Custody and the station's own checks use them while the trust store is the same;
        the write lock, which the station's forwarding round also needs, is held for less.
        ``ids``: the documents' ids already computed (``envelope.restore_links_and_ids``)."""
        trust = node.trust(conn)
        return trust, envelope.open_chained(documents, envelope.ENVELOPE_TYPES, trust.node_key, ids=ids)

    def push(self, conn, node, caller: str, documents: list, prepared=None, receipt: str | None = None,
             held: dict | None = None) -> dict:
        """Take custody in one FULL-sync transaction, then sign the receipt (``receipt="ranges"``:
        the v2 receipt a newer village asks for, seq ranges instead of every id). ``held`` is a
        township's to send, not a village's: ignored.

        A small push is followed in the station's register in the same transaction (a 秒批 is
        decided in time for this answer); a larger one is queued and followed after the answer
        (:meth:`follow_pending`), as the hub acknowledges before it applies: the village's next
        batch does not wait for the station's own bookkeeping (docs/sync-protocol.md §5.3.1)."""
        trust = node.trust(conn)
        now = node.now()
        taken: list[tuple[dict, dict]] = []
        # What prepare_push opened, unless the registry changed since (then everything is opened again).
        opened = prepared[1] if prepared is not None and prepared[0] is trust else None
        with write_transaction(conn):
            last = conn.execute("SELECT MAX(rowid) FROM custody").fetchone()[0] or 0
            results, held = relay.take_custody(conn, trust, node.node_id, documents, now, caller=caller, taken=taken,
                                               prepared=opened)
            relay.record_peer(conn, caller, len(documents), now)
            if self._follows_now(conn, len(taken)):
                received_at = iso(now)
                self._follow(conn, [(document, message, received_at) for document, message in taken],
                             VerifiedPush(documents, trust, opened))
            else:
                # What this push added to custody, in custody's order (a repeat was queued when first taken).
                conn.execute("INSERT INTO follow_queue(envelope_id, origin, seq, case_id, document, received_at)"
                             " SELECT envelope_id, origin, seq, case_id, document, received_at FROM custody"
                             " WHERE rowid > ? ORDER BY rowid", (last,))
            # The caller's ack only if it covers something it pushed now (else it holds it, or the pull brings it).
            lowest = min((r["seq"] for r in results if r.get("origin") == caller and r.get("seq")), default=None)
            acks = [envelope.from_bytes(r["document"]) for r in conn.execute(
                "SELECT document FROM acks WHERE origin = ? AND acked_seq >= ?", (caller, lowest))] \
                if lowest is not None else []
        if not held:
            signed = None
        elif receipt == "ranges":
            signed = relay.ranged_receipt(node.key, node.node_id, results, now)
        else:
            signed = relay.custody_receipt(node.key, node.node_id, held, now)
        return {"results": results, "receipt": signed, "acks": acks, "server": node.node_id, "server_time": iso(now)}

    def _follows_now(self, conn, taken: int) -> bool:
        """Whether a push that took ``taken`` envelopes is followed before its answer: small, and
        nothing queued before it (custody order is the order of following)."""
        return (taken <= int(self.node.config["FOLLOW_INLINE_MAX_ENVELOPES"])
                and conn.execute("SELECT 1 FROM follow_queue LIMIT 1").fetchone() is None)

    def follow_pending(self, conn, limit: int = 500) -> int:
        """Follow up to ``limit`` queued custody envelopes, oldest first, in one write transaction
        that also dequeues them (a crash leaves them queued; following twice changes nothing).
        Returns how many were taken from the queue."""
        if conn.execute("SELECT 1 FROM follow_queue LIMIT 1").fetchone() is None:
            return 0  # nothing queued: no write lock taken
        with write_transaction(conn):
            rows = conn.execute("SELECT id, envelope_id, origin, document, received_at FROM follow_queue"
                                " ORDER BY id LIMIT ?", (limit,)).fetchall()
            # Custody opened (and stored) each one; what the station applies itself it verifies below.
            documents = [envelope.from_bytes(r["document"]) for r in rows]
            items = [(document, envelope.open_stored(document, r["envelope_id"], r["received_at"]).body, r["received_at"])
                     for document, r in zip(documents, rows, strict=True)]
            acked = {r["origin"]: r["acked_seq"] for r in conn.execute(
                "SELECT origin, acked_seq FROM acks WHERE origin IN (SELECT DISTINCT origin FROM follow_queue"
                " WHERE id <= ?)", (rows[-1]["id"],))}
            self._follow(conn, items, VerifiedPush(documents, self.node.trust(conn)), acked)
            conn.execute("DELETE FROM follow_queue WHERE id <= ?", (rows[-1]["id"],))
            self._apply_waiting(conn)
            for origin in sorted(acked):  # what the hub holds already (its ack came before the following)
                casework.mark_origin_at_hub(conn, self.node, origin)
        return len(rows)

    def _apply_waiting(self, conn) -> None:
        """Hub messages that came down while their case was still queued here (``follow_waiting``,
        :meth:`township_node.tier.TownshipRelay.follow`): applied now that it is followed, in
        each issuer's order, each in a savepoint (one refused is audited, the rest go on)."""
        rows = conn.execute(
            "SELECT w.issuer, w.dest, w.seq, d.document FROM follow_waiting w JOIN downlink d"
            " ON d.issuer = w.issuer AND d.dest = w.dest AND d.seq = w.seq"
            " WHERE EXISTS (SELECT 1 FROM cases c WHERE c.case_id = w.case_id) ORDER BY w.issuer, w.dest, w.seq").fetchall()
        for row in rows:
            # Verified when the relay stored it (sync/downlink.py store_relayed); its documents are checked again.
            with self._followed_alone(conn, row["dest"]):
                self.node.relay.follow(conn, envelope.peek(envelope.from_bytes(row["document"])))
        conn.executemany("DELETE FROM follow_waiting WHERE issuer = ? AND dest = ? AND seq = ?",
                         [(r["issuer"], r["dest"], r["seq"]) for r in rows])

    def follow_all(self, conn) -> int:
        """Follow everything queued (tests, CLI); returns how many."""
        total = 0
        while (done := self.follow_pending(conn)):
            total += done
        return total

    def _follow_chunk(self) -> int:
        """One chunk of the follow queue, on the worker thread's own long-lived connection."""
        if self._worker_conn is None:
            self._worker_conn = self.connect()
        done = self.follow_pending(self._worker_conn)
        if done and self.after_follow is not None:
            self.after_follow()
        return done

    def _follow(self, conn, items: list, verified: VerifiedPush, acked: dict | None = None) -> None:
        """Follow village envelopes now in custody, ``(document, body, received_at)`` each, in
        order: the cases that only need storing together (:meth:`_plain_case`), any other one at
        a time (:meth:`_follow_case`). ``acked``: per origin, the seq the hub's acknowledgement
        covers (a city case it holds is stored 接件 there at once)."""
        catalog: list[dict] = []  # read once, if a case needs it (tens of KB per read)

        def item_of(code: str) -> dict | None:
            if not catalog:
                catalog.append(self.node.catalog(conn)[1])
            return catalog[0].get(code)

        plain: list = []  # rows of cases that only need storing, written together
        for document, message, received_at in items:
            rows = self._plain_case(message, document, verified, item_of, received_at, acked)
            if rows is not None:
                plain.append((document, message, rows))
                continue
            self._store_plain(conn, plain, verified, item_of)  # an earlier case may be what this one needs
            self._follow_case(conn, document, message, verified, item_of)
        self._store_plain(conn, plain, verified, item_of)

    def _follow_case(self, conn, document: dict, message: dict, verified: VerifiedPush, item_of) -> None:
        """A village envelope now in custody: the station applies it with the hub's own rules
        (sender entitlement, route from its own catalog, verified documents). What it refuses
        stays in custody all the same and goes on to the hub, which decides for itself.

        ``message`` is the envelope's body as custody parsed it (signer == origin, checked by
        take_custody, not its signature): parsing it again was a tenth of a township's push.
        ``verified`` opens the push's envelopes with its trust store, ``item_of`` is its catalog
        lookup (each made once per push)."""
        trust = verified.trust
        kind, sender = message.get("kind"), message.get("origin")
        if kind not in ("case.submit", "case.event", supplements.KIND, appointments.REQUEST_KIND,
                        appointments.CANCEL_KIND):
            return
        with self._followed_alone(conn, sender):
            if kind == supplements.KIND:
                supplements.apply_received(conn, self.node, message["body"], sender, self.node.emit)
            elif kind in (appointments.REQUEST_KIND, appointments.CANCEL_KIND):
                # 预约 of the station's own window: decided here, in the order custody takes them.
                appointments.apply_message(conn, self.node, kind, sender, message["body"])
            elif kind == "case.event":
                row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (message["body"]["case_id"],)).fetchone()
                if row is not None:
                    verified.check(document)  # what the station applies, it verifies
                    casework.apply_checked_update(conn, row, message["body"], sender, trust)
                    things.on_status(conn, self.node, row["case_id"], message["body"]["event"]["action"],
                                     self.node.emit)
            else:
                self._follow_submit(conn, sender, message, document, verified, item_of)

    FOLLOW_ERRORS = (RuleError, SignatureError, KeyError, TypeError, ValueError, AttributeError,
                     sqlite3.IntegrityError)

    @contextlib.contextmanager
    def _followed_alone(self, conn, sender: str) -> Iterator[None]:
        """One message followed in a savepoint: one the station refuses is rolled back alone and
        audited (``relay.not_followed``); it stays in custody and goes on to the hub all the same."""
        conn.execute("SAVEPOINT follow_one")
        try:
            yield
        except self.FOLLOW_ERRORS as exc:
            conn.execute("ROLLBACK TO follow_one")
            detail = exc.message if isinstance(exc, RuleError) else f"{type(exc).__name__}: {exc}"
            audit(conn, "system", "relay.not_followed", sender, detail[:500], self.node.now())
        conn.execute("RELEASE follow_one")

    def _plain_case(self, message: dict, document: dict, verified: VerifiedPush, item_of,
                    received_at: str, acked: dict | None = None) -> casework.CaseRows | None:
        """The rows of a village case that only need storing, built before anything is written:
        one this station follows (decided at the hub), or one it decides whose 接件 is all that
        happens now (stored received, as the hub stores a city case: no 秒批 rule met, not a
        step of a 一件事, and that 接件 is sent on its own to nobody, :func:`township_emit`).
        ``None``: follow it one at a time (:meth:`_follow_case`), also when building it fails
        (which that then records)."""
        if message.get("kind") != "case.submit":
            return None
        try:
            case = self._submitted(message, message.get("origin"), item_of)
            if "thing" in case:
                return None
            route = case["route"]
            if route["level"] != "township":
                if message.get("seq", 0) <= (acked or {}).get(message["origin"], 0):
                    # At the hub already, 接件 there as it holds it (casework._note_received's record).
                    return casework.received_rows(case, message["origin"], self.node.hub_id, self.node.now(),
                                                  sync_state="acked")
                return casework.case_rows(case, message["origin"], "SUBMITTED", "custody")
            # The rule the village and the hub record this 接件 by (not a 一件事 step: see above).
            if not authority.received_at_custody(route["level"], route["office"], self.node.node_id, later_step=False):
                return None
            if casework.instant_approval(item_of(case["item_code"]), case["form"]):
                return None
            verified.check(document)  # a delegated case the station decides: verified here too
            return casework.received_rows(case, message["origin"], self.node.node_id, None, received_at, "custody")
        except self.FOLLOW_ERRORS:
            return None

    def _store_plain(self, conn, plain: list, verified: VerifiedPush, item_of) -> None:
        """Write the rows of :meth:`_plain_case` in one statement per table, inside one
        savepoint for them all (one per case made a statement journal of every page each case
        touched: half of the station's push). A constraint one of them breaks (a 收件编号
        taken by another case) undoes the batch, which is then followed one case at a time, so
        that case alone is refused as before."""
        if not plain:
            return
        conn.execute("SAVEPOINT follow_cases")
        try:
            casework.write_many_case_rows(conn, [rows for _, _, rows in plain])
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO follow_cases")
            conn.execute("RELEASE follow_cases")
            for document, message, _ in plain:
                self._follow_case(conn, document, message, verified, item_of)
        else:
            conn.execute("RELEASE follow_cases")
        plain.clear()

    def _submitted(self, message: dict, origin: str, item_of) -> dict:
        """The v1 body of a village's ``case.submit`` with the route from this station's catalog
        (a station holds only the catalog it goes by now: the push's one read serves v2 too)."""
        case = submission.received_body(message, origin, lambda code, v: item_of(code))
        item = item_of(case["item_code"])
        return {**case, "route": authority.route_of_submission(item, case["item_code"], origin, self.node.hub_id)}

    def _follow_submit(self, conn, origin: str, message: dict, document: dict, verified: VerifiedPush, item_of) -> None:
        case = self._submitted(message, origin, item_of)
        item = item_of(case["item_code"])
        decides = case["route"]["level"] == "township" and case["route"]["office"] == self.node.node_id
        if decides:
            verified.check(document)  # a delegated case the station will decide: verified here too
        if not casework.insert_case(conn, case, origin=origin, status="SUBMITTED", sync_state="custody"):
            return
        things.record_link(conn, self.node, case)  # a step of a 一件事 (RuleError: malformed link)
        # A later step of a 一件事 waits for the earlier ones' result (or ends); else 接件 now.
        if decides and ("thing" not in case or things.settle(conn, self.node, case["case_id"], self.node.emit) is None):
            casework.receive(conn, case["case_id"], item, self.node.node_id, self.node.now(), self.node.emit)

    def pull(self, conn, node, caller: str, cursors: dict, have: dict, acked: dict | None = None,
             in_push: bool = False) -> dict:
        """The caller's ack (if newer than it holds), its downlink (relayed and the township's
        own), newer metadata. ``in_push``: the pull rides in a push's answer, which recorded the
        caller's visit already (no second write)."""
        if self.worker:
            self.worker.poke()  # after a restart, custody still to follow is followed now
        known = int((acked or {}).get(caller, 0) or 0)
        acks = [envelope.from_bytes(r["document"]) for r in conn.execute(
            "SELECT document FROM acks WHERE origin = ? AND acked_seq > ?", (caller, known))]
        metadata = []
        for row in conn.execute("SELECT role, version, document FROM trusted_metadata WHERE role != 'root'"):
            if row["version"] > int(have.get(row["role"], 0) or 0):
                metadata.append(envelope.from_bytes(row["document"]))
        if not in_push:
            with write_transaction(conn):
                relay.record_peer(conn, caller, 0, node.now())
        return {
            "server": node.node_id,
            "server_time": iso(node.now()),
            "acks": acks,
            "downlink": downlink.messages_for(conn, {caller}, cursors),
            "metadata": metadata,
        }

    def blobs_expected(self, conn, shas: list[str]) -> set[str]:
        """Which of ``shas`` an envelope in custody names (an upload no envelope names is parked):
        the custody's attachment lists read once, not searched once per file."""
        if not shas:
            return set()
        named = conn.execute("SELECT group_concat(attachments, ' ') FROM custody").fetchone()[0] or ""
        # Every hash named, once (not a search of all of them per file: a batch of 200 files
        # against 2,000 envelopes in custody was 200 scans of ~200 KB).
        return set(shas) & set(_SHA256_IN_TEXT.findall(named))

    def blob_complete(self, conn, node, sha256: str, size: int) -> list[dict]:
        """A village's material file is here; it goes on to the hub in the next round."""
        with write_transaction(conn):
            return self.blobs_complete(conn, node, [(sha256, size)])

    def blobs_complete(self, conn, node, files: list[tuple[str, int]]) -> list[dict]:
        """Villages' material files are here (call inside a write transaction); they go on to
        the hub with the round this arrival starts (``liandong_sync_kick``)."""
        blobs.register_many(conn, files, node.now())
        return []
