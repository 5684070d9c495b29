"""The case page and API on every node, and the deciding office's queue and actions.

Actions are allowed only at the node that decides the case (the hub for city items, the
township for items delegated to it), to an account of the case's office with a deciding role.
"""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from shared.core.clock import CN_TZ, parse_iso
from shared.core.errors import Forbidden, LiandongError, RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import decision_rights, materials, precheck, progress, states
from shared.rules import green_channel as green_rules
from shared.rules.deadlines import case_clock, committed_deadline
from shared.services import (
    accounts,
    case_view,
    casework,
    documents,
    green_channel,
    intake,
    joint,
    licences,
    names,
    supplements,
    things,
)
from shared.web import access
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome

bp = Blueprint("cases", __name__)

API_ACTIONS = ("accept", "approve", "deny", "reject", "request_correction", "start_review", "withdraw")

#: How each action's button looks: primary (moves the case on), danger (refuses or ends it), plain.
ACTION_KIND = {"accept": "primary", "approve": "primary", "receive": "primary", "start_review": "primary",
               "supplement_received": "primary", "resume": "primary", "reject": "danger", "deny": "danger",
               "terminate": "danger", "precheck_return": "danger"}
#: Steps not taken with the deciding office's buttons: 现场核查 has its own page, 补齐补正 is sent by the origin.
ORIGIN_ONLY = frozenset({"site_visit", "supplement"})
SUPERVISION_LABELS = {"none": "正常", "warning": "即将到期", "yellow": "黄牌（已超期）", "red": "红牌"}
#: Material formats shown inline on the case page, by their first bytes (never HTML or scripts).
PREVIEW_FORMATS = frozenset({"png", "jpeg", "gif", "pdf"})


@bp.app_template_filter("cn_time")
def cn_time(value) -> str:
    """An ISO timestamp as Beijing time ``2026-03-02 09:30``; '—' for nothing."""
    if not value:
        return "—"
    try:
        return parse_iso(value).astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return str(value)


@bp.app_template_filter("from_json")
def from_json(value):
    """A JSON column as a value (None for nothing)."""
    return json.loads(value) if value else None


def _catalog_items() -> dict:
    return current_node().catalog(get_db())[1]


def _preview_type(data: bytes) -> str | None:
    fmt = materials.detect(data)
    return fmt.mime if fmt is not None and fmt.key in PREVIEW_FORMATS else None


def _case_json(case_id: str) -> dict:
    node = current_node()
    conn = get_db()
    granted = access.require_read(case_id)  # 404 for a case the account may not read; audited
    result = case_view.to_json(conn, case_id, node.calendar, node.clock.today_cn(), mask=not granted.unmasked)
    result["holder"] = _holder(result)
    result["cited_licences"] = licences.citations_of(conn, node, casework.get_row(conn, case_id), node.clock.today_cn())
    result["thing"] = things.of_case(conn, node, case_id)  # 一件事: the other steps and where they are
    return result


def _holder(case: dict) -> dict | None:
    """Who holds the case inside the deciding office now (窗口 / 首席审批员 / 部门负责人)."""
    item = _catalog_items().get(case["item_code"])
    role = decision_rights.holder(item, case["status"], [h["action"] for h in case["history"]])
    if role is None or case["route"]["level"] != "city":
        return None
    grant = decision_rights.grant_of(item)
    return {"role": role, "label": decision_rights.ROLE_LABELS[role],
            "grant": grant, "grant_label": decision_rights.GRANT_LABELS[grant]}


@bp.app_template_global("office_label")
def office_label(office: str | None) -> str:
    """An office code (``130926-rs``, a township's 区划代码) as its full Chinese name."""
    if not office:
        return "—"
    node, conn = current_node(), get_db()
    own = node.config.get("NODE_NAME") or ""
    if office == node.node_id and office != node.config.get("HUB_ID"):
        return names.township_government(own)
    return names.office_name(node.trust(conn), office, None, documents.own_hub_name(conn, node))


@bp.app_template_global("place_label")
def place_label(node_id: str | None) -> str:
    """A node's 区划代码 as its registered name (东关村便民服务室)."""
    node, conn = current_node(), get_db()
    if node_id == node.node_id and node.config.get("NODE_NAME"):
        return node.config["NODE_NAME"]
    return names.node_name(node.trust(conn), node_id)


@bp.app_template_global("person_label")
def person_label(username: str | None, node_id: str | None = None) -> str:
    """Who did a step, by display name (or the role of the node's tier when unknown here)."""
    return names.person(get_db(), username, names.tier_of(node_id))


