"""Creating the hub's keys: the root key and a root-certified online signing key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from shared.core import canonical
from shared.core.clock import iso
from shared.core.crypto import SigningKey
from sync import envelope
from sync.node import HUB_SIGNING_KEY_FILE, ROOT_KEY_FILE
from sync.trust import hub_key_cert_body

SIGNING_KEY_YEARS = 2


def create_hub_keys(data_dir: Path, hub_id: str, now) -> dict:
    """Generate the root and the first signing key; return the root anchor nodes will pin.

    The root private key is written to ``keys/root.pem`` (0600); an admin who wants it offline
    moves that file to removable media after init and brings it back only to certify a new
    signing key.
    """
    root = SigningKey.generate()
    signing = SigningKey.generate()
    root.save(data_dir / ROOT_KEY_FILE)
    signing.save(data_dir / HUB_SIGNING_KEY_FILE)
    cert = envelope.sign(
        root,
        envelope.CERT,
        hub_key_cert_body(hub_id, signing.kid, signing.public_b64, iso(now),
                          iso(now + timedelta(days=365 * SIGNING_KEY_YEARS))),
    )
    return {"hub_id": hub_id, "public_key": root.public_b64, "kid": root.kid, "hub_keys": [cert]}


def anchor_text(anchor: dict) -> str:
    """How the anchor is stored in node_meta / trusted_metadata."""
    return canonical.dumps(anchor).decode("utf-8")
