"""制式文书: numbered, signed documents that a villager holds on paper and anyone can verify.

Each document is a ``DOCUMENT`` signed record (sync/envelope.py) made by the node that took
the step: the hub or township for 受理/不予受理/补正/容缺 notices and 准予/不予许可 decisions, the
village for the 收件回执 and the 送达回证. The printed page carries the whole signed record in a
QR code as a compact token the issuer signs too (shared/services/document_token.py), so a phone reads
it and a node that never received the decision verifies it against the keys it already trusts;
the 核验码 (16 characters of the document id) is typed by a person and finds the record among
those a node holds. The full signed record still verifies wherever it is held.
"""

from __future__ import annotations

import base64
import json
import sqlite3

from shared.core import canonical
from shared.core.clock import CN_TZ, iso
from shared.core.crypto import SignatureError
from shared.core.errors import RuleError
from shared.rules import authority
from shared.rules import licences as licence_rules
from shared.rules import supplements as supplement_rules
from shared.rules.catalog import DEPARTMENTS
from shared.rules.idcard import mask_id_number
from shared.services import document_token, names
from sync import envelope

RECORD_PREFIX = "LDDOC1:"

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
    "licence": ("电子证照", "证"),  # its own title is the item's 结果名称 (seed 004 §10)
}
#: What a QR token alone can say of a decision (the record names the exact title).
TOKEN_TITLES = {"approve": "准予决定（准予许可决定书或办理结果通知书）", "deny": "不予决定（不予许可决定书或办理结果通知书）"}
# 行政复议法 Art. 20 (60 days) and 行政诉讼法 Art. 46 (6 months): rights told with every refusal,
# naming the 复议机关 and the 人民法院 (rights_text).
REFUSALS = ("reject", "deny")
DECISIONS = ("approve", "deny")
#: Item types whose decision is a 行政许可; the others (公共服务, 给付, 其他行政权力) are told their
#: result by a 办理结果通知书, not a 准予/不予许可决定书.
LICENSING_TYPES = ("许可",)
RESULT_NOTICE = "办理结果通知书"
#: Details of an event that a document states.
DOCUMENT_DETAILS = ("missing_items", "owed_materials", "due_date", "served", "manner")


def title_for(kind: str, item_type: str | None) -> str:
    """The document's title: by its kind, and for 准予/不予 by the item type."""
    if kind in ("approve", "deny") and item_type and item_type not in LICENSING_TYPES:
        return RESULT_NOTICE
    return KINDS[kind][0]


def rights_text(review_body: str, court: str) -> str:
    """The 复议/诉讼 notice of a refusal, naming the 复议机关 and the 人民法院."""
    return (f"如不服本决定，可以自收到本文书之日起六十日内向{review_body}申请行政复议，"
            f"或者在六个月内向{court}提起行政诉讼。")


def verification_code(signed: dict) -> str:
    """The 核验码: 16 characters (4-4-4-4) of the document id, the start of the token's digest."""
    return document_token.code_from_document_id(envelope.document_id(signed))


def _next_number(conn: sqlite3.Connection, issuer: str, kind: str, year: int) -> int:
    row = conn.execute(
        "INSERT INTO node_meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(value AS INTEGER) + 1 RETURNING value",
        (f"doc_counter:{issuer}:{kind}:{year}",),
    ).fetchone()
    return int(row["value"])


def case_material_codes(conn: sqlite3.Connection, case_id: str) -> set[str]:
    """Codes of the materials of which the case holds a file."""
    return {r["code"] for r in conn.execute("SELECT DISTINCT code FROM case_materials WHERE case_id = ?", (case_id,))}


