"""A node's life after enrolment, at the hub: revocation (lost PC), key rotation, 轮换密钥 orders.

Revocation is a hub decision published in the signed registry, so it reaches every tier by
ordinary sync: townships stop taking custody and the hub quarantines the node's envelopes
numbered after ``revoked_after_seq`` (those before it were made while the PC was trusted).

Rotation is the node's own (sync/rotation.py): the hub checks the new key's proof, registers
it and publishes the registry; the admin may order a node to rotate (:func:`request_rotation`).
"""

from __future__ import annotations

import sqlite3

from city_hub import registry
from shared.core import canonical
from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.crypto import (
    SignatureError,
    b64d,
    kid_of,
    verify,
)
from shared.core.errors import RuleError, ValidationError
from sync import downlink, envelope, rotation


def revoke(conn: sqlite3.Connection, hub_node, node_id: str, after_seq: int | None, actor: str) -> dict:
    """Revoke a node at the hub and publish the registry. Call inside a write transaction.

    :param after_seq: envelopes numbered above this are refused; default: what the hub holds now.
    """
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
    conn.execute("UPDATE nodes SET status = 'active', revoked_after_seq = NULL, revoked_at = NULL WHERE node_id = ?",
                 (node_id,))
    registry.publish_registry(conn, hub_node)
    audit(conn, actor, "node.reinstated", node_id, None, hub_node.now())
    hub_node.forget_trust()


def apply_rotation(conn: sqlite3.Connection, hub_node, origin: str, body: dict) -> None:
    """Hub applier of ``node.rotate_key``: check the proof, register the key, publish."""
    if body.get("node_id") != origin:
        raise RuleError("rotate_mismatch", "密钥轮换请求与来源节点不符")
    public_key = body["public_key"]
    claim = canonical.dumps({"node_id": origin, "public_key": public_key})
    try:
        verify(public_key, rotation.ROTATE_PROOF, claim, b64d(body["proof"]))
    except SignatureError as exc:
        raise ValidationError("proof", "新密钥的持有证明无效") from exc
    kid = kid_of(public_key)
    now = hub_node.now()
    conn.execute("UPDATE node_keys SET retired_at = ? WHERE node_id = ? AND retired_at IS NULL", (iso(now), origin))
    conn.execute("INSERT INTO node_keys(kid, node_id, public_key, created_at) VALUES (?,?,?,?)"
                 " ON CONFLICT(kid) DO NOTHING", (kid, origin, public_key, iso(now)))
    registry.publish_registry(conn, hub_node)
    audit(conn, origin, "node.key_rotated", origin, kid, now)
    hub_node.forget_trust()


def request_rotation(conn: sqlite3.Connection, hub_node, node_id: str, actor: str) -> dict:
    """Order ``node_id`` to rotate its key (轮换密钥 from the node tree): a hub-signed downlink command
    for ``node_id``. Call inside a write transaction.

    :raises ValidationError: unknown node or the hub itself; :raises RuleError: node not active.
    """
    row = conn.execute("SELECT tier, status FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    if row is None or row["tier"] == "hub":
        raise ValidationError("node_id", f"节点 {node_id} 不存在或不能远程轮换密钥")
    if row["status"] != "active":
        raise RuleError("node_not_active", f"节点 {node_id} 已暂停或已吊销，不能轮换密钥")
    now = hub_node.now()
    document = downlink.issue(conn, hub_node.key, hub_node.node_id, node_id, rotation.KIND,
                              {"node_id": node_id, "requested_by": actor, "requested_at": iso(now)}, now)
    audit(conn, actor, "node.rotate_requested", node_id, None, now)
    return {"node_id": node_id, "seq": envelope.peek(document)["seq"], "requested_at": iso(now)}


def key_summary(conn: sqlite3.Connection) -> dict[str, dict]:
    """Per node: ``keys`` (registered, old ones included), ``last_rotation`` (when the newest key
    replaced an older one, or None), ``requested_at`` (the last 轮换密钥 command, from the audit
    log) and ``pending`` (that command is newer than the node's newest key)."""
    out: dict[str, dict] = {}
    for r in conn.execute("SELECT node_id, COUNT(*) AS keys, MAX(created_at) AS newest FROM node_keys GROUP BY node_id"):
        out[r["node_id"]] = {"keys": r["keys"], "last_rotation": r["newest"] if r["keys"] > 1 else None,
                             "requested_at": None, "pending": False, "newest": r["newest"]}
    for r in conn.execute("SELECT target, MAX(at) FROM audit_log WHERE action = 'node.rotate_requested'"
                          " GROUP BY target"):
        entry = out.setdefault(r[0], {"keys": 0, "last_rotation": None, "newest": None})
        entry["requested_at"] = r[1]
        entry["pending"] = entry["newest"] is None or r[1] > entry["newest"]
    return out
