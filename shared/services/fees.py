"""规范收费 at the window: payments, exemptions and refunds recorded against a case, and the
office's daily fee report. No Flask here; the rules are :mod:`shared.rules.fees`.

Fees are recorded at the node whose window serves the case (the hub for city items, a township
for the items it decides), by an account of the case's office. Every record is audited; the
unique indexes of ``fee_records`` make a 票据号 usable once per office, a payment refundable once
and a case exemptable once, whatever two windows do at the same moment.
"""

from __future__ import annotations

import sqlite3
import uuid

from shared.core.audit import audit
from shared.core.clock import CN_TZ, iso
from shared.core.errors import NotFound, RuleError
from shared.core.storage import write_transaction
from shared.rules import fees as rules
from shared.services import casework

_RECORD_COLUMNS = ("record_id, case_id, office, kind, amount_fen, receipt_no, payer, reason, refund_of,"
                   " recorded_by, recorded_at, day")


def terms_of(node, conn: sqlite3.Connection, row) -> dict:
    """The fee terms of a case's item, from the catalog version it was filed under."""
    return rules.fee_terms(node.kind.catalog_item(conn, row["item_code"], row["catalog_version"]) or {})


def records_of(conn: sqlite3.Connection, case_id: str) -> list[dict]:
    """A case's fee records, oldest first."""
    return [dict(r) for r in conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM fee_records WHERE case_id = ? ORDER BY recorded_at, rowid", (case_id,))]


def case_fees(conn: sqlite3.Connection, node, case_id: str) -> dict:
    """What a case may be charged and what was recorded (``GET /api/v1/cases/<id>/fees``)."""
    row = casework.get_row(conn, case_id)
    records = records_of(conn, case_id)
    return {"case_id": case_id, "terms": terms_of(node, conn, row), "records": records,
            "summary": rules.summary(records)}


def charged_summary(conn: sqlite3.Connection, case_id: str) -> dict | None:
    """What was charged, for the case view (``None`` when nothing was recorded here)."""
    records = records_of(conn, case_id)
    return {**rules.summary(records), "records": len(records)} if records else None


def _insert(conn: sqlite3.Connection, node, row, checked: dict, actor: str, refund_of: str | None = None) -> dict:
    now = node.now()
    record = {"record_id": uuid.uuid4().hex, "case_id": row["case_id"], "office": row["route_office"],
              **checked, "refund_of": refund_of, "recorded_by": actor, "recorded_at": iso(now),
              "day": now.astimezone(CN_TZ).date().isoformat()}
    try:
        conn.execute(f"INSERT INTO fee_records({_RECORD_COLUMNS}) VALUES ({','.join('?' * 12)})",
                     tuple(record[c.strip()] for c in _RECORD_COLUMNS.split(",")))
    except sqlite3.IntegrityError as exc:
        # The unique indexes decide races between two windows, never a check before the insert.
        if "receipt_no" in str(exc):
            raise RuleError("receipt_no_used", f"票据号「{record['receipt_no']}」已登记过，请核对票据") from None
        if "refund_of" in str(exc):
            raise RuleError("already_refunded", "该笔收费已经退费") from None
        raise RuleError("fee_exempted", "本办件已登记减免") from None
    audit(conn, actor, f"fee.{record['kind']}", row["case_id"],
          f"{record['amount_fen']} {record['receipt_no'] or ''} {record['refund_of'] or ''}".strip(), now)
    return record


def record(conn: sqlite3.Connection, node, case_id: str, actor: str, body: dict) -> dict:
    """Record a payment (``amount_fen``, ``receipt_no``, ``payer``) or an exemption (``reason``).

    :raises RuleError: ``fee_not_charged``, ``amount_above_standard``, ``fee_exempted``,
        ``fee_paid``, ``receipt_no_used``. :raises ValidationError: naming the field.
    """
    with write_transaction(conn):
        row = casework.get_row(conn, case_id)
        terms, records = terms_of(node, conn, row), records_of(conn, case_id)
        kind = body.get("kind")
        if kind == "payment":
            checked = rules.check_payment(terms, records, body.get("amount_fen"), body.get("receipt_no"),
                                          body.get("payer"))
        elif kind == "exemption":
            checked = rules.check_exemption(terms, records, body.get("reason"))
        else:
            raise RuleError("fee_kind", "kind 必须是 payment（收费）或 exemption（减免）")
        return _insert(conn, node, row, checked, actor)


def refund(conn: sqlite3.Connection, node, case_id: str, record_id: str, actor: str, reason) -> dict:
    """Refund one payment of a case in full, with its reason.

    :raises RuleError: ``not_a_payment``, ``already_refunded``.
    """
    with write_transaction(conn):
        row = casework.get_row(conn, case_id)
        records = records_of(conn, case_id)
        payment = next((r for r in records if r["record_id"] == record_id), None)
        if payment is None:
            raise NotFound("未找到该收费记录")
        checked = rules.check_refund(payment, any(r["refund_of"] == record_id for r in records), reason)
        return _insert(conn, node, row, checked, actor, refund_of=record_id)


def daily(conn: sqlite3.Connection, office: str, day: str) -> list[dict]:
    """An office's fee records of one day (China time), with the case's receipt number and item."""
    return [dict(r) for r in conn.execute(
        "SELECT f.*, c.receipt_no AS case_receipt_no, c.item_name FROM fee_records f JOIN cases c USING (case_id)"
        " WHERE f.office = ? AND f.day = ? ORDER BY f.recorded_at, f.rowid", (office, day))]


def daily_report(conn: sqlite3.Connection, office: str, day: str) -> dict:
    """The daily fee report of an office: its records and totals."""
    records = daily(conn, office, day)
    return {"office": office, "day": day, "records": records, "summary": rules.summary(records)}
