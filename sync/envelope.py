"""Signed documents: one DSSE-shaped JSON object for every message Liandong signs.

Wire form (``docs/sync-protocol.md`` §2)::

    {"payloadType": "<type>", "payload": "<base64 of the canonical JSON body>",
     "signatures": [{"keyid": "<hex sha256 of the raw public key>", "sig": "<base64>"}]}

Types of :data:`TEXT_PAYLOAD_TYPES` (the ``v=2`` envelope and custody receipt) carry the
canonical JSON text itself as the ``payload`` string instead of its base64: the signed bytes are
that string's UTF-8 encoding, byte for byte (docs/sync-protocol.md §2.1.1).

The signature covers ``PAE(payloadType, payload_bytes)``; the id of a document is the hex
SHA-256 of that same PAE string, so it names the exact bytes that were signed and does not
change when a relay re-encodes the surrounding JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.core import canonical
from shared.core.crypto import SignatureError, SigningKey, b64d, b64e, pae, sha256_hex, verify

PREFIX = "application/vnd.liandong."
ENVELOPE = PREFIX + "envelope+json;v=1"  # uplink event, signed by its origin node
ENVELOPE_V2 = PREFIX + "envelope+json;v=2"  # the same, payload as text, compact case.submit body
DOWNLINK = PREFIX + "downlink+json;v=1"  # message to one node, signed by the deciding node
ACK = PREFIX + "ack+json;v=1"  # hub's cumulative acknowledgement for one origin
CUSTODY = PREFIX + "custody+json;v=1"  # township's custody receipt
CUSTODY_V2 = PREFIX + "custody+json;v=2"  # the same as seq ranges per origin, payload as text
CERT = PREFIX + "cert+json;v=1"  # a certificate for a hub key or a node key
METADATA = PREFIX + "metadata+json;v=1"  # catalog, registry, calendar
ENROL = PREFIX + "enrol+json;v=1"  # proof of possession of a new node key
REQUEST = PREFIX + "request+json;v=1"  # node-authenticated HTTP request
BUNDLE = PREFIX + "bundle+json;v=1"  # USB bundle manifest
DOCUMENT = PREFIX + "document+json;v=1"  # printed 文书 verification record

MAX_ENVELOPE_BYTES = 2 * 1024 * 1024

#: Uplink envelope types by the version their header's ``v`` must state; a receiver accepts both.
ENVELOPE_VERSIONS = {ENVELOPE: 1, ENVELOPE_V2: 2}
ENVELOPE_TYPES = (ENVELOPE, ENVELOPE_V2)
CUSTODY_TYPES = (CUSTODY, CUSTODY_V2)
#: Types whose ``payload`` is the canonical JSON text (a JSON string), not its base64.
TEXT_PAYLOAD_TYPES = frozenset({ENVELOPE_V2, CUSTODY_V2})


class MalformedPayload(SignatureError):
    """The signature verified, but the signed payload is not acceptable JSON (not canonical, an
    integer beyond 64 bits, not an object): the signer sent it, so it is refused as malformed."""


@dataclass(frozen=True)
class Opened:
    """A verified signed document: its parsed body, its exact payload bytes, signer and id."""

    body: dict
    payload: bytes
    kid: str
    doc_id: str
    payload_type: str
    sig: str = ""  # the base64 signature that verified
    received_at: str | None = None  # when this node accepted it (documents read back from store)
    via: str | None = None  # the node that pushed it here (an inbox row read back from store)
    held_at: str | None = None  # when that node, a township, took it into custody (as it said)


def sign(key: SigningKey, payload_type: str, body: dict) -> dict:
    """Serialise ``body`` canonically and sign it; returns the wire document."""
    payload = canonical.dumps(body)
    return {
        "payloadType": payload_type,
        "payload": _wire_payload(payload_type, payload),
        "signatures": [{"keyid": key.kid, "sig": b64e(key.sign(payload_type, payload))}],
    }


def _wire_payload(payload_type: str, payload: bytes) -> str:
    """The ``payload`` member for these signed bytes: the text itself for a text type, else base64."""
    return payload.decode("utf-8") if payload_type in TEXT_PAYLOAD_TYPES else b64e(payload)


#: Hex digits of a key id in the short form of a document (§2.1.2), as in ``Liandong-Auth``.
SHORT_KID = 8


def short_form(document: dict) -> dict:
    """The short transport form of a signed document this node holds (docs/sync-protocol.md
    §2.1.2), for a receiver that asked for it: a base64 payload whose bytes are UTF-8 travels as
    that text (``payloadText``), and each key id as its first :data:`SHORT_KID` hex digits. The
    signed bytes, the signatures and the document id do not change; :func:`full_form` gives the
    stored form back, so nothing after the receipt of a document sees the difference."""
    out = {"payloadType": document["payloadType"],
           "signatures": [{**entry, "keyid": entry["keyid"][:SHORT_KID]} for entry in document["signatures"]]}
    if document["payloadType"] in TEXT_PAYLOAD_TYPES:
        out["payload"] = document["payload"]
        return out
    try:
        out["payloadText"] = b64d(document["payload"]).decode("utf-8")
    except UnicodeDecodeError:
        out["payload"] = document["payload"]
    return out


def full_form(document: Any, keys: dict[str, str]) -> Any:
    """The stored form of a document received in :func:`short_form` (any other is returned as it
    is). ``keys``: the full key ids trusted for this document's purpose, with their public keys. A
    short key id only selects among them: when several start with it, the one whose signature
    verifies is taken; none, or a malformed document, is left for :func:`open_signed` to refuse."""
    if not isinstance(document, dict):
        return document
    out = dict(document)
    if "payloadText" in out:
        text = out.pop("payloadText")
        if "payload" in out or not isinstance(text, str) or out.get("payloadType") in TEXT_PAYLOAD_TYPES:
            return document  # two payloads, or a text type spelled the other way: refused as it is
        try:
            out["payload"] = b64e(text.encode("utf-8"))
        except UnicodeEncodeError:
            return document
    signatures = out.get("signatures")
    if not isinstance(signatures, list):
        return out
    entries = []
    for entry in signatures:
        kid = entry.get("keyid") if isinstance(entry, dict) else None
        if isinstance(kid, str) and SHORT_KID <= len(kid) < 64:
            entry = {**entry, "keyid": _expand(kid, keys, out, entry.get("sig"))}
        entries.append(entry)
    out["signatures"] = entries
    return out


def _expand(kid: str, keys: dict[str, str], document: dict, sig: Any) -> str:
    candidates = [full for full in keys if full.startswith(kid)]
    if len(candidates) == 1:
        return candidates[0]
    for full in candidates:  # two trusted keys sharing their first 32 bits: the signature decides
        try:
            payload_type, payload = _parts(document)
            verify(keys[full], payload_type, payload, b64d(sig if isinstance(sig, str) else ""))
        except SignatureError:
            continue
        return full
    return kid  # unknown: open_signed finds no trusted key and refuses it


def document_id(document: dict) -> str:
    """The id of a signed document: hex SHA-256 of PAE(payloadType, payload bytes)."""
    payload_type, payload = _parts(document)
    return sha256_hex(pae(payload_type, payload))


def _parts(document: Any) -> tuple[str, bytes]:
    if not isinstance(document, dict):
        raise SignatureError("a signed document is a JSON object")
    payload_type = document.get("payloadType")
    payload = document.get("payload")
    if (payload is None and isinstance(payload_type, str) and payload_type not in TEXT_PAYLOAD_TYPES
            and isinstance(document.get("payloadText"), str)):
        try:  # the short form (§2.1.2): the same signed bytes, as text
            return payload_type, document["payloadText"].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SignatureError("payload text is not valid Unicode") from exc
    if not isinstance(payload_type, str) or not isinstance(payload, str):
        raise SignatureError("payloadType and payload must be strings")
    if payload_type in TEXT_PAYLOAD_TYPES:
        try:
            return payload_type, payload.encode("utf-8")
        except UnicodeEncodeError as exc:  # an escaped lone surrogate: no byte form to verify
            raise SignatureError("payload text is not valid Unicode") from exc
    return payload_type, b64d(payload)


def open_signed(
    document: Any,
    expected_type: str | tuple[str, ...],
    resolve_key: Callable[[str], str | None],
    max_bytes: int = MAX_ENVELOPE_BYTES,
    vouched: bool = False,
) -> Opened:
    """Verify ``document`` and return its body.

    :param expected_type: the payload type, or a tuple of the types accepted (e.g.
        :data:`ENVELOPE_TYPES` while nodes upgrade); ``Opened.payload_type`` says which it was.
    :param resolve_key: maps a key id to the base64 public key trusted for this purpose, or
        ``None`` when the key is unknown (or revoked) for it.
    :param vouched: skip the Ed25519 check (every other check stays): only for a relay taking
        custody of the caller's own envelopes, whose request signature already covers these
        bytes (docs/sync-protocol.md §5.3.1); whoever applies or ends the chain verifies.
    :raises SignatureError: wrong type, unknown key, bad signature, or a body that is not strict
        canonical JSON. Verification happens on the received payload bytes, before parsing.
    """
    payload_type, payload = _parts(document)
    accepted = (expected_type,) if isinstance(expected_type, str) else expected_type
    if payload_type not in accepted:
        raise SignatureError(f"expected {' or '.join(accepted)}, got {payload_type}")
    if len(payload) > max_bytes:
        raise SignatureError("payload too large")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise SignatureError("no signatures")
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        kid, sig = entry.get("keyid"), entry.get("sig")
        if not isinstance(kid, str) or not isinstance(sig, str):
            continue
        public_key = resolve_key(kid)
        if public_key is None:
            continue
        if not vouched:
            verify(public_key, payload_type, payload, b64d(sig))
        try:
            body = canonical.loads_canonical(payload, max_bytes=max_bytes)
        except canonical.CanonicalError as exc:
            raise MalformedPayload(f"signed payload is not strict JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise MalformedPayload("signed payload must be a JSON object")
        return Opened(body, payload, kid, sha256_hex(pae(payload_type, payload)), payload_type, sig)
    raise SignatureError("signed by no key trusted for this purpose")


def open_chained(
    documents: list,
    expected_type: str | tuple[str, ...],
    resolve_key: Callable[[str], str | None],
    max_bytes: int = MAX_ENVELOPE_BYTES,
    ids: list[str | None] | None = None,
) -> list[Opened | SignatureError]:
    """:func:`open_signed` for a list of envelopes, one Ed25519 check per hash-linked run.

    A run is consecutive documents signed with the same key in which each one's ``prev`` is the
    id of the one before it. The id is the SHA-256 of the exact signed bytes, so the last
    envelope's signature also covers every earlier payload of its run through the links: one
    verified signature authenticates the whole run (docs/sync-protocol.md §5.4.2). Every other
    check of :func:`open_signed` still runs on every document (type, size, trusted key id,
    strict base64 signature of the right length, strict canonical payload). A run whose last
    signature fails, and any document outside a run, is verified on its own, so each fault is
    named exactly as :func:`open_signed` names it. ``ids``: the documents' ids where already
    computed from these same documents (:func:`restore_links_and_ids`), else ``None``.

    :returns: for each document, its ``Opened`` or the ``SignatureError`` that refuses it.
    """
    ids = ids or [None] * len(documents)
    candidates = [_unverified(document, expected_type, resolve_key, max_bytes, doc_id)
                  for document, doc_id in zip(documents, ids, strict=True)]
    out: list = [None] * len(documents)
    start = 0
    while start < len(documents):
        end = start
        while end + 1 < len(documents) and _linked(candidates[end], candidates[end + 1]):
            end += 1
        last = candidates[end]
        if end > start and _verifies(last):
            out[start:end + 1] = [c[0] for c in candidates[start:end + 1]]
        else:
            for i in range(start, end + 1):
                try:
                    out[i] = open_signed(documents[i], expected_type, resolve_key, max_bytes)
                except SignatureError as exc:
                    out[i] = exc
        start = end + 1
    return out


def _unverified(document, expected_type, resolve_key, max_bytes, doc_id=None) -> tuple[Opened, str] | None:
    """Everything :func:`open_signed` checks but the signature: ``(opened, public key)``, or
    None when any check fails (the document is then verified alone for the exact error)."""
    try:
        payload_type, payload = _parts(document)
        accepted = (expected_type,) if isinstance(expected_type, str) else expected_type
        signatures = document.get("signatures")
        if payload_type not in accepted or len(payload) > max_bytes or not isinstance(signatures, list) \
                or len(signatures) != 1 or not isinstance(signatures[0], dict):
            return None
        kid, sig = signatures[0].get("keyid"), signatures[0].get("sig")
        public_key = resolve_key(kid) if isinstance(kid, str) else None
        # Checked like a verified one: stored_bytes formats the signature into JSON unescaped.
        if public_key is None or not isinstance(sig, str) or len(b64d(sig)) != 64:
            return None
        body = canonical.loads_canonical(payload, max_bytes=max_bytes)
    except (SignatureError, canonical.CanonicalError):
        return None
    if not isinstance(body, dict):
        return None
    return Opened(body, payload, kid, doc_id or sha256_hex(pae(payload_type, payload)), payload_type, sig), public_key


def _linked(earlier: tuple[Opened, str] | None, later: tuple[Opened, str] | None) -> bool:
    """``later`` names ``earlier`` as its predecessor, under the same key."""
    return (earlier is not None and later is not None and later[0].kid == earlier[0].kid
            and later[0].body.get("prev") == earlier[0].doc_id)


def _verifies(candidate: tuple[Opened, str]) -> bool:
    opened, public_key = candidate
    try:
        verify(public_key, opened.payload_type, opened.payload, b64d(opened.sig))
    except SignatureError:
        return False
    return True


def open_stored(document: dict, doc_id: str, received_at: str, via: str | None = None,
                held_at: str | None = None) -> Opened:
    """A document this node verified and stored earlier, opened again without re-verifying.

    Only for rows this node wrote itself after :func:`open_signed` accepted them (their payload
    was strict canonical JSON then, so the fast parser suffices now).
    """
    _, payload = _parts(document)
    signature = document["signatures"][0]
    return Opened(canonical.loads_own(payload), payload, signature["keyid"], doc_id, document["payloadType"], signature["sig"],
                  received_at, via, held_at)


def peek(document: Any) -> dict:
    """Parse a document's body WITHOUT verifying it (routing and error messages only)."""
    _, payload = _parts(document)
    try:
        body = canonical.loads_canonical(payload, max_bytes=MAX_ENVELOPE_BYTES)
    except canonical.CanonicalError as exc:
        raise SignatureError(str(exc)) from exc
    if not isinstance(body, dict):
        raise SignatureError("payload must be a JSON object")
    return body