def _notice_details(conn: sqlite3.Connection, node, case_row, kind: str, event: dict) -> dict:
    """What a notice states beyond its comment, materials by their catalog names, never codes."""
    details = {k: v for k, v in (event.get("detail") or {}).items() if k in DOCUMENT_DETAILS}
    if kind not in ("accept", "accept_deficient"):
        return details
    item = node.catalog(conn)[1].get(case_row["item_code"])
    if details.get("owed_materials"):
        details["owed_materials"] = supplement_rules.material_names(item, details["owed_materials"])
    if kind == "accept":
        # The 受理通知书 says 申请材料齐全 only when it is so (a deemed acceptance may lack some).
        missing = supplement_rules.missing_required(item or {}, case_material_codes(conn, case_row["case_id"]))
        details["materials_complete"] = not missing
        if (event.get("detail") or {}).get("deemed"):
            details["deemed"] = True
    return details


def issue(conn: sqlite3.Connection, node, case_row, kind: str, event: dict, office_name: str,
          item: dict | None = None, title: str | None = None, extra=None) -> dict:
    """Number, sign and store a document for ``case_row`` after ``event``. Call inside a transaction.

    ``office_name`` is the organ the document is issued in the name of; ``item`` (the catalog
    item) decides the title of a decision; ``extra(number, issued_at)`` returns further fields
    of the body (a licence's holder and validity).
    """
    mark = KINDS[kind][1]
    title = title or title_for(kind, (item or {}).get("item_type"))
    now = node.now()
    year = now.astimezone(CN_TZ).year
    seq = _next_number(conn, node.node_id, kind, year)
    number = f"{office_name}{mark}字〔{year}〕第{seq:04d}号"
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
        "details": _notice_details(conn, node, case_row, kind, event),
    }
    if item and item.get("item_type"):
        body["item_type"] = item["item_type"]
    if kind in REFUSALS:
        county = county_name(conn, node)
        body["review_body"] = names.reconsideration_body(county, node.config.get("RECONSIDERATION_BODY") or "")
        body["court"] = names.court(county, node.config.get("COURT_NAME") or "")
        body["rights"] = rights_text(body["review_body"], body["court"])
    if extra is not None:
        body.update(extra(number, now))
    decided_under = (event.get("detail") or {}).get("decided_under")
    if kind in DECISIONS and decided_under:
        # Who decided under which grant, and the seal used (seed 000 §(四)).
        body["decided_under"] = {k: decided_under[k] for k in ("role_label", "grant_label", "name", "seal")
                                 if k in decided_under}
    signed = envelope.sign(node.key, envelope.DOCUMENT, body)
    doc_id = envelope.document_id(signed)
    # The token rides beside the record (it signs the record's id, so it cannot be inside it).
    signed["token"] = document_token.make(
        node.key, doc_id=doc_id, issuer=node.node_id, office=body["office"], kind=kind,
        issued_on=now.astimezone(CN_TZ).date().isoformat(), seq=seq)
    # The body and id just signed: storing them parses and hashes nothing again.
    store(conn, signed, known=(body, doc_id))
    return signed


def own_hub_name(conn: sqlite3.Connection | None, node) -> str:
    """The county hub's name as this node knows it (its own NODE_NAME at the hub)."""
    own = node.config.get("NODE_NAME") or ""
    if node.node_id == node.config.get("HUB_ID"):
        return own
    return names.hub_name(node.trust(conn) if conn is not None else None)


def county_name(conn: sqlite3.Connection, node) -> str:
    """The county (``肃宁县``), from the hub's name."""
    return names.county_of(own_hub_name(conn, node))


def office_name(node, office: str, conn: sqlite3.Connection | None = None, item: dict | None = None) -> str:
    """The organ an office issues documents in the name of: the department (or the catalog's
    实施主体, e.g. the 行政审批局) at the hub, the 乡镇人民政府 for a township."""
    trust = node.trust(conn) if conn is not None else None
    own = node.config.get("NODE_NAME") or ""
    if office == node.node_id and office != node.config.get("HUB_ID"):
        return names.township_government(own or names.node_name(trust, office))
    return names.office_name(trust, office, item, hub=own_hub_name(conn, node))


