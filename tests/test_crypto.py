"""Ed25519 keys and signatures on libsodium (shared/core/crypto.py): key files stay readable across
the library change, and a signature verifies only over its own key, bytes and type."""

from __future__ import annotations

import os
import stat

import pytest

from shared.core.crypto import SignatureError, SigningKey, b64e, kid_of, verify

SEED = bytes(range(32))
# What the node's key file for SEED has always held (written by the previous library, PKCS#8 PEM).
PEM = (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
       b"-----END PRIVATE KEY-----\n")
# RFC 8032 §7.1, test 1: secret key, public key and the signature of the empty message.
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_a_key_file_written_before_the_library_change_loads_and_is_written_the_same(tmp_path):
    path = tmp_path / "node.pem"
    path.write_bytes(PEM)
    assert SigningKey.load(path).kid == SigningKey.from_seed(SEED).kid
    SigningKey.from_seed(SEED).save(tmp_path / "again.pem")
    assert (tmp_path / "again.pem").read_bytes() == PEM
    if os.name == "posix":
        assert stat.S_IMODE((tmp_path / "again.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [
    b"",
    b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    PEM.replace(b"MC4CAQAwBQYDK2VwBCIE", b"MC4CAQAwBQYDK2VuBCIE"),  # an X25519 key, not Ed25519
    PEM.replace(b"HR4f", b""),  # cut short
    PEM.replace(b"PRIVATE KEY", b"PUBLIC KEY"),
])
def test_anything_else_in_a_key_file_is_refused(tmp_path, content):
    path = tmp_path / "node.pem"
    path.write_bytes(content)
    with pytest.raises(SignatureError):
        SigningKey.load(path)


def test_the_rfc_8032_key_gives_its_public_key():
    assert SigningKey.from_seed(RFC_SECRET).public_raw == RFC_PUBLIC


def test_a_signature_verifies_only_over_its_key_type_and_bytes():
    key, other = SigningKey.from_seed(SEED), SigningKey.generate()
    sig = key.sign("t", b"payload")
    verify(key.public_b64, "t", b"payload", sig)
    for args in ((other.public_b64, "t", b"payload", sig), (key.public_b64, "u", b"payload", sig),
                 (key.public_b64, "t", b"payloaD", sig), (key.public_b64, "t", b"payload", sig[:63]),
                 (key.public_b64, "t", b"payload", bytes([sig[0] ^ 1]) + sig[1:]),
                 (b64e(bytes(31)), "t", b"payload", sig)):
        with pytest.raises(SignatureError):
            verify(*args)


def test_a_small_order_public_key_verifies_nothing():
    """libsodium refuses keys of small order (e.g. the identity point), whose signatures would
    verify for many messages; such a key is never a node's."""
    identity = b64e(bytes([1]) + bytes(31))
    with pytest.raises(SignatureError):
        verify(identity, "t", b"payload", bytes([1]) + bytes(63))


def test_a_key_id_is_the_sha256_of_the_raw_public_key():
    key = SigningKey.from_seed(SEED)
    assert kid_of(key.public_b64) == key.kid
    for bad in (b64e(bytes(31)), "not base64", 42):
        with pytest.raises(SignatureError):
            kid_of(bad)
