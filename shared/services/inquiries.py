"""首问负责 and 咨询登记 at any node: record an inquiry, answer or refer it, close it, or turn it
into a case through a prefilled 暂存 draft. No Flask here; the rules are :mod:`shared.rules.inquiries`.

Inquiries stay at the node that took them (nothing is sent up); each node counts its own.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from shared.core.audit import audit
from shared.core.clock import CN_TZ, iso
from shared.core.errors import NotFound, RuleError
from shared.core.storage import write_transaction
from shared.rules import inquiries as rules
from shared.rules.catalog import accepts_at
from shared.services import drafts


def get(conn: sqlite3.Connection, inquiry_id: str) -> dict:
    """One inquiry, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM inquiries WHERE inquiry_id = ?", (inquiry_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该咨询登记")
    return dict(row)


def listed(conn: sqlite3.Connection, status: str | None = None, limit: int = 200) -> list[dict]:
    """Inquiries of this node, newest first (``status`` open/closed to filter)."""
    where, params = ("WHERE status = ?", (status,)) if status else ("", ())
    return [dict(r) for r in conn.execute(
        f"SELECT * FROM inquiries {where} ORDER BY opened_at DESC, rowid DESC LIMIT ?", (*params, limit))]


def record(conn: sqlite3.Connection, node, body: dict, responder: str) -> dict:
    """咨询登记: the account that takes it is its 首问负责人."""
    _, items = node.catalog(conn)
    clean = rules.clean_inquiry(body, items)
    now = node.now()
    inquiry = {"inquiry_id": uuid.uuid4().hex, "node": node.node_id, "first_responder": responder, **clean,
               "opened_at": iso(now)}
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO inquiries(inquiry_id, node, first_responder, asker_name, asker_phone, question, item_code,"
            " item_name, opened_at) VALUES (:inquiry_id, :node, :first_responder, :asker_name, :asker_phone,"
            " :question, :item_code, :item_name, :opened_at)", inquiry)
        audit(conn, responder, "inquiry.record", inquiry["inquiry_id"], clean["item_code"], now)
    return get(conn, inquiry["inquiry_id"])


def _item(node, conn: sqlite3.Connection, inquiry: dict) -> dict | None:
    return node.catalog(conn)[1].get(inquiry["item_code"]) if inquiry["item_code"] else None


def close(conn: sqlite3.Connection, node, inquiry_id: str, actor: str, body: dict) -> dict:
    """Answer or refer an open inquiry, and close it. Only its 首问负责人 closes it (首问负责:
    whoever was asked first sees it through), or an admin.

    :raises RuleError: ``inquiry_closed``, ``not_first_responder``.
    """
    with write_transaction(conn):
        inquiry = get(conn, inquiry_id)
        _check_responder(inquiry, actor, body.get("_role"))
        done = rules.check_close(inquiry, body.get("outcome"), body.get("answer"), body.get("referred_to"),
                                 _item(node, conn, inquiry))
        now = node.now()
        # The status in the WHERE: two windows closing it at once close it once.
        if conn.execute(
                "UPDATE inquiries SET status = 'closed', outcome = ?, answer = ?, referred_to = ?, consultation = ?,"
                " closed_by = ?, closed_at = ? WHERE inquiry_id = ? AND status = 'open'",
                (done["outcome"], done["answer"], done["referred_to"], done["consultation"], actor, iso(now),
                 inquiry_id)).rowcount == 0:
            raise RuleError("inquiry_closed", "该咨询已办结")
        audit(conn, actor, f"inquiry.{done['outcome']}", inquiry_id, done["referred_to"] or None, now)
    return get(conn, inquiry_id)


def _check_responder(inquiry: dict, actor: str, role: str | None) -> None:
    if inquiry["first_responder"] != actor and role != "admin":
        raise RuleError("not_first_responder", f"首问负责：该咨询由 {inquiry['first_responder']} 负责办结")


def to_case(conn: sqlite3.Connection, node, inquiry_id: str, actor: str, role: str | None = None) -> dict:
    """Turn an inquiry into an application: a 暂存 draft of its item with the asker's name and
    phone filled in (the wizard continues it); the inquiry closes as ``case``. Returns the draft id."""
    with write_transaction(conn):
        inquiry = get(conn, inquiry_id)
        _check_responder(inquiry, actor, role)
        item = _item(node, conn, inquiry)
        rules.check_becomes_case(inquiry, item, item is not None and accepts_at(item, node.node_id))
        values = rules.wizard_values(inquiry)
        now = node.now()
        draft_id = drafts.save(conn, None, item, "form", {"values": values, "kept": [], "entrusted": False}, actor, now)
        if conn.execute("UPDATE inquiries SET status = 'closed', outcome = 'case', draft_id = ?, closed_by = ?,"
                        " closed_at = ? WHERE inquiry_id = ? AND status = 'open'",
                        (draft_id, actor, iso(now), inquiry_id)).rowcount == 0:
            raise RuleError("inquiry_closed", "该咨询已办结")
        audit(conn, actor, "inquiry.case", inquiry_id, draft_id, now)
    return {"inquiry_id": inquiry_id, "draft_id": draft_id, "item_code": item["code"]}


def link_case(conn: sqlite3.Connection, draft_id: str, case_id: str) -> None:
    """The draft an inquiry became was submitted: the inquiry names its case."""
    with write_transaction(conn):
        conn.execute("UPDATE inquiries SET case_id = ? WHERE draft_id = ?", (case_id, draft_id))


def statistics(conn: sqlite3.Connection, node, month: str) -> dict:
    """This node's inquiries opened in ``month`` (YYYY-MM, China time), counted."""
    rows = [dict(r) for r in conn.execute(
        "SELECT status, outcome, consultation, item_name, opened_at FROM inquiries WHERE opened_at >= ? AND opened_at < ?",
        _month_bounds(month))]
    return {"node": node.node_id, "month": month, **rules.statistics(rows)}


def _month_bounds(month: str) -> tuple[str, str]:
    """UTC ISO bounds of a China-time month."""
    year, mon = int(month[:4]), int(month[5:7])
    start = datetime(year, mon, 1, tzinfo=CN_TZ)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=CN_TZ)
    return iso(start), iso(end)
