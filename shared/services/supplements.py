"""补齐补正 and owed 容缺 materials, answered where the case was filed. No Flask here.

The origin (the village room, or the township window for its own cases) records the applicant's
corrections and new material files as a ``supplement`` event and queues a signed
``case.supplement`` envelope in the same transaction, so it travels up exactly once, offline
first, like a new case. Every node that holds the case records what changed (form fields
before/after, new materials); the node that decides it also runs the rule of
:func:`shared.rules.supplements.supplement_outcome` (``resubmit``, ``supplement_received`` or
``terminate``) and sends the resulting event on like any other decision.
"""

from __future__ import annotations

import json
import sqlite3

from shared.core.clock import parse_iso
from shared.core.errors import RuleError, ValidationError
from shared.core.storage import ensure_disk_space, write_transaction
from shared.rules import authority, states
from shared.rules import supplements as rules
from shared.rules.catalog import validate_form
from shared.rules.deadlines import cn_day, committed_deadline
from shared.rules.materials import check_files
from shared.services import casework, documents, intake, things
from sync import blobs, outbox

KIND = "case.supplement"
ANSWERABLE_STATES = frozenset(states.TRANSITIONS["supplement"][0])
OUTCOME_COMMENTS = {
    "resubmit": "申请人已按一次性告知补齐补正，重新接件",
    "supplement_received": "容缺材料已按期补齐",
}


def decides_case(node, row) -> bool:
    """Whether ``node`` is the node that decides the case ``row`` (its tier's deciding scope)."""
    scope = node.kind.deciding_scope(node) if node.kind.decides else None
    if scope is None:
        return False
    level, office = scope
    return row["route_level"] == level and office in ("%", row["route_office"])


def _item(conn: sqlite3.Connection, node, row) -> dict:
    item = node.catalog(conn)[1].get(row["item_code"])
    if item is None:
        raise RuleError("unknown_item", f"事项「{row['item_name']}」不在本节点的目录中，请先同步目录")
    return item


present_codes = documents.case_material_codes


def owed(conn: sqlite3.Connection, case_id: str) -> tuple[list[str], str | None]:
    """(owed material codes, due date) of the case's latest 容缺受理 (([], None) if none)."""
    events = casework.events_of(conn, case_id, ("accept_deficient",))
    if not events:
        return [], None
    detail = events[-1]["detail"]
    return list(detail.get("owed_materials") or []), detail.get("due_date")


def notice(conn: sqlite3.Connection, row, item: dict | None) -> dict | None:
    """What the origin must answer now, exactly as the notice said it (``None``: nothing).

    ``{"kind": "correction", "items": [...]}`` for a 一次性告知, or ``{"kind": "deficiency",
    "owed": [{"code", "name", "supplied"}], "due_date"}`` for owed 容缺 materials.
    """
    if row["status"] in rules.CORRECTION_STATES:
        events = casework.events_of(conn, row["case_id"], ("request_correction", "precheck_return"))
        last = events[-1] if events else {"detail": {}, "comment": ""}
        items = last["detail"].get("missing_items") or ([last["comment"]] if last.get("comment") else [])
        return {"kind": "correction", "items": items, "at": last.get("at")}
    if row["status"] == rules.DEFICIENCY_STATE:
        codes, due = owed(conn, row["case_id"])
        here = present_codes(conn, row["case_id"])
        names = rules.material_names(item, codes)
        return {"kind": "deficiency", "due_date": due,
                "owed": [{"code": c, "name": n, "supplied": c in here} for c, n in zip(codes, names, strict=True)]}
    return None


def answered(conn: sqlite3.Connection, row, told: dict) -> bool:
    """Whether the origin has sent everything ``told`` asks for and waits for the deciding node:
    a supplement after the latest 一次性告知, or every owed 容缺 material supplied."""
    if told["kind"] == "deficiency":
        return all(o["supplied"] for o in told["owed"])
    last = conn.execute("SELECT action FROM case_events WHERE case_id = ? ORDER BY at DESC, rowid DESC LIMIT 1",
                        (row["case_id"],)).fetchone()
    return last is not None and last["action"] == "supplement"


