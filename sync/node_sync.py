"""One sync round of a village or a township towards its parent.

Push the outbox (a custody receipt from a township parent), send material files, pull hub
acknowledgements, downlink and metadata. A node with a custody relay (``node.relay``, the
township) does the same for every envelope in its custody and keeps what it pulls for the nodes
below it. What the case register makes of it is the tier's (``node.kind``: ``on_custody``,
``on_acked``, and the message handlers); this module knows no case. Every step commits in
batches; a failure leaves everything as it was for the next round.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from shared.core import canonical
from shared.core.audit import audit
from shared.core.clock import iso, parse_iso
from shared.core.crypto import SignatureError, write_private_file
from shared.core.storage import write_transaction
from sync import downlink, envelope, formats, outbox, relay, rotation, wire
from sync.client import ParentClient, SyncUnavailable, pull_body
from sync.hlc import Timestamp
from sync.trust import RollbackError, accept_metadata

log = logging.getLogger("liandong.sync")


@dataclass
class SyncState:
    """Retry state of a node's link to its parent (in memory; shown on the status page)."""

    failures: int = 0
    next_attempt: float = 0.0
    last_success: str | None = None
    last_error: str | None = None
    history: list = field(default_factory=list)
    # Material files the parent said it holds whole (not asked about again) and the outbox seq
    # up to which every file is among them; lost on restart, when the parent is asked once more.
    delivered: set = field(default_factory=set)
    files_through: int = 0
    # Node time after which the outbox is searched again for overdue acknowledgements (None: at
    # the next round); that search reads every row in custody, so not every round.
    reoffer_check_at: object = None
    # The current round recorded its contact with the parent already (with the push's answer).
    contact_recorded: bool = False
    # Envelopes in the next push (0: SYNC_BATCH): grows while the link answers fast (push_size).
    batch: int = 0
    # time.monotonic() of this node's last push (a pull soon after may wait for its acks, _pull).
    pushed_at: float = float("-inf")
    # Called once the parent's answers with acknowledgements are committed, mid-round: a
    # township's children waiting for acks (write-through, a pull's ``wait``) look again then.
    on_acks: Callable[[], None] | None = None

    def acks_applied(self) -> None:
        """Tell whoever waits for acknowledgements that new ones may be here."""
        if self.on_acks is not None:
            self.on_acks()

    def backoff(self, max_seconds: float, base: float = 2.0) -> float:
        """Exponential backoff with full jitter (AWS architecture blog), capped."""
        return random.uniform(0, min(max_seconds, base * (2 ** min(self.failures, 16))))


#: How long after its last push a node's pulls may ask the parent to wait for acknowledgements.
PULL_WAIT_AFTER_PUSH_SECONDS = 60.0
#: The parent's error code for a request signed by a revoked node, and where the node keeps it.
REVOKED_CODE = '"node_revoked"'
REVOKED_META = "revoked_at"


def revoked_at(conn: sqlite3.Connection) -> str | None:
    """When the parent first told this node it is revoked (None while it is not)."""
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (REVOKED_META,)).fetchone()
    return row["value"] if row else None


def push_size(node, state: SyncState) -> int:
    """Envelopes in this node's next push: ``SYNC_BATCH`` at first, what the link has earned
    since (:func:`next_push_size`), never above ``SYNC_BATCH_MAX``."""
    floor = int(node.config["SYNC_BATCH"])
    return min(max(state.batch, floor), max(floor, int(node.config["SYNC_BATCH_MAX"])))


def next_push_size(size: int, pushed: int, seconds: float, target: float, floor: int, top: int) -> int:
    """The push size after a push of ``pushed`` envelopes (of ``size`` allowed) that took
    ``seconds``: doubled after a full push answered within half of ``target``, halved after one
    slower than ``target``, else kept; within [floor, top]. Each request costs a signature, a
    commit at every tier and a round trip, so a backlog on a good link drains in large pushes,
    while a slow link keeps pushes it can finish (a dropped one is sent again whole)."""
    if seconds > target:
        size //= 2
    elif pushed >= size and seconds <= target / 2:
        size *= 2
    return min(max(size, floor), max(floor, top))


def client_for(node, timeout: float | None = None) -> ParentClient:
    """The HTTP client towards this node's parent (``timeout`` per request, default the setting)."""
    return ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces,
                        timeout=float(timeout or node.config["SYNC_TIMEOUT_SECONDS"]))