@bp.app_template_global("status_label")
def status_label(status: str | None) -> str:
    """A case status (``ACCEPTED``) in Chinese (已受理)."""
    return states.status_label(status) if status else "—"


def case_names(case: dict, item: dict | None) -> dict:
    """The names of the case's offices, places and people (:func:`shared.services.names.for_case`)."""
    node, conn = current_node(), get_db()
    hub = documents.own_hub_name(conn, node)
    result = names.for_case(conn, node.trust(conn), case, item, hub, node.node_id, node.config.get("NODE_NAME") or "")
    county = names.county_of(hub)
    result["review_body"] = names.reconsideration_body(county, node.config.get("RECONSIDERATION_BODY") or "")
    result["court"] = names.court(county, node.config.get("COURT_NAME") or "")
    return result


def _may_decide(row) -> bool:
    node = current_node()
    if not node.kind.decides or g.account is None:
        return False
    deciding_here = row["route_level"] == node.kind.deciding_scope(node)[0]
    return deciding_here and g.account["role"] in accounts.DECIDING_ROLES and g.account["office"] == row["route_office"]


def act(case_id: str, action: str, comment: str, details: dict) -> dict:
    """Apply ``action`` for the current account and send the event on."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    if not _may_decide(row):
        raise Forbidden("只有承办机构的审批人员可以办理该办件")
    if action == "site_visit":
        raise RuleError("use_site_visits", "现场核查由乡镇便民服务站在「现场核查」页面登记")
    if action == "supplement":
        raise RuleError("origin_only", "补齐补正由收件的村便民服务室或乡镇窗口在办件页面提交")
    node = current_node()
    item = _catalog_items().get(row["item_code"])
    with write_transaction(conn):
        # Who may take this step inside the office (窗口首席代表 / 首席审批员 / 部门负责人).
        basis = decision_rights.check_right(item, g.account["role"], action, casework.recorded_actions(conn, case_id))
        name = g.account["display_name"] or g.account["username"]
        system = None
        if basis is not None:
            system = {"decided_under": {**basis, "name": name, "username": g.account["username"]}}
        if action == "extend":
            details = {**details, "approved_by": name}  # the head's own account, never a typed name
        joint.check_action(conn, case_id, action, comment)  # no 准予 while 联办 opinions are open
        # 超时默认 (seed 004 §8): no refusal for lack of a prerequisite deemed done.
        green_rules.check_not_refused_for_deemed(action, comment, details.get("missing_items"),
                                                 green_channel.deemed_prerequisites(conn, node, case_id))
        details = supplements.checked_acceptance(conn, node, row, action, details)  # materials, 容缺
        return casework.perform_action(conn, case_id, action, comment, g.account["username"], node.node_id,
                                       node.now(), node.emit, system=system, **details)


@bp.get("/api/v1/cases/<case_id>")
def api_case(case_id: str):
    """The case as far as this node knows it."""
    return jsonify(_case_json(case_id))


@bp.post("/api/v1/cases/<case_id>/actions")
def api_action(case_id: str):
    """受理 / 准予 / 不予许可 / 不予受理 / 补齐补正 … at the deciding node."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    action = body.get("action")
    if not isinstance(action, str) or action not in states.ACTION_LABELS:
        raise ValidationError("action", f"未知的操作，可选：{'、'.join(API_ACTIONS)}")
    comment = body.get("comment") or ""
    if not isinstance(comment, str):
        raise ValidationError("comment", "comment 必须是文本")
    details = {k: v for k, v in body.items() if k not in ("action", "comment")}
    if action == "request_correction" and "missing_items" not in details and comment.strip():
        details["missing_items"] = [comment.strip()]
    event = act(case_id, action, comment, details)
    return jsonify({"event": event, "case": _case_json(case_id)})


def _actions_for(row) -> list[str]:
    """The steps the current account may take on the case now (the buttons of its page)."""
    item = _catalog_items().get(row["item_code"])
    done = casework.recorded_actions(get_db(), row["case_id"])
    allowed = []
    for action in states.allowed_actions(row["status"]):
        if action in ORIGIN_ONLY:
            continue
        try:
            decision_rights.check_right(item, g.account["role"], action, done)
        except LiandongError:
            continue
        allowed.append(action)
    return allowed


