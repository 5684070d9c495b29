"""One signature check per hash-linked run (``sync.envelope.open_chained``, docs/sync-protocol.md §5.4.2).

The hub verifies the last envelope of each run of an origin's chain in a push and checks the
links of the others; these tests pin what that must never let through: a changed payload, a
foreign key, a malformed signature, a bad last signature, a run that is not a run.
"""

from __future__ import annotations

import base64
import json

import pytest
from network import catalog, create_case, pick_item

from shared.core import crypto
from shared.core.crypto import SignatureError, SigningKey
from sync import envelope
from sync.outbox import GENESIS

ORIGIN = "130926100201"


def chain(key: SigningKey, n: int, origin: str = ORIGIN, start_seq: int = 1, prev: str = GENESIS) -> list[dict]:
    """Envelopes ``start_seq..`` of one origin, each naming the one before it (as sync.outbox does)."""
    docs = []
    for seq in range(start_seq, start_seq + n):
        doc = envelope.sign(key, envelope.ENVELOPE_V2, {
            "v": 2, "origin": origin, "seq": seq, "prev": prev, "hlc": f"{1_700_000_000_000 + seq:016d}-0000-{origin}",
            "kind": "case.event", "body": {"case_id": f"c{seq}", "n": seq}, "attachments": [],
        })
        prev = envelope.document_id(doc)
        docs.append(doc)
    return docs


@pytest.fixture()
def keys():
    village, other = SigningKey.generate(), SigningKey.generate()
    trusted = {village.kid: village.public_b64, other.kid: other.public_b64}
    return village, other, trusted.get


@pytest.fixture()
def verifies(monkeypatch):
    """Counts the Ed25519 checks made (the real function still runs)."""
    calls = []
    real = envelope.verify

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(envelope, "verify", counting)
    return calls


def with_payload(document: dict, change) -> dict:
    """``document`` with its body changed (canonical still), the signature left as it was."""
    text = document["payloadType"] in envelope.TEXT_PAYLOAD_TYPES
    body = json.loads(document["payload"] if text else base64.b64decode(document["payload"]))
    change(body)
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**document, "payload": payload if text else base64.b64encode(payload.encode()).decode("ascii")}


def with_sig(document: dict, sig: str) -> dict:
    return {**document, "signatures": [{**document["signatures"][0], "sig": sig}]}


def test_a_run_of_fifty_costs_one_signature_check_and_opens_every_envelope(keys, verifies):
    village, _, resolve = keys
    docs = chain(village, 50)
    opened = envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve)
    assert [o.doc_id for o in opened] == [envelope.document_id(d) for d in docs]
    assert [o.body["seq"] for o in opened] == list(range(1, 51))
    assert len(verifies) == 1
    # What open_signed gives for each, the same Opened.
    assert opened[7] == envelope.open_signed(docs[7], envelope.ENVELOPE_TYPES, resolve)


def test_a_changed_payload_inside_a_run_breaks_its_link_and_is_refused(keys, verifies):
    village, _, resolve = keys
    docs = chain(village, 10)
    docs[4] = with_payload(docs[4], lambda b: b["body"].update(n=999))
    opened = envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve)
    assert isinstance(opened[4], SignatureError) and "does not verify" in str(opened[4])
    assert all(not isinstance(o, SignatureError) for i, o in enumerate(opened) if i != 4)
    # 1-5 still link (the changed one names its predecessor): their run fails on its last
    # signature and each is checked alone (1 + 5); 6-10 are a run of their own (1).
    assert len(verifies) == 7


def test_a_bad_last_signature_makes_every_envelope_of_the_run_checked_alone(keys, verifies):
    village, _, resolve = keys
    docs = chain(village, 6)
    docs[-1] = with_sig(docs[-1], base64.b64encode(bytes(64)).decode("ascii"))
    opened = envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve)
    assert isinstance(opened[-1], SignatureError)
    assert all(not isinstance(o, SignatureError) for o in opened[:-1])
    assert len(verifies) == 1 + 6


