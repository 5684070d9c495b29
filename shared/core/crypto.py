"""Ed25519 keys, key files and DSSE-style signatures (libsodium, through PyNaCl).

Every signature in Liandong is over ``PAE(payload_type, payload)`` (DSSE's pre-authentication
encoding), so a signature made for one purpose (an acknowledgement) can never be replayed as
another (a case envelope). A key is named by its key id: the hex SHA-256 of its raw public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey


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
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def key_id(public_key_raw: bytes) -> str:
    """The key id of a raw Ed25519 public key."""
    return sha256_hex(public_key_raw)


def kid_of(public_key_b64: str) -> str:
    """The key id of a base64 raw public key; :class:`SignatureError` if it is not one."""
    if not isinstance(public_key_b64, str):
        raise SignatureError("a public key is base64 text")
    load_public(public_key_b64)
    return key_id(b64d(public_key_b64))


_loaded_keys: dict[str, VerifyKey] = {}


def load_public(public_key_b64: str) -> VerifyKey:
    """Load a base64 raw public key; raises :class:`SignatureError` if it is not one.

    Loaded keys are kept (a county has a few hundred), so verifying does not decode them again.
    """
    key = _loaded_keys.get(public_key_b64)
    if key is None:
        raw = b64d(public_key_b64)
        if len(raw) != 32:
            raise SignatureError("an Ed25519 public key has 32 bytes")
        key = VerifyKey(raw)
        if len(_loaded_keys) > 10_000:
            _loaded_keys.clear()
        _loaded_keys[public_key_b64] = key
    return key


# A PKCS#8 Ed25519 private key (RFC 8410) is this fixed DER prefix and the 32-byte seed: the
# form key files have always had, so keys written before the library change load unchanged.
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN, _PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


class SigningKey:
    """An Ed25519 private key with its key id and base64 public key."""

    def __init__(self, private_key: _NaclSigningKey):
        self._key = private_key
        self.public_raw = bytes(private_key.verify_key)
        self.public_b64 = b64e(self.public_raw)
        self.kid = key_id(self.public_raw)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(_NaclSigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A deterministic key from a 32-byte seed (test vectors only)."""
        return cls(_NaclSigningKey(seed))

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        """Sign ``PAE(payload_type, payload)``."""
        return self._key.sign(pae(payload_type, payload)).signature

    def save(self, path: Path) -> None:
        """Write the key as PKCS#8 PEM, readable by the owner only (0600), atomically."""
        der = b64e(_PKCS8_ED25519 + bytes(self._key)).encode("ascii")
        write_private_file(Path(path), _PEM_BEGIN + b"\n" + der + b"\n" + _PEM_END + b"\n")

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key written by :meth:`save`."""
        text = Path(path).read_bytes().strip()
        if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)):
            raise SignatureError(f"{path} is not a PEM private key")
        try:
            der = b64d(b"".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split()).decode("ascii"))
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{path} is not a PEM private key") from exc
        if len(der) != len(_PKCS8_ED25519) + 32 or not der.startswith(_PKCS8_ED25519):
            raise SignatureError(f"{path} is not an Ed25519 key")
        return cls(_NaclSigningKey(der[len(_PKCS8_ED25519):]))


def verify(public_key_b64: str, payload_type: str, payload: bytes, signature: bytes) -> None:
    """Verify a signature over ``PAE(payload_type, payload)``; raise :class:`SignatureError`."""
    if len(signature) != 64:
        raise SignatureError("signature does not verify")
    try:
        load_public(public_key_b64).verify(pae(payload_type, payload), signature)
    except (BadSignatureError, CryptoError) as exc:
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
