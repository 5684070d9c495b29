"""The township's custody of its villages' envelopes.

A township checks each envelope (of an active village below it: a village's own envelopes on
the signature of the request that carried them, any other in full), stores it with
``synchronous=FULL`` and only then signs a custody receipt. It forwards the exact bytes to the
hub, keeps them until a hub-signed acknowledgement covers them, and serves that
acknowledgement and the hub's downlink back to the village.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import timedelta

from shared.core import canonical
from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.crypto import SignatureError, SigningKey
from sync import blobs, envelope
from sync.trust import TrustStore


def take_custody(
    conn: sqlite3.Connection, trust: TrustStore, township_id: str, documents: list, now,
    caller: str | None = None, taken: list | None = None, prepared: list | None = None,
) -> tuple[list[dict], list[str]]:
    """Verify and durably store village envelopes. Call inside a write transaction.

    Only a village's own envelopes, pushed by that village (``caller``) below this township, are
    taken (an oversized material file is the hub's to refuse: refused here, the village's chain
    would stop). The caller's own envelopes (signed with one of its keys) are not verified again:
    its request signature covers every byte (docs/sync-protocol.md §5.3.1); the hub verifies each
    one end to end. An envelope numbered at or below the hub's acknowledgement is dropped only if
    it is the very envelope acknowledged; any other goes on to the hub, which tells a late retry
    from a fork (a village restored from an old backup) and suspends the node in the latter case.

    :param taken: if given, ``(document, body)`` of each envelope now in custody is appended to
        it, in order: the body parsed here, so the caller need not parse it again.
    :param prepared: ``documents`` as :func:`envelope.open_chained` opened them with ``trust``
        before the write lock (same order): one of the caller's own that verified there is not
        opened again here; any other is opened here as above.
    :returns: per-envelope results, and the ids now in custody (new or already held).
    """
    results, held = [], []
    callers_key = _keys_of(trust, caller)
    received_at = iso(now)
    acked_seqs: dict[str, int] = {}  # per origin: the acks table does not change during custody
    for i, document in enumerate(documents):
        early = prepared[i] if prepared is not None else None
        try:
            if isinstance(early, envelope.Opened) and callers_key(early.kid) is not None:
                opened = early  # what the caller's vouched opening gives, its signature verified too
            else:
                try:
                    opened = envelope.open_signed(document, envelope.ENVELOPE_TYPES, callers_key, vouched=True)
                except SignatureError:  # not signed by the caller: verified in full
                    opened = envelope.open_signed(document, envelope.ENVELOPE_TYPES, trust.node_key)
        except SignatureError as exc:
            reason = "malformed" if isinstance(exc, envelope.MalformedPayload) else "bad_signature"
            results.append({"status": "rejected", "reason": reason, "detail": str(exc)})
            continue
        envelope_id = opened.doc_id  # the id of the bytes just opened (not decoded and hashed again)
        node = trust.node_of_key(opened.kid)
        origin, seq = opened.body.get("origin"), opened.body.get("seq")
        if not canonical.is_count(seq) or seq < 1:
            results.append({"envelope_id": envelope_id, "status": "rejected", "reason": "malformed",
                            "detail": "seq must be an integer from 1 to 2^63-1"})
            continue
        if opened.body.get("v") != envelope.ENVELOPE_VERSIONS[opened.payload_type]:
            results.append({"envelope_id": envelope_id, "status": "rejected", "reason": "malformed",
                            "detail": "v must be the version of the payload type"})
            continue
        if origin != node.node_id or node.parent != township_id or (caller is not None and caller != origin):
            results.append({"envelope_id": envelope_id, "status": "rejected", "reason": "not_below_this_township"})
            continue
        attachments = [a for a in (opened.body.get("attachments") or []) if isinstance(a, dict)]
        if node.status != "active" and (node.revoked_after_seq is None or seq > node.revoked_after_seq):
            results.append({"envelope_id": envelope_id, "status": "rejected", "reason": node.status})
            continue
        conn.execute(
            "INSERT INTO custody(envelope_id, origin, seq, case_id, document, attachments, received_at)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT(envelope_id) DO NOTHING",
            (envelope_id, origin, seq, (opened.body.get("body") or {}).get("case_id"), envelope.to_bytes(document),
             json.dumps(attachments) if attachments else "[]", received_at),
        )
        if attachments:
            blobs.claim_parked(conn, [str(a.get("sha256")) for a in attachments])
        first = envelope_id
        if conn.execute("INSERT INTO relayed_ids(origin, seq, envelope_id) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                        (origin, seq, envelope_id)).rowcount == 0:  # the number was taken before: by this one?
            first = conn.execute("SELECT envelope_id FROM relayed_ids WHERE origin = ? AND seq = ?",
                                 (origin, seq)).fetchone()["envelope_id"]
        if origin not in acked_seqs:
            acked = conn.execute("SELECT acked_seq FROM acks WHERE origin = ?", (origin,)).fetchone()
            acked_seqs[origin] = acked["acked_seq"] if acked is not None else 0
        if first != envelope_id:
            # Same number, other content: a restored or cloned village. The hub must see it (and
            # suspends the node); kept apart so no acknowledgement releases it before it goes up.
            conn.execute("UPDATE custody SET last_error = 'fork' WHERE envelope_id = ?", (envelope_id,))
        elif seq <= acked_seqs[origin]:
            # Already acknowledged by the hub: nothing to keep, the ack travels back down.
            conn.execute("DELETE FROM custody WHERE envelope_id = ?", (envelope_id,))
        results.append({"envelope_id": envelope_id, "origin": origin, "seq": seq, "status": "custody"})
        held.append(envelope_id)
        if taken is not None:
            taken.append((document, opened.body))
    return results, held


def drop_revoked(conn: sqlite3.Connection, trust: TrustStore, now) -> int:
    """Custody of revoked villages numbered after their ``revoked_after_seq`` leaves the relay
    (the hub would quarantine it anyway; it must not crowd out the other villages). Audited."""
    dropped = 0
    for node in trust.nodes.values():
        if node.status != "revoked":
            continue
        after = node.revoked_after_seq if node.revoked_after_seq is not None else 0
        rows = conn.execute("DELETE FROM custody WHERE origin = ? AND seq > ? RETURNING envelope_id, seq",
                            (node.node_id, after)).fetchall()
        if rows:
            audit(conn, "system", "custody.revoked_dropped", node.node_id,
                  f"{len(rows)} envelopes after seq {after}: " + ",".join(str(r["seq"]) for r in rows)[:400], now)
            dropped += len(rows)
    return dropped


def _keys_of(trust: TrustStore, node_id: str | None):
    """A key resolver for ``node_id``'s own keys only (none when there is no caller)."""
    entry = trust.nodes.get(node_id) if node_id else None
    keys = entry.keys if entry is not None else {}
    return keys.get