def run_round(conn: sqlite3.Connection, node, state: SyncState, client: ParentClient | None = None,
              force: bool = False, timeout: float | None = None) -> dict:
    """One round if due; returns a summary. Never raises for network trouble.

    ``timeout`` shortens each request's wait (the agent's 立即同步 gives up sooner than the
    background round).
    """
    if not force and time.monotonic() < state.next_attempt:
        return {"skipped": True}
    client = client or client_for(node, timeout)
    state.contact_recorded = False
    try:
        summary = _round(conn, node, client, state)
    except SyncUnavailable as exc:
        state.failures += 1
        state.batch = 0  # a failed push: the next one starts small again
        state.last_error = str(exc)
        if REVOKED_CODE in state.last_error:
            # The parent verified our signature and says the registry revoked this node: kept,
            # so every page says 本机已停用 and intake refuses new cases (shared/services/intake.py).
            with write_transaction(conn):
                conn.execute("INSERT INTO node_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                             (REVOKED_META, iso(node.now())))
        state.next_attempt = time.monotonic() + state.backoff(float(node.config["SYNC_BACKOFF_MAX_SECONDS"]))
        # WARNING: an operator must see it in the node's log (docs/operations.md, Troubleshooting).
        log.warning("sync with parent %s failed (attempt %d): %s; retry in %.1fs", node.config["PARENT_ID"],
                    state.failures, exc, state.next_attempt - time.monotonic())
        return {"error": str(exc)}
    state.failures = 0
    state.next_attempt = 0.0
    state.last_error = None
    if not state.contact_recorded:  # a round without a push (or an older parent's separate pull)
        with write_transaction(conn):
            _record_contact(conn, node, state)
    if any(summary.values()):
        log.info("sync round with parent %s: %s", node.config["PARENT_ID"], summary)
    return summary


def _record_contact(conn: sqlite3.Connection, node, state: SyncState) -> None:
    """The parent answered: remember when (status pages, health). Call inside a write transaction."""
    state.last_success = iso(node.now())
    conn.execute(
        "INSERT INTO node_meta(key, value) VALUES ('last_parent_contact', ?) ON CONFLICT(key)"
        " DO UPDATE SET value = excluded.value", (state.last_success,))
    state.contact_recorded = True


@contextmanager
def _cache_for_answer(conn: sqlite3.Connection, node) -> Iterator[None]:
    """A page cache of at least ``SYNC_CACHE_KIB`` while the parent's answer is applied.

    A village's connections keep 512 KiB (its process's memory): an acknowledgement of a batch
    rewrites a few hundred case rows, their events and status indexes, more pages than that,
    so SQLite wrote pages out and read them back mid-transaction (twice the CPU per case). The
    connection gets its own size back afterwards, which frees the extra pages."""
    wanted = int(node.config.get("SYNC_CACHE_KIB") or 0)
    own = conn.execute("PRAGMA cache_size").fetchone()[0]  # negative: KiB; positive: pages
    own_kib = -own if own < 0 else own * conn.execute("PRAGMA page_size").fetchone()[0] // 1024
    if wanted <= own_kib:
        yield
        return
    conn.execute(f"PRAGMA cache_size=-{wanted}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={own}")


def _round(conn: sqlite3.Connection, node, client: ParentClient, state: SyncState) -> dict:
    """Push (asking in it what the parent holds of the files to send and for the pull's answer),
    files, and a separate pull only when the push did not bring it: nothing was pushed (the
    periodic pull that brings acks and decisions down) or the parent is older
    (docs/sync-protocol.md §5.3.2)."""
    summary = {"pushed": 0, "blobs": 0, "acked": 0, "applied": 0}
    summary["pushed"], files, pulled = _push(conn, node, client, state)
    summary["blobs"] = _send_blobs(conn, node, client, state, files)
    summary.update(pulled if pulled is not None else _pull(conn, node, client, state))
    return summary


def drain(conn: sqlite3.Connection, node, state: SyncState, client: ParentClient | None = None,
          force: bool = False, max_rounds: int = 1000, timeout: float | None = None) -> dict:
    """Rounds back to back while a backlog remains: while a round pushed a full batch, the next
    one starts at once; pacing (the sync interval) is only for a node with nothing to send.
    Returns the totals; stops at the first failure (its backoff then applies)."""
    totals: dict = {}
    for _ in range(max_rounds):
        batch = push_size(node, state)
        summary = run_round(conn, node, state, client=client, force=force, timeout=timeout)
        for key, value in summary.items():
            totals[key] = totals.get(key, 0) + value if isinstance(value, int) else value
        if "error" in summary or "skipped" in summary or summary.get("pushed", 0) < batch:
            break
        force = True
    return totals


def _pending_documents(conn: sqlite3.Connection, node, state: SyncState | None = None) -> list[tuple[str, sqlite3.Row]]:
    """The next push: at most :func:`push_size` envelopes of each source and ``SYNC_BATCH_BYTES``
    in all, so one village's large envelopes never make a push the parent refuses as too large.
    Each row's ``document`` as stored (:func:`envelope.to_bytes`): the push is joined from these bytes."""
    state = state or SyncState()  # none given: look for overdue acknowledgements now
    batch = push_size(node, state)
    rows = []
    now = node.now()
    if node.relay is not None:
        # Villages' envelopes first: a township's decision event follows the case it is about.
        rows += [("custody", r) for r in relay.to_forward(conn, batch, now)]
    due = state.reoffer_check_at
    # Look for overdue acknowledgements at most every REOFFER_CHECK_EVERY while none is found (and
    # at once if the clock went back): the search reads every envelope in custody.
    check = due is None or now >= due or due - now > outbox.REOFFER_CHECK_EVERY
    mine = outbox.to_send(conn, batch, now if check else None)
    if check:
        overdue = any(r["state"] == "custody" for r in mine)
        state.reoffer_check_at = None if overdue else now + outbox.REOFFER_CHECK_EVERY
    rows += [("reoffer" if r["state"] == "custody" else "outbox", r) for r in mine]
    sized = [{"source": source, "document": r["document"], "row": r} for source, r in rows]
    return [(r["source"], r["row"]) for r in envelope.within_bytes(sized, int(node.config["SYNC_BATCH_BYTES"]))]


def _push(conn: sqlite3.Connection, node, client: ParentClient,
          state: SyncState) -> tuple[int, tuple[list, dict | None] | None, dict | None]:
    """(envelopes pushed; the files to send with what the parent said it holds of them, None
    where it did not say; what the pull inside the push's answer applied). None for the last
    two: no push, or a parent that does not answer those in pushes; the round asks separately."""
    docs = _pending_documents(conn, node, state)
    if not docs:
        return 0, None, None
    state.pushed_at = time.monotonic()
    if any(kind == "reoffer" for kind, _ in docs):
        # The parent may have lost what it held (a township's disk): ask about every file again.
        state.delivered.clear()
        state.files_through = 0
    ids = [r["envelope_id"] for _, r in docs] if formats.uplink_version(conn) >= 2 else None
    # Only the files of envelopes the parent has or gets now: one it cannot place is parked
    # against this node's quota there (docs/sync-protocol.md §6.3).
    own = max((r["seq"] for kind, r in docs if kind != "custody"), default=0)
    wanted = _files_wanted(conn, node, state, through=max(own, outbox.receipted_through(conn)),
                           custody=[r["envelope_id"] for kind, r in docs if kind == "custody"])
    asked = [a["sha256"] for a in wanted] if 0 < len(wanted) <= wire.MAX_BLOBS_ASKED else None
    cursors, have = pull_request(conn, node)
    # A node that relays nothing (a village) asks its parent to write through to the hub: if the
    # hub's ack comes back in this answer, no second request fetches it (§5.3.3).
    wait = node.relay is None
    size, started = push_size(node, state), time.monotonic()
    # A township says when it took what it forwards (the hub's record of its 接件 until its own, §7.2).
    held = wire.held_ranges([r for kind, r in docs if kind == "custody"]) or None
    if (node.relay is None and len(docs) == size and all(kind == "outbox" for kind, _ in docs)
            and node.config["SYNC_PUSH_AHEAD"] and (asked is not None or not wanted)):
        # A backlog: the next push goes while this answer is applied and its files are read.
        return _pushes_in_flight(conn, node, client, state, [r for _, r in docs], ids is not None, wanted)
    answer = client.push_stored([r["document"] for _, r in docs], compact=True, ids=ids,
                                pull=pull_body(cursors, have, acked_request(conn, node)), blobs=asked, wait=wait,
                                held=held, short_keyids=formats.short_keyids(conn))
    state.batch = next_push_size(size, len(docs), time.monotonic() - started, float(node.config["SYNC_PUSH_SECONDS"]),
                                 int(node.config["SYNC_BATCH"]), int(node.config["SYNC_BATCH_MAX"]))
    held = answer.get("blobs") if asked is not None and isinstance(answer.get("blobs"), dict) else None
    applied = _apply_answer(conn, node, state, answer, forwarded=[r for kind, r in docs if kind == "custody"],
                            acks_hold=wait and answer.get("receipt") is None)
    return len(docs), (wanted, held), applied


def _apply_answer(conn: sqlite3.Connection, node, state: SyncState, answer: dict, forwarded: list | None = None,
                  acks_hold: bool = False) -> dict | None:
    """Apply a push's answer, the pull's answer riding in it and the contact: one transaction, so
    one wait for the write lock (at a township, behind its villages' pushes) and one commit.
    Returns what the pull applied; None: an older parent ignored the pull (the round pulls)."""
    pulled, applied = answer.get("pull"), None
    with _cache_for_answer(conn, node), write_transaction(conn):
        apply_push_answer(conn, node, answer, forwarded=forwarded, acks_hold=acks_hold)
        if isinstance(pulled, dict):
            # The pull's answer without the members the push's answer has already (server, its time).
            applied = apply_pull_answer(
                conn, node, {"server": answer.get("server"), "server_time": answer.get("server_time"), **pulled})
            _record_contact(conn, node, state)
    if answer.get("acks") or (applied and applied["acked"]):
        state.acks_applied()
    return applied


def _pushes_in_flight(conn: sqlite3.Connection, node, client: ParentClient, state: SyncState, first: list,
                      v2: bool, first_files: list[dict]) -> tuple[int, None, dict | None]:
    """A node that relays nothing (a village) draining a backlog: its requests go back to back
    while this thread applies the answers and reads what comes next, so the drain goes at the
    pace of the slower of the two sides, not of their sum (docs/sync-protocol.md §5.1.2).

    One request at a time, in this order: push *n*; as soon as it is answered, push *n + 1*
    (read while *n* was in flight) and then the files of push *n* (read while *n + 1* is), so
    a batch's files always follow the push that names them, as in a round. Only this node's own
    pending envelopes, in seq order; ``first_files``: the files to send after ``first``. The
    pipeline stops at a short batch or at a failure. A push's ``pull`` is read before the
    answer to the one before is applied, so an answer may repeat an acknowledgement or downlink
    message the previous one brought: both apply once (acks are cumulative; downlink goes by
    cursor). An answer lost with a failure loses nothing: its envelopes are still pending and are
    pushed again, which custody takes idempotently; its files are offered again in the next
    round. Returns as :func:`_push` (the files are sent here)."""
    pushed, applied, limit = 0, None, len(first)  # limit: the size the batch was read with
    short_keyids = formats.short_keyids(conn)

    def push(batch: list, files: list[dict]):
        cursors, have = pull_request(conn, node)
        pull = pull_body(cursors, have, acked_request(conn, node))
        asked = [a["sha256"] for a in files] or None

        def send() -> tuple[dict, float]:
            started = time.monotonic()
            answer = client.push_stored([r["document"] for r in batch], compact=True,
                                        ids=[r["envelope_id"] for r in batch] if v2 else None, pull=pull,
                                        blobs=asked, wait=True, short_keyids=short_keyids)
            return answer, time.monotonic() - started
        return sender.submit(send)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="liandong-push") as sender:
        queue = [("push", first, first_files, push(first, first_files))]
        try:
            while queue:
                kind, docs, files, in_flight = queue.pop(0)
                if kind == "files":
                    _apply_blob_answers(conn, node, state, in_flight.result())
                    continue
                size = push_size(node, state)
                following = [] if len(docs) < limit else envelope.within_bytes(
                    outbox.pending_after(conn, docs[-1]["seq"], size), int(node.config["SYNC_BATCH_BYTES"]))
                following_files = _files_of(node, state, following)
                if len(following_files) > wire.MAX_BLOBS_ASKED:
                    following = []  # too many to ask about in the push: the next round sends them
                answer, seconds = in_flight.result()  # a failure: the answers before it are applied
                state.batch = next_push_size(limit, len(docs), seconds, float(node.config["SYNC_PUSH_SECONDS"]),
                                             int(node.config["SYNC_BATCH"]), int(node.config["SYNC_BATCH_MAX"]))
                limit = size
                if following:
                    queue.append(("push", following, following_files, push(following, following_files)))
                pushed += len(docs)
                step = _apply_answer(conn, node, state, answer, acks_hold=answer.get("receipt") is None)
                if step is not None:
                    applied = {k: (applied or {}).get(k, 0) + v for k, v in step.items()}
                held = answer.get("blobs") if isinstance(answer.get("blobs"), dict) else None
                if files and held is None:  # a parent that does not answer it in a push: asked in turn
                    have, complete = sender.submit(client.blob_status, [a["sha256"] for a in files]).result()
                    held = {"have": have, "complete": complete}
                todo = _blobs_todo(node, state, files, held or {})
                if todo:
                    queue.append(("files", [], [], sender.submit(_send_todo, node, client, *todo)))
        finally:
            for _, _, _, waiting in queue:
                waiting.cancel()  # not started: nothing was sent (one already sent is answered and dropped)
    return pushed, None, applied


