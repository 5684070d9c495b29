"""电子证照 held at a node: citing one instead of a copy (免提交), what the deciding office sees,
a holder's licences, and revocation (rules in :mod:`shared.rules.licences`).

A licence is a signed 制式文书 of kind ``licence`` (shared/services/documents.py), issued with
the 准予 decision and travelling with it to the node that took the application. Its QR token
verifies offline like every document's. No Flask here.
"""

from __future__ import annotations

import json
import sqlite3

from shared.core.clock import iso
from shared.core.crypto import SignatureError
from shared.core.errors import NotFound, RuleError, ValidationError
from shared.rules import licences as rules
from shared.services import documents
from sync import downlink

REVOKE_KIND = "licence.revoke"


def _verified(conn: sqlite3.Connection, trust, token: str) -> dict:
    try:
        return documents.check(conn, trust, token=token)
    except SignatureError as exc:
        raise RuleError("licence_invalid", f"电子证照未通过核验：{exc}") from exc


def cite(conn: sqlite3.Connection, node, item: dict, citations, holder_id: str, today) -> list[dict]:
    """Check the licences an application cites instead of uploading materials (免提交).

    ``citations``: ``[{"material", "token"}]`` (the token is the licence's QR text). Checked here,
    offline: the token's signature, that it is a licence of the department the material names,
    and — where this node holds the record — holder, validity and revocation.

    :returns: ``[{"material", "token", "code", "number"}]`` to record with the application.
    :raises ValidationError: a malformed list; :raises RuleError: ``licence_*`` codes.
    """
    if citations in (None, []):
        return []
    if not isinstance(citations, list) or len(citations) > len(item["materials"]):
        raise ValidationError("cited_licences", "cited_licences 必须是数组，每项材料最多引用一份证照")
    trust = node.trust(conn)
    cited, seen = [], set()
    for i, c in enumerate(citations):
        where = f"cited_licences[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("token"), str) or not isinstance(c.get("material"), str):
            raise ValidationError(where, "每项引用须有 material（材料编码）和 token（证照二维码内容）")
        if c["material"] in seen:
            raise ValidationError(where, "同一材料只能引用一份证照")
        seen.add(c["material"])
        material = next((m for m in item["materials"] if m["code"] == c["material"]), None)
        licence_of = rules.check_citable(material, c["material"])
        result = _verified(conn, trust, c["token"])
        statement = result["token"]
        rules.check_token_fits(statement["kind"], statement["office"], licence_of, node.hub_id)
        record = result["document"]
        if record is not None:
            rules.check_usable(record, licence_of=licence_of, holder_id=holder_id, revoked_at=None,
                               revoke_reason=None, today=today)
        cited.append({"material": c["material"], "token": c["token"].strip(), "code": result["code"],
                      "number": record["number"] if record else None})
    return cited


def citations_of(conn: sqlite3.Connection, node, case_row, today) -> list[dict]:
    """The licences a case cites, each checked again here (the deciding office sees the result):
    ``state`` is ``verified``, ``signature_only`` (genuine, record not held here) or ``refused``."""
    submit = conn.execute("SELECT detail FROM case_events WHERE case_id = ? AND action = 'submit'",
                          (case_row["case_id"],)).fetchone()
    cited = json.loads(submit["detail"] or "{}").get("cited_licences", []) if submit else []
    if not cited:
        return []
    item = node.catalog_item(conn, case_row["item_code"], case_row["catalog_version"]) or {"materials": []}
    names = {m["code"]: m for m in item["materials"]}
    holder = rules.holder_of(json.loads(case_row["form"] or "{}"), case_row["id_number"])
    trust = node.trust(conn)
    shown = []
    for c in cited:
        material = names.get(c["material"])
        entry = {"material": c["material"], "material_name": material["name"] if material else c["material"],
                 "code": c.get("code"), "number": c.get("number")}
        try:
            result = _verified(conn, trust, c["token"])
            record = result["document"]
            if record is None:
                entry.update(state="signature_only", label="证照签名有效；本节点未保存证照记录，持证人未核对")
            else:
                rules.check_usable(record, licence_of=rules.check_citable(material, c["material"]),
                                   holder_id=holder["id"], revoked_at=None, revoke_reason=None, today=today)
                entry.update(state="verified", number=record["number"], title=record["title"],
                             valid_until=(record.get("licence") or {}).get("valid_until"),
                             label="已核验：证照有效，持证人与申请人一致")
        except RuleError as exc:
            entry.update(state="refused", label=exc.message, error=exc.code)
        shown.append(entry)
    return shown


def for_holder(conn: sqlite3.Connection, holder_id: str, today) -> list[dict]:
    """The licences this node holds for a holder (身份证号 or 统一社会信用代码), newest first."""
    if not isinstance(holder_id, str) or not holder_id.strip():
        raise ValidationError("holder", "请提供持证人的身份证号或统一社会信用代码")
    rows = conn.execute("SELECT l.*, d.code FROM licences l JOIN documents d USING (doc_id) WHERE l.holder_id = ?"
                        " ORDER BY l.issued_at DESC", (holder_id.strip().upper(),)).fetchall()
    out = []
    for r in rows:
        state = rules.status(r["valid_until"], r["revoked_at"], today)
        out.append({"doc_id": r["doc_id"], "number": r["number"], "code": r["code"], "item_code": r["item_code"],
                    "holder_name": r["holder_name"], "issuer": r["issuer"], "issued_at": r["issued_at"],
                    "valid_until": r["valid_until"], "status": state, "status_label": rules.STATUS_LABELS[state],
                    "revoke_reason": r["revoke_reason"]})
    return out


def revoke(conn: sqlite3.Connection, node, doc_id: str, reason, actor: str) -> dict:
    """Revoke a licence held here (with its reason) and tell the nodes holding its case. Call
    inside a write transaction.

    :raises NotFound: no such licence; :raises RuleError: ``reason_required``, ``already_revoked``.
    """
    reason = rules.check_revocation_reason(reason)
    row = conn.execute("SELECT l.*, c.origin, c.route_level, c.route_office FROM licences l"
                       " JOIN cases c USING (case_id) WHERE l.doc_id = ?", (doc_id,)).fetchone()
    if row is None:
        raise NotFound("本节点没有该电子证照")
    if row["revoked_at"]:
        raise RuleError("already_revoked", "该电子证照已被吊销")
    at = iso(node.now())
    apply_revocation(conn, {"doc_id": doc_id, "revoked_at": at, "reason": reason, "by": actor})
    body = {"doc_id": doc_id, "revoked_at": at, "reason": reason, "by": actor}
    dests = {row["origin"]} | ({row["route_office"]} if row["route_level"] == "township" else set())
    for dest in sorted(dests - {node.node_id}):
        downlink.issue(conn, node.key, node.node_id, dest, REVOKE_KIND, body, node.now())
    return body


def apply_revocation(conn: sqlite3.Connection, body: dict) -> bool:
    """Record a revocation (from this node or the hub's downlink); False if the licence is not held here."""
    if not all(isinstance(body.get(k), str) and body[k] for k in ("doc_id", "revoked_at", "reason")):
        raise RuleError("invalid_content", "吊销消息的内容不符")
    return conn.execute("UPDATE licences SET revoked_at = ?, revoke_reason = ?, revoked_by = ?"
                        " WHERE doc_id = ? AND revoked_at IS NULL",
                        (body["revoked_at"], body["reason"], body.get("by"), body["doc_id"])).rowcount > 0
