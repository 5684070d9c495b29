"""Node-authenticated HTTP requests between tiers.

A sync request names the caller (its 区划代码), a nonce (an integer that increases with every
request, the larger of the last nonce + 1 and the caller's wall clock in ms, so it survives a
wrong clock and a restore from backup) and the caller's key id and signature over the canonical
request claims ``{"method", "path", "node", "to", "nonce", "body_sha256"}`` as a ``REQUEST``
document. ``to`` names the receiving node, so a request to a township cannot be replayed to
the hub; the nonce must exceed the last one the receiver accepted from that node.

Two header forms carry the same claims and the same signature (docs/sync-protocol.md §5.1):
the three long headers ``X-Liandong-Node``, ``X-Liandong-Nonce``, ``X-Liandong-Signature``
(``<64-hex kid>:<base64 signature>``), and the one compact header ``Liandong-Auth: <node>
<nonce> <first 8 hex of the kid> <unpadded base64url signature>`` (~100 bytes less on every
request). A receiver reads both; a sender uses the compact one unless its parent is older.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sqlite3
import threading
from pathlib import Path

from shared.core import canonical
from shared.core.crypto import SignatureError, SigningKey, b64d, b64e, sha256_hex, verify
from shared.core.errors import ValidationError
from sync import envelope

NONCE_RE = re.compile(r"[0-9]{1,30}")
#: The compact header (docs/sync-protocol.md §5.1) and what its value must look like.
AUTH_HEADER = "Liandong-Auth"
_AUTH_RE = re.compile(r"([0-9A-Za-z]{1,64}) ([0-9]{1,30}) ([0-9a-f]{8,64}) ([A-Za-z0-9_-]{86})")
#: Hex digits of the key id the compact header carries: a selector among one node's own keys,
#: never what authenticates (the signature does, and every key it could select is tried).
SHORT_KID = 8


class NonceSource:
    """Strictly increasing request nonces for one node, remembered across restarts.

    A bound on the nonces is kept in ``path`` so that a PC whose clock went backwards still
    sends larger nonces than before (the parent would otherwise refuse it as a replay). The
    bound is written ahead, :data:`RESERVE` at a time, not after every nonce: writing the file
    cost ~0.7 ms per request, and a restart starts above the bound, above every nonce given.
    """

    #: How far ahead of the nonce just given the bound in the file is set (a minute of the
    #: millisecond clock the nonces follow): the file is written about once a minute.
    RESERVE = 60_000

    def __init__(self, wall_ms, path: Path | None = None):
        self._wall_ms = wall_ms
        self._path = path
        self._lock = threading.Lock()
        self._last = 0
        if path is not None and path.exists():
            try:
                self._last = int(path.read_text().strip() or 0)
            except ValueError:
                self._last = 0
        self._bound = self._last  # every nonce up to it may have been given before this start

    def next(self) -> int:
        """The next nonce."""
        with self._lock:
            self._last = max(self._last + 1, self._wall_ms())
            if self._path is not None and self._last > self._bound:
                self._bound = self._last + self.RESERVE
                tmp = self._path.with_name(self._path.name + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, str(self._bound).encode("ascii"))
                finally:
                    os.close(fd)
                os.replace(tmp, self._path)
            return self._last


def _claims(method: str, path: str, node: str, to: str, nonce: int, body: bytes) -> bytes:
    return canonical.dumps(
        {"method": method.upper(), "path": path, "node": node, "to": to, "nonce": nonce, "body_sha256": sha256_hex(body)}
    )


def sign_request(key: SigningKey, node: str, to: str, method: str, path: str, body: bytes, nonce: int,
                 compact: bool = False) -> dict:
    """Headers that authenticate one request from ``node`` to ``to``: the three long headers, or
    (``compact``) the one ``Liandong-Auth`` header, which only a parent of this version reads."""
    signature = key.sign(envelope.REQUEST, _claims(method, path, node, to, nonce, body))
    if compact:
        sig = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
        return {AUTH_HEADER: f"{node} {nonce} {key.kid[:SHORT_KID]} {sig}"}
    return {
        "X-Liandong-Node": node,
        "X-Liandong-Nonce": str(nonce),
        "X-Liandong-Signature": f"{key.kid}:{b64e(signature)}",
    }


def keys_for(keys: dict[str, str], kid: str) -> list[str]:
    """The public keys among one node's ``keys`` (kid -> key) that ``kid`` names: the key of that
    exact id, or every key whose id starts with a short ``kid`` (the compact header's 8 hex
    digits; two keys of one node sharing them is a 2^-32 chance, and then both are tried)."""
    if kid in keys:
        return [keys[kid]]
    if 8 <= len(kid) < 64:
        return [pk for k, pk in sorted(keys.items()) if k.startswith(kid)]
    return []


def _parse_headers(headers) -> tuple[str, str, str, bytes]:
    """(node, nonce text, kid, signature) from either header form; :raises ValueError: malformed."""
    compact = headers.get(AUTH_HEADER)
    if compact is not None:
        match = _AUTH_RE.fullmatch(compact)
        if match is None:
            raise ValueError("malformed Liandong-Auth header")
        node, nonce, kid, sig = match.groups()
        try:
            raw = base64.urlsafe_b64decode(sig + "==")
        except binascii.Error as exc:
            raise ValueError("malformed signature") from exc
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != sig:  # one spelling per signature
            raise ValueError("malformed signature")
        return node, nonce, kid, raw
    kid, sig = headers.get("X-Liandong-Signature", "").split(":", 1)
    try:
        return headers.get("X-Liandong-Node", ""), headers.get("X-Liandong-Nonce", ""), kid, b64d(sig)
    except SignatureError as exc:
        raise ValueError("malformed signature") from exc


def parse_nonce(text: str) -> int:
    """The nonce header as an integer: ASCII digits only, at most ``2^63 - 1`` (SQLite's INTEGER).

    :raises ValueError: empty or not ASCII digits (a malformed header: 401 like any bad signature).
    :raises ValidationError: a number too large to store: 400 ``malformed``, never a 500.
    """
    if not NONCE_RE.fullmatch(text or ""):
        raise ValueError("the nonce must be ASCII digits")
    nonce = int(text)
    if nonce > canonical.MAX_INT:
        raise ValidationError("X-Liandong-Nonce", "请求序号（X-Liandong-Nonce）超出范围：最大为 2^63-1", code="malformed")
    return nonce


def check_request(resolve_node_key, server_id: str, method: str, path: str, body: bytes, headers) -> tuple[str, int]:
    """Verify a request's signature without touching the database: (calling node, nonce).

    The nonce must still be recorded with :func:`record_nonce`, in the transaction of the
    request's effects.

    Either header form (the compact ``Liandong-Auth`` is read when present).

    :param resolve_node_key: ``(node_id, kid) -> public key, list of keys (a short kid:
        :func:`keys_for`) or None`` for active nodes only.
    :raises SignatureError: missing/unknown/bad signature.
    """
    try:
        node, nonce_text, kid, sig = _parse_headers(headers)
        nonce = parse_nonce(nonce_text)
    except ValueError as exc:
        raise SignatureError("missing or malformed node authentication headers") from exc
    found = resolve_node_key(node, kid)
    candidates = [found] if isinstance(found, str) else list(found or [])
    if not candidates:
        raise SignatureError(f"node {node!r} or its key is unknown or revoked")
    claims = _claims(method, path, node, server_id, nonce, body)
    for public_key in candidates[:-1]:  # a short kid naming two keys of one node: either may have signed
        try:
            verify(public_key, envelope.REQUEST, claims, sig)
            return node, nonce
        except SignatureError:
            continue
    verify(candidates[-1], envelope.REQUEST, claims, sig)
    return node, nonce


def record_nonce(conn: sqlite3.Connection, node: str, nonce: int) -> None:
    """Store ``nonce`` as ``node``'s high-water mark; :class:`SignatureError` if it is not above it."""
    cur = conn.execute(
        "INSERT INTO request_nonces(node_id, nonce) VALUES (?, ?) ON CONFLICT(node_id) DO UPDATE"
        " SET nonce = excluded.nonce WHERE excluded.nonce > request_nonces.nonce",
        (node, nonce),
    )
    if cur.rowcount == 0:
        raise SignatureError("replayed request nonce")


def verify_request(
    conn: sqlite3.Connection, resolve_node_key, server_id: str, method: str, path: str, body: bytes, headers
) -> str:
    """Check a request's headers; return the calling node's id. Writes the nonce high-water mark.

    :raises SignatureError: missing/unknown/bad signature or a replayed nonce.
    """
    node, nonce = check_request(resolve_node_key, server_id, method, path, body, headers)
    record_nonce(conn, node, nonce)
    return node