def _files_of(node, state: SyncState, rows: list) -> list[dict]:
    """The files the outbox ``rows`` name that this node holds whole and has not delivered."""
    named = {a["sha256"]: {"sha256": a["sha256"], "size": a["size"]}
             for r in rows if r["attachments"] != "[]" for a in json.loads(r["attachments"])
             if a["sha256"] not in state.delivered}
    if not named:
        return []
    held = node.blobs.held(named)
    return [a for sha, a in named.items() if sha in held]


def apply_push_answer(conn: sqlite3.Connection, node, answer: dict, forwarded: list | None = None,
                      acks_hold: bool = False) -> None:
    """Apply what the parent said to a push (HTTP or USB bundle): custody receipt and acks; at a
    township, which of the custody envelopes it ``forwarded`` the hub now holds.

    ``acks_hold``: a write-through answer without a receipt (§5.3.3): the parent held what the
    hub's ack covers (it forwarded it), so those envelopes pass through custody first, as a
    receipt would have recorded, before the ack marks them (a case its township decides is
    接件 there from custody on)."""
    trust = node.trust(conn)
    answer = full_forms(answer, node, trust)
    with write_transaction(conn):
        receipt = answer.get("receipt")
        if receipt is not None:  # only a township parent signs custody receipts
            try:
                opened = envelope.open_signed(receipt, envelope.CUSTODY_TYPES, trust.node_key)
                holder = trust.node_of_key(opened.kid)
                if holder is not None and holder.node_id == node.config["PARENT_ID"]:
                    ids = (receipt_ids(conn, node.node_id, opened.body) if opened.payload_type == envelope.CUSTODY_V2
                           else opened.body["envelope_ids"])
                    outbox.mark_custody(conn, ids, node.now())
                    node.kind.on_custody(conn, ids, holder.node_id)
            except (SignatureError, KeyError, TypeError, ValueError) as exc:
                log.warning("custody receipt refused: %s", exc)
        _apply_acks(conn, node, trust, answer.get("acks", []), custody_first=acks_hold)
        if node.relay is not None:
            _release_refused_custody(conn, node, answer.get("results", []))
            if forwarded:
                relay.mark_forwarded(conn, forwarded, answer, node.now())