def custody_receipt(key: SigningKey, township_id: str, envelope_ids: list[str], now) -> dict:
    """A township-signed receipt: these envelopes are on its disk."""
    return envelope.sign(key, envelope.CUSTODY, {"holder": township_id, "envelope_ids": envelope_ids, "at": iso(now)})


def ranged_receipt(key: SigningKey, township_id: str, results: list[dict], now) -> dict:
    """A township-signed receipt (``custody`` v2) for the envelopes of ``results`` in custody, as
    runs of consecutive seqs per origin, each bound to its exact envelopes by :func:`ids_digest`."""
    held = sorted((r["origin"], r["seq"], r["envelope_id"]) for r in results if r.get("status") == "custody")
    runs: list[dict] = []
    ids: list[str] = []
    for origin, seq, envelope_id in held:
        if runs and runs[-1]["origin"] == origin and runs[-1]["last"] + 1 == seq:
            runs[-1]["last"] = seq
        else:
            if runs:
                runs[-1]["ids_sha256"] = ids_digest(ids)
            runs.append({"origin": origin, "first": seq, "last": seq})
            ids = []
        ids.append(envelope_id)
    if runs:
        runs[-1]["ids_sha256"] = ids_digest(ids)
    return envelope.sign(key, envelope.CUSTODY_V2, {"holder": township_id, "held": runs, "at": iso(now)})