@bp.get("/cases/<case_id>")
def detail(case_id: str):
    """The case page: applicant, materials, history, decision, and the allowed actions."""
    case = _case_json(case_id)
    row = casework.get_row(get_db(), case_id)
    actions = _actions_for(row) if _may_decide(row) else []
    item = _catalog_items().get(case["item_code"])
    material_names = {m["code"]: m["name"] for m in (item or {}).get("materials", [])}
    node = current_node()
    for m in case["materials"]:
        m["name"] = material_names.get(m["code"], "其他材料")
        m["here"] = node.blobs.has(m["sha256"])
        m["preview"] = _preview_type(node.blobs.read(m["sha256"])[:8]) if m["here"] else None
    shown = request.args.get("view") or next((m["sha256"] for m in case["materials"] if m["preview"]), None)
    preview = next((m for m in case["materials"] if m["sha256"] == shown and m["preview"]), None)
    fields = {f["name"]: f["label"] for f in (item or {}).get("fields", [])}
    extended = any(h["action"] == "extend" for h in case["history"])
    blocked = {}
    for a in actions:
        try:  # the same guard the action runs (a comment is assumed: it is typed on this page)
            joint.check_action(get_db(), case_id, a, "（意见）")
        except RuleError as exc:
            blocked[a] = exc.message
    step = progress.word(case["status"], case["sync_state"], case["route"]["level"], len(case["origin"]) == 9)
    return render_template("cases/detail.html", case=case, who=case_names(case, item), actions=actions,
                           progress_word=step, blocked=blocked, progress_legend=progress.legend(case["route"]["level"] == "township"), labels=states.ACTION_LABELS,
                           kinds=ACTION_KIND, item=item, fields=fields, preview=preview, extended=extended,
                           suspend_reasons=states.SUSPEND_REASONS, opinions=states.PRE_REVIEW_OPINIONS, supervision=SUPERVISION_LABELS,
                           may_decide=bool(actions), seven_steps=case_view.seven_steps(case),
                           may_deliver=(row["status"] in states.DECIDED_STATES and row["origin"] == node.node_id
                                        and g.account["role"] in ("agent", "clerk")),
                           notice=precheck.latest_notice(case["history"]), delivery_manners=names.DELIVERY_MANNERS,
                           answer=_answer_form(row, item), material_names=material_names,
                           deficiency_limit=committed_deadline(node.calendar, node.clock.today_cn(),
                                                               int(row["limit_wd"] or 0)).isoformat(),
                           mark_actions=[a for a in actions if a in precheck.MARK_ACTIONS])


def _may_answer(row) -> bool:
    """Whether the current account may send a 补齐补正 for ``row``: at its origin, a receiving role."""
    return (row["origin"] == current_node().node_id and g.account is not None
            and g.account["role"] in ("agent", "clerk") and row["status"] in supplements.ANSWERABLE_STATES)


def _answer_form(row, item: dict | None) -> dict | None:
    """What the origin's 补齐补正 form shows: the notice's items, the fields, the materials to attach."""
    if item is None or not _may_answer(row):
        return None
    told = supplements.notice(get_db(), row, item)
    owed = {o["code"] for o in told["owed"]} if told["kind"] == "deficiency" else None
    if supplements.answered(get_db(), row, told):
        return {"notice": told, "sent": True}
    return {"notice": told, "fields": item["fields"] if owed is None else [],
            "materials": [m for m in item["materials"] if owed is None or m["code"] in owed]}


def _send_supplement(case_id: str, form_changes, files, comment: str) -> dict:
    if g.account["role"] not in ("agent", "clerk"):
        raise Forbidden("只有收件的代办员或窗口人员可以提交补齐补正")
    return supplements.send(get_db(), current_node(), case_id, form_changes, files, g.account["username"], comment)


@bp.post("/api/v1/cases/<case_id>/supplement")
def api_supplement(case_id: str):
    """补齐补正 / owed 容缺 materials, sent from the case's origin (``case.supplement``)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    comment = body.get("comment") or ""
    if not isinstance(comment, str):
        raise ValidationError("comment", "comment 必须是文本")
    row = casework.get_row(get_db(), case_id)
    node = current_node()
    item = _catalog_items().get(row["item_code"])
    files = intake.decode_materials(body.get("materials"), item or {"materials": []},
                                    int(node.config["MAX_ATTACHMENT_BYTES"]),
                                    int(node.config["MAX_CASE_ATTACHMENT_BYTES"]))
    event = _send_supplement(case_id, body.get("form") or {}, files, comment)
    return jsonify({"event": event, "case": _case_json(case_id)}), 201


@bp.post("/cases/<case_id>/supplement")
def form_supplement(case_id: str):
    """The origin's 补齐补正 form: corrected fields (only those changed) and material files."""
    row = casework.get_row(get_db(), case_id)
    item = _catalog_items().get(row["item_code"]) or {"fields": [], "materials": []}
    before = json.loads(row["form"])
    changes = {}
    for field in item["fields"]:
        key = "form_" + field["name"]
        if key in request.form and request.form[key].strip() != str(before.get(field["name"], "")):
            changes[field["name"]] = request.form[key].strip()
    files = []
    for m in item["materials"]:
        upload = request.files.get("file_" + m["code"])
        if upload is not None and upload.filename:
            files.append((m["code"], upload.filename, upload.read()))
    with form_outcome("未能提交补齐补正", "已提交补齐补正，将随下次同步报送承办机构"):
        _send_supplement(case_id, changes, files, request.form.get("comment", ""))
    return redirect(url_for("cases.detail", case_id=case_id))