def full_forms(answer: dict, node, trust) -> dict:
    """``answer`` with its acknowledgements (the hub's keys) and custody receipt (the parent's
    keys) back in their stored form, if they came in the short one (docs/sync-protocol.md §2.1.2)."""
    out = dict(answer)
    if isinstance(out.get("acks"), list):
        out["acks"] = [envelope.full_form(a, trust.hub_keys) for a in out["acks"]]
    if out.get("receipt") is not None:
        parent = trust.nodes.get(node.config["PARENT_ID"])
        out["receipt"] = envelope.full_form(out["receipt"], parent.keys if parent is not None else {})
    return out


def receipt_ids(conn: sqlite3.Connection, origin: str, body: dict) -> list[str]:
    """The ids of this node's own envelopes a ranged custody receipt (``custody`` v2) covers: a run
    counts only if the ids this outbox holds for its seqs hash to the run's ``ids_sha256`` (the
    township holds exactly these envelopes); any other run is ignored (logged)."""
    ids = []
    for run in body["held"]:
        if run["origin"] != origin:
            continue
        rows = [r["envelope_id"] for r in conn.execute(
            "SELECT envelope_id FROM outbox WHERE seq BETWEEN ? AND ? ORDER BY seq", (run["first"], run["last"]))]
        if len(rows) == run["last"] - run["first"] + 1 and relay.ids_digest(rows) == run["ids_sha256"]:
            ids += rows
        else:
            log.warning("custody receipt names envelopes %s-%s this outbox does not hold as such",
                        run["first"], run["last"])
    return ids


