"""Node-authenticated HTTP requests between tiers.

A sync request carries three headers: ``X-Liandong-Node`` (the caller's 区划代码),
``X-Liandong-Nonce`` (an integer that increases with every request, the larger of the last
nonce + 1 and the caller's wall clock in ms, so it survives a wrong clock and a restore from
backup) and ``X-Liandong-Signature``: the caller's key id and signature over the canonical
request body ``{"method", "path", "node", "to", "nonce", "body_sha256"}`` as a ``REQUEST``
document. ``to`` names the receiving node, so a request to a township cannot be replayed to
the hub; the nonce must exceed the last one the receiver accepted from that node.
"""

from __future__ import annotations

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


class NonceSource:
    """Strictly increasing request nonces for one node, remembered across restarts.

    The last nonce is kept in ``path`` so that a PC whose clock went backwards still sends
    larger nonces than before (the parent would otherwise refuse it as a replay).
    """

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

    def next(self) -> int:
        """The next nonce."""
        with self._lock:
            self._last = max(self._last + 1, self._wall_ms())
            if self._path is not None:
                tmp = self._path.with_name(self._path.name + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, str(self._last).encode("ascii"))
                finally:
                    os.close(fd)
                os.replace(tmp, self._path)
            return self._last


def _claims(method: str, path: str, node: str, to: str, nonce: int, body: bytes) -> bytes:
    return canonical.dumps(
        {"method": method.upper(), "path": path, "node": node, "to": to, "nonce": nonce, "body_sha256": sha256_hex(body)}
    )


def sign_request(key: SigningKey, node: str, to: str, method: str, path: str, body: bytes, nonce: int) -> dict:
    """Headers that authenticate one request from ``node`` to ``to``."""
    claims = _claims(method, path, node, to, nonce, body)
    return {
        "X-Liandong-Node": node,
        "X-Liandong-Nonce": str(nonce),
        "X-Liandong-Signature": f"{key.kid}:{b64e(key.sign(envelope.REQUEST, claims))}",
    }


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

    :param resolve_node_key: ``(node_id, kid) -> public key or None`` for active nodes only.
    :raises SignatureError: missing/unknown/bad signature.
    """
    node = headers.get("X-Liandong-Node", "")
    try:
        nonce = parse_nonce(headers.get("X-Liandong-Nonce", ""))
        kid, sig = headers.get("X-Liandong-Signature", "").split(":", 1)
    except ValueError as exc:
        raise SignatureError("missing or malformed node authentication headers") from exc
    public_key = resolve_node_key(node, kid)
    if public_key is None:
        raise SignatureError(f"node {node!r} or its key is unknown or revoked")
    verify(public_key, envelope.REQUEST, _claims(method, path, node, server_id, nonce, body), b64d(sig))
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
