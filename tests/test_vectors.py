"""Byte-exact test vectors of the sync protocol (docs/sync-protocol.md), checked against the code.

Every file in ``tests/vectors/`` is produced by :func:`build_all` from fixed Ed25519 seeds and a
fixed clock (Ed25519 is deterministic, so signatures are reproducible). The tests check that
(a) the files are exactly what the code produces today, and (b) the code accepts, produces and
refuses each recorded example on its own terms, reading only the stored file. A deliberate wire
format change is recorded with ``python -m tests.test_vectors --write`` and reviewed as a diff.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.core import canonical, storage
from shared.core.clock import iso
from shared.core.crypto import SignatureError, SigningKey, b64d, b64e, pae, sha256_hex, verify
from shared.core.errors import RuleError
from shared.rules import authority
from shared.services import casework, document_token, documents, submission
from sync import downlink, envelope, nodeauth, outbox, relay, wire
from sync.apply import apply_pending
from sync.ingest import Ingestor
from sync.trust import NodeEntry, TrustStore, hub_key_cert_body, verify_hub_key_cert

VECTORS = Path(__file__).with_name("vectors")

HUB_ID, TOWNSHIP_ID = "130926", "130926100"
VILLAGE_A, VILLAGE_B, VILLAGE_R = "130926100201", "130926100202", "130926100203"
SEEDS = {  # name -> 32-byte Ed25519 seed (SigningKey.from_seed); never use these outside tests
    "root": bytes([1]) * 32,
    "hub_signing": bytes([2]) * 32,
    "township": bytes([3]) * 32,
    "village_a": bytes([4]) * 32,
    "village_b": bytes([5]) * 32,
    "village_r": bytes([6]) * 32,
    "stranger": bytes([7]) * 32,
}
NOW = datetime(2027, 3, 1, 8, 30, 0, tzinfo=UTC)
WALL_MS = int(NOW.timestamp() * 1000)
MAX_SKEW_MS = 600_000


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(SEEDS[name])


def hlc(node: str, offset_ms: int = 0, counter: int = 0) -> str:
    return f"{WALL_MS + offset_ms:016d}-{counter:04d}-{node}"


def sample_case_body() -> dict:
    """A realistic ``case.submit`` body (synthetic person; GB 11643's own example number)."""
    return {
        "case_id": "6f1c2a9e0b7d4e58a3c1f2e4d5b6a7c8",
        "receipt_no": "130926100201-20270301-0001",
        "item_code": "RS-001",
        "item_name": "城乡居民养老保险参保登记",
        "catalog_version": 1,
        "limit_wd": 3,
        "route": {"level": "city", "office": "130926-rs"},
        "applicant": {"name": "张三", "id_number": "11010519491231002X", "phone": "13800000000"},
        "form": {"household": "东关村3组", "note": "引号\"、反斜杠\\、换行\n、制表\t"},
        "materials": [{"code": "M1", "filename": "身份证.jpg", "sha256": sha256_hex(b"id card scan"), "size": 12}],
        "agent": "agent",
        "submitted_at": iso(NOW),
        "missing_materials": [],
    }


def envelope_body(origin: str, seq: int, prev: str, kind: str = "case.submit", body: dict | None = None,
                  attachments: list | None = None, clock: str | None = None) -> dict:
    return {"v": 1, "origin": origin, "seq": seq, "prev": prev, "hlc": clock or hlc(origin, seq),
            "kind": kind, "body": body if body is not None else {"n": seq}, "attachments": attachments or []}


def trust_store() -> TrustStore:
    """The hub's view: root, its signing key, a township and three villages (one revoked after 1)."""
    def entry(node_id, tier, parent, name, status="active", after=None):
        k = key(name)
        return NodeEntry(node_id, tier, parent, name, status, after, {k.kid: k.public_b64})

    nodes = {
        TOWNSHIP_ID: entry(TOWNSHIP_ID, "township", HUB_ID, "township"),
        VILLAGE_A: entry(VILLAGE_A, "village", TOWNSHIP_ID, "village_a"),
        VILLAGE_B: entry(VILLAGE_B, "village", TOWNSHIP_ID, "village_b"),
        VILLAGE_R: entry(VILLAGE_R, "village", TOWNSHIP_ID, "village_r", "revoked", 1),
    }
    hub = key("hub_signing")
    return TrustStore(HUB_ID, key("root").public_b64, {hub.kid: hub.public_b64}, nodes, 1)


def hub_db(folder: Path) -> sqlite3.Connection:
    from city_hub.db import MIGRATIONS

    conn = storage.connect(folder / "hub.sqlite3")
    storage.migrate(conn, MIGRATIONS)
    with storage.write_transaction(conn):
        for n in trust_store().nodes.values():
            conn.execute("INSERT INTO nodes(node_id, tier, parent, name, status, revoked_after_seq, created_at)"
                         " VALUES (?,?,?,?,?,?,?)", (n.node_id, n.tier, n.parent, n.name, n.status,
                                                     n.revoked_after_seq, iso(NOW)))
    return conn


def village_db(folder: Path) -> sqlite3.Connection:
    from village_node.db import MIGRATIONS

    conn = storage.connect(folder / "village.sqlite3")
    storage.migrate(conn, MIGRATIONS)
    return conn


def ingestor(conn: sqlite3.Connection, blobs: set[str]) -> Ingestor:
    return Ingestor(conn, trust_store(), key("hub_signing"), lambda sha: sha in blobs, MAX_SKEW_MS)


def push(ing: Ingestor, documents: list) -> dict:
    with storage.write_transaction(ing.conn):
        return ing.ingest(documents, via=TOWNSHIP_ID, now=NOW, wall_ms=WALL_MS).to_json()


# ---------------------------------------------------------------------------------------------
# Building the vectors


def build_keys() -> dict:
    return {
        "description": "Deterministic test keys: SigningKey.from_seed(seed). kid = hex SHA-256 of the raw public key.",
        "keys": {name: {"seed_hex": seed.hex(), "public_key_b64": key(name).public_b64, "kid": key(name).kid}
                 for name, seed in SEEDS.items()},
    }


def build_canonical() -> dict:
    values = {
        "sample_case_body": sample_case_body(),
        "key_order_and_nesting": {"b": [3, {"z": None, "a": True}], "a": {"y": False, "x": -0}, "": "empty key"},
        "escapes": {"s": "\u0000\u001f\u007f\u2028/é😀", "big": 9007199254740993},
    }
    return {
        "description": "canonical.dumps: sorted keys (by code point), separators ',' ':', UTF-8 not \\u-escaped, "
                       "integers only. canonical_hex is the exact byte string.",
        "cases": [{"name": name, "value": value, "canonical_text": canonical.dumps(value).decode("utf-8"),
                   "canonical_hex": canonical.dumps(value).hex()} for name, value in values.items()],
    }


def build_pae() -> dict:
    payload = canonical.dumps({"hello": "联动"})
    return {
        "description": "DSSE v1 pre-authentication encoding; the document id is sha256(PAE).",
        "cases": [{"payload_type": t, "payload_hex": payload.hex(), "pae_hex": pae(t, payload).hex(),
                   "pae_text": pae(t, payload).decode("utf-8"), "document_id": sha256_hex(pae(t, payload))}
                  for t in (envelope.ENVELOPE, envelope.ACK)],
    }


def build_envelope() -> dict:
    body = envelope_body(VILLAGE_A, 1, outbox.GENESIS, body=sample_case_body(),
                         attachments=[{"sha256": sha256_hex(b"id card scan"), "size": 12}])
    document = envelope.sign(key("village_a"), envelope.ENVELOPE, body)
    payload = b64d(document["payload"])
    return {
        "description": "A signed uplink envelope (seq 1, prev = 64 zeros) by village_a.",
        "signer": "village_a",
        "body": body,
        "payload_hex": payload.hex(),
        "pae_hex": pae(envelope.ENVELOPE, payload).hex(),
        "document": document,
        "envelope_id": envelope.document_id(document),
    }


def sample_supplement_body() -> dict:
    """A ``case.supplement`` body: the village's 补齐补正 of the sample case (one field, one file)."""
    scan = sha256_hex(b"hukou scan")
    return {
        "case_id": sample_case_body()["case_id"],
        "event": {
            "event_id": "0b8e6a3f5c2d4e1f9a7b6c5d4e3f2a1b", "at": iso(NOW + timedelta(days=2)), "node": VILLAGE_A,
            "actor": "agent", "action": "supplement", "from_status": "SUPPLEMENT", "to_status": "SUPPLEMENT",
            "comment": "申请人本人补交",
            "detail": {"changes": [{"field": "household", "label": "户籍所在地", "before": "东关村3组",
                                    "after": "东关村4组"}],
                       "materials": [{"code": "M2", "filename": "户口簿.jpg", "sha256": scan, "size": 10}]},
        },
    }


def build_supplement() -> dict:
    first = envelope.sign(key("village_a"), envelope.ENVELOPE, build_envelope()["body"])
    body = envelope_body(VILLAGE_A, 2, envelope.document_id(first), kind="case.supplement",
                         body=sample_supplement_body(), attachments=[{"sha256": sha256_hex(b"hukou scan"), "size": 10}])
    document = envelope.sign(key("village_a"), envelope.ENVELOPE, body)
    return {
        "description": "A case.supplement envelope (seq 2, after envelope.json's case.submit) by village_a, the"
                       " case's origin: one corrected field (before/after) and one new material file.",
        "signer": "village_a",
        "body": body,
        "payload_hex": b64d(document["payload"]).hex(),
        "document": document,
        "envelope_id": envelope.document_id(document),
    }


def chain_documents(name: str, origin: str, count: int) -> list[dict]:
    documents, prev = [], outbox.GENESIS
    for seq in range(1, count + 1):
        documents.append(envelope.sign(key(name), envelope.ENVELOPE, envelope_body(origin, seq, prev)))
        prev = envelope.document_id(documents[-1])
    return documents


def build_chain() -> dict:
    documents = chain_documents("village_a", VILLAGE_A, 3)
    with tempfile.TemporaryDirectory() as tmp:
        conn = hub_db(Path(tmp))
        answer = push(ingestor(conn, set()), documents)
        conn.close()
    return {
        "description": "Three envelopes of village_a: seq 1, 2, 3, each prev = id of the one before. Pushed in one "
                       "batch to a hub at hub_time, the answer is three 'accepted' and one cumulative ack.",
        "hub_time": iso(NOW),
        "envelopes": [{"seq": i + 1, "envelope_id": envelope.document_id(d), "prev": envelope.peek(d)["prev"],
                       "document": d} for i, d in enumerate(documents)],
        "push_answer": answer,
    }


def _opened_or_error(results: list) -> list[str]:
    """What ``envelope.open_chained`` made of each document: its id, or the error's message."""
    return [str(r) if isinstance(r, SignatureError) else r.doc_id for r in results]


def build_run() -> dict:
    """One Ed25519 check per hash-linked run (§5.4.2), on chain.json's three envelopes."""
    documents = chain_documents("village_a", VILLAGE_A, 3)
    other_sig = documents[0]["signatures"][0]["sig"]
    inner_sig = [documents[0], {**documents[1], "signatures": [{**documents[1]["signatures"][0], "sig": other_sig}]},
                 documents[2]]
    payload = b64d(documents[1]["payload"]).replace(b'"n":2', b'"n":9')
    inner_payload = [documents[0], {**documents[1], "payload": b64e(payload)}, documents[2]]
    trusted = resolve("village_a")
    return {
        "description": "How a receiver may open a push of chain.json's envelopes with one signature check per run"
                       " (docs/sync-protocol.md §5.4.2): the last envelope's signature covers every earlier payload"
                       " through the prev links. Each case lists the documents and, for each, its id when it opens"
                       " or the error that refuses it.",
        "cases": [
            {"case": "a run: only seq 3's signature is checked; all three open",
             "documents": documents, "opened": _opened_or_error(envelope.open_chained(
                 documents, envelope.ENVELOPE_TYPES, trusted))},
            {"case": "seq 2's sig replaced by seq 1's (well-formed, wrong): its content is proven by seq 3 through"
                     " the link, so it opens in the run; open_signed alone refuses it",
             "documents": inner_sig, "opened": _opened_or_error(envelope.open_chained(
                 inner_sig, envelope.ENVELOPE_TYPES, trusted))},
            {"case": "seq 2's payload changed: seq 3 no longer links to it; 1-2 fail on 2's signature and are"
                     " checked alone, 3 opens alone",
             "documents": inner_payload, "opened": _opened_or_error(envelope.open_chained(
                 inner_payload, envelope.ENVELOPE_TYPES, trusted))},
        ],
    }


def build_ack() -> dict:
    """Acks advance only over envelopes whose material files all arrived."""
    blob = sha256_hex(b"photo of the land contract")
    first = envelope.sign(key("village_b"), envelope.ENVELOPE, envelope_body(VILLAGE_B, 1, outbox.GENESIS))
    second = envelope.sign(key("village_b"), envelope.ENVELOPE, envelope_body(
        VILLAGE_B, 2, envelope.document_id(first), attachments=[{"sha256": blob, "size": 27}]))
    third = envelope.sign(key("village_b"), envelope.ENVELOPE,
                          envelope_body(VILLAGE_B, 3, envelope.document_id(second)))
    with tempfile.TemporaryDirectory() as tmp:
        conn = hub_db(Path(tmp))
        blobs: set[str] = set()
        ing = ingestor(conn, blobs)
        answer = push(ing, [first, second, third])
        blobs.add(blob)
        with storage.write_transaction(conn):
            after_blob = ing.blob_arrived(blob, NOW)
        conn.close()
    return {
        "description": "village_b pushes 1, 2 (names a material file the hub lacks), 3. The ack stops at 1; "
                       "once the file arrives (blob_arrived) a new ack covers 3.",
        "hub_signer": "hub_signing",
        "hub_time": iso(NOW),
        "envelopes": [first, second, third],
        "missing_blob": blob,
        "push_answer": answer,
        "acks_after_blob": after_blob,
    }


def build_outcomes() -> dict:
    """Every hub outcome, one push at a time, into one fresh hub database."""
    a = chain_documents("village_a", VILLAGE_A, 4)
    r = chain_documents("village_r", VILLAGE_R, 2)
    fork_2 = envelope.sign(key("village_a"), envelope.ENVELOPE,
                           envelope_body(VILLAGE_A, 2, envelope.document_id(a[0]), body={"n": "forged"}))
    tampered = {**a[3], "payload": b64e(b64d(a[3]["payload"]).replace(b'"n":4', b'"n":5'))}
    stranger = envelope.sign(key("stranger"), envelope.ENVELOPE, envelope_body(VILLAGE_B, 1, outbox.GENESIS))
    wrong_origin = envelope.sign(key("village_b"), envelope.ENVELOPE, envelope_body(VILLAGE_A, 9, outbox.GENESIS))
    b1 = envelope.sign(key("village_b"), envelope.ENVELOPE,
                       envelope_body(VILLAGE_B, 1, outbox.GENESIS, clock=hlc(VILLAGE_B, 3_600_000)))
    b2 = envelope.sign(key("village_b"), envelope.ENVELOPE,
                       envelope_body(VILLAGE_B, 2, envelope.document_id(b1), kind="x.unknown"))
    b3_broken = envelope.sign(key("village_b"), envelope.ENVELOPE, envelope_body(VILLAGE_B, 3, "1" * 64))
    steps = [
        ("accept seq 1", [a[0]]),
        ("same bytes again: duplicate, same ack", [a[0]]),
        ("seq 3 before 2: held", [a[2]]),
        ("seq 2 fills the gap; held 3 is applied too", [a[1]]),
        ("same seq 2, other content: fork (the hub also suspends the node)", [fork_2]),
        ("payload altered after signing", [tampered]),
        ("signed by a key no node holds", [stranger]),
        ("signed by village_b but claims origin village_a", [wrong_origin]),
        ("not a signed document", [{"payloadType": envelope.ENVELOPE, "payload": "not base64!"}]),
        ("revoked after seq 1: 1 accepted, 2 quarantined", r),
        ("hlc one hour ahead: accepted, flagged clock_ahead", [b1]),
        ("unknown kind: kept in the chain, content quarantined", [b2]),
        ("prev is not the id of seq 2", [b3_broken]),
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        conn = hub_db(Path(tmp))
        ing = ingestor(conn, set())
        for title, documents in steps:
            out.append({"step": title, "push": documents, "answer": push(ing, documents)})
        conn.close()
    return {
        "description": "Hub ingest outcomes, applied in order to one fresh hub database (trust state as in "
                       "trust_store(): village_r revoked after seq 1; accepted envelopes are queued to be applied).",
        "hub_time": iso(NOW),
        "max_clock_skew_ms": MAX_SKEW_MS,
        "steps": out,
    }


def build_custody() -> dict:
    ids = [envelope.document_id(d) for d in chain_documents("village_a", VILLAGE_A, 2)]
    document = relay.custody_receipt(key("township"), TOWNSHIP_ID, ids, NOW)
    return {
        "description": "A township's custody receipt for two envelopes of village_a.",
        "signer": "township",
        "document": document,
        "body": envelope.peek(document),
        "document_id": envelope.document_id(document),
    }


SAMPLE_ITEM = {"code": "RS-001", "name": "城乡居民养老保险参保登记", "promise_limit_wd": 3}


def sample_captured_body() -> dict:
    """A ``case.submit`` body as ``casework.capture`` makes it today (its submit event derived from
    the case id), with a 委托 and the agent's name in the event, as the version 1 envelope carries it."""
    case = sample_case_body()
    detail = {"receipt_no": case["receipt_no"],
              "entrustment": {"principal": "张三", "agent": "agent", "scope": SAMPLE_ITEM["name"], "consent": True},
              "actor_name": "王代办"}
    event = {"event_id": casework.submit_event_id(case["case_id"]), "at": case["submitted_at"], "node": VILLAGE_A,
             "actor": "agent", "action": "submit", "from_status": None, "to_status": "SUBMITTED", "comment": "",
             "detail": detail}
    return {**case, "event": event}


def v2_body(origin: str, seq: int, prev: str, body: dict | None = None, kind: str = "case.submit",
            attachments: list | None = None) -> dict:
    return {**envelope_body(origin, seq, prev, kind=kind, body=body, attachments=attachments), "v": 2}


def build_envelope_v2() -> dict:
    full = sample_captured_body()
    compact = submission.compact(full, VILLAGE_A)
    body = v2_body(VILLAGE_A, 1, outbox.GENESIS, body=compact,
                   attachments=[{"sha256": sha256_hex(b"id card scan"), "size": 12}])
    document = envelope.sign(key("village_a"), envelope.ENVELOPE_V2, body)
    payload = document["payload"].encode("utf-8")
    v1 = envelope.sign(key("village_a"), envelope.ENVELOPE, {**body, "v": 1, "body": full})
    return {
        "description": "The sample case of envelope.json as a version 2 envelope (seq 1) by village_a. The payload "
                       "member is the canonical JSON text itself (a JSON string, no base64): its UTF-8 bytes are "
                       "the signed bytes, PAE(ENVELOPE_V2, payload). The case.submit body leaves out item_name, "
                       "limit_wd, route, event and missing_materials; the submit event's 委托 and agent name travel "
                       "as 'entrustment' and 'agent_name'. 'derived_body' is what a receiver holding 'catalog_item' "
                       "rebuilds (submission.expand), the version 1 body of the same case without route and "
                       "missing_materials (every receiver derives the route itself). 'v1_document' is the same case "
                       "signed as version 1, for size comparison: same content, another id.",
        "signer": "village_a",
        "payload_type": envelope.ENVELOPE_V2,
        "catalog_item": SAMPLE_ITEM,
        "captured_body": full,
        "body": body,
        "payload_text": document["payload"],
        "payload_hex": payload.hex(),
        "pae_hex": pae(envelope.ENVELOPE_V2, payload).hex(),
        "document": document,
        "envelope_id": envelope.document_id(document),
        "derived_body": submission.expand(compact, VILLAGE_A, SAMPLE_ITEM),
        "v1_document": v1,
        "sizes": {"v1_document_bytes": len(envelope.to_bytes(v1)), "v2_document_bytes": len(envelope.to_bytes(document))},
    }


def build_push_v2() -> dict:
    """An origin upgraded mid-chain: seq 1 signed as v1, seqs 2 and 3 as v2; the push body elides the
    links it can, the hub restores them and accepts the one chain."""
    first = envelope.sign(key("village_a"), envelope.ENVELOPE, envelope_body(VILLAGE_A, 1, outbox.GENESIS))
    second = envelope.sign(key("village_a"), envelope.ENVELOPE_V2,
                           v2_body(VILLAGE_A, 2, envelope.document_id(first)))
    third = envelope.sign(key("village_a"), envelope.ENVELOPE_V2,
                          v2_body(VILLAGE_A, 3, envelope.document_id(second)))
    wrong_v = envelope.sign(key("village_a"), envelope.ENVELOPE_V2,
                            {**v2_body(VILLAGE_A, 4, envelope.document_id(third)), "v": 1})
    documents = [first, second, third]
    wire_form = envelope.elide_links(documents)
    # The same envelopes as a parent that reads short key ids gets them in a push body (§2.1.2).
    short_body = envelope.shorten_keyids(b",".join(envelope.to_bytes(d) for d in wire_form)).decode("utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        conn = hub_db(Path(tmp))
        ing = ingestor(conn, set())
        answer = push(ing, envelope.restore_links(wire_form))
        refused = push(ing, [wrong_v])
        conn.close()
    return {
        "description": "village_a's chain across its upgrade: seq 1 is a v1 envelope (signed before its parent "
                       "took v2), seqs 2 and 3 are v2. In the push body ('wire_envelopes') a v2 envelope whose prev "
                       "is the id of the envelope just before it in the list travels with \"prev\":\"\" "
                       "(envelope.elide_links); the receiver puts the id back (restore_links) and verifies the "
                       "restored bytes, which are 'envelopes'. The hub accepts the three and acknowledges seq 3 "
                       "exactly as for v1. 'wrong_version' is a validly signed v2 envelope whose header says v=1: "
                       "quarantined as malformed. 'wire_body_short_keyids' is the envelopes member of the push "
                       "body (the documents joined by ',') for a parent that said \"keyids\":\"short\": every "
                       "key id cut to its first 8 hex digits (envelope.shorten_keyids); the receiver expands them "
                       "against its registered node keys (restore_keyids) before anything else.",
        "hub_time": iso(NOW),
        "envelopes": [{"seq": i + 1, "envelope_id": envelope.document_id(d), "document": d}
                      for i, d in enumerate(documents)],
        "wire_envelopes": wire_form,
        "wire_body_short_keyids": short_body,
        "push_answer": answer,
        "wrong_version": wrong_v,
        "wrong_version_answer": refused,
    }


def build_custody_v2() -> dict:
    documents = chain_documents("village_a", VILLAGE_A, 3)
    fork = envelope.sign(key("village_a"), envelope.ENVELOPE, envelope_body(VILLAGE_A, 3, envelope.document_id(
        documents[1]), body={"n": "fork"}))
    results = [{"envelope_id": envelope.document_id(d), "origin": VILLAGE_A, "seq": envelope.peek(d)["seq"],
                "status": "custody"} for d in documents + [fork]]
    document = relay.ranged_receipt(key("township"), TOWNSHIP_ID, results, NOW)
    return {
        "description": "A township's custody receipt, version 2 (the payload member is the canonical JSON text): "
                       "the envelopes of one push in custody as runs of consecutive seqs per origin; ids_sha256 is "
                       "the SHA-256 of the runs' 32-byte envelope ids one after the other, in seq order. Here "
                       "village_a's seqs 1-3 and a second envelope under seq 3 (a fork: its own run).",
        "signer": "township",
        "envelope_ids": [r["envelope_id"] for r in results],
        "document": document,
        "body": envelope.peek(document),
        "document_id": envelope.document_id(document),
    }


def build_short_form() -> dict:
    ack = envelope.sign(key("hub_signing"), envelope.ACK, {
        "acked_id": "7b" * 32, "acked_seq": 3, "hub": HUB_ID, "hub_time": "2027-03-01T08:30:00.000Z",
        "origin": VILLAGE_A})
    receipt = envelope.sign(key("township"), envelope.CUSTODY_V2, {
        "at": "2027-03-01T08:29:59.000Z", "holder": TOWNSHIP_ID,
        "held": [{"first": 3, "ids_sha256": "1c" * 32, "last": 3, "origin": VILLAGE_A}]})
    return {
        "description": "The short transport form of signed documents (docs/sync-protocol.md §2.1.2): a base64 payload "
                       "as its UTF-8 text in payloadText, each keyid cut to its first 8 hex digits. Same signed "
                       "bytes, same signature, same document id; full_form(short, trusted keys) gives `full` back "
                       "exactly.",
        "cases": [{"name": name, "signer": signer, "full": doc, "short": envelope.short_form(doc),
                   "document_id": envelope.document_id(doc)}
                  for name, signer, doc in (("ack", "hub_signing", ack), ("custody_v2", "township", receipt))],
    }


def build_wire_dictionary() -> dict:
    if wire.DICT_CODING not in wire.CODINGS:  # no zstandard here: the file as it is (it cannot be rebuilt)
        return load("wire_dictionary.json")
    plain = [
        canonical.dumps({"acked": {VILLAGE_A: 3}, "cursors": {f"{HUB_ID}:{VILLAGE_A}": 7},
                         "metadata": {"calendar": 1, "catalog": 2, "registry": 4, "root": 1}}).decode("utf-8"),
        canonical.dumps({"acks": [build_short_form()["cases"][0]["short"]], "ok": {VILLAGE_A: [[3, 3]]},
                         "results": [], "server": TOWNSHIP_ID, "server_time": "2027-03-01T08:30:00.000Z"}
                        ).decode("utf-8"),
    ]
    return {
        "description": "Bodies in zstd-ld1: zstd with the dictionary sync/wire-1.zdict (its SHA-256 below), no "
                       "dictionary id in the frame. Another encoder may produce other bytes; every decoder must give "
                       "`plain` back from `encoded_hex`.",
        "coding": wire.DICT_CODING,
        "dictionary_sha256": hashlib.sha256(wire.DICT_FILE.read_bytes()).hexdigest(),
        "cases": [{"plain": text, "encoded_hex": wire.encode(text.encode("utf-8"), wire.DICT_CODING).hex()}
                  for text in plain],
    }


def document_body(kind: str = "accept", number: int = 1) -> dict:
    """A 制式文书 body shaped as ``shared.services.documents.issue`` makes it (受理通知书 of the sample case)."""
    title, mark = documents.KINDS[kind]
    return {"v": 1, "kind": kind, "title": title, "number": f"威县人社局{mark}字〔2027〕第{number:04d}号",
            "case_id": "6f1c2a9e0b7d4e58a3c1f2e4d5b6a7c8", "receipt_no": "130926100201-20270301-0001",
            "item_name": "城乡居民养老保险参保登记", "applicant_name": "张三", "applicant_id": "110105********002X",
            "office": "130926-rs", "issuer": HUB_ID, "issuer_name": "威县人社局", "issued_at": iso(NOW),
            "comment": "", "details": {}}


def build_document() -> dict:
    body = document_body()
    signed = envelope.sign(key("hub_signing"), envelope.DOCUMENT, body)
    token = document_token.make(key("hub_signing"), doc_id=envelope.document_id(signed), issuer=HUB_ID,
                                office=body["office"], kind=body["kind"], issued_on="2027-03-01", seq=1)
    forged = envelope.sign(key("village_a"), envelope.DOCUMENT, body)  # a village key, issuer = the hub
    village_token = document_token.make(key("village_a"), doc_id=envelope.document_id(forged), issuer=VILLAGE_A,
                                        office=body["office"], kind="approve", issued_on="2027-03-01", seq=1)
    header, block = token[:token.rindex(".") + 1], token[token.rindex(".") + 1:]
    raw = base64.b32decode(block + "=" * (-len(block) % 8))
    return {
        "description": "A hub-signed 制式文书 (DOCUMENT record) and its compact token (§7.4). token = header + "
                       "base32(digest20 ‖ kid4 ‖ sig64), header = 'LD1.<issuer>.<OFFICE>.<kind>.<yyyymmdd>.<seq>.', "
                       "digest20 = the first 20 bytes of document_id, kid4 = the first 4 bytes of the signer's kid, "
                       "sig64 = Ed25519 over PAE(token_type, header ASCII ‖ digest20 ‖ kid4). verification_code "
                       "(核验码) = the first 16 characters of the base32 block, grouped 4-4-4-4. record_text = "
                       "'LDDOC1:' + unpadded base64url(canonical JSON of the signed record). 'forged' is the same "
                       "body signed by a village key and must be refused (the issuer must be the signer's node, or "
                       "the hub for hub keys); 'village_token' is a validly signed village token for a 准予 "
                       "decision and must be refused (a village signs only receipts and 送达回证).",
        "signer": "hub_signing",
        "body": body,
        "document": signed,
        "document_id": envelope.document_id(signed),
        "token_type": document_token.TOKEN_TYPE,
        "token": token,
        "token_header": header,
        "token_signed_hex": (header.encode("ascii") + raw[:24]).hex(),
        "token_sig_hex": raw[24:].hex(),
        "verification_code": documents.verification_code(signed),
        "record_text": documents.record_text(signed),
        "forged": forged,
        "village_token": village_token,
    }


def build_downlink() -> dict:
    receive = {"event_id": "0" * 31 + "0", "at": iso(NOW), "node": HUB_ID, "actor": "system", "action": "receive",
               "from_status": "SUBMITTED", "to_status": "RECEIVED", "comment": "", "detail": {}}
    update = {"case_id": "6f1c2a9e0b7d4e58a3c1f2e4d5b6a7c8", "status": "ACCEPTED",
              "event": {"event_id": "0" * 31 + "1", "at": iso(NOW), "node": HUB_ID, "actor": "rs_window",
                        "action": "accept", "from_status": "RECEIVED", "to_status": "ACCEPTED", "comment": "",
                        "detail": {}}, "decision": None,
              "documents": [envelope.sign(key("hub_signing"), envelope.DOCUMENT, document_body())],
              "earlier": [receive]}
    with tempfile.TemporaryDirectory() as tmp:
        conn = hub_db(Path(tmp))
        with storage.write_transaction(conn):
            messages = [downlink.issue(conn, key("hub_signing"), HUB_ID, VILLAGE_A, "case.update", update, NOW),
                        downlink.issue(conn, key("hub_signing"), HUB_ID, VILLAGE_A, "case.update",
                                       {**update, "status": "APPROVED", "documents": [], "earlier": []},
                                       NOW + timedelta(minutes=5))]
        conn.close()
    return {
        "description": "Two hub messages to village_a, seq 1 and 2 of (issuer 130926, dest 130926100201). "
                       "The receiver's cursor key is 'issuer>dest'. The first carries the hub's automatic 接件 in "
                       "'earlier' (never sent on its own) and its 受理通知书 in 'documents'.",
        "signer": "hub_signing",
        "cursor_key": downlink.cursor_key(HUB_ID, VILLAGE_A),
        "messages": [{"seq": i + 1, "message_id": envelope.document_id(m), "body": envelope.peek(m), "document": m}
                     for i, m in enumerate(messages)],
    }


def build_request() -> dict:
    body = canonical.dumps({"envelopes": []})
    cases = []
    for method, path, raw, nonce in (("POST", "/sync/v1/push", body, 1_803_000_000_000),
                                     ("PUT", "/sync/v1/blobs/" + "ab" * 32 + "?size=5&offset=0", b"hello",
                                      1_803_000_000_001)):
        claims = nodeauth._claims(method, path, VILLAGE_A, TOWNSHIP_ID, nonce, raw)
        cases.append({
            "node": VILLAGE_A, "to": TOWNSHIP_ID, "method": method, "path": path, "body_hex": raw.hex(),
            "nonce": nonce, "claims_text": claims.decode("utf-8"),
            "headers": nodeauth.sign_request(key("village_a"), VILLAGE_A, TOWNSHIP_ID, method, path, raw, nonce),
            "compact_headers": nodeauth.sign_request(key("village_a"), VILLAGE_A, TOWNSHIP_ID, method, path, raw,
                                                     nonce, compact=True),
        })
    # Compressed bodies (sync-protocol §5.1.1): body_sha256 is over the bytes as sent. gzip at
    # level 0 (stored blocks, mtime 0) so the bytes do not depend on the zlib version.
    sent = gzip.compress(body, compresslevel=0, mtime=0)
    batch = wire.BLOB_BATCH_MAGIC + wire.blob_frame(hashlib.sha256(b"hello").hexdigest(), 5, 0, b"hello")
    for method, path, raw, nonce, coding, decoded in (
            ("POST", "/sync/v1/push", sent, 1_803_000_000_002, "gzip", body),
            ("POST", "/sync/v1/blobs/batch", batch, 1_803_000_000_003, None, None)):
        claims = nodeauth._claims(method, path, VILLAGE_A, TOWNSHIP_ID, nonce, raw)
        headers = nodeauth.sign_request(key("village_a"), VILLAGE_A, TOWNSHIP_ID, method, path, raw, nonce)
        cases.append({
            "node": VILLAGE_A, "to": TOWNSHIP_ID, "method": method, "path": path, "body_hex": raw.hex(),
            **({"content_encoding": coding, "decoded_hex": decoded.hex()} if coding else {}),
            "nonce": nonce, "claims_text": claims.decode("utf-8"), "headers": headers,
            "compact_headers": nodeauth.sign_request(key("village_a"), VILLAGE_A, TOWNSHIP_ID, method, path, raw,
                                                     nonce, compact=True),
        })
    return {
        "description": "Node-signed request headers: the signature is over PAE(REQUEST type, canonical claims);"
                       " body_sha256 is over the body as sent (compressed when content_encoding is given)."
                       " compact_headers: the same signature in the one Liandong-Auth header (node, nonce, the"
                       " kid's first 8 hex digits, unpadded base64url), sync-protocol §5.1.",
        "signer": "village_a",
        "payload_type": envelope.REQUEST,
        "cases": cases,
    }


def build_enrol() -> dict:
    root, hub = key("root"), key("hub_signing")
    cert = envelope.sign(root, envelope.CERT, hub_key_cert_body(HUB_ID, hub.kid, hub.public_b64, iso(NOW),
                                                                 iso(NOW + timedelta(days=730))))
    anchor = {"hub_id": HUB_ID, "public_key": root.public_b64, "kid": root.kid, "hub_keys": [cert]}
    token = f"LD1.{VILLAGE_A}.{'A' * 32}.{root.kid[:16]}"
    from city_hub.enrolment_service import proof_of_possession

    return {
        "description": "Enrolment: token LD1.<node_id>.<secret>.<first 16 hex of the root kid>, the new node's "
                       "proof of possession (ENROL document signed by its own new key), and the root anchor the "
                       "hub answers with (checked against the token's root kid prefix).",
        "signer": "village_a",
        "token": token,
        "proof": proof_of_possession(key("village_a"), VILLAGE_A, token),
        "anchor": anchor,
        "anchor_hex": canonical.dumps(anchor).hex(),
        "wrong_root_token": f"LD1.{VILLAGE_A}.{'A' * 32}.{key('stranger').kid[:16]}",
    }


def build_negative() -> dict:
    good = envelope.sign(key("village_a"), envelope.ENVELOPE, envelope_body(VILLAGE_A, 1, outbox.GENESIS))
    payload = b64d(good["payload"])
    as_downlink = envelope.sign(key("village_a"), envelope.DOWNLINK, envelope_body(VILLAGE_A, 1, outbox.GENESIS))
    dup_payload = b'{"seq":1,"seq":2}'
    def signed_raw(raw: bytes) -> dict:
        """A document whose payload is exactly ``raw``, validly signed by village_a."""
        return {"payloadType": envelope.ENVELOPE, "payload": b64e(raw), "signatures": [
            {"keyid": key("village_a").kid, "sig": b64e(key("village_a").sign(envelope.ENVELOPE, raw))}]}

    def signed_text(text: str) -> dict:
        """A v2 document whose payload text is exactly ``text``, validly signed by village_a."""
        raw = text.encode("utf-8")
        return {"payloadType": envelope.ENVELOPE_V2, "payload": text, "signatures": [
            {"keyid": key("village_a").kid, "sig": b64e(key("village_a").sign(envelope.ENVELOPE_V2, raw))}]}

    good_v2 = envelope.sign(key("village_a"), envelope.ENVELOPE_V2, v2_body(VILLAGE_A, 1, outbox.GENESIS))
    signed_dup = signed_raw(dup_payload)
    signed_float = signed_raw(b'{"seq":1.0}')
    spaced = payload.replace(b'"seq":1', b'"seq": 1')
    unsorted = b'{"v":1,' + payload[1:].replace(b',"v":1', b"")
    escaped = json.dumps({"name": "联动"}, ensure_ascii=True, separators=(",", ":")).encode("ascii")

    def opened(name, document, expect, expected_type: str | tuple = envelope.ENVELOPE):
        return {"name": name, "check": "open_signed", "expected_type": expected_type, "document": document,
                "error": "SignatureError", "message_contains": expect}

    def parsed(name, raw: bytes, expect, max_bytes=canonical.MAX_DOCUMENT_BYTES, check="canonical.loads"):
        return {"name": name, "check": check, "input_hex": raw.hex(), "max_bytes": max_bytes,
                "error": "CanonicalError", "message_contains": expect}

    def not_canonical(name, raw: bytes, expect="not in canonical form"):
        return parsed(name, raw, expect, check="canonical.loads_canonical")

    return {
        "description": "Inputs the code must refuse, with the error it raises (resolve_key knows village_a only).",
        "signer": "village_a",
        "cases": [
            opened("tampered payload", {**good, "payload": b64e(payload.replace(b'"n":1', b'"n":2'))},
                   "signature does not verify"),
            opened("payloadType relabelled (signed as downlink, presented as envelope)",
                   {**as_downlink, "payloadType": envelope.ENVELOPE}, "signature does not verify"),
            opened("wrong payloadType for this purpose", as_downlink, "expected " + envelope.ENVELOPE),
            opened("signature by an unknown key", {**good, "signatures": [
                {"keyid": key("stranger").kid, "sig": good["signatures"][0]["sig"]}]}, "signed by no key trusted"),
            opened("no signatures", {**good, "signatures": []}, "no signatures"),
            opened("payload not strict base64", {**good, "payload": good["payload"].rstrip("=")}, "invalid base64"),
            opened("validly signed payload with a duplicate key", signed_dup, "duplicate key"),
            opened("validly signed payload with a float", signed_float, "floats are not allowed"),
            opened("validly signed payload that is valid JSON with a space (not canonical)", signed_raw(spaced),
                   "not in canonical form"),
            opened("validly signed payload with unsorted keys (not canonical)", signed_raw(unsorted),
                   "not in canonical form"),
            opened("validly signed payload with \\u-escaped non-ASCII (not canonical)", signed_raw(escaped),
                   "not in canonical form"),
            opened("validly signed seq of 2^63 (beyond a signed 64-bit integer)",
                   signed_raw(b'{"seq":9223372036854775808}'), "out of the 64-bit range"),
            opened("v2: payload text altered after signing (what a relay would do)",
                   {**good_v2, "payload": good_v2["payload"].replace('"n":1', '"n":2')}, "signature does not verify",
                   envelope.ENVELOPE_TYPES),
            opened("v2 relabelled as v1 (its text read as base64)", {**good_v2, "payloadType": envelope.ENVELOPE},
                   "invalid base64", envelope.ENVELOPE_TYPES),
            opened("v1 relabelled as v2 (its base64 read as text)", {**good, "payloadType": envelope.ENVELOPE_V2},
                   "signature does not verify", envelope.ENVELOPE_TYPES),
            opened("v2 where only v1 is accepted (an older receiver)", good_v2, "expected " + envelope.ENVELOPE),
            opened("v2: validly signed text that is not canonical", signed_text(good_v2["payload"].replace(
                '"seq":1', '"seq": 1')), "not in canonical form", envelope.ENVELOPE_TYPES),
            parsed("duplicate key", b'{"a":1,"a":2}', "duplicate key"),
            parsed("float", b'{"a":1.5}', "floats are not allowed"),
            parsed("exponent is a float too", b'{"a":1e3}', "floats are not allowed"),
            parsed("NaN", b'{"a":NaN}', "NaN is not allowed"),
            parsed("Infinity", b'{"a":-Infinity}', "-Infinity is not allowed"),
            parsed("not UTF-8", b'{"a":"\xff"}', "not UTF-8"),
            parsed("over the size cap (checked before parsing)", b'{"a":"' + b"x" * 32 + b'"}', "exceeds the limit",
                   max_bytes=16),
            parsed("trailing garbage", b'{"a":1}x', "malformed JSON"),
            parsed("integer beyond 64 bits", b'{"a":18446744073709551616}', "out of the 64-bit range"),
            parsed("integer of 5000 digits (refused before it is converted)", b'{"a":' + b"9" * 5000 + b"}",
                   "out of the 64-bit range"),
            parsed("smallest 64-bit integer minus one", b'{"a":-9223372036854775809}', "out of the 64-bit range"),
            parsed("nesting deeper than 32 levels", b"[" * 33 + b"]" * 33, "nested deeper than 32"),
            parsed("nesting that would exhaust the parser's stack", b"[" * 2000 + b"]" * 2000, "nested too deeply"),
            parsed("lone surrogate in a string", b'{"a":"\\ud800"}', "lone surrogate"),
            parsed("lone surrogate in a key", b'{"\\udfff":1}', "lone surrogate"),
            not_canonical("space after a colon", b'{"a": 1}'),
            not_canonical("newline at the end", b'{"a":1}\n'),
            not_canonical("keys not sorted", b'{"b":1,"a":2}'),
            not_canonical("non-ASCII escaped as \\u", b'{"a":"\\u8054"}'),
            not_canonical("escaped slash", b'{"a":"\\/"}'),
            not_canonical("upper-case hex in a control escape", b'{"a":"\\u001F"}'),
            not_canonical("duplicate key (named precisely)", b'{"a":1,"a":1}', "duplicate key"),
            not_canonical("float (named precisely)", b'{"a":1.0}', "floats are not allowed"),
            not_canonical("NaN (refused by the parse hook)", b'{"a":NaN}', "NaN is not allowed"),
        ],
    }


BUILDERS = {
    "keys.json": build_keys,
    "canonical.json": build_canonical,
    "pae.json": build_pae,
    "envelope.json": build_envelope,
    "supplement.json": build_supplement,
    "chain.json": build_chain,
    "run.json": build_run,
    "ack.json": build_ack,
    "ingest_outcomes.json": build_outcomes,
    "custody.json": build_custody,
    "envelope_v2.json": build_envelope_v2,
    "push_v2.json": build_push_v2,
    "custody_v2.json": build_custody_v2,
    "short_form.json": build_short_form,
    "wire_dictionary.json": build_wire_dictionary,
    "downlink.json": build_downlink,
    "document.json": build_document,
    "request.json": build_request,
    "enrol.json": build_enrol,
    "negative.json": build_negative,
}


def render(value: dict) -> str:
    """How a vector file is written: 2-space indented UTF-8 JSON, insertion order, final newline."""
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


def build_all() -> dict[str, str]:
    return {name: render(build()) for name, build in BUILDERS.items()}


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_bytes().decode("utf-8"))


def resolve(*names: str):
    keys = {key(n).kid: key(n).public_b64 for n in names}
    return keys.get


# ---------------------------------------------------------------------------------------------
# (a) The files are exactly what the code produces


def test_vector_files_are_byte_exact():
    built = build_all()
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(built)
    for name, text in built.items():
        assert (VECTORS / name).read_bytes() == text.encode("utf-8"), f"{name} differs: python -m tests.test_vectors --write"


# ---------------------------------------------------------------------------------------------
# (b) The code produces, accepts and refuses what the stored files record


def test_keys_derive_from_seeds():
    for name, k in load("keys.json")["keys"].items():
        derived = SigningKey.from_seed(bytes.fromhex(k["seed_hex"]))
        assert (derived.public_b64, derived.kid) == (k["public_key_b64"], k["kid"]), name
        assert derived.kid == sha256_hex(b64d(k["public_key_b64"]))


def test_canonical_bytes():
    for case in load("canonical.json")["cases"]:
        raw = bytes.fromhex(case["canonical_hex"])
        assert canonical.dumps(case["value"]) == raw, case["name"]
        assert raw.decode("utf-8") == case["canonical_text"]
        assert canonical.loads(raw) == case["value"]
        assert canonical.loads_canonical(raw) == case["value"]  # what a receiver of a signed payload runs
    assert b"\\u" not in bytes.fromhex(load("canonical.json")["cases"][0]["canonical_hex"])


def test_pae_bytes_and_document_id():
    for case in load("pae.json")["cases"]:
        encoded = pae(case["payload_type"], bytes.fromhex(case["payload_hex"]))
        assert encoded.hex() == case["pae_hex"]
        assert sha256_hex(encoded) == case["document_id"]


def test_signed_envelope():
    vector = load("envelope.json")
    document = envelope.sign(key("village_a"), envelope.ENVELOPE, vector["body"])
    assert document == vector["document"]
    assert b64d(document["payload"]).hex() == vector["payload_hex"]
    assert envelope.document_id(vector["document"]) == vector["envelope_id"] == sha256_hex(bytes.fromhex(vector["pae_hex"]))
    verify(key("village_a").public_b64, envelope.ENVELOPE, bytes.fromhex(vector["payload_hex"]),
           b64d(vector["document"]["signatures"][0]["sig"]))
    opened = envelope.open_signed(vector["document"], envelope.ENVELOPE, resolve("village_a"))
    assert (opened.body, opened.kid, opened.doc_id) == (vector["body"], key("village_a").kid, vector["envelope_id"])


def test_supplement_envelope():
    vector = load("supplement.json")
    assert vector["body"]["prev"] == load("envelope.json")["envelope_id"]  # the origin's own chain
    document = envelope.sign(key("village_a"), envelope.ENVELOPE, vector["body"])
    assert document == vector["document"] and envelope.document_id(document) == vector["envelope_id"]
    assert b64d(document["payload"]).hex() == vector["payload_hex"]
    opened = envelope.open_signed(vector["document"], envelope.ENVELOPE, resolve("village_a"))
    assert opened.body["kind"] == "case.supplement"
    case = {"origin": VILLAGE_A}
    authority.check_supplement_sender(case, opened.body["origin"])  # the origin may send it …
    with pytest.raises(RuleError):
        authority.check_supplement_sender(case, VILLAGE_B)  # … no other node


def test_chain_links_and_hub_answer(tmp_path):
    vector = load("chain.json")
    prev = outbox.GENESIS
    for item in vector["envelopes"]:
        body = envelope.open_signed(item["document"], envelope.ENVELOPE, resolve("village_a")).body
        assert (body["seq"], body["prev"]) == (item["seq"], prev)
        prev = envelope.document_id(item["document"])
        assert prev == item["envelope_id"]
    conn = hub_db(tmp_path)
    assert push(ingestor(conn, set()), [e["document"] for e in vector["envelopes"]]) == vector["push_answer"]
    ack = envelope.open_signed(vector["push_answer"]["acks"][0], envelope.ACK, resolve("hub_signing")).body
    assert ack == {"hub": HUB_ID, "origin": VILLAGE_A, "acked_seq": 3, "acked_id": prev, "hub_time": vector["hub_time"]}


def test_a_run_is_opened_on_its_last_signature():
    vector = load("run.json")
    chain = [e["document"] for e in load("chain.json")["envelopes"]]
    ids = [envelope.document_id(d) for d in chain]
    whole, inner_sig, inner_payload = vector["cases"]
    assert whole["documents"] == chain and whole["opened"] == ids
    assert inner_sig["opened"] == ids
    with pytest.raises(SignatureError):
        envelope.open_signed(inner_sig["documents"][1], envelope.ENVELOPE, resolve("village_a"))
    assert inner_payload["opened"] == [ids[0], "signature does not verify", ids[2]]
    for case in vector["cases"]:
        got = envelope.open_chained(case["documents"], envelope.ENVELOPE_TYPES, resolve("village_a"))
        assert _opened_or_error(got) == case["opened"]


def test_village_outbox_produces_the_chain(tmp_path):
    conn = village_db(tmp_path)
    with storage.write_transaction(conn):
        for seq in (1, 2, 3):
            outbox.append(conn, key("village_a"), VILLAGE_A, "case.submit", {"n": seq}, hlc(VILLAGE_A, seq), NOW)
    stored = [envelope.from_bytes(r["document"]) for r in outbox.to_send(conn, 10)]
    assert stored == [e["document"] for e in load("chain.json")["envelopes"]]


def test_ack_waits_for_material_files(tmp_path):
    vector = load("ack.json")
    conn = hub_db(tmp_path)
    blobs: set[str] = set()
    ing = ingestor(conn, blobs)
    answer = push(ing, vector["envelopes"])
    assert answer == vector["push_answer"]
    assert [r["status"] for r in answer["results"]] == ["accepted"] * 3
    assert answer["results"][1]["missing_blobs"] == [vector["missing_blob"]]
    assert envelope.open_signed(answer["acks"][0], envelope.ACK, resolve("hub_signing")).body["acked_seq"] == 1
    blobs.add(vector["missing_blob"])
    with storage.write_transaction(conn):
        acks = ing.blob_arrived(vector["missing_blob"], NOW)
    assert acks == vector["acks_after_blob"]
    assert envelope.open_signed(acks[0], envelope.ACK, resolve("hub_signing")).body["acked_seq"] == 3


def test_ingest_outcomes(tmp_path):
    vector = load("ingest_outcomes.json")
    conn = hub_db(tmp_path)
    ing = ingestor(conn, set())
    for step in vector["steps"]:
        assert push(ing, step["push"]) == step["answer"], step["step"]
    statuses = [(r["status"], r.get("reason")) for s in vector["steps"] for r in s["answer"]["results"]]
    for expected in [("duplicate", None), ("held", None), ("quarantined", "fork"), ("quarantined", "bad_signature"),
                     ("quarantined", "malformed"), ("rejected", "malformed"), ("quarantined", "revoked"),
                     ("quarantined", "broken_chain")]:
        assert expected in statuses
    # The second stage: an accepted envelope of a kind without an applier is refused there.
    apply_pending(conn, {"case.submit": lambda c, o: None}, NOW)
    reasons = {r["reason"] for r in conn.execute("SELECT reason FROM quarantine")}
    assert reasons == {"fork", "bad_signature", "malformed", "revoked", "clock_ahead", "invalid_content",
                       "broken_chain"}
    assert conn.execute("SELECT status FROM nodes WHERE node_id = ?", (VILLAGE_A,)).fetchone()[0] == "suspended"


def test_custody_receipt():
    vector = load("custody.json")
    ids = vector["body"]["envelope_ids"]
    assert relay.custody_receipt(key("township"), TOWNSHIP_ID, ids, NOW) == vector["document"]
    opened = envelope.open_signed(vector["document"], envelope.CUSTODY, resolve("township"))
    assert opened.body == {"holder": TOWNSHIP_ID, "envelope_ids": ids, "at": iso(NOW)}
    assert opened.doc_id == vector["document_id"]


def test_envelope_v2_payload_is_the_signed_text():
    vector = load("envelope_v2.json")
    document = envelope.sign(key("village_a"), envelope.ENVELOPE_V2, vector["body"])
    assert document == vector["document"]
    raw = bytes.fromhex(vector["payload_hex"])
    assert document["payload"] == vector["payload_text"] and vector["payload_text"].encode("utf-8") == raw
    assert raw == canonical.dumps(vector["body"])  # the text is the canonical JSON, no base64
    assert envelope.document_id(document) == vector["envelope_id"] == sha256_hex(bytes.fromhex(vector["pae_hex"]))
    verify(key("village_a").public_b64, envelope.ENVELOPE_V2, raw, b64d(document["signatures"][0]["sig"]))
    opened = envelope.open_signed(vector["document"], envelope.ENVELOPE_TYPES, resolve("village_a"))
    assert (opened.body, opened.payload_type, opened.doc_id) == (vector["body"], envelope.ENVELOPE_V2,
                                                                  vector["envelope_id"])
    with pytest.raises(SignatureError, match="expected " + re.escape(envelope.ENVELOPE)):
        envelope.open_signed(vector["document"], envelope.ENVELOPE, resolve("village_a"))  # an older receiver
    # What is left out is what the receiver derives: the same case as the version 1 body.
    compact = vector["body"]["body"]
    assert not set(submission.DERIVED) & set(compact)
    assert submission.compact(vector["captured_body"], VILLAGE_A) == compact
    derived = submission.expand(compact, VILLAGE_A, vector["catalog_item"])
    assert derived == vector["derived_body"]
    assert derived == {k: v for k, v in vector["captured_body"].items() if k not in ("route", "missing_materials")}
    assert vector["sizes"]["v2_document_bytes"] < vector["sizes"]["v1_document_bytes"]
    # Stored exactly as received: the stored form reads back to the same signed bytes.
    stored = envelope.stored_bytes(opened)
    assert stored == envelope.to_bytes(vector["document"])
    assert envelope.open_stored(envelope.from_bytes(stored), opened.doc_id, iso(NOW)).payload == raw


def test_push_v2_links_are_restored_and_the_mixed_chain_is_acknowledged(tmp_path):
    vector = load("push_v2.json")
    documents = [e["document"] for e in vector["envelopes"]]
    assert envelope.elide_links(documents) == vector["wire_envelopes"]
    assert envelope.restore_links(vector["wire_envelopes"]) == documents
    # The ids computed on the way (the documents before each elided link) are their ids, which
    # open_chained then takes instead of hashing again: the same documents opened either way.
    restored, ids = envelope.restore_links_and_ids(vector["wire_envelopes"])
    assert ids == [vector["envelopes"][0]["envelope_id"], vector["envelopes"][1]["envelope_id"], None]
    trust = resolve("village_a")
    opened = envelope.open_chained(restored, envelope.ENVELOPE_TYPES, trust, ids=ids)
    assert opened == envelope.open_chained(restored, envelope.ENVELOPE_TYPES, trust)
    assert [o.doc_id for o in opened] == [e["envelope_id"] for e in vector["envelopes"]]
    assert '"prev":""' in vector["wire_envelopes"][1]["payload"] and '"prev":""' in vector["wire_envelopes"][2]["payload"]
    assert vector["wire_envelopes"][0] == documents[0]  # v1 bytes are never touched
    assert [envelope.peek(d)["v"] for d in documents] == [1, 2, 2]
    conn = hub_db(tmp_path)
    ing = ingestor(conn, set())
    assert push(ing, envelope.restore_links(vector["wire_envelopes"])) == vector["push_answer"]
    assert [r["status"] for r in vector["push_answer"]["results"]] == ["accepted"] * 3
    ack = envelope.open_signed(vector["push_answer"]["acks"][0], envelope.ACK, resolve("hub_signing")).body
    assert (ack["acked_seq"], ack["acked_id"]) == (3, vector["envelopes"][2]["envelope_id"])
    assert push(ing, [vector["wrong_version"]]) == vector["wrong_version_answer"]
    assert vector["wrong_version_answer"]["results"][0]["reason"] == "malformed"


def test_push_body_key_ids_cut_short_are_restored_to_the_same_documents():
    vector = load("push_v2.json")
    documents = [e["document"] for e in vector["envelopes"]]
    wire_body = vector["wire_body_short_keyids"]
    joined = b",".join(envelope.to_bytes(d) for d in vector["wire_envelopes"])
    assert envelope.shorten_keyids(joined).decode("utf-8") == wire_body
    sent = json.loads("[" + wire_body + "]")
    assert {len(s["keyid"]) for d in sent for s in d["signatures"]} == {envelope.SHORT_KID}
    trust = trust_store()
    assert envelope.restore_links(envelope.restore_keyids(sent, trust.node_keys_starting)) == documents


def test_a_short_key_id_selects_a_key_and_forges_nothing(tmp_path):
    """A short id naming another village's key, or no key, is expanded to that id or left as it
    is: the signature still has to verify, so the envelope is refused, never taken as B's."""
    vector = load("push_v2.json")
    first = vector["envelopes"][0]["document"]
    others = key("village_b").kid[:envelope.SHORT_KID]
    trust = trust_store()
    conn = hub_db(tmp_path)
    ing = ingestor(conn, set())
    for kid in (others, "00000000"):
        sent = [{**first, "signatures": [{**first["signatures"][0], "keyid": kid}]}]
        restored = envelope.restore_keyids(sent, trust.node_keys_starting)
        assert restored[0]["signatures"][0]["keyid"] == (key("village_b").kid if kid == others else kid)
        outcome = push(ing, restored)["results"][0]
        assert outcome["status"] != "accepted", outcome
    assert push(ing, envelope.restore_keyids(json.loads("[" + vector["wire_body_short_keyids"] + "]")[:1],
                                             trust.node_keys_starting))["results"][0]["status"] == "accepted"


def test_two_keys_sharing_a_short_id_are_told_apart_by_each_signature():
    """A short id that selects two registered keys is expanded per envelope, to the key its own
    signature verifies with, even after an earlier envelope of the same push took the other."""
    first = load("push_v2.json")["envelopes"][0]["document"]
    short = key("village_a").kid[:envelope.SHORT_KID]
    twin = short + "f" * (len(key("village_a").kid) - envelope.SHORT_KID)  # another key, same first digits
    by_b = envelope.sign(key("village_b"), envelope.ACK, {"hub": HUB_ID, "origin": VILLAGE_B})
    keys = {key("village_a").kid: key("village_a").public_b64, twin: key("village_b").public_b64}
    sent = [{**d, "signatures": [{**d["signatures"][0], "keyid": short}]} for d in (first, by_b, first)]
    restored = envelope.restore_keyids(sent, lambda prefix: keys if prefix == short else {})
    assert [d["signatures"][0]["keyid"] for d in restored] == [key("village_a").kid, twin, key("village_a").kid]


def test_custody_receipt_v2_names_runs_bound_to_their_ids():
    vector = load("custody_v2.json")
    ids = vector["envelope_ids"]
    results = [{"envelope_id": i, "origin": VILLAGE_A, "seq": s, "status": "custody"}
               for i, s in zip(ids, (1, 2, 3, 3), strict=True)]
    assert relay.ranged_receipt(key("township"), TOWNSHIP_ID, results, NOW) == vector["document"]
    opened = envelope.open_signed(vector["document"], envelope.CUSTODY_TYPES, resolve("township"))
    assert opened.payload_type == envelope.CUSTODY_V2 and opened.doc_id == vector["document_id"]
    assert opened.body["held"] == [
        {"origin": VILLAGE_A, "first": 1, "last": 3,
         "ids_sha256": sha256_hex(b"".join(bytes.fromhex(i) for i in ids[:3]))},
        {"origin": VILLAGE_A, "first": 3, "last": 3, "ids_sha256": sha256_hex(bytes.fromhex(ids[3]))}]


def test_downlink_messages_apply_in_order(tmp_path):
    vector = load("downlink.json")
    conn = hub_db(tmp_path)
    with storage.write_transaction(conn):
        for i, m in enumerate(vector["messages"]):
            body = m["body"]
            issued = downlink.issue(conn, key("hub_signing"), body["issuer"], body["dest"], body["kind"], body["body"],
                                    NOW + timedelta(minutes=5 * i))
            assert issued == m["document"]
            assert envelope.document_id(issued) == m["message_id"]
    village = village_db(tmp_path)
    seen: list[str] = []
    documents = [m["document"] for m in vector["messages"]]

    def handle(c, body):
        seen.append(body["body"]["status"])

    with storage.write_transaction(village):
        assert downlink.apply_in_order(village, trust_store(), VILLAGE_A, documents[1:], handle) == 0
        assert downlink.apply_in_order(village, trust_store(), VILLAGE_A, list(reversed(documents)), handle) == 2
        assert downlink.apply_in_order(village, trust_store(), VILLAGE_A, documents, handle) == 0
    assert seen == ["ACCEPTED", "APPROVED"]
    assert downlink.cursors(village, VILLAGE_A) == {vector["cursor_key"]: 2}


def test_document_token_code_and_verification():
    vector = load("document.json")
    signed = envelope.sign(key("hub_signing"), envelope.DOCUMENT, vector["body"])
    assert signed == vector["document"] and envelope.document_id(signed) == vector["document_id"]
    assert documents.verification_code(signed) == vector["verification_code"]
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", vector["verification_code"])
    token = vector["token"]
    assert len(token) <= 200 and re.fullmatch(r"[0-9A-Z.\-]+", token)  # QR alphanumeric mode
    assert token.startswith(vector["token_header"])
    assert token[len(vector["token_header"]):][:16] == vector["verification_code"].replace("-", "")
    verify(key("hub_signing").public_b64, vector["token_type"], bytes.fromhex(vector["token_signed_hex"]),
           bytes.fromhex(vector["token_sig_hex"]))
    parsed = document_token.parse(token)
    assert document_token.verify_token(parsed, trust_store()) == key("hub_signing").kid
    assert (parsed.issuer, parsed.office, parsed.kind, parsed.date, parsed.seq) == (
        HUB_ID, "130926-rs", "accept", "2027-03-01", 1)
    assert documents.from_record_text(vector["record_text"]) == signed
    assert documents.verify(documents.from_record_text(vector["record_text"]), trust_store()) == vector["body"]
    with pytest.raises(SignatureError, match="文书签发机构与签名不符"):
        documents.verify(vector["forged"], trust_store())
    with pytest.raises(SignatureError, match="村便民服务室无权签发"):
        document_token.verify_token(document_token.parse(vector["village_token"]), trust_store())


def test_lone_surrogate_in_a_signed_payload_is_refused():
    """A validly signed payload with an escaped lone surrogate must be refused as non-canonical."""
    raw = b'{"a":"\\ud800"}'
    signed = {"payloadType": envelope.ENVELOPE, "payload": b64e(raw), "signatures": [
        {"keyid": key("village_a").kid, "sig": b64e(key("village_a").sign(envelope.ENVELOPE, raw))}]}
    with pytest.raises(SignatureError):
        envelope.open_signed(signed, envelope.ENVELOPE, resolve("village_a"))
    with pytest.raises(SignatureError):
        envelope.peek(signed)


def test_node_signed_request_headers(tmp_path):
    vector = load("request.json")
    conn = hub_db(tmp_path)
    resolve_node = lambda node, kid: key("village_a").public_b64 if (node, kid) == (VILLAGE_A, key("village_a").kid) else None  # noqa: E731
    for case in vector["cases"]:
        raw = bytes.fromhex(case["body_hex"])
        if "content_encoding" in case:  # the server decodes only after the signature checked out
            assert wire.decode(raw, case["content_encoding"], 1 << 20) == bytes.fromhex(case["decoded_hex"])
        headers = nodeauth.sign_request(key("village_a"), case["node"], case["to"], case["method"], case["path"], raw,
                                        case["nonce"])
        assert headers == case["headers"]
        kid, sig = headers["X-Liandong-Signature"].split(":", 1)
        verify(key("village_a").public_b64, vector["payload_type"], case["claims_text"].encode("utf-8"), b64d(sig))
        with pytest.raises(SignatureError, match="signature does not verify"):
            nodeauth.verify_request(conn, resolve_node, HUB_ID, case["method"], case["path"], raw, case["headers"])
        with storage.write_transaction(conn):
            assert nodeauth.verify_request(conn, resolve_node, case["to"], case["method"], case["path"], raw,
                                           case["headers"]) == VILLAGE_A
        with pytest.raises(SignatureError, match="replayed request nonce"), storage.write_transaction(conn):
            nodeauth.verify_request(conn, resolve_node, case["to"], case["method"], case["path"], raw, case["headers"])
        # The compact form: the same signature, the same nonce (so the same replay), 8 hex of the kid.
        compact = nodeauth.sign_request(key("village_a"), case["node"], case["to"], case["method"], case["path"], raw,
                                        case["nonce"], compact=True)
        assert compact == case["compact_headers"]
        node, nonce, short, sig = compact[nodeauth.AUTH_HEADER].split(" ")
        assert (node, int(nonce), short) == (case["node"], case["nonce"], key("village_a").kid[:8])
        assert base64.urlsafe_b64decode(sig + "==") == b64d(case["headers"]["X-Liandong-Signature"].split(":")[1])
        by_short = lambda node, kid: nodeauth.keys_for({key("village_a").kid: key("village_a").public_b64}, kid)  # noqa: E731
        assert nodeauth.check_request(by_short, case["to"], case["method"], case["path"], raw, compact) == (
            case["node"], case["nonce"])
        with pytest.raises(SignatureError, match="signature does not verify"):
            nodeauth.check_request(by_short, HUB_ID, case["method"], case["path"], raw, compact)
        with pytest.raises(SignatureError, match="replayed request nonce"), storage.write_transaction(conn):
            nodeauth.verify_request(conn, by_short, case["to"], case["method"], case["path"], raw, compact)


def test_enrolment_proof_and_anchor():
    from city_hub.enrolment_service import anchor_matches_token, parse_token, proof_of_possession

    vector = load("enrol.json")
    assert parse_token(vector["token"]) == (VILLAGE_A, key("root").kid[:16])
    assert proof_of_possession(key("village_a"), VILLAGE_A, vector["token"]) == vector["proof"]
    claimed = envelope.peek(vector["proof"])
    opened = envelope.open_signed(vector["proof"], envelope.ENROL, {sha256_hex(b64d(claimed["public_key"])):
                                                                   claimed["public_key"]}.get)
    assert opened.body == {"node_id": VILLAGE_A, "public_key": key("village_a").public_b64, "token": vector["token"]}
    anchor = vector["anchor"]
    assert canonical.dumps(anchor).hex() == vector["anchor_hex"]
    assert anchor_matches_token(anchor, vector["token"])
    assert not anchor_matches_token(anchor, vector["wrong_root_token"])
    cert = verify_hub_key_cert(anchor["hub_keys"][0], anchor["public_key"], anchor["kid"], anchor["hub_id"])
    assert (cert["kid"], cert["public_key"]) == (key("hub_signing").kid, key("hub_signing").public_b64)


def test_negative_cases_are_refused():
    for case in load("negative.json")["cases"]:
        if case["check"] == "open_signed":
            with pytest.raises(SignatureError) as info:
                expected = case["expected_type"]
                envelope.open_signed(case["document"], expected if isinstance(expected, str) else tuple(expected),
                                     resolve("village_a"))
        else:
            parse = {"canonical.loads": canonical.loads, "canonical.loads_canonical": canonical.loads_canonical}
            with pytest.raises(canonical.CanonicalError) as info:
                parse[case["check"]](bytes.fromhex(case["input_hex"]), max_bytes=case["max_bytes"])
        # The named error or a refinement of it (a MalformedPayload is a SignatureError).
        assert case["error"] in {c.__name__ for c in type(info.value).__mro__}, case["name"]
        assert case["message_contains"] in str(info.value), case["name"]


def main(argv: list[str]) -> int:
    """``python -m tests.test_vectors --write`` rewrites tests/vectors/ from the code."""
    if argv != ["--write"]:
        print(__doc__)
        return 2
    VECTORS.mkdir(exist_ok=True)
    for name, text in build_all().items():
        (VECTORS / name).write_bytes(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
