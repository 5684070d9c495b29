"""Taking an application (收件) at a village or a township window. No Flask here.

Material files are stored content-addressed first (an orphan file after a crash is harmless);
then the case, its submit event and its outbox envelope are written in one transaction, so the
收件回执 number the agent hands over always refers to a case that will reach the hub.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import uuid
from dataclasses import dataclass

from shared.core.errors import RuleError, ValidationError
from shared.core.storage import ensure_disk_space, write_transaction
from shared.rules import licences as licence_rules
from shared.rules import states
from shared.rules import things as thing_rules
from shared.rules.catalog import accepts_at, required_materials, route, validate_form
from shared.rules.idcard import validate_id_number, validate_phone
from shared.rules.materials import check_files
from shared.rules.text import refuse_hidden_characters
from shared.services import casework, documents, licences, names, submission, things
from sync import blobs, formats, node_sync, outbox


def acceptable_item(items: dict[str, dict], code, node_id: str, not_here: str = "不能在本级受理") -> dict:
    """The catalog item an application names, if this node may take applications for it."""
    item = items.get(code) if isinstance(code, str) else None
    if item is None:
        raise ValidationError("item_code", "事项不存在或目录尚未同步")
    if item.get("consultation_only"):
        raise RuleError("consultation_only", f"「{item['name']}」无需办理审批，属咨询事项：{item.get('consultation_answer', '')}")
    if not accepts_at(item, node_id):
        raise RuleError("not_accepted_here", f"「{item['name']}」{not_here}")
    return item


#: Stand-ins that pass their checks, so the name is checked on its own (:func:`applicant_errors`).
VALID_ID_PLACEHOLDER = "11010519491231002X"
VALID_PHONE_PLACEHOLDER = "13800000000"


def clean_applicant(applicant, who: str = "申请人") -> dict:
    """Validate the person who signs an application (GB 11643 身份证号, phone); field-named errors."""
    if not isinstance(applicant, dict):
        raise ValidationError("applicant", f"缺少{who}信息")
    name = applicant.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("applicant.name", f"请填写{who}姓名")
    if len(name.strip()) > 50:
        raise ValidationError("applicant.name", f"{who}姓名过长")
    refuse_hidden_characters(name, "applicant.name", f"{who}姓名")
    return {
        "name": name.strip(),
        "id_number": validate_id_number(applicant.get("id_number"), field="applicant.id_number"),
        "phone": validate_phone(applicant.get("phone"), field="applicant.phone"),
    }


def applicant_errors(applicant: dict, who: str = "申请人") -> list[ValidationError]:
    """Every error of the applicant's name, 身份证号 and phone at once (the wizard shows them all)."""
    found = []
    checks = (
        lambda: clean_applicant({**applicant, "id_number": VALID_ID_PLACEHOLDER, "phone": VALID_PHONE_PLACEHOLDER}, who),
        lambda: validate_id_number(applicant.get("id_number"), field="applicant.id_number"),
        lambda: validate_phone(applicant.get("phone"), field="applicant.phone"),
    )
    for check in checks:
        try:
            check()
        except ValidationError as exc:
            found.append(exc)
    return found


def _clean_entrustment(entrustment, applicant: dict, item: dict, agent: str) -> dict | None:
    """The villager's 委托 to the agent (为民代办): who, for what, consent (optional in the API)."""
    if entrustment is None:
        return None
    if not isinstance(entrustment, dict) or entrustment.get("consent") is not True:
        raise ValidationError("entrustment.consent", "代办须经申请人同意并签署委托书，请确认")
    scope = entrustment.get("scope") or item["name"]
    if not isinstance(scope, str) or len(scope) > 200:
        raise ValidationError("entrustment.scope", "委托事项填写有误")
    refuse_hidden_characters(scope, "entrustment.scope", "委托事项")
    return {"principal": applicant["name"], "agent": agent, "scope": scope.strip(), "consent": True}