def for_event(conn: sqlite3.Connection, node, case_row, event: dict) -> list[dict]:
    """The documents an event at the deciding node produces (none for most steps): a 准予 of an
    item that yields a licence also issues its 电子证照."""
    if event["action"] not in KINDS or event["action"] in ("receipt", "deliver", "licence"):
        return []
    item = node.catalog_item(conn, case_row["item_code"], case_row["catalog_version"])
    name = office_name(node, case_row["route_office"], conn, item)
    issued = [issue(conn, node, case_row, event["action"], event, name, item)]
    if event["action"] == "approve" and item and item.get("licence") is not None:
        issued.append(issue_licence(conn, node, case_row, event, item, name))
    return issued


def served_document(conn: sqlite3.Connection, case_id: str) -> dict | None:
    """The latest decision or notice of a case held here: what a 送达回证 says was served."""
    for signed in reversed(for_case(conn, case_id)):
        body = envelope.peek(signed)
        if body.get("kind") not in ("receipt", "deliver"):
            return {"title": body.get("title", ""), "number": body.get("number", "")}
    return None


def issue_licence(conn: sqlite3.Connection, node, case_row, event: dict, item: dict, office: str) -> dict:
    """The 电子证照 of an approved case: number, holder (bound by digest), issuer, validity, scope."""
    holder = licence_rules.holder_of(json.loads(case_row["form"] or "{}"), case_row["id_number"])

    def licence_fields(number: str, now) -> dict:
        issued_on = now.astimezone(CN_TZ).date()
        return {"item_code": item["code"], "licence": {
            "holder_name": case_row["applicant_name"] if holder["kind"] == "身份证号"
            else json.loads(case_row["form"]).get("enterprise_name") or case_row["applicant_name"],
            "holder_kind": holder["kind"], "holder_masked": mask_id_number(holder["id"])
            if holder["kind"] == "身份证号" else holder["id"][:8] + "******" + holder["id"][-4:],
            "holder_digest": licence_rules.holder_digest(number, holder["id"]),
            "valid_from": issued_on.isoformat(),
            "valid_until": licence_rules.valid_until(issued_on, (item["licence"] or {}).get("valid_years")),
            "scope": event.get("comment") or item["name"]}}

    return issue(conn, node, case_row, "licence", event, office, item, title=item["result_name"], extra=licence_fields)


def store(conn: sqlite3.Connection, signed: dict, known: tuple[dict, str] | None = None) -> None:
    """Keep a signed document (idempotent); a licence is also indexed by its holder.

    ``known``: its ``(body, document id)`` when the caller has them already (it signed or
    verified this very document): the payload is then not parsed and hashed once more."""
    body, doc_id = known if known is not None else (envelope.peek(signed), envelope.document_id(signed))
    conn.execute(
        "INSERT INTO documents(doc_id, case_id, kind, number, code, issuer, document, issued_at)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO NOTHING",
        (doc_id, body["case_id"], body["kind"], body["number"], document_token.code_from_document_id(doc_id),
         body["issuer"], envelope.to_bytes(signed), body["issued_at"]),
    )
    if body["kind"] == "licence":
        _index_licence(conn, doc_id, body)


