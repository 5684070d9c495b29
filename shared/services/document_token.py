"""The compact signed token a printed 制式文书 carries in its QR code, and its 核验码.

A phone or a cheap scanner must read the QR from paper, so the token is short (at most about
200 characters) and uses only the QR alphanumeric alphabet (digits, A–Z and ``.-``), which
segno encodes at 5.5 bits a character. It states the document's number (issuer, office,
kind, date, sequence), a digest of the signed record and the issuer's key id, signed with
the issuer's Ed25519 key, so a node that never received the decision verifies it with the
keys of its trust store alone. Format (docs/sync-protocol.md §7.4)::

    LD1.<issuer>.<office>.<kind>.<yyyymmdd>.<seq>.<block>
    block = BASE32(digest20 ‖ kid4 ‖ sig64)            (RFC 4648, no padding: 141 characters)
    sig   = Ed25519(PAE(TOKEN_TYPE, header ‖ digest20 ‖ kid4))   header = the text up to the last "."

The 核验码 is the first 16 characters of ``block`` (the first 10 bytes of the digest), grouped
4-4-4-4: a person types it and a node finds the record among those it holds.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from shared.core.crypto import SignatureError, SigningKey, verify
from shared.rules import authority

PREFIX = "LD1"
TOKEN_TYPE = "application/vnd.liandong.document-token;v=1"
DIGEST_BYTES, KID_BYTES, SIG_BYTES = 20, 4, 64
BLOCK_CHARS = 141  # ceil((20 + 4 + 64) * 8 / 5)
CODE_CHARS = 16
# Document kinds as two letters (the kinds of shared.services.documents.KINDS).
KIND_CODES = {"receipt": "RC", "accept": "AC", "reject": "RJ", "request_correction": "CR",
              "accept_deficient": "AD", "approve": "AP", "deny": "DN", "deliver": "DL", "licence": "LC"}
CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}
_TOKEN = re.compile(r"LD1\.(\d{6,12})\.([0-9A-Z-]{1,32})\.([A-Z]{2})\.(\d{8})\.([1-9]\d{0,8})\.([A-Z2-7]{141})")
# Typing help: RFC 4648 base32 has no 0, 1 or 8, so a person who types them meant O, I and B.
_TYPED = str.maketrans({"0": "O", "1": "I", "8": "B"})


@dataclass(frozen=True)
class Token:
    """A parsed token; ``verified`` only after :func:`verify_token`."""

    issuer: str
    office: str  # lowercase, as the catalog spells office codes
    kind: str
    date: str  # ISO date (China time) the document was issued
    seq: int
    digest: bytes  # the first 20 bytes of the document id
    kid_prefix: bytes
    signature: bytes
    header: str

    @property
    def code(self) -> str:
        """The 核验码 of the document this token names."""
        return code_from_digest(self.digest)

    @property
    def year(self) -> int:
        return int(self.date[:4])


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def code_from_digest(digest: bytes) -> str:
    """The 核验码: 16 base32 characters of the document id, grouped 4-4-4-4."""
    code = _b32(digest[:10])
    return "-".join(code[i:i + 4] for i in range(0, CODE_CHARS, 4))


def code_from_document_id(doc_id: str) -> str:
    """The 核验码 of a document given its hex document id."""
    return code_from_digest(bytes.fromhex(doc_id))


def document_id_prefix(code: str) -> str:
    """The hex prefix (20 characters) of the document id a typed 核验码 names.

    :raises SignatureError: not 16 base32 characters (spaces, dashes and case are ignored).
    """
    text = re.sub(r"[\s\-]", "", code).upper().translate(_TYPED)
    if len(text) != CODE_CHARS or not re.fullmatch(r"[A-Z2-7]+", text):
        raise SignatureError("核验码应为16位字母和数字（如 ABCD-EFGH-JKLM-NPQR）")
    return _unb32(text).hex()


def make(key: SigningKey, *, doc_id: str, issuer: str, office: str, kind: str, issued_on: str, seq: int) -> str:
    """Sign a token for the document ``doc_id`` (hex) issued on ``issued_on`` (ISO date, China time)."""
    header = f"{PREFIX}.{issuer}.{office.upper()}.{KIND_CODES[kind]}.{issued_on.replace('-', '')}.{seq}."
    signed_part = bytes.fromhex(doc_id)[:DIGEST_BYTES] + bytes.fromhex(key.kid)[:KID_BYTES]
    signature = key.sign(TOKEN_TYPE, header.encode("ascii") + signed_part)
    return header + _b32(signed_part + signature)


def parse(text: str) -> Token:
    """Parse a scanned token (surrounding blanks ignored); raises :class:`SignatureError`."""
    match = _TOKEN.fullmatch(text.strip().upper())
    if match is None:
        raise SignatureError("二维码内容不是联动文书核验码，或已损坏")
    issuer, office, kind_code, day, seq, block = match.groups()
    if kind_code not in CODE_KINDS:
        raise SignatureError("二维码内容不是联动文书核验码，或已损坏")
    try:
        raw = _unb32(block)
    except binascii.Error as exc:
        raise SignatureError("二维码内容不完整或已损坏") from exc
    if _b32(raw) != block:  # unused low bits set: one content, one text
        raise SignatureError("二维码内容不完整或已损坏")
    header = text.strip().upper()[: -len(block)]
    return Token(issuer, office.lower(), CODE_KINDS[kind_code], f"{day[:4]}-{day[4:6]}-{day[6:]}", int(seq),
                 raw[:DIGEST_BYTES], raw[DIGEST_BYTES:DIGEST_BYTES + KID_BYTES], raw[DIGEST_BYTES + KID_BYTES:], header)


def verify_token(token: Token, trust) -> str:
    """Check ``token`` against the trust store; return the kid of the key that signed it.

    The key must be one the issuer holds: a root-certified hub key when the issuer is the hub,
    otherwise a key the registry lists for that node. The same authority rules as for the full
    record apply: a village signs only 收件回执 and 送达回证, a township only those and documents
    of the items it decides itself (office = the township).
    """
    if token.issuer == trust.hub_id:
        keys = trust.hub_keys
    else:
        entry = trust.nodes.get(token.issuer)
        if entry is None:
            raise SignatureError("签发机构不在本节点的节点名册中")
        try:  # the one rule of who may sign which document (shared/rules/authority.py)
            authority.check_document_signer(entry.node_id, trust.hub_id, token.issuer, token.kind, token.office)
        except ValueError as exc:
            raise SignatureError(str(exc)) from exc
        keys = entry.keys
    message = token.header.encode("ascii") + token.digest + token.kid_prefix
    candidates = [(kid, public) for kid, public in keys.items() if bytes.fromhex(kid)[:KID_BYTES] == token.kid_prefix]
    if not candidates:
        raise SignatureError("签发机构没有与二维码相符的密钥")
    for kid, public in candidates:  # a 4-byte prefix may in theory match two keys of one issuer
        try:
            verify(public, TOKEN_TYPE, message, token.signature)
            return kid
        except SignatureError:
            continue
    raise SignatureError("签名不符，文书可能被伪造或改动")