def test_an_inner_signature_that_is_not_64_bytes_of_strict_base64_is_never_stored(keys):
    village, _, resolve = keys
    for sig in ('AAAA","x":"', "not base64!", base64.b64encode(bytes(63)).decode("ascii")):
        docs = chain(village, 4)
        docs[1] = with_sig(docs[1], sig)
        opened = envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve)
        assert isinstance(opened[1], SignatureError), sig


def test_a_link_under_another_key_does_not_make_a_run(keys, verifies):
    village, other, resolve = keys
    first = chain(village, 3)
    # Another trusted node's key signs a document that names the village's last envelope.
    tail = chain(other, 2, start_seq=4, prev=envelope.document_id(first[-1]))
    opened = envelope.open_chained(first + tail, envelope.ENVELOPE_TYPES, resolve)
    assert [o.kid for o in opened] == [village.kid] * 3 + [other.kid] * 2
    assert len(verifies) == 2  # one per key's run: the foreign key's signature covers only its own
    forged = with_sig(tail[0], first[-1]["signatures"][0]["sig"])
    forged = {**forged, "signatures": [{"keyid": village.kid, "sig": forged["signatures"][0]["sig"]}]}
    opened = envelope.open_chained(first[:2] + [forged], envelope.ENVELOPE_TYPES, resolve)
    assert isinstance(opened[2], SignatureError)


def test_an_unknown_key_or_a_wrong_type_is_refused_as_open_signed_refuses_it(keys):
    village, _, resolve = keys
    docs = chain(village, 3)
    stranger = SigningKey.generate()
    docs[1] = {**docs[1], "signatures": [{"keyid": stranger.kid, "sig": docs[1]["signatures"][0]["sig"]}]}
    opened = envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve)
    assert isinstance(opened[1], SignatureError) and "no key trusted" in str(opened[1])
    receipt = envelope.sign(village, envelope.CUSTODY, {"x": 1})
    assert isinstance(envelope.open_chained([receipt], envelope.ENVELOPE_TYPES, resolve)[0], SignatureError)


def test_the_signature_check_itself_is_real(keys):
    """The one check is crypto's Ed25519 verify: a run signed by an impostor under the village's key id fails."""
    village, _, resolve = keys
    impostor = SigningKey.generate()
    docs = chain(impostor, 5)
    docs = [{**d, "signatures": [{"keyid": village.kid, "sig": d["signatures"][0]["sig"]}]} for d in docs]
    assert all(isinstance(o, SignatureError) for o in envelope.open_chained(docs, envelope.ENVELOPE_TYPES, resolve))
    assert crypto.verify is envelope.verify


# ---------------------------------------------------------------- through the hub


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def village_envelopes(net, n: int) -> list[dict]:
    village = net.village(0)
    token = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, token), "city")
    for _ in range(n):
        create_case(village, token, item, [])
    return [envelope.from_bytes(r["document"]) for r in village.query("SELECT document FROM outbox ORDER BY seq")]


def test_the_hub_takes_a_relayed_run_on_one_check_and_refuses_a_changed_envelope_in_it(net):
    docs = village_envelopes(net, 6)
    assert len(docs) == 6
    tampered = with_payload(docs[2], lambda b: b["body"].update(case_id="0" * len(b["body"]["case_id"])))
    answer = net.township.client_to_parent().push(docs[:2] + [tampered] + docs[3:])
    statuses = [r["status"] for r in answer["results"]]
    # The changed one is refused as forged; the ones after it wait behind the gap it leaves.
    assert statuses == ["accepted", "accepted", "quarantined", "held", "held", "held"]
    assert answer["results"][2]["reason"] == "bad_signature"
    # The genuine one closes the gap: the held ones go in behind it, and are then duplicates here.
    answer = net.township.client_to_parent().push(docs[2:])
    assert [r["status"] for r in answer["results"]] == ["accepted", "duplicate", "duplicate", "duplicate"]
    origin = net.village(0).node_id
    assert net.hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (origin,)) == 6