def _index_licence(conn: sqlite3.Connection, doc_id: str, body: dict) -> None:
    """The holder of a licence is the identifier of the case it was issued on, as held here."""
    case = conn.execute("SELECT form, id_number FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
    if case is None:
        return
    holder = licence_rules.holder_of(json.loads(case["form"] or "{}"), case["id_number"])
    licence = body.get("licence") or {}
    conn.execute(
        "INSERT INTO licences(doc_id, number, case_id, item_code, holder_id, holder_name, issuer, valid_until,"
        " issued_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO NOTHING",
        (doc_id, body["number"], body["case_id"], body.get("item_code", ""), holder["id"],
         licence.get("holder_name", ""), body["issuer"], licence.get("valid_until"), body["issued_at"]))


def for_case(conn: sqlite3.Connection, case_id: str) -> list[dict]:
    """The signed documents of a case held here, oldest first."""
    return [envelope.from_bytes(r["document"]) for r in conn.execute(
        "SELECT document FROM documents WHERE case_id = ? ORDER BY issued_at", (case_id,))]


def qr_text(signed: dict) -> str | None:
    """What the printed QR code holds: the compact signed token (None for a record issued without one)."""
    token = signed.get("token")
    return token if isinstance(token, str) else None


def record_text(signed: dict) -> str:
    """The whole signed record as one line of text (``LDDOC1:`` + base64url), to copy between nodes."""
    record = {k: signed[k] for k in ("payloadType", "payload", "signatures")}
    return RECORD_PREFIX + base64.urlsafe_b64encode(canonical.dumps(record)).decode("ascii").rstrip("=")


def from_record_text(text: str) -> dict:
    """Parse :func:`record_text` (or the record's plain JSON) back into the signed record; raises SignatureError."""
    text = text.strip()
    if text.startswith("{"):
        try:
            record = canonical.loads(text.encode("utf-8"), max_bytes=64 * 1024)
        except canonical.CanonicalError as exc:
            raise SignatureError("文书记录不是有效的JSON") from exc
        if not isinstance(record, dict):
            raise SignatureError("文书记录不是有效的JSON")
        return record
    if not text.startswith(RECORD_PREFIX):
        raise SignatureError("不是联动文书的记录")
    raw = text[len(RECORD_PREFIX):]
    try:
        return canonical.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), max_bytes=64 * 1024)
    except (ValueError, canonical.CanonicalError) as exc:
        raise SignatureError("二维码内容不完整或已损坏") from exc


def check_for_case(signed: dict, trust, case_id: str, deciding_office: str) -> dict:
    """Verify a document that arrived with a case update: a genuine document, of this case, and
    (for a township's decision) issued by the office that decides it. Returns its body.

    :raises RuleError: ``forged_document``, before anything is stored.
    """
    return checked_for_case(signed, trust, case_id, deciding_office)[0]


def checked_for_case(signed: dict, trust, case_id: str, deciding_office: str) -> tuple[dict, str]:
    """:func:`check_for_case`, returning ``(body, document id)`` of the verified bytes, which
    :func:`store` takes as ``known``."""
    try:
        opened = verified(signed, trust)
        body = opened.body
    except SignatureError as exc:
        raise RuleError("forged_document", f"文书未通过核验：{exc}") from exc
    if body.get("case_id") != case_id:
        raise RuleError("forged_document", "文书不属于该办件")
    if body.get("kind") not in authority.ORIGIN_DOCUMENTS and body.get("issuer") != trust.hub_id \
            and body.get("office") != deciding_office:
        raise RuleError("forged_document", "文书签发机构不是该办件的审批机构")
    return body, opened.doc_id


def verify(signed: dict, trust) -> dict:
    """Verify a document against this node's trust store; returns its body.

    Accepted signers: the hub's keys, and any registered node key (townships decide delegated
    items; villages sign receipts and 送达回证) — the body must name that node as issuer.
    """
    return verified(signed, trust).body


def verified(signed: dict, trust) -> envelope.Opened:
    """:func:`verify`, returning the opened document (body, id of the verified bytes, signer)."""
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
    return opened


def _matches_token(token: document_token.Token, body: dict, doc_id: str) -> bool:
    """Whether a verified record is the one ``token`` names (same digest, number and issuer)."""
    return (bytes.fromhex(doc_id)[:document_token.DIGEST_BYTES] == token.digest
            and body.get("issuer") == token.issuer and body.get("office") == token.office
            and body.get("kind") == token.kind and body.get("number", "").endswith(f"〔{token.year}〕第{token.seq:04d}号"))


