"""Quarantined envelopes at the hub: list them, release one after review, or discard it.

An envelope the hub refuses (bad signature, fork, revoked, wrong relay, oversized attachment…)
is kept in ``quarantine`` with its reason, alone: the others of the batch go on. An admin
reviews it on the node page or with ``liandong hub quarantine``: *release* ingests the stored
envelope again (for example after the node was reinstated); *discard* closes it with a reason.
Both are audited; neither deletes the row (the evidence stays).
"""

from __future__ import annotations

import sqlite3

from city_hub import registry
from city_hub.sync_service import ingestor_for
from shared.core.audit import audit
from shared.core.clock import iso
from shared.core.errors import RuleError, ValidationError
from sync import envelope

MAX_REASON_CHARS = 500
#: Why the hub holds an envelope, in the words the admin page shows (sync-protocol.md §5.4).
REASON_LABELS = {
    "bad_signature": "签名无效", "malformed": "格式错误", "fork": "同一序号内容不同（疑似从旧备份恢复或密钥被复制）",
    "revoked": "节点已吊销", "suspended": "节点已暂停", "invalid_content": "内容不符合办件规则",
    "apply_failed": "入库失败", "attachment_too_large": "材料文件超过大小上限", "clock_ahead": "节点时钟超前",
    "wrong_relay": "不是由本节点或其上级乡镇报送", "broken_chain": "序号链不连续", "gap_buffer_full": "缺号等待过多",
}


def open_rows(conn: sqlite3.Connection, limit: int = 100) -> list[sqlite3.Row]:
    """Unresolved quarantine rows, newest first."""
    return conn.execute(
        "SELECT id, origin, seq, envelope_id, reason, detail, received_at, document IS NOT NULL AS has_document"
        " FROM quarantine WHERE resolved_at IS NULL ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def _open_row(conn: sqlite3.Connection, quarantine_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM quarantine WHERE id = ?", (quarantine_id,)).fetchone()
    if row is None:
        raise ValidationError("id", f"没有编号为 {quarantine_id} 的隔离消息")
    if row["resolved_at"] is not None:
        raise RuleError("already_resolved", f"隔离消息 {quarantine_id} 已于 {row['resolved_at']} 处理过")
    return row


def release(conn: sqlite3.Connection, hub_node, quarantine_id: int, actor: str) -> dict:
    """Ingest a quarantined envelope again (after review). Call inside a write transaction.

    :raises RuleError: nothing to ingest (no stored envelope), or the hub still refuses it (the
        caller's transaction then rolls back: the row stays open).
    """
    row = _open_row(conn, quarantine_id)
    if row["document"] is None:
        raise RuleError("no_document", f"隔离消息 {quarantine_id} 没有可重新接收的消息内容（已入库的消息），只能在核查后作废")
    ingestor = ingestor_for(hub_node, conn)
    document = envelope.from_bytes(row["document"])
    origin = row["origin"] or envelope.peek(document).get("origin")
    outcome = ingestor.ingest([document], via=origin, now=hub_node.now(), wall_ms=hub_node.wall_ms()).results[0]
    if outcome["status"] not in ("accepted", "duplicate", "held"):
        raise RuleError("still_refused", f"隔离消息 {quarantine_id} 仍被拒收：{outcome.get('reason', outcome['status'])}")
    if ingestor.suspended:
        registry.publish_registry(conn, hub_node)
        hub_node.forget_trust()
    now = hub_node.now()
    conn.execute("UPDATE quarantine SET resolved_at = ? WHERE id = ?", (iso(now), quarantine_id))
    audit(conn, actor, "quarantine.released", row["origin"],
          f"#{quarantine_id} seq {row['seq']} {row['reason']}: {outcome['status']}", now)
    return {"id": quarantine_id, "origin": row["origin"], "seq": row["seq"], "status": outcome["status"]}


def discard(conn: sqlite3.Connection, hub_node, quarantine_id: int, reason: str, actor: str) -> dict:
    """Close a quarantined envelope without ingesting it, with the admin's reason. Call inside a
    write transaction.

    :raises ValidationError: no reason given, or too long.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("reason", "作废隔离消息必须填写原因")
    if len(reason) > MAX_REASON_CHARS:
        raise ValidationError("reason", f"原因不能超过 {MAX_REASON_CHARS} 个字")
    row = _open_row(conn, quarantine_id)
    now = hub_node.now()
    conn.execute("UPDATE quarantine SET resolved_at = ? WHERE id = ?", (iso(now), quarantine_id))
    audit(conn, actor, "quarantine.discarded", row["origin"],
          f"#{quarantine_id} seq {row['seq']} {row['reason']}: {reason}", now)
    return {"id": quarantine_id, "origin": row["origin"], "seq": row["seq"], "discarded": True}