@bp.post("/cases/<case_id>/precheck")
def precheck_marks(case_id: str):
    """预审 marks on fields and materials, sent as ONE 一次性告知 (补齐补正 or 预审退回)."""
    action = request.form.get("action", "request_correction")
    if action not in precheck.MARK_ACTIONS:
        abort(400)
    row = casework.get_row(get_db(), case_id)
    item = _catalog_items().get(row["item_code"]) or {}
    fields = {k[len("mark_field_"):]: request.form.get("note_field_" + k[len("mark_field_"):], "")
              for k in request.form if k.startswith("mark_field_")}
    materials = {k[len("mark_material_"):]: request.form.get("note_material_" + k[len("mark_material_"):], "")
                 for k in request.form if k.startswith("mark_material_")}
    comment = request.form.get("comment", "").strip()
    try:
        items = precheck.build_missing_items(item, fields, materials, request.form.get("other", ""))
    except LiandongError as exc:
        flash(f"未能{states.ACTION_LABELS[action]}：{exc.message}")
        return redirect(url_for("cases.detail", case_id=case_id))
    return _act_from_form(case_id, action, comment or "请按一次性告知的全部内容补齐补正后重新提交",
                          {"missing_items": items}, f"：一次性告知 {len(items)} 项")


@bp.post("/cases/<case_id>/actions")
def form_action(case_id: str):
    """The action buttons of the case page."""
    action = request.form.get("action", "")
    if action not in states.ACTION_LABELS:
        abort(400)
    comment = request.form.get("comment", "").strip()
    details: dict = {}
    if action in ("request_correction", "precheck_return"):
        details["missing_items"] = [x.strip() for x in comment.splitlines() if x.strip()]
    elif action == "accept_deficient":
        details["owed_materials"] = request.form.getlist("owed_materials")
        details["due_date"] = request.form.get("due_date", "")
    elif action == "suspend":
        details["reason"] = request.form.get("suspend_reason", "")
    elif action == "pre_review":
        details["opinion"] = request.form.get("opinion", "")
    return _act_from_form(case_id, action, comment, details)


def _act_from_form(case_id: str, action: str, comment: str, details: dict, done: str = ""):
    """Apply an action posted from the case page; a refused one is shown there in Chinese."""
    with form_outcome(f"未能{states.ACTION_LABELS[action]}", f"已{states.ACTION_LABELS[action]}{done}"):
        act(case_id, action, comment, details)
    return redirect(url_for("cases.detail", case_id=case_id))


@bp.get("/cases/<case_id>/receipt")
def receipt(case_id: str):
    """The printable 收件回执."""
    case = _case_json(case_id)
    item = _catalog_items().get(case["item_code"])
    material_names = {m["code"]: m["name"] for m in (item or {}).get("materials", [])}
    return render_template("cases/receipt.html", case=case, node=current_node(), item=item, names=material_names,
                           who=case_names(case, item),
                           fresh=request.args.get("new") == "1")


@bp.get("/cases/<case_id>/notice")
def notice(case_id: str):
    """The printable 办理结果告知书 of a decided case (handed to the applicant)."""
    case = _case_json(case_id)
    if not case["decision"] and case["status"] not in ("APPROVED", "DENIED", "NOT_ACCEPTED", "CONCLUDED"):
        raise ValidationError("status", "该办件尚无办理结果")
    item = _catalog_items().get(case["item_code"])
    return render_template("cases/notice.html", case=case, item=item, who=case_names(case, item))


@bp.get("/cases/<case_id>/materials/<sha256>/view")
def material_view(case_id: str, sha256: str):
    """A material shown inline (images and PDF only; anything else is downloaded)."""
    conn = get_db()
    found = conn.execute("SELECT 1 FROM case_materials WHERE case_id = ? AND sha256 = ?", (case_id, sha256)).fetchone()
    node = current_node()
    if found is None or not node.blobs.has(sha256):
        abort(404)
    data = node.blobs.read(sha256)
    mime = _preview_type(data[:8])
    if mime is None:
        return redirect(url_for("cases.material", case_id=case_id, sha256=sha256))
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "material.read", case_id, sha256, node.now())
    headers = {"Content-Disposition": "inline", "X-Content-Type-Options": "nosniff"}
    if mime.startswith("image/"):
        headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return Response(data, mimetype=mime, headers=headers)