def decode_materials(materials, item: dict, max_file: int, max_total: int) -> list[tuple[str, str, bytes]]:
    """Check and decode API materials ``[{"code", "filename", "content_base64"}]``."""
    if materials is None:
        return []
    if not isinstance(materials, list):
        raise ValidationError("materials", "materials 必须是数组")
    known = {m["code"] for m in item["materials"]}
    files, total = [], 0
    for i, m in enumerate(materials):
        where = f"materials[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("code"), str) or m["code"] not in known:
            raise ValidationError(f"{where}.code", f"材料编码不属于该事项，可选：{'、'.join(sorted(known))}")
        filename = m.get("filename")
        if not isinstance(filename, str) or not filename.strip() or len(filename) > 200:
            raise ValidationError(f"{where}.filename", "请提供材料文件名")
        try:
            data = base64.b64decode(m.get("content_base64", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValidationError(f"{where}.content_base64", "材料内容不是有效的 Base64 编码") from None
        if not data:
            raise ValidationError(f"{where}.content_base64", "材料文件为空")
        files.append((m["code"], filename.strip(), data))
        total += len(data)
        check_sizes(len(data), total, max_file, max_total, where)
    return files


def check_sizes(size: int, total: int, max_file: int, max_total: int, where: str) -> None:
    """The per-file and per-case size limits, with a clear message."""
    if size > max_file:
        raise ValidationError(f"{where}", f"单个材料文件不能超过 {_size_text(max_file)}")
    if total > max_total:
        raise ValidationError("materials", f"一件办件的材料合计不能超过 {_size_text(max_total)}")


def _size_text(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n / 1024:g} KB"


def plain_numbers(form: dict) -> dict:
    """``form`` with decimal numbers as their text (signed documents carry integers only)."""
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in form.items()}


def revoked_notice(conn: sqlite3.Connection, node) -> str | None:
    """``本机已停用 …`` naming whom to call, once the parent said this node is revoked; else None."""
    if node_sync.revoked_at(conn) is None:
        return None
    parent = names.node_name(node.trust(conn), node.config.get("PARENT_ID"), "上级便民服务站")
    return (f"本机已停用：{parent}已停用这台电脑的联动系统，不能再收件或同步。已收的办件请勿重复收取；"
            f"请打电话给{parent}了解情况，并告知申请人到{parent}办理。")


def refuse_if_revoked(conn: sqlite3.Connection, node) -> None:
    """A revoked PC takes no new case (whatever it signed would be quarantined at the hub)."""
    notice = revoked_notice(conn, node)
    if notice is not None:
        raise RuleError("node_revoked", notice)


@dataclass
class Application:
    """One validated application, its files stored, ready to record (:func:`record`)."""

    item: dict
    catalog_version: int
    applicant: dict
    entrustment: dict | None
    form: dict
    materials: list[dict]
    cited: list[dict]
    missing: list[str]


def prepare(conn: sqlite3.Connection, node, payload: dict, files: list[tuple[str, str, bytes]], agent: str,
            provided_elsewhere: frozenset[str] = frozenset()) -> Application:
    """Validate an application and store its files (content-addressed: an orphan is harmless).

    ``provided_elsewhere``: material codes that need no file here (a 一件事's later step takes
    them from an earlier step's electronic licence).
    """
    version, items = node.catalog(conn)
    item = acceptable_item(items, payload.get("item_code"), node.node_id)
    check_files(files, item)  # by content: no executable or other type stored as a material
    applicant = clean_applicant(payload.get("applicant"))
    entrustment = _clean_entrustment(payload.get("entrustment"), applicant, item, agent)
    form = plain_numbers(validate_form(item, payload.get("form") or {}))
    situation = payload.get("situation") or {}
    needed = required_materials(item, situation if isinstance(situation, dict) else {})
    materials = [{"code": code, "filename": filename, "sha256": node.blobs.put(data), "size": len(data)}
                 for code, filename, data in files]
    # 免提交 (seed 004 §10): a cited 电子证照 stands for the material it replaces.
    holder = licence_rules.holder_of(form, applicant["id_number"])
    cited = licences.cite(conn, node, item, payload.get("cited_licences"), holder["id"], node.clock.today_cn())
    provided = {x["code"] for x in materials} | {c["material"] for c in cited} | set(provided_elsewhere)
    missing = [m["name"] for m in needed if m["code"] not in provided]
    return Application(item, version, applicant, entrustment, form, materials, cited, missing)


def record(conn: sqlite3.Connection, node, app: Application, agent: str, thing: dict | None = None) -> dict:
    """Record a prepared application: the case, its submit event, its outbox envelope and its
    收件回执, in the caller's write transaction; returns the ``case.submit`` body.

    ``thing``: ``{"id", "code"}`` of the 一件事 the case is a step of.
    """
    now = node.now()
    for m in app.materials:
        blobs.register(conn, m["sha256"], m["size"], now)
    body, _ = casework.capture(
        conn, node_id=node.node_id, item=app.item, catalog_version=app.catalog_version,
        route=route(app.item, node.node_id, node.hub_id), applicant=app.applicant, form=app.form,
        materials=app.materials, agent=agent, now=now, entrustment=app.entrustment, cited_licences=app.cited,
        agent_name=names.person(conn, agent),
    )
    body["missing_materials"] = app.missing
    if thing is not None:
        body["thing"] = thing
        things.record_link(conn, node, body)
    # The parent's version (sync/formats.py): v2 leaves out what the receiver derives from its catalog.
    sent, envelope_version = submission.for_version(body, node.node_id, formats.uplink_version(conn))
    outbox.append(
        conn, node.key, node.node_id, "case.submit", sent, str(node.hlc.now()), now, case_id=body["case_id"],
        attachments=[{"sha256": m["sha256"], "size": m["size"]} for m in app.materials], version=envelope_version,
    )
    documents.issue(conn, node, casework.get_row(conn, body["case_id"]), "receipt", body["event"],
                    node.config.get("NODE_NAME") or node.node_id)
    if body["route"]["office"] == node.node_id and node.emit is not None:
        # A township window case for an item the township decides: it is received here and now
        # (a later step of a 一件事 once the earlier ones have their result).
        if things.arrival(conn, node, body["case_id"]) in (None, thing_rules.START):
            casework.receive(conn, body["case_id"], app.item, node.node_id, now, node.emit)
    return body


def _receipt(conn: sqlite3.Connection, body: dict, missing: list[str]) -> dict:
    status = casework.get_row(conn, body["case_id"])["status"]
    return {
        "case_id": body["case_id"],
        "receipt_no": body["receipt_no"],
        "item_code": body["item_code"],
        "item_name": body["item_name"],
        "status": status,
        "status_label": states.status_label(status),
        "route": body["route"],
        "missing_materials": missing,
    }


def _refuse_first(node, conn: sqlite3.Connection) -> None:
    # Refuse before anything else while the disk is nearly full: a clear message, nothing half-done.
    ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
    refuse_if_revoked(conn, node)


def submit(conn: sqlite3.Connection, node, payload: dict, files: list[tuple[str, str, bytes]], agent: str,
           also=None) -> dict:
    """Validate an application and record it with its outbox envelope; returns the receipt.

    ``also(conn)`` runs inside the same transaction (e.g. removing the draft it came from, so
    a crash can never leave both the case and its draft, ready to be filed twice).
    """
    _refuse_first(node, conn)
    app = prepare(conn, node, payload, files, agent)
    with write_transaction(conn):
        if also is not None:
            also(conn)
        body = record(conn, node, app, agent)
    return _receipt(conn, body, app.missing)


def offered_things(conn: sqlite3.Connection, node) -> list[dict]:
    """The 一件事 this node may take: every item of it in its catalog and accepted here."""
    _, items = node.catalog(conn)
    return [t for t in node.things(conn).values()
            if thing_rules.offered_at(t, items, lambda item: accepts_at(item, node.node_id))]


def acceptable_thing(conn: sqlite3.Connection, node, code) -> tuple[dict, dict]:
    """(thing, items) for a 一件事 application at this node, or a clear refusal."""
    _, items = node.catalog(conn)
    thing = node.things(conn).get(code) if isinstance(code, str) else None
    if thing is None:
        raise ValidationError("thing_code", "一件事不存在或目录尚未同步")
    if not thing_rules.offered_at(thing, items, lambda item: accepts_at(item, node.node_id)):
        raise RuleError("not_accepted_here", f"「{thing['name']}」不能在本级受理")
    return thing, items


def submit_thing(conn: sqlite3.Connection, node, payload: dict, files: list[tuple[str, str, bytes]],
                 agent: str) -> dict:
    """一件事一次办: one merged application becomes one linked case per item, in one transaction.

    ``payload``: ``thing_code``, ``applicant`` (once), ``form`` (each shared field once),
    ``situation``, optional ``entrustment`` and ``cited_licences``; ``files``: each shared
    material once, ``(code, filename, bytes)``. Each item gets the fields, answers and files it
    asks for; a material an earlier step's licence provides is not asked. Every item is checked
    before anything is recorded, so a refusal leaves nothing half-filed.
    :returns: ``{"thing_id", "thing_code", "name", "cases": [receipt…]}``.
    """
    _refuse_first(node, conn)
    thing, items = acceptable_thing(conn, node, payload.get("thing_code"))
    form = payload.get("form") or {}
    situation = payload.get("situation") or {}
    if not isinstance(form, dict) or not isinstance(situation, dict):
        raise ValidationError("form", "form 和 situation 必须是对象")
    known = {m["code"] for item in thing_rules.step_items(thing, items) for m in item["materials"]}
    for code, _, _ in files:
        if code not in known:
            raise ValidationError("materials", f"材料编码「{code}」不属于该一件事的任何事项")
    prepared = []
    for item in thing_rules.step_items(thing, items):
        own = {m["code"] for m in item["materials"]}
        earlier = thing_rules.from_earlier_step(thing, items, item["code"])
        step_payload = {
            "item_code": item["code"], "applicant": payload.get("applicant"),
            "form": thing_rules.split_answers(item, form, "fields"),
            "situation": thing_rules.split_answers(item, situation, "situations"),
            "entrustment": payload.get("entrustment"),
            "cited_licences": [c for c in payload.get("cited_licences") or [] if isinstance(c, dict)
                               and c.get("material") in own and c.get("material") not in earlier] or None,
        }
        # A file attached once serves every item that asks for it; what an earlier step's licence
        # provides and nobody attached is not missing.
        mine = [f for f in files if f[0] in own]
        prepared.append(prepare(conn, node, step_payload, mine, agent, frozenset(earlier)))
    link = {"id": uuid.uuid4().hex, "code": thing["code"]}
    with write_transaction(conn):
        bodies = [record(conn, node, app, agent, link) for app in prepared]
    return {"thing_id": link["id"], "thing_code": thing["code"], "name": thing["name"],
            "cases": [_receipt(conn, body, app.missing) for body, app in zip(bodies, prepared, strict=True)]}
