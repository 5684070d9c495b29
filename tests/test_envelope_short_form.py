"""The short transport form of signed documents (docs/sync-protocol.md §2.1.2): payload as text,
8-hex key ids; the same signed bytes, so the vectors' documents verify in both forms, a tampered
text or a wrong key id is refused, two keys sharing a prefix are told apart by the signature, and
an older peer (that never asks for the form) keeps getting the full one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from network import catalog, create_case, pick_item

from shared.core.crypto import SignatureError, SigningKey
from sync import client as client_module
from sync import envelope, formats, node_sync

VECTORS = Path(__file__).parent / "vectors"
CASES = json.loads((VECTORS / "short_form.json").read_text(encoding="utf-8"))["cases"]
KEYS = json.loads((VECTORS / "keys.json").read_text(encoding="utf-8"))["keys"]


def trusted(name: str) -> dict[str, str]:
    return {KEYS[name]["kid"]: KEYS[name]["public_key_b64"]}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vectors_short_and_full_forms_are_the_same_signed_document(case):
    keys = trusted(case["signer"])
    assert envelope.short_form(case["full"]) == case["short"]
    assert envelope.full_form(case["short"], keys) == case["full"]
    assert envelope.full_form(case["full"], keys) == case["full"]  # an older sender's form: unchanged
    assert envelope.document_id(case["short"]) == envelope.document_id(case["full"]) == case["document_id"]
    opened = envelope.open_signed(envelope.full_form(case["short"], keys), case["full"]["payloadType"], keys.get)
    assert opened.doc_id == case["document_id"]
    assert len(json.dumps(case["short"])) < len(json.dumps(case["full"]))


def test_a_tampered_text_payload_does_not_verify():
    case = CASES[0]
    keys = trusted(case["signer"])
    tampered = {**case["short"], "payloadText": case["short"]["payloadText"].replace('"acked_seq":3', '"acked_seq":9')}
    assert tampered != case["short"]
    with pytest.raises(SignatureError, match="does not verify"):
        envelope.open_signed(envelope.full_form(tampered, keys), envelope.ACK, keys.get)


def test_a_key_id_no_trusted_key_starts_with_is_refused():
    case = CASES[0]
    keys = trusted(case["signer"])
    wrong = {**case["short"], "signatures": [{**case["short"]["signatures"][0], "keyid": "00000000"}]}
    with pytest.raises(SignatureError, match="no key trusted"):
        envelope.open_signed(envelope.full_form(wrong, keys), envelope.ACK, keys.get)
    other = trusted("root")  # a real key, not trusted for acks: its prefix selects nothing here
    with pytest.raises(SignatureError):
        envelope.open_signed(envelope.full_form(case["short"], other), envelope.ACK, other.get)


def test_two_keys_sharing_the_prefix_are_told_apart_by_the_signature():
    case = CASES[0]
    real = trusted(case["signer"])
    kid = next(iter(real))
    impostor = SigningKey.from_seed(b"\x07" * 32)
    keys = {kid[:8] + "f" * 56: impostor.public_b64, **real}  # listed first, shares the first 32 bits
    assert envelope.full_form(case["short"], keys) == case["full"]


@pytest.mark.parametrize("change", [
    lambda d: {**d, "payload": "e30="},  # two payloads: which one was signed?
    lambda d: {**d, "payloadType": envelope.CUSTODY_V2},  # a text type spelled the other way
])
def test_ambiguous_short_forms_are_refused(change):
    case = CASES[0]
    keys = trusted(case["signer"])
    with pytest.raises(SignatureError):
        envelope.open_signed(envelope.full_form(change(case["short"]), keys), envelope.TEXT_PAYLOAD_TYPES | {
            envelope.ACK}, keys.get)


def test_an_older_village_gets_full_documents_and_a_newer_one_short_ones_it_stores_in_full(build_network):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent", village.node_id)
    create_case(village, agent, pick_item(catalog(village, agent), "city"), materials=[])
    documents = [bytes(r["document"]) for r in village.query("SELECT document FROM outbox")]
    old = village.client_to_parent().push([envelope.from_bytes(d) for d in documents])  # no "docs": older
    assert len(old["receipt"]["signatures"][0]["keyid"]) == 64 and "payload" in old["receipt"]
    township.sync()
    new = village.client_to_parent().push_stored(documents, compact=True)
    assert [len(a["signatures"][0]["keyid"]) for a in new["acks"]] == [envelope.SHORT_KID]
    assert "payloadText" in new["acks"][0] and "payload" not in new["acks"][0]
    node_sync.apply_push_answer(village.conn, village.node, new)
    stored = envelope.from_bytes(township.query("SELECT document FROM acks")[0]["document"])
    assert len(stored["signatures"][0]["keyid"]) == 64  # the township keeps the hub's document in full
    assert [r["state"] for r in village.query("SELECT state FROM outbox")] == ["acked"]


def test_pushed_key_ids_go_short_once_the_parent_says_so_and_are_kept_in_full(build_network, monkeypatch):
    """§2.1.2: a parent's pull answer says ``"keyids":"short"``; from then on a node's pushes
    carry 8-digit key ids, which the parent expands before storing: the township keeps, forwards
    and the hub acknowledges the envelopes exactly as signed. A parent that does not say so
    (an older one) keeps getting full ids."""
    net = build_network(villages=1)
    village, township = net.village(), net.township
    sent: list[set[int]] = []  # the lengths of the key ids in each push body the village sent
    original = client_module.ParentClient._call

    def recording(self, method, path, body, *args, **kwargs):
        if self.node_id == village.node_id and path == "/sync/v1/push":
            sent.append({len(s["keyid"]) for d in json.loads(body)["envelopes"] for s in d["signatures"]})
        return original(self, method, path, body, *args, **kwargs)

    monkeypatch.setattr(client_module.ParentClient, "_call", recording)
    village.sync()  # its pull learns what the township reads
    assert formats.short_keyids(village.conn)
    agent = village.account("agent", "agent", village.node_id)
    create_case(village, agent, pick_item(catalog(village, agent), "city"), materials=[])
    net.sync_all()
    assert sent and all(lengths == {envelope.SHORT_KID} for lengths in sent if lengths)
    kids = [envelope.from_bytes(r["document"])["signatures"][0]["keyid"] for r in township.query(
        "SELECT document FROM custody")] + [envelope.from_bytes(r["document"])["signatures"][0]["keyid"]
                                           for r in net.hub.query("SELECT document FROM inbox")]
    assert kids and {len(k) for k in kids} == {64}
    assert {r["state"] for r in village.query("SELECT state FROM outbox")} == {"acked"}
    # An answer without the member (an older parent) sets the node back to full key ids.
    with village.conn:
        node_sync.apply_pull_answer(village.conn, village.node, {"envelope_versions": [1, 2]})
    assert not formats.short_keyids(village.conn)
    documents = [bytes(r["document"]) for r in village.query("SELECT document FROM outbox")]
    body = envelope.shorten_keyids(b",".join(documents))
    assert body.count(b'"keyid":"') == len(documents) and len(body) == len(b",".join(documents)) - 56 * len(documents)