def _record(conn: sqlite3.Connection, row, event: dict) -> None:
    """Write a supplement's field changes, materials and event (idempotent by event id)."""
    if not casework.record_event(conn, row["case_id"], event):
        return
    detail = event["detail"]
    if detail.get("changes"):
        form = json.loads(row["form"])
        form.update({c["field"]: c["after"] for c in detail["changes"]})
        conn.execute("UPDATE cases SET form = ?, updated_at = ? WHERE case_id = ?",
                     (json.dumps(form, ensure_ascii=False), event["at"], row["case_id"]))
    for m in detail.get("materials") or ():
        conn.execute("INSERT INTO case_materials(case_id, code, filename, sha256, size) VALUES (?,?,?,?,?)"
                     " ON CONFLICT DO NOTHING", (row["case_id"], m["code"], m["filename"], m["sha256"], m["size"]))


def _checked_detail(item: dict, row, detail) -> dict:
    """The detail of an incoming supplement, checked against this node's own catalog item."""
    if not isinstance(detail, dict):
        raise RuleError("invalid_supplement", "补齐补正内容无效")
    changes, materials = detail.get("changes") or [], detail.get("materials") or []
    if not isinstance(changes, list) or not isinstance(materials, list):
        raise RuleError("invalid_supplement", "补齐补正内容无效")
    fields = {f["name"] for f in item.get("fields", [])}
    codes = {m["code"] for m in item.get("materials", [])}
    if any(not isinstance(c, dict) or c.get("field") not in fields for c in changes):
        raise RuleError("invalid_supplement", "补齐补正更正了该事项没有的表单项")
    validate_form(item, {**json.loads(row["form"]), **{c["field"]: c["after"] for c in changes}})
    for m in materials:
        if not isinstance(m, dict) or m.get("code") not in codes or not isinstance(m.get("sha256"), str) \
                or not isinstance(m.get("filename"), str) or type(m.get("size")) is not int:
            raise RuleError("invalid_supplement", "补齐补正的材料不属于该事项")
    return detail


def checked_acceptance(conn: sqlite3.Connection, node, row, action: str, details: dict) -> dict:
    """An office's 受理 / 容缺受理 checked with this node's catalog item and calendar; the details to record.

    受理 needs every required material (:func:`rules.check_acceptance`); 容缺受理 may owe only
    容缺可 materials (recorded by code) by a due date no later than the committed deadline, which
    the server computes here from today and the case's limit — a client's own
    ``promise_end_date`` is never trusted. Other actions pass unchanged.

    :raises RuleError: ``materials_missing``, ``not_deficiency_allowed``, ``unknown_material``,
        ``owed_materials_required`` (and the state machine's ``due_date_too_late`` later).
    """
    if action not in ("accept", "accept_deficient"):
        return details
    item = _item(conn, node, row)
    owed_codes: list[str] = []
    if action == "accept_deficient":
        owed_codes = rules.owed_material_codes(item, details.get("owed_materials"))
        deadline = committed_deadline(node.calendar, node.clock.today_cn(), int(row["limit_wd"] or 0))
        details = {**details, "owed_materials": owed_codes, "promise_end_date": deadline.isoformat()}
    present = present_codes(conn, row["case_id"]) | things.provided_codes(conn, node, row)  # 一件事: 证照联办
    rules.check_acceptance(item, present, action, owed_codes)
    return details


def apply_rule(conn: sqlite3.Connection, node, case_id: str, event: dict, emit) -> dict | None:
    """At the deciding node: move the case as :func:`rules.supplement_outcome` says, after ``event``."""
    row = casework.get_row(conn, case_id)
    codes, due = owed(conn, case_id)
    # Supplied when the origin recorded it (offline first: the network's delay is not the
    # applicant's); a date in the future counts as today, as a case.submit's time does.
    supplied_on = min(cn_day(event["at"]), node.clock.today_cn())
    action = rules.supplement_outcome(row["status"], codes, present_codes(conn, case_id), due, supplied_on)
    if action is None:
        return None
    comment = OUTCOME_COMMENTS.get(action) or f"容缺材料逾期（应于 {due} 前补齐）补交，办件终止"
    return casework.perform_action(conn, case_id, action, comment, "system", node.node_id, node.now(), emit,
                                   system={"supplement": event["event_id"]})