def _held(conn: sqlite3.Connection, id_prefix: str) -> dict | None:
    """The one record held here whose document id starts with ``id_prefix`` (hex), if any."""
    rows = conn.execute("SELECT document FROM documents WHERE doc_id >= ? AND doc_id < ? LIMIT 2",
                        (id_prefix, id_prefix + "g")).fetchall()
    return envelope.from_bytes(rows[0]["document"]) if len(rows) == 1 else None


def check(conn: sqlite3.Connection, trust, *, token: str = "", code: str = "", record: str = "") -> dict:
    """文书核验: verify a scanned token, a typed 核验码 or a pasted full record.

    Returns ``{"method", "code", "document" (the verified body, or None when only the token is
    known here), "held", "token" (the token's statement, or None)}``.

    * A **token** verifies with the issuer's key alone, so a node that never received the
      decision confirms the number, kind, issuer, office and date; when the record is held
      here too, it is verified and must be the one the token names.
    * A **核验码** finds the record among those held here (it is not itself a proof): the record
      is then verified against the trust store.
    * A full **record** (``LDDOC1:`` text or its JSON) verifies as before.

    :raises SignatureError: with a Chinese reason when the document does not verify.
    """
    if trust is None:
        raise SignatureError("本节点尚未完成注册，没有可用于核验的密钥")
    statement = None
    if token.strip():
        parsed = document_token.parse(token)
        document_token.verify_token(parsed, trust)
        statement = parsed
        signed = _held(conn, parsed.digest.hex())
        method = "token"
    elif code.strip():
        signed = _held(conn, document_token.document_id_prefix(code))
        if signed is None:
            raise SignatureError("本节点没有该核验码对应的文书，请扫描文书上的二维码核验")
        method = "code"
    elif record.strip():
        signed = from_record_text(record)
        method = "record"
    else:
        raise SignatureError("请扫描二维码、输入核验码或粘贴文书记录")
    body = verify(signed, trust) if signed is not None else None
    if statement is not None and body is not None and not _matches_token(statement, body, envelope.document_id(signed)):
        raise SignatureError("二维码与本节点保存的文书不一致")
    digest = envelope.document_id(signed) if signed is not None else statement.digest.hex()
    revoked = conn.execute("SELECT revoked_at, revoke_reason FROM licences WHERE doc_id LIKE ? AND revoked_at IS NOT NULL",
                           (digest + "%",)).fetchone()
    if revoked is not None:  # a revoked 电子证照 no longer verifies where its revocation is known
        raise SignatureError(f"该电子证照已于 {revoked['revoked_at'][:10]} 被吊销：{revoked['revoke_reason']}")
    return {
        "method": method,
        "code": verification_code(signed) if signed is not None else statement.code,
        "document": body,
        "held": signed is not None,
        "token": token_statement(statement, trust) if statement is not None else None,
    }


def token_statement(token: document_token.Token, trust) -> dict:
    """What a verified token says, in the words a person checks against the paper."""

    issuer = trust.nodes.get(token.issuer)
    department = token.office.rsplit("-", 1)[-1] if "-" in token.office else None
    return {
        "issuer": token.issuer,
        "issuer_name": issuer.name if issuer else token.issuer,
        "office": token.office,
        "office_name": DEPARTMENTS.get(department, "") if department else (issuer.name if issuer else ""),
        "kind": token.kind,
        # The token does not say the item's type: a 准予/不予 is a 许可决定书 or a 办理结果通知书
        # (title_for), so only the record itself, where held, names which.
        "title": TOKEN_TITLES.get(token.kind, KINDS[token.kind][0]),
        "issued_on": token.date,
        "issued_on_text": f"{token.year}年{int(token.date[5:7])}月{int(token.date[8:])}日",
        "number_tail": f"{KINDS[token.kind][1]}字〔{token.year}〕第{token.seq:04d}号",
    }