def ids_digest(envelope_ids: list[str]) -> str:
    """SHA-256 (hex) of the 32-byte envelope ids one after the other, in seq order."""
    return hashlib.sha256(b"".join(bytes.fromhex(i) for i in envelope_ids)).hexdigest()


#: A custody envelope the hub said it holds is forwarded again only if its acknowledgement is
#: still missing this long after (the hub waits for its files, or lost it: at least once).
FORWARD_AGAIN_AFTER = timedelta(minutes=10)
#: Push outcomes that mean the hub holds the envelope (in its chain, waiting for files, or
#: behind a gap); an acknowledgement follows once the chain and the files are complete.
HELD_BY_HUB = ("accepted", "duplicate", "held")


def to_forward(conn: sqlite3.Connection, limit: int, now=None) -> list[sqlite3.Row]:
    """Envelopes in custody to push to the hub, oldest first (per origin in order).

    In the order custody took them: rowid order, since a new row's rowid is above every row's in
    the table (``custody`` has no ``INTEGER PRIMARY KEY``, and nothing here renumbers it). A
    village pushes its own envelopes in seq order, so each origin's stay in order. The walk stops
    after ``limit`` rows: ``ORDER BY received_at, origin, seq`` read and sorted every envelope in
    custody, documents included, each round (a township back online with 10,000 of them).

    Given ``now``, an envelope the hub already said it holds (:func:`mark_forwarded`) is skipped
    until ``FORWARD_AGAIN_AFTER`` has passed without its acknowledgement: one waiting for its
    material files was pushed again every round until they arrived (~40 % of the pushes of a
    drain with a scan per case).
    """
    if now is None:
        return conn.execute(
            "SELECT envelope_id, origin, seq, document, received_at FROM custody ORDER BY rowid LIMIT ?",
            (limit,)).fetchall()
    return conn.execute(
        "SELECT envelope_id, origin, seq, document, received_at FROM custody"
        " WHERE forwarded_at IS NULL OR forwarded_at < ?"
        " ORDER BY rowid LIMIT ?", (iso(now - FORWARD_AGAIN_AFTER), limit)).fetchall()


def mark_forwarded(conn: sqlite3.Connection, pushed: list, answer: dict, now) -> int:
    """Record which of the custody envelopes just ``pushed`` (rows of :func:`to_forward`) the hub
    holds now, by its push ``answer`` (a full list of results, or a compact one: routine outcomes
    as seq ranges per origin, §5.3.0). Call inside a write transaction; returns how many.

    Nothing leaves custody here (only a hub acknowledgement releases an envelope); an envelope
    whose outcome is anything else (refused, or not in the answer) stays due at once.
    """
    by_id = {r["envelope_id"]: r for r in pushed}
    outcomes = {r["envelope_id"]: r.get("status") for r in answer.get("results", [])
                if isinstance(r, dict) and r.get("envelope_id") in by_id}
    ranges = answer.get("ok") if isinstance(answer.get("ok"), dict) else {}
    runs = {origin: [(run[0], run[1]) for run in origin_runs if isinstance(run, list) and len(run) == 2
                     and canonical.is_count(run[0]) and canonical.is_count(run[1])]
            for origin, origin_runs in ranges.items() if isinstance(origin_runs, list)}
    held = [eid for eid, status in outcomes.items() if status in HELD_BY_HUB]
    for r in pushed:
        if r["envelope_id"] not in outcomes:
            seq = r["seq"]
            for low, high in runs.get(r["origin"], ()):
                if low <= seq <= high:
                    held.append(r["envelope_id"])
                    break
    stamp = iso(now)
    conn.executemany("UPDATE custody SET forwarded_at = ?, attempts = attempts + 1 WHERE envelope_id = ?",
                     [(stamp, eid) for eid in held])
    return len(held)


