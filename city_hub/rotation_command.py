"""Key rotation asked for from the hub's node tree (轮换密钥).

A node rotates its own key (:func:`city_hub.lifecycle.start_rotation`: a next key, and a
``node.rotate_key`` uplink envelope signed by the current key with a proof by the new one). The
hub admin cannot do that for it — the private key never leaves the node — so the node tree sends
the node a hub-signed downlink command of the same kind; the node, when it applies the command
in order with its other downlink, starts the rotation itself. From there everything is the
ordinary rotation: the hub registers the new key, publishes the registry, the node switches
once its trusted registry lists the key, and what was queued under the old key still verifies.

Only the hub may order a rotation: a downlink's issuer is bound to its signer (a township's key
can only speak as that township), so the node checks that the issuer is its hub.
"""

from __future__ import annotations

import sqlite3

from shared.core.clock import iso
from shared.core.crypto import SigningKey
from shared.core.errors import RuleError, ValidationError
from shared.services.accounts import audit

KIND = "node.rotate_key"


# ----------------------------------------------------------------------------- hub side


def request(conn: sqlite3.Connection, hub_node, node_id: str, actor: str) -> dict:
    """Queue a signed 轮换密钥 command for ``node_id``. Call inside a write transaction.

    :raises ValidationError: unknown node or the hub itself; :raises RuleError: node not active.
    """
    from sync import downlink

    row = conn.execute("SELECT tier, status FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
    if row is None or row["tier"] == "hub":
        raise ValidationError("node_id", f"节点 {node_id} 不存在或不能远程轮换密钥")
    if row["status"] != "active":
        raise RuleError("node_not_active", f"节点 {node_id} 已暂停或已吊销，不能轮换密钥")
    now = hub_node.now()
    document = downlink.issue(conn, hub_node.key, hub_node.node_id, node_id, KIND,
                              {"node_id": node_id, "requested_by": actor, "requested_at": iso(now)}, now)
    audit(conn, actor, "node.rotate_requested", node_id, None, now)
    from sync import envelope

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


# ----------------------------------------------------------------------------- node side


def pending_rotation(conn: sqlite3.Connection, node) -> bool:
    """True when this node has a next key already announced in its outbox (a rotation under way)."""
    from city_hub.lifecycle import NEXT_KEY_FILE
    from sync import envelope

    path = node.data_dir / NEXT_KEY_FILE
    if not path.exists():
        return False
    public = SigningKey.load(path).public_b64
    for (document,) in conn.execute("SELECT document FROM outbox WHERE kind = ? ORDER BY seq DESC", (KIND,)):
        body = envelope.peek(envelope.from_bytes(document))
        if body.get("body", {}).get("public_key") == public:
            return True
    return False


def apply(conn: sqlite3.Connection, node, message: dict) -> str | None:
    """Downlink handler: start a rotation unless one is under way; returns the new kid or None.

    ``message`` is the downlink body (``issuer``, ``dest``, ``kind``, ``body``); commands not
    issued by this node's hub are ignored.
    """
    from city_hub.lifecycle import start_rotation

    if node is None or message.get("issuer") != node.hub_id or message.get("dest") != node.node_id:
        return None
    if pending_rotation(conn, node):
        return None
    kid = start_rotation(conn, node)
    audit(conn, "hub", "node.rotate_started", node.node_id, kid, node.now())
    return kid