def _release_refused_custody(conn: sqlite3.Connection, node, results: list) -> None:
    """Stop forwarding envelopes the hub quarantined (revoked, forged, forked…): it keeps them
    for review, and the village still holds its own copy until an ack, so nothing is lost;
    forwarding them every round would only crowd out the rest of the township's batch."""
    refused = [r for r in results if r.get("status") == "quarantined" and r.get("envelope_id")]
    # Held at the hub already (a retry the township could not tell from a fork): nothing to forward.
    conn.executemany("DELETE FROM custody WHERE envelope_id = ? AND last_error = 'fork'",
                     [(r["envelope_id"],) for r in results if r.get("status") == "duplicate" and r.get("envelope_id")])
    if not refused:
        return
    conn.executemany("DELETE FROM custody WHERE envelope_id = ?", [(r["envelope_id"],) for r in refused])
    for r in refused:
        audit(conn, "hub", "custody.refused", r.get("origin"), f"{r['envelope_id']} {r.get('reason')}", node.now())


def _apply_acks(conn: sqlite3.Connection, node, trust, acks: list, custody_first: bool = False) -> int:
    """Verify and apply hub acknowledgements; ``custody_first``: this node's envelopes they newly
    cover are recorded in custody first (:func:`apply_push_answer`)."""
    covered = 0
    for ack in acks:
        after_seq = 0
        try:
            opened = envelope.open_signed(ack, envelope.ACK, trust.hub_key)
        except SignatureError as exc:
            log.warning("acknowledgement refused: %s", exc)
            continue
        body = opened.body
        if body["origin"] == node.node_id:
            try:
                after_seq = outbox.acked_through(conn)
                if custody_first:
                    _custody_by_ack(conn, node, body["acked_seq"], body["acked_id"], after_seq)
                covered += outbox.mark_acked(conn, body["acked_seq"], body["acked_id"], node.now())
            except ValueError as exc:
                log.error("acknowledgement does not match this node's chain: %s", exc)
                continue
        elif node.relay is not None:
            relay.store_ack(conn, trust, ack)
        else:
            continue
        node.kind.on_acked(conn, node, body["origin"], body["acked_seq"], after_seq)
    return covered