def custody_attachments(conn: sqlite3.Connection, pushing: list[str] | None = None) -> list[dict]:
    """Material files named by envelopes in custody (they go on to the hub too). ``pushing``:
    only those of envelopes already forwarded or among these ids (the hub can place them)."""
    if pushing is None:
        rows = conn.execute("SELECT attachments FROM custody WHERE attachments != '[]'")
    else:
        rows = conn.execute(
            "SELECT attachments FROM custody WHERE attachments != '[]' AND (forwarded_at IS NOT NULL"
            f" OR envelope_id IN ({','.join('?' * len(pushing))}))", pushing)
    return [a for row in rows for a in json.loads(row["attachments"])]


def store_ack(conn: sqlite3.Connection, trust: TrustStore, ack_document: dict) -> dict | None:
    """Verify a hub acknowledgement, keep the newest per origin, release custody it covers."""
    opened = envelope.open_signed(ack_document, envelope.ACK, trust.hub_key)
    body = opened.body
    origin, acked_seq = body["origin"], body["acked_seq"]
    conn.execute(
        "INSERT INTO acks(origin, acked_seq, document) VALUES (?,?,?) ON CONFLICT(origin) DO UPDATE"
        " SET acked_seq = excluded.acked_seq, document = excluded.document WHERE excluded.acked_seq > acks.acked_seq",
        (origin, acked_seq, envelope.to_bytes(ack_document)),
    )
    conn.execute("DELETE FROM custody WHERE origin = ? AND seq <= ? AND last_error IS NOT 'fork'", (origin, acked_seq))
    return body


def ack_covering(conn: sqlite3.Connection, origin: str, held: list[dict]) -> dict | None:
    """The hub's acknowledgement for ``origin`` stored here (verified by :func:`store_ack`) if it
    covers every one of ``held`` (push results in custody: ``origin``, ``seq``, ``envelope_id``),
    else None. Each must be the envelope this relay took first for its seq (not a fork, which an
    acknowledgement of that seq does not cover); the village checks the ack against its own chain."""
    mine = [r for r in held if r.get("origin") == origin and canonical.is_count(r.get("seq"))]
    if not mine or len(mine) != len(held):
        return None
    row = conn.execute("SELECT acked_seq, document FROM acks WHERE origin = ?", (origin,)).fetchone()
    if row is None or row["acked_seq"] < max(r["seq"] for r in mine):
        return None
    for r in mine:
        first = conn.execute("SELECT envelope_id FROM relayed_ids WHERE origin = ? AND seq = ?",
                             (origin, r["seq"])).fetchone()
        if first is None or first["envelope_id"] != r.get("envelope_id"):
            return None
    return envelope.from_bytes(row["document"])


def files_missing(conn: sqlite3.Connection, has_blob, envelope_ids: list[str]) -> bool:
    """Whether any of these envelopes in custody names a material file this relay does not hold
    whole yet (the hub cannot acknowledge it before the file reaches it: nothing to wait for)."""
    for start in range(0, len(envelope_ids), 500):
        part = envelope_ids[start:start + 500]
        for row in conn.execute("SELECT attachments FROM custody WHERE attachments != '[]' AND envelope_id IN"
                                f" ({','.join('?' * len(part))})", part):
            if any(not has_blob(str(a.get("sha256"))) for a in json.loads(row["attachments"])):
                return True
    return False


def record_peer(conn: sqlite3.Connection, node_id: str, pushed: int, now) -> None:
    """Remember when a village last reached this township (relay health page)."""
    conn.execute(
        "INSERT INTO peer_status(node_id, last_seen, last_push_count) VALUES (?,?,?) ON CONFLICT(node_id)"
        " DO UPDATE SET last_seen = excluded.last_seen, last_push_count = excluded.last_push_count",
        (node_id, iso(now), pushed),
    )