def to_bytes(document: dict) -> bytes:
    """Bytes to store a document with (the payload inside is already exact).

    The wrapper holds only strings, so the C encoder is used directly: what is signed is the
    payload, never these bytes.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def stored_bytes(opened: Opened) -> bytes:
    """What :func:`to_bytes` gives for the verified document with only the signature that verified.

    Built by formatting: every part was checked by :func:`open_signed` (the type is a known
    constant, the key id a trusted one, payload and signature strict base64), so none needs
    escaping; a text payload is escaped as the canonical writer escapes a string.
    """
    if opened.payload_type in TEXT_PAYLOAD_TYPES:
        payload = canonical.string_bytes(opened.payload.decode("utf-8"))
        return (b'{"payload":' + payload + f',"payloadType":"{opened.payload_type}",'
                f'"signatures":[{{"keyid":"{opened.kid}","sig":"{opened.sig}"}}]}}'.encode("ascii"))
    return (f'{{"payload":"{b64e(opened.payload)}","payloadType":"{opened.payload_type}",'
            f'"signatures":[{{"keyid":"{opened.kid}","sig":"{opened.sig}"}}]}}').encode("ascii")


def from_bytes(data: bytes) -> dict:
    """Load a document this node stored itself (received ones were parsed strictly first)."""
    return canonical.loads_own(data)


# The end of every v2 envelope payload: "prev" is the last top-level string member (keys are sorted:
# attachments, body, hlc, kind, origin, prev, seq, v), so its value sits at a fixed place.
_LINK_TAIL = re.compile(r'"prev":"([0-9a-f]{64})","seq":\d{1,19},"v":2\}')
_ELIDED_TAIL = re.compile(r'"prev":"","seq":\d{1,19},"v":2\}')
_PREV_AT = len('"prev":"')


def elide_links(documents: list[dict]) -> list[dict]:
    """The push-body form of ``documents`` (docs/sync-protocol.md §5.3): a v2 envelope whose
    ``prev`` is the id of the document just before it in the list travels with ``"prev":""``;
    the parent puts the id back (:func:`restore_links`) before anything else. Only for a parent
    that takes v2 envelopes; the signed bytes, ids and stored documents do not change."""
    out = []
    for i, document in enumerate(documents):
        payload = document.get("payload")
        if i and document.get("payloadType") == ENVELOPE_V2 and isinstance(payload, str):
            at = payload.rfind('"prev":"')
            link = _LINK_TAIL.fullmatch(payload, at) if at >= 0 else None
            if link and link.group(1) == document_id(documents[i - 1]):
                document = {**document, "payload": payload[:at + _PREV_AT] + payload[at + _PREV_AT + 64:]}
        out.append(document)
    return out


_STORED_PREV = b'\\"prev\\":\\"'
_STORED_LINK_TAIL = re.compile(rb'\\"prev\\":\\"([0-9a-f]{64})\\",\\"seq\\":\d{1,19},\\"v\\":2\}"')
_STORED_V2 = b'"payloadType":"' + ENVELOPE_V2.encode("ascii") + b'"'


def elide_stored(documents: list[bytes], ids: list[str]) -> list[bytes]:
    """:func:`elide_links` for documents as stored (:func:`to_bytes`) with their envelope ids, on
    the bytes: the same bytes ``to_bytes`` gives for each elided document, without parsing one.
    In the stored JSON the payload text's quotes are escaped, and its unescaped closing quote
    right after the final ``}`` anchors the tail."""
    out = []
    for i, document in enumerate(documents):
        document = bytes(document)
        if i and _STORED_V2 in document:
            at = document.rfind(_STORED_PREV)
            link = _STORED_LINK_TAIL.match(document, at) if at >= 0 else None
            if link and link.group(1).decode("ascii") == ids[i - 1]:
                start = at + len(_STORED_PREV)
                document = document[:start] + document[start + 64:]
        out.append(document)
    return out


def restore_links(documents: list) -> list:
    """Undo :func:`elide_links`: an elided ``prev`` becomes the id of the document before it in
    the same push. Nothing is trusted by this: the restored payload must still verify with its
    origin's signature, so a wrong restoration is only a refused envelope."""
    return restore_links_and_ids(documents)[0]


