"""Ed25519 keys, key files and DSSE-style signatures.

Every signature in Liandong is over ``PAE(payload_type, payload)`` (DSSE's pre-authentication
encoding), so a signature made for one purpose (an acknowledgement) can never be replayed as
another (a case envelope). A key is named by its key id: the hex SHA-256 of its raw public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SignatureError(Exception):
    """A signature, key or signed document that does not verify."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload`` under ``payload_type``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64e(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Strict standard base64 decoding; raises :class:`SignatureError` on bad input."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise SignatureError("invalid base64") from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (hashlib: 2-3x faster than cryptography for small inputs)."""
    return hashlib.sha256(data).hexdigest()


def public_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key_raw: bytes) -> str:
    """The key id of a raw Ed25519 public key."""
    return sha256_hex(public_key_raw)


_loaded_keys: dict[str, Ed25519PublicKey] = {}


def load_public(public_key_b64: str) -> Ed25519PublicKey:
    """Load a base64 raw public key; raises :class:`SignatureError` if it is not one.

    Loaded keys are kept (a county has a few hundred), so verifying does not decode them again.
    """
    key = _loaded_keys.get(public_key_b64)
    if key is None:
        raw = b64d(public_key_b64)
        if len(raw) != 32:
            raise SignatureError("an Ed25519 public key has 32 bytes")
        key = Ed25519PublicKey.from_public_bytes(raw)
        if len(_loaded_keys) > 10_000:
            _loaded_keys.clear()
        _loaded_keys[public_key_b64] = key
    return key


class SigningKey:
    """An Ed25519 private key with its key id and base64 public key."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        self.public_raw = public_raw(private_key.public_key())
        self.public_b64 = b64e(self.public_raw)
        self.kid = key_id(self.public_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A deterministic key from a 32-byte seed (test vectors only)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        """Sign ``PAE(payload_type, payload)``."""
        return self._key.sign(pae(payload_type, payload))

    def save(self, path: Path) -> None:
        """Write the key as PKCS#8 PEM, readable by the owner only (0600), atomically."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private_file(Path(path), pem)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key written by :meth:`save`."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path} is not an Ed25519 key")
        return cls(key)


def verify(public_key_b64: str, payload_type: str, payload: bytes, signature: bytes) -> None:
    """Verify a signature over ``PAE(payload_type, payload)``; raise :class:`SignatureError`."""
    try:
        load_public(public_key_b64).verify(signature, pae(payload_type, payload))
    except InvalidSignature as exc:
        raise SignatureError("signature does not verify") from exc


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret durably with mode 0600: temp file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it survives power loss (a no-op where unsupported)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
