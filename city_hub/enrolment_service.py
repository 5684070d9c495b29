"""Enrolment: a single-use, expiring token bound to one node code, plus proof of possession.

Token text: ``LD1.<node_id>.<secret>.<root kid prefix>``. The hub stores only the token's
SHA-256. The new node generates its own Ed25519 key, signs ``{"node_id", "public_key",
"token"}`` as an ``ENROL`` document with it (proof of possession) and posts it to
``/enrol/v1``; the hub consumes the token in one conditional UPDATE (single use, even under a
race), registers the key, publishes a new registry and answers with the root anchor, which the
node checks against the root kid prefix in its token before trusting anything.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from datetime import timedelta

from city_hub import registry
from shared.core import canonical
from shared.core.clock import iso
from shared.core.crypto import SignatureError, SigningKey, kid_of
from shared.core.errors import RuleError, ValidationError
from shared.services.accounts import audit, token_hash
from sync import envelope

TOKEN_RE = re.compile(r"^LD1\.(\d{6}|\d{9}|\d{12})\.[A-Za-z0-9_-]{20,}\.([0-9a-f]{16})$")
TIER_BY_LENGTH = {9: "township", 12: "village"}


def parse_token(token: str) -> tuple[str, str]:
    """(node_id, root kid prefix) of a token; raises ValidationError if malformed."""
    match = TOKEN_RE.match(token.strip())
    if not match:
        raise ValidationError("token", "注册令牌格式错误", code="bad_token")
    return match.group(1), match.group(2)


def create_token(conn: sqlite3.Connection, node_id: str, name: str, parent: str | None, ttl: timedelta,
                 now, actor: str) -> str:
    """Create a single-use enrolment token for ``node_id``. Call inside a write transaction."""
    tier = TIER_BY_LENGTH.get(len(node_id)) if node_id.isdigit() else None
    if tier is None:
        raise ValidationError("node_id", "乡镇节点编码为9位、村节点编码为12位数字（统计用区划代码）")
    parent = parent or node_id[: 6 if tier == "township" else 9]
    parent_row = conn.execute("SELECT tier, status FROM nodes WHERE node_id = ?", (parent,)).fetchone()
    expected_parent_tier = "hub" if tier == "township" else "township"
    if parent_row is None or parent_row["tier"] != expected_parent_tier or not node_id.startswith(parent):
        raise ValidationError("parent", f"上级节点 {parent} 不存在或与编码 {node_id} 不相符")
    if conn.execute("SELECT 1 FROM nodes WHERE node_id = ?", (node_id,)).fetchone():
        raise RuleError("already_enrolled", f"节点 {node_id} 已注册")
    root_kid = registry.root_anchor(conn)["kid"]
    token = f"LD1.{node_id}.{secrets.token_urlsafe(24)}.{root_kid[:16]}"
    conn.execute(
        "INSERT INTO enrol_tokens(token_hash, node_id, tier, parent, name, expires_at, created_at) VALUES (?,?,?,?,?,?,?)",
        (token_hash(token), node_id, tier, parent, name, iso(now + ttl), iso(now)),
    )
    audit(conn, actor, "enrol.token", node_id, f"expires {iso(now + ttl)}", now)
    return token


def proof_of_possession(key: SigningKey, node_id: str, token: str) -> dict:
    """The enrolment request body a new node sends."""
    return envelope.sign(key, envelope.ENROL, {"node_id": node_id, "public_key": key.public_b64, "token": token})


def enrol(conn: sqlite3.Connection, node, request_document: dict) -> dict:
    """Handle an enrolment request at the hub. Call inside a write transaction."""
    try:
        claimed = envelope.peek(request_document)
        public_key = claimed["public_key"]
        kid = kid_of(public_key)
        envelope.open_signed(request_document, envelope.ENROL, lambda k: public_key if k == kid else None)
        token, node_id = claimed["token"], claimed["node_id"]
    except (SignatureError, KeyError, TypeError) as exc:
        raise ValidationError("proof", "注册请求的密钥持有证明无效", code="bad_proof") from exc
    now = node.now()
    row = conn.execute("SELECT * FROM enrol_tokens WHERE token_hash = ?", (token_hash(token),)).fetchone()
    cur = conn.execute(
        "UPDATE enrol_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? AND node_id = ?",
        (iso(now), token_hash(token), iso(now), node_id),
    )
    if cur.rowcount != 1:
        if row is None:
            reason = "注册令牌无效"
        elif row["used_at"]:
            reason = "注册令牌已被使用"
        elif row["node_id"] != node_id:
            reason = "注册令牌不属于该节点编码"
        else:
            reason = "注册令牌已过期"
        raise RuleError("token_refused", reason)
    conn.execute(
        "INSERT INTO nodes(node_id, tier, parent, name, created_at) VALUES (?,?,?,?,?)",
        (node_id, row["tier"], row["parent"], row["name"], iso(now)),
    )
    conn.execute(
        "INSERT INTO node_keys(kid, node_id, public_key, created_at) VALUES (?,?,?,?)",
        (kid, node_id, public_key, iso(now)),
    )
    registry.refresh_metadata(conn, node)
    registry_doc = registry.publish_registry(conn, node)
    audit(conn, "enrolment", "node.enrolled", node_id, kid, now)
    node.forget_trust()
    return {
        "node": {"node_id": node_id, "tier": row["tier"], "parent": row["parent"], "name": row["name"], "kid": kid},
        "anchor": registry.root_anchor(conn),
        "metadata": [registry_doc] + [d for d in (registry.latest(conn, r)[1] for r in ("catalog", "calendar")) if d],
    }


def anchor_matches_token(anchor: dict, token: str) -> bool:
    """Whether the root key the hub presents is the one the token was issued under."""
    _, root_prefix = parse_token(token)
    return anchor["kid"].startswith(root_prefix) and kid_of(anchor["public_key"]) == anchor["kid"]


def anchor_bytes(anchor: dict) -> bytes:
    """How a node stores its pinned anchor."""
    return canonical.dumps(anchor)