def restore_links_and_ids(documents: list) -> tuple[list, list[str | None]]:
    """:func:`restore_links`, and the id of each restored document it computed on the way (the
    one before each elided link; ``None`` where it computed none), which :func:`open_chained`
    takes instead of hashing those documents again."""
    out: list = []
    ids: list[str | None] = [None] * len(documents)
    for i, document in enumerate(documents):
        payload = document.get("payload") if isinstance(document, dict) else None
        if out and isinstance(payload, str) and document.get("payloadType") == ENVELOPE_V2:
            at = payload.rfind('"prev":"",')
            if at >= 0 and _ELIDED_TAIL.fullmatch(payload, at):
                try:
                    previous = ids[i - 1] = document_id(out[-1])
                except SignatureError:
                    previous = None
                if previous is not None:
                    document = {**document, "payload": payload[:at + _PREV_AT] + previous + payload[at + _PREV_AT:]}
        out.append(document)
    return out, ids


#: A signature's full key id in stored bytes (:func:`to_bytes`). Nothing inside a payload can
#: match: a payload is a JSON string there, its quotes escaped.
_STORED_KEYID = re.compile(rb'\{"keyid":"([0-9a-f]{8})[0-9a-f]{56}"')


def shorten_keyids(documents: bytes) -> bytes:
    """Stored documents (:func:`to_bytes`, joined or not) with every signature's key id cut to
    its first :data:`SHORT_KID` hex digits: the push-body form for a parent that reads them
    (``"keyids":"short"`` in its pull answer, docs/sync-protocol.md §2.1.2). The parent puts the
    full ids back (:func:`restore_keyids`); nothing signed changes."""
    return _STORED_KEYID.sub(rb'{"keyid":"\1"', documents)


