"""A node's life after enrolment: revocation (lost PC) and key rotation with an overlap.

Revocation is a hub decision published in the signed registry, so it reaches every tier by
ordinary sync: townships stop taking custody and the hub quarantines the node's envelopes
numbered after ``revoked_after_seq`` (those before it were made while the PC was trusted).

Rotation travels as an ordinary uplink envelope ``node.rotate_key`` signed by the current key
and carrying a proof by the new key, so it works offline, through relays and on a USB stick.
The node keeps signing with the old key until a registry listing the new one comes back; the
old key stays in the registry (retired), so envelopes already queued still verify.
"""

from __future__ import annotations

import os
import sqlite3

from shared.core import canonical
from shared.core.clock import iso
from shared.core.crypto import (
    SignatureError,
    SigningKey,
    b64d,
    b64e,
    fsync_dir,
    key_id,
    load_public,
    verify,
    write_private_file,
)
from shared.core.errors import RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.services.accounts import audit
from sync import envelope, outbox
from sync.node import NODE_KEY_FILE

NEXT_KEY_FILE = "keys/node.next.pem"
OLD_KEY_FILE = "keys/node.old.pem"
ROTATE_PROOF = envelope.PREFIX + "rotate-proof+json;v=1"


def revoke(conn: sqlite3.Connection, hub_node, node_id: str, after_seq: int | None, actor: str) -> dict:
    """Revoke a node at the hub and publish the registry. Call inside a write transaction.

    :param after_seq: envelopes numbered above this are refused; default: what the hub holds now.
    """
    from city_hub import registry

    row = conn.execute("SELECT tier, status FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    if row is None or row["tier"] == "hub":
        raise ValidationError("node_id", f"节点 {node_id} 不存在或不能吊销")
    if after_seq is None:
        after_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE origin = ?", (node_id,)).fetchone()[0]
    now = hub_node.now()
    conn.execute("UPDATE nodes SET status = 'revoked', revoked_after_seq = ?, revoked_at = ? WHERE node_id = ?",
                 (after_seq, iso(now), node_id))
    document = registry.publish_registry(conn, hub_node)
    audit(conn, actor, "node.revoked", node_id, f"after seq {after_seq}", now)
    hub_node.forget_trust()
    return {"node_id": node_id, "revoked_after_seq": after_seq, "registry_version": envelope.peek(document)["version"]}


def reinstate(conn: sqlite3.Connection, hub_node, node_id: str, actor: str) -> None:
    """Lift a suspension (after a fork was reviewed) or a revocation. Call inside a write transaction."""
    from city_hub import registry

    conn.execute("UPDATE nodes SET status = 'active', revoked_after_seq = NULL, revoked_at = NULL WHERE node_id = ?",
                 (node_id,))
    registry.publish_registry(conn, hub_node)
    audit(conn, actor, "node.reinstated", node_id, None, hub_node.now())
    hub_node.forget_trust()


def start_rotation(conn: sqlite3.Connection, node) -> str:
    """Generate the next key and queue a ``node.rotate_key`` envelope; returns the new kid."""
    path = node.data_dir / NEXT_KEY_FILE
    new = SigningKey.load(path) if path.exists() else SigningKey.generate()
    new.save(path)
    claim = {"node_id": node.node_id, "public_key": new.public_b64}
    proof = b64e(new.sign(ROTATE_PROOF, canonical.dumps(claim)))
    with write_transaction(conn):
        outbox.append(conn, node.key, node.node_id, "node.rotate_key", {**claim, "proof": proof},
                      str(node.hlc.now()), node.now())
    return new.kid


def apply_rotation(conn: sqlite3.Connection, hub_node, origin: str, body: dict) -> None:
    """Hub applier of ``node.rotate_key``: check the proof, register the key, publish."""
    from city_hub import registry

    if body.get("node_id") != origin:
        raise RuleError("rotate_mismatch", "密钥轮换请求与来源节点不符")
    public_key = body["public_key"]
    claim = canonical.dumps({"node_id": origin, "public_key": public_key})
    try:
        verify(public_key, ROTATE_PROOF, claim, b64d(body["proof"]))
    except SignatureError as exc:
        raise ValidationError("proof", "新密钥的持有证明无效") from exc
    kid = key_id(load_public(public_key).public_bytes_raw())
    now = hub_node.now()
    conn.execute("UPDATE node_keys SET retired_at = ? WHERE node_id = ? AND retired_at IS NULL", (iso(now), origin))
    conn.execute("INSERT INTO node_keys(kid, node_id, public_key, created_at) VALUES (?,?,?,?)"
                 " ON CONFLICT(kid) DO NOTHING", (kid, origin, public_key, iso(now)))
    registry.publish_registry(conn, hub_node)
    audit(conn, origin, "node.key_rotated", origin, kid, now)
    hub_node.forget_trust()


def finish_rotation_if_registered(node, trust) -> bool:
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
