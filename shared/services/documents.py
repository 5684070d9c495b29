"""制式文书: numbered, signed documents that a villager holds on paper and anyone can verify.

Each document is a ``DOCUMENT`` signed record (sync/envelope.py) made by the node that took
the step: the hub or township for 受理/不予受理/补正/容缺 notices and 准予/不予许可 decisions, the
village for the 收件回执 and the 送达回证. The printed page carries the whole signed record in a
QR code, so a village that has been offline since the decision verifies it against the keys
it already trusts; the short verification code (10 characters from the signature's hash) lets
a person match paper and record at a glance and finds the record among those a node holds.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3

from shared.core import canonical
from shared.core.clock import CN_TZ, iso
from shared.core.crypto import SignatureError
from shared.core.errors import RuleError
from shared.rules import authority
from shared.rules.catalog import DEPARTMENTS
from shared.rules.idcard import mask_id_number
from sync import envelope

QR_PREFIX = "LDDOC1:"

# kind -> (title, 文号 character). Kinds are the actions that produce them, plus receipt.
KINDS = {
    "receipt": ("收件回执", "收"),
    "accept": ("受理通知书", "受"),
    "reject": ("不予受理通知书", "不受"),
    "request_correction": ("补齐补正通知书", "补"),
    "accept_deficient": ("容缺受理通知书", "容"),
    "approve": ("准予许可决定书", "准"),
    "deny": ("不予许可决定书", "不准"),
    "deliver": ("送达回证", "送"),
}
# 行政复议法 Art. 20 (60 days) and 行政诉讼法 Art. 46 (6 months): rights told with every refusal.
RIGHTS = ("如不服本决定，可以自收到本决定书之日起六十日内依法申请行政复议，"
          "或者在六个月内依法向人民法院提起行政诉讼。")
REFUSALS = ("reject", "deny")


def verification_code(signed: dict) -> str:
    """Ten characters (two groups of five) from the hash of the signature."""
    digest = hashlib.sha256(signed["signatures"][0]["sig"].encode("ascii")).digest()
    code = base64.b32encode(digest).decode("ascii")[:10]
    return f"{code[:5]}-{code[5:]}"


def _next_number(conn: sqlite3.Connection, issuer: str, kind: str, year: int) -> int:
    row = conn.execute(
        "INSERT INTO node_meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(value AS INTEGER) + 1 RETURNING value",
        (f"doc_counter:{issuer}:{kind}:{year}",),
    ).fetchone()
    return int(row["value"])


def issue(conn: sqlite3.Connection, node, case_row, kind: str, event: dict, office_name: str) -> dict:
    """Number, sign and store a document for ``case_row`` after ``event``. Call inside a transaction."""
    title, mark = KINDS[kind]
    now = node.now()
    year = now.astimezone(CN_TZ).year
    number = f"{office_name}{mark}字〔{year}〕第{_next_number(conn, node.node_id, kind, year):04d}号"
    body = {
        "v": 1,
        "kind": kind,
        "title": title,
        "number": number,
        "case_id": case_row["case_id"],
        "receipt_no": case_row["receipt_no"],
        "item_name": case_row["item_name"],
        "applicant_name": case_row["applicant_name"],
        "applicant_id": mask_id_number(case_row["id_number"]),
        "office": case_row["route_office"],
        "issuer": node.node_id,
        "issuer_name": office_name,
        "issued_at": iso(now),
        "comment": event.get("comment", ""),
        "details": {k: v for k, v in (event.get("detail") or {}).items() if k in ("missing_items", "owed_materials", "due_date")},
    }
    if kind in REFUSALS:
        body["rights"] = RIGHTS
    signed = envelope.sign(node.key, envelope.DOCUMENT, body)
    store(conn, signed)
    return signed


def office_name(node, office: str) -> str:
    """The Chinese name an office signs documents with."""

    if office == node.node_id:
        return node.config.get("NODE_NAME") or office
    department = office.rsplit("-", 1)[-1]
    county = (node.config.get("NODE_NAME") or "").replace("政务服务中心", "")
    return county + DEPARTMENTS.get(department, department)


def for_event(conn: sqlite3.Connection, node, case_row, event: dict) -> list[dict]:
    """The documents an event at the deciding node produces (none for most steps)."""
    if event["action"] not in KINDS or event["action"] in ("receipt", "deliver"):
        return []
    return [issue(conn, node, case_row, event["action"], event, office_name(node, case_row["route_office"]))]


def store(conn: sqlite3.Connection, signed: dict) -> None:
    """Keep a signed document (idempotent)."""
    body = envelope.peek(signed)
    conn.execute(
        "INSERT INTO documents(doc_id, case_id, kind, number, code, issuer, document, issued_at)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO NOTHING",
        (envelope.document_id(signed), body["case_id"], body["kind"], body["number"], verification_code(signed),
         body["issuer"], envelope.to_bytes(signed), body["issued_at"]),
    )


def for_case(conn: sqlite3.Connection, case_id: str) -> list[dict]:
    """The signed documents of a case held here, oldest first."""
    return [envelope.from_bytes(r["document"]) for r in conn.execute(
        "SELECT document FROM documents WHERE case_id = ? ORDER BY issued_at", (case_id,))]


def qr_text(signed: dict) -> str:
    """What the QR code holds: the whole signed record, compact."""
    return QR_PREFIX + base64.urlsafe_b64encode(canonical.dumps(signed)).decode("ascii").rstrip("=")


def from_qr_text(text: str) -> dict:
    """Parse a scanned QR text back into the signed record; raises SignatureError."""
    text = text.strip()
    if not text.startswith(QR_PREFIX):
        raise SignatureError("不是联动文书的二维码")
    raw = text[len(QR_PREFIX):]
    try:
        return canonical.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), max_bytes=64 * 1024)
    except (ValueError, canonical.CanonicalError) as exc:
        raise SignatureError("二维码内容不完整或已损坏") from exc


def check_for_case(signed: dict, trust, case_id: str, deciding_office: str) -> dict:
    """Verify a document that arrived with a case update: a genuine document, of this case, and
    (for a township's decision) issued by the office that decides it. Returns its body.

    :raises RuleError: ``forged_document``, before anything is stored.
    """
    try:
        body = verify(signed, trust)
    except SignatureError as exc:
        raise RuleError("forged_document", f"文书未通过核验：{exc}") from exc
    if body.get("case_id") != case_id:
        raise RuleError("forged_document", "文书不属于该办件")
    if body.get("kind") not in authority.ORIGIN_DOCUMENTS and body.get("issuer") != trust.hub_id \
            and body.get("office") != deciding_office:
        raise RuleError("forged_document", "文书签发机构不是该办件的审批机构")
    return body


def verify(signed: dict, trust) -> dict:
    """Verify a document against this node's trust store; returns its body.

    Accepted signers: the hub's keys, and any registered node key (townships decide delegated
    items; villages sign receipts and 送达回证) — the body must name that node as issuer.
    """
    def resolve(kid: str):
        return trust.hub_key(kid) or trust.node_key(kid)

    opened = envelope.open_signed(signed, envelope.DOCUMENT, resolve, max_bytes=64 * 1024)
    signer = trust.node_of_key(opened.kid)
    body = opened.body
    try:
        authority.check_document_signer(signer.node_id if signer else None, trust.hub_id, body.get("issuer"),
                                        body.get("kind"), body.get("office"))
    except ValueError as exc:
        raise SignatureError(str(exc)) from exc
    return body
