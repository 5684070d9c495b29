"""A node's own key rotation, with an overlap (node side; the hub side is city_hub/lifecycle.py).

Rotation travels as an ordinary uplink envelope ``node.rotate_key`` signed by the current key
and carrying a proof by the new key, so it works offline, through relays and on a USB stick.
The node keeps signing with the old key until a registry listing the new one comes back; the
old key stays in the registry (retired), so envelopes already queued still verify.

The hub admin may also order a rotation from the node tree (轮换密钥): a hub-signed downlink
command of the same kind, which the node applies in order with its other downlink by starting
the rotation itself (the private key never leaves the node). Only the hub may order it: a
downlink's issuer is bound to its signer, so the node checks that the issuer is its hub.
"""

from __future__ import annotations

import os
import sqlite3

from shared.core import canonical
from shared.core.audit import audit
from shared.core.crypto import SigningKey, b64e, fsync_dir, write_private_file
from shared.core.storage import write_transaction
from sync import envelope, outbox
from sync.tier import NODE_KEY_FILE

KIND = "node.rotate_key"
NEXT_KEY_FILE = "keys/node.next.pem"
OLD_KEY_FILE = "keys/node.old.pem"
ROTATE_PROOF = envelope.PREFIX + "rotate-proof+json;v=1"


def start(conn: sqlite3.Connection, node) -> str:
    """Generate the next key and queue a ``node.rotate_key`` envelope; returns the new kid."""
    path = node.data_dir / NEXT_KEY_FILE
    new = SigningKey.load(path) if path.exists() else SigningKey.generate()
    new.save(path)
    claim = {"node_id": node.node_id, "public_key": new.public_b64}
    proof = b64e(new.sign(ROTATE_PROOF, canonical.dumps(claim)))
    with write_transaction(conn):
        outbox.append(conn, node.key, node.node_id, KIND, {**claim, "proof": proof},
                      str(node.hlc.now()), node.now())
    return new.kid


def finish_if_registered(node, trust) -> bool:
    """Switch to the next key once the trusted registry lists it for this node."""
    path = node.data_dir / NEXT_KEY_FILE
    if not path.exists() or trust is None:
        return False
    entry = trust.nodes.get(node.node_id)
    if entry is None or SigningKey.load(path).kid not in entry.keys:
        return False
    current = node.data_dir / NODE_KEY_FILE
    # Keep a copy of the old key, then switch with one atomic rename: a kill at any point
    # leaves keys/node.pem holding a registered key (old or new), and a retry finishes.
    write_private_file(node.data_dir / OLD_KEY_FILE, current.read_bytes())
    os.replace(path, current)
    fsync_dir(current.parent)
    node.reload_key()
    return True


def pending(conn: sqlite3.Connection, node) -> bool:
    """True when this node has a next key already announced in its outbox (a rotation under way)."""
    path = node.data_dir / NEXT_KEY_FILE
    if not path.exists():
        return False
    public = SigningKey.load(path).public_b64
    for (document,) in conn.execute("SELECT document FROM outbox WHERE kind = ? ORDER BY seq DESC", (KIND,)):
        body = envelope.peek(envelope.from_bytes(document))
        if body.get("body", {}).get("public_key") == public:
            return True
    return False


def apply_command(conn: sqlite3.Connection, node, message: dict) -> str | None:
    """Downlink handler: start a rotation unless one is under way; returns the new kid or None.

    ``message`` is the downlink body (``issuer``, ``dest``, ``kind``, ``body``); commands not
    issued by this node's hub are ignored.
    """
    if message.get("issuer") != node.hub_id or message.get("dest") != node.node_id:
        return None
    if pending(conn, node):
        return None
    kid = start(conn, node)
    audit(conn, "hub", "node.rotate_started", node.node_id, kid, node.now())
    return kid