def _custody_by_ack(conn: sqlite3.Connection, node, acked_seq: int, acked_id: str, after_seq: int) -> None:
    """Record custody of this node's pending envelopes an ack newly covers, as the receipt the
    write-through answer left out would have. Only an ack that names this chain's own envelope
    at ``acked_seq`` (checked again by ``outbox.mark_acked``, which then refuses the ack)."""
    row = conn.execute("SELECT envelope_id FROM outbox WHERE seq = ?", (acked_seq,)).fetchone()
    if row is None or row["envelope_id"] != acked_id:
        return
    ids = [r["envelope_id"] for r in conn.execute(
        "SELECT envelope_id FROM outbox WHERE seq > ? AND seq <= ? AND state = 'pending' ORDER BY seq",
        (after_seq, acked_seq))]
    if ids:
        outbox.mark_custody(conn, ids, node.now())
        node.kind.on_custody(conn, ids, node.config["PARENT_ID"])


def _observe_parent_time(conn: sqlite3.Connection, node, server_time: str, server: str) -> None:
    """Move the HLC past the parent's time; remember the PC clock's offset (wrong-clock banner)."""
    try:
        parent_ms = int(parse_iso(server_time).timestamp() * 1000)
    except ValueError:
        return
    node.hlc.observe(Timestamp(parent_ms, 0, server or "parent"))
    conn.execute(
        "INSERT INTO node_meta(key, value) VALUES ('clock_skew_ms', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(node.wall_ms() - parent_ms),),
    )


#: Envelopes with files looked at per round: files go with (or just after) their envelopes.
FILES_WINDOW = 1000


def _attachments_to_send(conn: sqlite3.Connection, node, state: SyncState, through: int | None = None,
                         custody: list[str] | None = None) -> list[dict]:
    """Files the parent may lack, oldest envelope first, read from ``state.files_through`` on
    (by primary key) instead of from every unacknowledged outbox row.

    ``through``: only files of this node's envelopes up to that seq; ``custody``: at a township,
    only files of custody envelopes already forwarded or among these (the push of the round)."""
    top = outbox.last_seq(conn)  # read first: an envelope appended meanwhile is after it
    if through is not None:
        top = min(top, through)
    mine = outbox.unacked_attachments(conn, state.files_through, FILES_WINDOW, through=top)
    wanted = {a["sha256"]: a for a in mine}
    if node.relay is not None:
        wanted.update({a["sha256"]: a for a in relay.custody_attachments(conn, custody) if a["sha256"] not in wanted})
    # Every file of the envelopes before the first one with a file not yet delivered is there.
    undelivered = [a["seq"] for a in mine if a["sha256"] not in state.delivered]
    if undelivered:
        state.files_through = max(state.files_through, min(undelivered) - 1)
    elif len({a["seq"] for a in mine}) < FILES_WINDOW:
        # The window reached ``top`` and every file up to it is delivered (or none was named):
        # start after it next round. Otherwise a node without files read its whole unacknowledged
        # outbox here every round, looking for files.
        state.files_through = max(state.files_through, top)
    else:
        state.files_through = mine[-1]["seq"]
    return [{"sha256": s, "size": a["size"]} for s, a in wanted.items() if s not in state.delivered]


def _files_wanted(conn: sqlite3.Connection, node, state: SyncState, through: int | None = None,
                  custody: list[str] | None = None) -> list[dict]:
    """The files to offer the parent this round (those this node holds whole)."""
    attachments = _attachments_to_send(conn, node, state, through, custody)
    held = node.blobs.held(a["sha256"] for a in attachments)  # one query for those kept as rows
    return [a for a in attachments if a["sha256"] in held]