def _short_keyid(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("keyid"), str) and len(entry["keyid"]) == SHORT_KID


def restore_keyids(documents: list, keys_starting: Callable[[str], dict[str, str]]) -> list:
    """Undo :func:`shorten_keyids` in a push's envelopes before anything else reads them: each
    short key id becomes the full id of the registered node key it selects
    (``keys_starting(prefix)``: full id → public key). Nothing is trusted by this: the signature
    must still verify with that key, so a short id that selects no key, or another node's, is
    only a refused envelope; of two keys sharing the digits, the one that verifies is taken."""
    out, sole = [], {}  # a short id that selects one key: looked up once per push (its origins)

    def expand(entry: dict, document: dict) -> str:
        kid = entry["keyid"]
        full = sole.get(kid)
        if full is None:
            keys = keys_starting(kid)
            full = _expand(kid, keys, document, entry.get("sig"))
            if len(keys) == 1:
                sole[kid] = full
        return full

    for document in documents:
        signatures = document.get("signatures") if isinstance(document, dict) else None
        if isinstance(signatures, list) and any(_short_keyid(entry) for entry in signatures):
            document = {**document, "signatures": [
                {**entry, "keyid": expand(entry, document)} if _short_keyid(entry) else entry for entry in signatures]}
        out.append(document)
    return out


def within_bytes(rows: list, budget: int, column: str = "document") -> list:
    """The leading ``rows`` whose stored documents together fit in ``budget`` bytes (at least the
    first one: a single envelope is capped far below any push limit). A push built from them stays
    under the parent's ``MAX_PUSH_BYTES`` however large one origin's envelopes are."""
    taken, total = [], 0
    for row in rows:
        total += len(row[column])
        if taken and total > budget:
            break
        taken.append(row)
    return taken