@bp.get("/cases/<case_id>/materials/<sha256>")
def material(case_id: str, sha256: str):
    """One material file of a case (download logged), named after the material with the extension
    of its content, served with that content's type; content of no accepted format is not served."""
    conn = get_db()
    found = conn.execute(
        "SELECT m.code, c.item_code FROM case_materials m JOIN cases c USING (case_id)"
        " WHERE m.case_id = ? AND m.sha256 = ?", (case_id, sha256)
    ).fetchone()
    node = current_node()
    if found is None or not node.blobs.has(sha256):
        abort(404)
    data = node.blobs.read(sha256)
    fmt = materials.detect(data)
    if fmt is None:
        # E.g. an executable sent up by a tampered village PC: never offered for download.
        raise LiandongError("material_type", "该材料文件不是可接受的格式（JPEG、PNG、PDF 等），为安全起见不提供下载，"
                                             "请联系收件的服务站核实", status=415)
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "material.read", case_id, sha256, node.now())
    item = _catalog_items().get(found["item_code"]) or {}
    name = next((m["name"] for m in item.get("materials", []) if m["code"] == found["code"]), found["code"])
    return Response(data, mimetype=fmt.mime, headers={
        "Content-Disposition": materials.content_disposition(materials.download_name(name, fmt)),
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"})


#: Rows per page of the queue (the counts at the top are over every open case of the office).
QUEUE_PAGE = 100


def page_number() -> int:
    """The ``page`` query argument (1 for anything that is not a positive number)."""
    value = request.args.get("page", "1")
    return max(1, int(value)) if value.isascii() and value.isdigit() else 1  # not "²", which int() refuses


@bp.get("/queue")
def queue():
    """The office's open cases, 绿色通道 first, then nearest deadline (one query for the cases, one for their events)."""

    office = g.account["office"]
    node = current_node()
    conn = get_db()
    open_states = tuple(states.OPEN_STATES)
    readable, readable_args = access.list_filter("cases")
    where = f"route_office = ? AND status IN ({','.join('?' * len(open_states))}) AND {readable}"
    rows = conn.execute(
        "SELECT case_id, receipt_no, item_name, applicant_name, origin, status, limit_wd, submitted_at, green_channel"
        f" FROM cases WHERE {where}", (office, *open_states, *readable_args)).fetchall()
    events: dict[str, list] = {}
    for e in conn.execute(
        "SELECT case_id, at, action, detail FROM case_events WHERE case_id IN"
        f" (SELECT case_id FROM cases WHERE {where}) AND action IN ('accept', 'accept_deficient', 'suspend',"
        " 'resume', 'extend') ORDER BY case_id, at, rowid", (office, *open_states, *readable_args)):
        events.setdefault(e["case_id"], []).append(e)
    calendar, today = node.calendar, node.clock.today_cn()
    cases = []
    for r in rows:
        clock = case_clock(events.get(r["case_id"], ()), r["limit_wd"], r["status"], calendar, today)
        cases.append({
            "case_id": r["case_id"], "receipt_no": r["receipt_no"], "item_name": r["item_name"],
            "applicant": {"name": r["applicant_name"]}, "origin": r["origin"], "status": r["status"],
            "status_label": states.status_label(r["status"]), "submitted_at": r["submitted_at"],
            "deadline": clock["deadline"], "remaining_working_days": clock["remaining_working_days"],
            "supervision": clock["supervision"], "green_channel": bool(r["green_channel"]),
        })
    cases.sort(key=green_rules.queue_order)  # 绿色通道 first, then the nearest deadline
    counts = {level: sum(1 for c in cases if c["supervision"] == level) for level in SUPERVISION_LABELS}
    page = page_number()
    pages = max(1, -(-len(cases) // QUEUE_PAGE))
    page = min(page, pages)
    shown = cases[(page - 1) * QUEUE_PAGE:page * QUEUE_PAGE]
    access.audit_list("queue", [c["case_id"] for c in shown])
    return render_template("cases/queue.html", cases=shown,
                           total=len(cases), page=page, pages=pages, office=office,
                           supervision=SUPERVISION_LABELS, counts=counts,
                           may_decide=g.account["role"] in accounts.DECIDING_ROLES)