def send(conn: sqlite3.Connection, node, case_id: str, form_changes, files: list[tuple[str, str, bytes]],
         agent: str, comment: str = "") -> dict:
    """Record the applicant's 补齐补正 / owed materials at the origin and queue ``case.supplement``.

    ``form_changes``: ``{field: new value}`` (only the fields corrected); ``files``: (code,
    filename, bytes). At a township deciding its own window case the rule runs here at once.

    :raises RuleError: ``not_entitled`` (not the origin), ``invalid_transition`` (nothing to
        answer in this status), ``material_type``; :class:`ValidationError` for a bad field or
        an empty supplement.
    """
    row = casework.get_row(conn, case_id)
    authority.check_supplement_sender(row, node.node_id)
    states.apply_action(row["status"], "supplement")
    item = _item(conn, node, row)
    if not isinstance(form_changes, dict):
        raise ValidationError("form", "form 必须是对象（只列出更正的表单项）")
    fields = {f["name"] for f in item["fields"]}
    for name in form_changes:
        if name not in fields:
            raise ValidationError(f"form.{name}", "该事项没有这个表单项")
    before = json.loads(row["form"])
    after = intake.plain_numbers(validate_form(item, {**before, **form_changes}))
    changes = rules.field_changes(item, before, {k: after.get(k) for k in form_changes})
    check_files(files, item)
    if not changes and not files:
        raise ValidationError("supplement", "请更正申请表或补充材料后再提交")
    ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
    materials = [{"code": code, "filename": filename, "sha256": node.blobs.put(data), "size": len(data)}
                 for code, filename, data in files]
    now = node.now()
    with write_transaction(conn):
        row = casework.get_row(conn, case_id)
        states.apply_action(row["status"], "supplement")  # unchanged since the checks above
        for m in materials:
            blobs.register(conn, m["sha256"], m["size"], now)
        event = casework.new_event(node.node_id, agent, "supplement", row["status"], row["status"], now,
                                   comment.strip(), {"changes": changes, "materials": materials})
        outbox.append(conn, node.key, node.node_id, KIND, {"case_id": case_id, "event": event},
                      str(node.hlc.now()), now, case_id=case_id,
                      attachments=[{"sha256": m["sha256"], "size": m["size"]} for m in materials])
        _record(conn, row, event)
        if decides_case(node, row):
            apply_rule(conn, node, case_id, event, node.emit)
    return event


def apply_received(conn: sqlite3.Connection, node, body: dict, sender: str, emit) -> None:
    """Apply a ``case.supplement`` that ``sender`` signed, at a node that holds the case.

    The hub (every case) and the township (its villages' cases it follows) both call this: the
    sender must be the case's origin; the deciding node also checks the state machine and runs
    the rule, a node that only follows the case records what changed.

    :raises RuleError: ``unknown_case``, ``not_entitled``, ``invalid_transition``, ``invalid_supplement``.
    """
    row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
    if row is None:
        raise RuleError("unknown_case", "补齐补正所指的办件不在本节点")
    authority.check_supplement_sender(row, sender)
    event = body["event"]
    if event.get("action") != "supplement" or event.get("node") != sender:
        raise RuleError("invalid_supplement", "补齐补正的事件无效")
    if conn.execute("SELECT 1 FROM case_events WHERE case_id = ? AND event_id = ?",
                    (row["case_id"], event["event_id"])).fetchone():
        return  # a repeat
    deciding = decides_case(node, row)
    if deciding:
        states.apply_action(row["status"], "supplement")
    _checked_detail(_item(conn, node, row), row, event.get("detail"))
    parse_iso(event["at"])  # a malformed time is refused before anything is written
    _record(conn, row, {**event, "from_status": row["status"], "to_status": row["status"]})
    if deciding:
        apply_rule(conn, node, row["case_id"], event, emit)