def _send_blobs(conn: sqlite3.Connection, node, client: ParentClient, state: SyncState,
                asked: tuple[list, dict | None] | None = None) -> int:
    """Send what the parent lacks of the round's files. ``asked``: (the files, what the push's
    answer said the parent holds of them, None if it did not), from :func:`_push`."""
    wanted, held = asked if asked is not None else (_files_wanted(conn, node, state), None)
    if not wanted:
        return 0
    if held is None:  # else the push asked already (§5.3.2)
        have, complete = client.blob_status([a["sha256"] for a in wanted])
        held = {"have": have, "complete": complete}
    todo = _blobs_todo(node, state, wanted, held)
    if not todo:
        return 0
    _apply_blob_answers(conn, node, state, _send_todo(node, client, *todo))
    return len(todo[0])


def _blobs_todo(node, state: SyncState, wanted: list[dict], held: dict) -> tuple[list, dict] | None:
    """What to send of ``wanted``, given what the parent said it ``held`` of them (a file it does
    not list is one it has none of): ``([(sha256, offset)], {sha256: bytes})``, None if nothing."""
    have, complete = held.get("have", {}), set(held.get("complete", []))
    state.delivered.update(complete)
    todo = [(a["sha256"], min(int(have.get(a["sha256"], 0)), a["size"])) for a in wanted if a["sha256"] not in complete]
    if not todo:
        return None
    return todo, node.blobs.read_many(sha for sha, _ in todo)  # held: the callers checked it


def _send_todo(node, client: ParentClient, todo: list[tuple[str, int]], data: dict[str, bytes]) -> list[dict]:
    """Send the files of :func:`_blobs_todo` (no database: may run in the push-ahead thread)."""
    try:
        return client.send_blob_batch([(sha, data[sha], offset) for sha, offset in todo if sha in data])
    except SyncUnavailable as exc:
        if exc.status not in (404, 405):
            raise
        return _send_blobs_one_by_one(node, client, todo)  # a parent from before batched files


def _apply_blob_answers(conn: sqlite3.Connection, node, state: SyncState, answers: list[dict]) -> None:
    """What the parent said to the files sent: which it now holds, which it refused, and the
    acknowledgements they released."""
    acks = [ack for answer in answers for ack in answer.get("acks", [])]
    for answer in answers:
        state.delivered.update(answer.get("complete", []))
        for sha, reason in (answer.get("rejected") or {}).items():
            log.warning("material file %s refused by the parent: %s", sha, reason)
    if acks:
        with write_transaction(conn):
            _apply_acks(conn, node, node.trust(conn), acks)
        state.acks_applied()


def _send_blobs_one_by_one(node, client: ParentClient, todo: list[tuple[str, int]]) -> list[dict]:
    """The single-file route (``PUT /sync/v1/blobs/<sha256>``), for an older parent."""
    answers = []
    for sha, offset in todo:
        answer = client.send_blob(sha, node.blobs.read(sha), offset)
        answers.append({"complete": [sha] if answer.get("complete") else [], "acks": answer.get("acks", [])})
    return answers


def _pull(conn: sqlite3.Connection, node, client: ParentClient, state: SyncState | None = None) -> dict:
    cursors, have = pull_request(conn, node)
    acked = acked_request(conn, node)
    answer = client.pull(cursors, have, acked, wait=pull_wait(conn, node, state, acked[node.node_id]))
    # The answer and the contact in one transaction, as after a push (one commit per idle round).
    with _cache_for_answer(conn, node), write_transaction(conn):
        applied = apply_pull_answer(conn, node, answer)
        if state is not None:
            _record_contact(conn, node, state)
    if state is not None and applied["acked"]:
        state.acks_applied()
    return applied


def pull_wait(conn: sqlite3.Connection, node, state: SyncState | None, acked: int) -> int:
    """Seconds a separate pull may let the parent hold its answer for the hub's next
    acknowledgement (§7.1 ``wait``): ``SYNC_PULL_WAIT_SECONDS`` while the parent holds envelopes
    of this node beyond ``acked`` (a backlog pushed, its acks to come), else 0. Only within
    :data:`PULL_WAIT_AFTER_PUSH_SECONDS` of this node's last push: custody the hub holds back for
    missing files for hours must not make every idle round wait, nor kick its township's round."""
    if state is None or time.monotonic() - state.pushed_at >= PULL_WAIT_AFTER_PUSH_SECONDS:
        return 0
    return int(node.config["SYNC_PULL_WAIT_SECONDS"]) if outbox.receipted_through(conn) > acked else 0


