"""绿色通道 cases and 超时默认 prerequisites, as every node stores them (rules in
:mod:`shared.rules.green_channel`).

The hub keeps the projects. When a case belongs to a key project (重点项目) the hub marks it
green — and shortens its committed limit where the item gives a 绿色通道 limit — and sends the
mark down (``case.green_channel``) to the township that decides it and to the node that took
it, so their queues sort it first and their clocks agree. No Flask here.
"""

from __future__ import annotations

import sqlite3

from shared.core.errors import RuleError
from shared.rules import green_channel as rules
from sync import downlink

DOWNLINK_KIND = "case.green_channel"


def mark_case(conn: sqlite3.Connection, node, case_id: str) -> bool:
    """Mark a case held at the hub 绿色通道 (False if it was already). Call inside a write transaction."""
    row = conn.execute("SELECT case_id, item_code, catalog_version, limit_wd, origin, route_level, route_office,"
                       " green_channel FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    if row is None or row["green_channel"]:
        return False
    item = node.catalog_item(conn, row["item_code"], row["catalog_version"])
    limit = rules.green_limit(item, row["limit_wd"])
    conn.execute("UPDATE cases SET green_channel = 1, limit_wd = ? WHERE case_id = ?", (limit, case_id))
    body = {"case_id": case_id, "green_channel": True, "limit_wd": limit}
    dests = {row["origin"]} | ({row["route_office"]} if row["route_level"] == "township" else set())
    for dest in sorted(dests - {node.node_id}):
        downlink.issue(conn, node.key, node.node_id, dest, DOWNLINK_KIND, body, node.now())
    return True


def apply_downlink(conn: sqlite3.Connection, body: dict) -> bool:
    """The hub's 绿色通道 mark for a case held here (False when this node does not hold it)."""
    limit = body.get("limit_wd")
    if body.get("green_channel") is not True or not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise RuleError("invalid_content", "绿色通道消息的内容不符")
    return conn.execute("UPDATE cases SET green_channel = 1, limit_wd = ? WHERE case_id = ?",
                        (limit, body["case_id"])).rowcount > 0


def deemed_prerequisites(conn: sqlite3.Connection, node, case_id: str) -> list[dict]:
    """The other cases of this case's project that were deemed done (超时默认), each
    ``{"case_id", "item_name", "result_name", "office"}`` (none for a case of no project)."""
    rows = conn.execute(
        "SELECT c.case_id, c.item_code, c.item_name, c.catalog_version, c.route_office FROM project_cases mine"
        " JOIN project_cases pc ON pc.project_id = mine.project_id AND pc.case_id != mine.case_id"
        " JOIN cases c ON c.case_id = pc.case_id WHERE mine.case_id = ?"
        " AND EXISTS (SELECT 1 FROM case_events e WHERE e.case_id = c.case_id AND e.action = 'deemed_done')",
        (case_id,)).fetchall()
    found = []
    for r in rows:
        item = node.catalog_item(conn, r["item_code"], r["catalog_version"]) or {}
        found.append({"case_id": r["case_id"], "item_name": r["item_name"], "result_name": item.get("result_name"),
                      "office": r["route_office"]})
    return found
