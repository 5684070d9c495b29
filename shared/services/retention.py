"""Purging a closed case's personal data from the village PC (PIPL 最小必要, retention).

A case qualifies when :func:`shared.rules.retention.purge_due` says so: closed for good, every
outbox message about it acknowledged by the hub, and ``PERSONAL_DATA_RETENTION_DAYS`` passed.
The purge keeps a stub (masked name and 身份证号, receipt number, state, history) and removes the
rest: phone, personal form fields, material files no unpurged case still uses, the signed
documents held here (they name the applicant; the parent serves them again for reprinting,
:func:`documents_for_caller`), and the bytes of the acknowledged envelopes that carried them.
Only a tier with ``purges_personal_data`` purges: the hub keeps the county's record.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

from shared.core.audit import audit
from shared.core.clock import CN_TZ, iso, parse_iso
from shared.core.errors import Forbidden
from shared.core.storage import write_transaction
from shared.rules import retention
from shared.rules.states import FINAL_STATES
from shared.services import casework, documents

#: How long a document fetched again for reprinting a purged case stays on the PC.
REFETCHED_DOCUMENT_HOURS = 24

_FINAL = tuple(sorted(FINAL_STATES))
#: The closed statuses as SQL literals, exactly as the partial index ``cases_closed_unpurged``
#: (migration 25) names them: SQLite uses a partial index only for the same terms, not for
#: bound parameters.
_FINAL_SQL = "(" + ", ".join(f"'{s}'" for s in _FINAL) + ")"


#: Closed, unpurged cases taken at a node (``?``), closed before a time (``?``).
_CANDIDATES = (
    "SELECT c.*, NOT EXISTS (SELECT 1 FROM outbox o WHERE o.case_id = c.case_id AND o.state != 'acked')"
    f" AS everything_acked FROM cases c WHERE c.origin = ? AND c.purged_at IS NULL AND c.status IN {_FINAL_SQL}"
    " AND c.updated_at <= ? ORDER BY c.updated_at"
)


def _candidates(conn: sqlite3.Connection, node_id: str, closed_before: str) -> list[sqlite3.Row]:
    """Closed, unpurged cases taken here, closed before ``closed_before``, with nothing unacknowledged."""
    return conn.execute(_CANDIDATES, (node_id, closed_before)).fetchall()


def purge_case(conn: sqlite3.Connection, row: sqlite3.Row, item: dict | None, now) -> list[str]:
    """Purge one case's personal data (inside a write transaction); returns the material files
    (sha256) no unpurged case uses any more, for the caller to delete once the transaction commits."""
    case_id = row["case_id"]
    name, id_masked = retention.masked_applicant(row["applicant_name"], row["id_number"])
    form = retention.purged_form(json.loads(row["form"]), retention.personal_field_names(item), whole=item is None)
    conn.execute("UPDATE cases SET applicant_name = ?, id_number = ?, phone = '', form = ?, purged_at = ?"
                 " WHERE case_id = ?", (name, id_masked, json.dumps(form, ensure_ascii=False), iso(now), case_id))
    # The 委托 names the villager too.
    for event in conn.execute("SELECT event_id, detail FROM case_events WHERE case_id = ? AND detail LIKE"
                              " '%entrustment%'", (case_id,)).fetchall():
        detail = json.loads(event["detail"] or "{}")
        if isinstance(detail.get("entrustment"), dict):
            detail["entrustment"]["principal"] = name
            conn.execute("UPDATE case_events SET detail = ? WHERE case_id = ? AND event_id = ?",
                         (json.dumps(detail, ensure_ascii=False), case_id, event["event_id"]))
    conn.execute("DELETE FROM documents WHERE case_id = ?", (case_id,))
    # Acknowledged envelopes are never sent again; their bytes carried the whole application.
    conn.execute("UPDATE outbox SET document = x'' WHERE case_id = ? AND state = 'acked'", (case_id,))
    orphaned = [r["sha256"] for r in conn.execute(
        "SELECT DISTINCT m.sha256 FROM case_materials m WHERE m.case_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM case_materials o JOIN cases c ON c.case_id = o.case_id"
        "  WHERE o.sha256 = m.sha256 AND c.purged_at IS NULL)", (case_id,))]
    conn.executemany("DELETE FROM blobs WHERE sha256 = ?", [(s,) for s in orphaned])
    audit(conn, "system", "personal_data.purge", case_id,
          json.dumps({"receipt_no": row["receipt_no"], "status": row["status"], "files": len(orphaned)}), now)
    return orphaned


def run(conn: sqlite3.Connection, node) -> dict:
    """The scheduled purge: every qualifying case of this node, one transaction each.

    Refuses to do anything at a tier without ``purges_personal_data`` (the hub keeps the record).
    """
    if not node.kind.purges_personal_data:
        return {"purged": 0}
    now = node.now()
    days = int(node.config["PERSONAL_DATA_RETENTION_DAYS"])
    purged = 0
    for row in _candidates(conn, node.node_id, iso(now - timedelta(days=days))):
        if not retention.purge_due(row["status"], parse_iso(row["updated_at"]), bool(row["everything_acked"]),
                                   now, days):
            continue
        with write_transaction(conn):
            orphaned = purge_case(conn, row, node.kind.catalog_item(conn, row["item_code"]), now)
        for sha256 in orphaned:
            node.blobs.remove(sha256)
        purged += 1
    with write_transaction(conn):
        expired = conn.execute(
            "DELETE FROM documents WHERE refetched_at IS NOT NULL AND refetched_at <= ?",
            (iso(now - timedelta(hours=REFETCHED_DOCUMENT_HOURS)),)).rowcount
        others = _purge_bookings_and_inquiries(conn, now, days)
    return {"purged": purged, "refetched_documents_removed": expired, **others}


def _purge_bookings_and_inquiries(conn: sqlite3.Connection, now, days: int) -> dict:
    """The names and phones of 预约 whose day and 咨询 closed ``days`` ago: masked the same way."""
    cutoff = now - timedelta(days=days)
    masked = "substr({0}, 1, 1) || '*'"
    bookings = conn.execute(
        f"UPDATE appointment_requests SET villager_name = {masked.format('villager_name')}, villager_phone = ''"
        f" WHERE day < ? AND (villager_phone != '' OR villager_name != {masked.format('villager_name')})",
        (cutoff.astimezone(CN_TZ).date().isoformat(),)).rowcount
    inquiries = conn.execute(
        f"UPDATE inquiries SET asker_name = {masked.format('asker_name')}, asker_phone = ''"
        f" WHERE status = 'closed' AND closed_at <= ? AND (asker_phone != '' OR asker_name != {masked.format('asker_name')})",
        (iso(cutoff),)).rowcount
    if bookings or inquiries:
        audit(conn, "system", "personal_data.purge", None, json.dumps({"appointments": bookings, "inquiries": inquiries}),
              now)
    return {"appointments_purged": bookings, "inquiries_purged": inquiries}


def documents_for_caller(conn: sqlite3.Connection, case_id: str, caller: str) -> list[dict]:
    """The signed documents of a case this node holds, for the node that took the case (a village
    reprinting a purged case). Another node may not read them."""
    row = casework.get_row(conn, case_id)
    if row["origin"] != caller:
        raise Forbidden("只有收件节点可以取回该办件的文书")
    return documents.for_case(conn, case_id)


def refetch_documents(conn: sqlite3.Connection, node, case_id: str, fetched: list, trust) -> int:
    """Store documents fetched again from the parent for a case held here: each verified (signer,
    this case, its office) as if it arrived with a decision; kept :data:`REFETCHED_DOCUMENT_HOURS`
    when the case is purged. Returns how many are held now."""
    row = casework.get_row(conn, case_id)
    for signed in fetched:
        documents.check_for_case(signed, trust, case_id, row["route_office"])
    now = node.now()
    with write_transaction(conn):
        for signed in fetched:
            documents.store(conn, signed)
        if row["purged_at"]:
            conn.execute("UPDATE documents SET refetched_at = ? WHERE case_id = ?", (iso(now), case_id))
        audit(conn, "system", "documents.refetch", case_id, str(len(fetched)), now)
    return len(fetched)