def acked_request(conn: sqlite3.Connection, node) -> dict[str, int]:
    """The acknowledgements this node already holds, so the parent sends only newer ones."""
    acked = {node.node_id: outbox.acked_through(conn)}
    if node.relay is not None:
        acked.update({r["origin"]: r["acked_seq"] for r in conn.execute("SELECT origin, acked_seq FROM acks")})
    return acked


def pull_request(conn: sqlite3.Connection, node) -> tuple[dict, dict]:
    """(cursors, metadata versions) this node would send in a pull."""
    if node.relay is not None:
        cursors = {downlink.cursor_key(r["issuer"], r["dest"]): r["seq"] for r in conn.execute(
            "SELECT issuer, dest, MAX(seq) AS seq FROM downlink WHERE issuer != ? GROUP BY issuer, dest",
            (node.node_id,))}
        cursors.update(downlink.cursors(conn, node.node_id))
    else:
        cursors = downlink.cursors(conn, node.node_id)
    have = {r["role"]: r["version"] for r in conn.execute("SELECT role, version FROM trusted_metadata")}
    return cursors, have


def apply_pull_answer(conn: sqlite3.Connection, node, answer: dict) -> dict:
    """Apply a pull answer (HTTP or USB bundle): metadata, acks, downlink."""
    result = {"acked": 0, "applied": 0, "metadata": 0}
    with write_transaction(conn):
        if isinstance(answer.get("server_time"), str):
            _observe_parent_time(conn, node, answer["server_time"], str(answer.get("server", "")))
        # v2 and short key ids only once the parent takes them
        formats.record_parent(conn, answer.get("envelope_versions"), answer.get("keyids"))
        trust = node.trust(conn)
        for document in answer.get("metadata", []):
            try:
                role = envelope.peek(document).get("role")
                if accept_metadata(conn, document, role, trust, node.now()):
                    result["metadata"] += 1
                    node.forget_trust()
                    if role == "calendar":
                        install_calendar(node, envelope.peek(document)["content"])
            except (RollbackError, SignatureError) as exc:
                log.warning("metadata refused: %s", exc)
        trust = node.trust(conn)
        if node.relay is not None:
            relay.drop_revoked(conn, trust, node.now())
        if rotation.finish_if_registered(node, trust):
            log.info("switched to the rotated node key")
        result["acked"] = _apply_acks(conn, node, trust, full_forms({"acks": answer.get("acks", [])}, node, trust)["acks"])
        messages = answer.get("downlink", [])
        if node.relay is not None:
            for document in messages:
                try:
                    opened = downlink.store_relayed(conn, trust, document)
                except SignatureError as exc:
                    log.warning("downlink refused: %s", exc)
                    continue
                if opened.body["dest"] != node.node_id:
                    node.relay.follow(conn, opened.body)  # e.g. the township follows its villages' cases
        result["applied"] = downlink.apply_in_order(conn, trust, node.node_id, messages,
                                                     lambda c, body: handle_message(c, node, body))
    return result


def install_calendar(node, content: dict) -> None:
    """Use the hub's holiday schedules now and keep them for the next start."""
    folder = node.data_dir / "calendar"
    folder.mkdir(exist_ok=True)
    for schedule in content.get("schedules", []):
        node.calendar.add_schedule(schedule)
        write_private_file(folder / f"{schedule['year']}.json", canonical.dumps(schedule))


def handle_message(conn: sqlite3.Connection, node, message: dict) -> None:
    """Hand a verified downlink message addressed to this node to its tier's handler."""
    handler = node.handlers.get(message["kind"])
    if handler is None:
        log.warning("no handler for downlink message kind %s; skipped", message["kind"])
        return
    handler(conn, message)


def resume_from_hub(conn: sqlite3.Connection, node, client: ParentClient | None = None) -> dict:
    """After a restore from an old backup: fetch the hub-signed acknowledgement of this node's own
    envelopes (through the parent) and continue the chain after it (:func:`outbox.resume_after`).

    The node must be active again at the hub (an admin reinstates it after reviewing the fork).
    :raises SyncUnavailable: the parent cannot be reached or refuses this node.
    """
    client = client or client_for(node)
    cursors, have = pull_request(conn, node)
    answer = client.pull(cursors, have, {node.node_id: 0})
    trust = node.trust(conn)
    head = {"acked_seq": 0, "acked_id": outbox.GENESIS}
    for ack in full_forms({"acks": answer.get("acks", [])}, node, trust)["acks"]:
        try:
            body = envelope.open_signed(ack, envelope.ACK, trust.hub_key).body
        except SignatureError as exc:
            log.warning("acknowledgement refused: %s", exc)
            continue
        if body["origin"] == node.node_id:
            head = body
    with write_transaction(conn):
        return outbox.resume_after(conn, node.key, head["acked_seq"], head["acked_id"], node.now())
