"""项目代办 pages and API at the hub (rules in :mod:`city_hub.projects`)."""

from __future__ import annotations

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from city_hub import projects
from city_hub.registry import current_catalog
from shared.core.errors import Forbidden, LiandongError, ValidationError
from shared.core.storage import write_transaction
from shared.rules.catalog import accepts_at, required_materials
from shared.services import accounts, intake
from shared.web.auth import roles_required
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome
from shared.web.limits import json_object

bp = Blueprint("projects", __name__)

FIELD_NAMES = {"enterprise_name": "企业名称", "credit_code": "统一社会信用代码", "project_name": "项目名称",
               "location": "建设地点", "contact": "企业联系人", "case_id": "办件标识或收件编号",
               "item_code": "事项", "applicant.name": "经办人姓名", "applicant.id_number": "经办人身份证号",
               "applicant.phone": "经办人电话", "form.credit_code": "统一社会信用代码",
               "investment_wan": "总投资（万元）", "key_agent": "项目代办员"}


def _catalog() -> tuple[int, dict]:

    return current_catalog(get_db())


def _project_json(project_id: str) -> dict:
    node = current_node()
    conn = get_db()
    result = projects.to_json(conn, project_id, node.calendar, node.clock.today_cn())
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "project.read", project_id, None, node.now())
    return result


def _create(payload: dict) -> dict:
    conn = get_db()
    with write_transaction(conn):
        return projects.create(conn, payload, g.account["username"], current_node().now())


def _link(project_id: str, reference) -> bool:
    conn = get_db()
    node = current_node()
    with write_transaction(conn):
        return projects.link_case(conn, project_id, reference, g.account["username"], node.now(), node)


def _mark_key(project_id: str, payload: dict) -> int:
    conn = get_db()
    node = current_node()
    with write_transaction(conn):
        marked = projects.mark_key(conn, node, project_id, payload, g.account["username"], node.now())
        accounts.audit(conn, g.account["username"], "project.key", project_id, payload.get("key_agent"), node.now())
    return marked


def _file(project_id: str, payload: dict, files: list[tuple[str, str, bytes]]) -> dict:
    version, items = _catalog()
    return projects.file_case(get_db(), current_node(), project_id, items, version, payload, files,
                              g.account["username"])


# ----------------------------------------------------------------------------- API


@bp.get("/api/v1/projects")
@roles_required(*projects.VIEW_ROLES)
def api_list():
    """Projects (a project agent sees its own)."""
    mine = g.account["username"] if g.account["role"] == "project_agent" else None
    return jsonify({"projects": [dict(r) for r in projects.list_projects(get_db(), mine)]})


@bp.post("/api/v1/projects")
@roles_required(*projects.AGENT_ROLES)
def api_create():
    """Create a project ``{enterprise_name, credit_code, project_name, location, contact?}``."""
    project = _create(json_object())
    return jsonify(_project_json(project["project_id"])), 201


@bp.get("/api/v1/projects/<project_id>")
@roles_required(*projects.VIEW_ROLES)
def api_project(project_id: str):
    """The project with each linked case, what blocks it and the overall state."""
    return jsonify(_project_json(project_id))


@bp.post("/api/v1/projects/<project_id>/cases")
@roles_required(*projects.AGENT_ROLES)
def api_add_case(project_id: str):
    """Link a case ``{"case_id"}`` (or a 收件回执 number), or file one at the hub
    ``{"item_code", "applicant", "form", "materials"}`` and link it."""
    body = json_object()
    if "case_id" in body:
        created = _link(project_id, body.get("case_id"))
        return jsonify({"linked": created, "project": _project_json(project_id)}), (201 if created else 200)
    _, items = _catalog()
    code = body.get("item_code")
    item = items.get(code) if isinstance(code, str) else None
    if item is None:
        raise ValidationError("item_code", "请提供 case_id（关联已有办件）或 item_code（代为申请）")
    node = current_node()
    files = intake.decode_materials(body.get("materials"), item, int(node.config["MAX_ATTACHMENT_BYTES"]),
                                    int(node.config["MAX_CASE_ATTACHMENT_BYTES"]))
    receipt = _file(project_id, body, files)
    return jsonify({"linked": True, "receipt": receipt, "project": _project_json(project_id)}), 201


@bp.post("/api/v1/projects/<project_id>/key")
@roles_required(*projects.KEY_ROLES)
def api_mark_key(project_id: str):
    """Mark the project 重点项目 (绿色通道) ``{"key_agent", "investment_wan"?}`` (admin)."""
    marked = _mark_key(project_id, json_object())
    return jsonify({"marked_cases": marked, "project": _project_json(project_id)})


# ----------------------------------------------------------------------------- pages


@bp.get("/projects")
@roles_required(*projects.VIEW_ROLES)
def index():
    """The projects list."""
    mine = g.account["username"] if g.account["role"] == "project_agent" else None
    return render_template("projects/index.html", rows=projects.list_projects(get_db(), mine),
                           may_create=g.account["role"] in projects.AGENT_ROLES)


@bp.route("/projects/new", methods=["GET", "POST"])
@roles_required(*projects.VIEW_ROLES)
def new():
    """A new project (project agents; others are sent back to the list)."""
    if g.account["role"] not in projects.AGENT_ROLES:
        if request.method == "POST":
            raise Forbidden("只有项目代办员可以登记项目")
        flash("只有项目代办员可以登记项目")
        return redirect(url_for("projects.index"))
    error, values = None, {}
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in ("enterprise_name", "credit_code", "project_name",
                                                        "location", "contact", "investment_wan")}
        try:
            project = _create(values)
        except LiandongError as exc:
            error = exc
        else:
            flash("项目已登记")
            return redirect(url_for("projects.detail", project_id=project["project_id"]))
    return render_template("projects/new.html", error=error, values=values, names=FIELD_NAMES), (400 if error else 200)


@bp.get("/projects/<project_id>")
@roles_required(*projects.VIEW_ROLES)
def detail(project_id: str):
    """The project page: its cases, what blocks each one, the overall state."""
    _, items = _catalog()
    offered = [i for i in items.values() if not i.get("consultation_only") and accepts_at(i, current_node().node_id)]
    agents = [r["username"] for r in get_db().execute(
        "SELECT username FROM accounts WHERE role = 'project_agent' AND active = 1 ORDER BY username")]
    return render_template("projects/detail.html", p=_project_json(project_id), offered=offered,
                           may_act=g.account["role"] in projects.AGENT_ROLES, names=FIELD_NAMES,
                           may_mark=g.account["role"] in projects.KEY_ROLES, project_agents=agents)


@bp.post("/projects/<project_id>/key")
@roles_required(*projects.KEY_ROLES)
def mark_key(project_id: str):
    """The admin's 重点项目 form on the project page."""
    with form_outcome("未能标记重点项目") as outcome:
        marked = _mark_key(project_id, {"key_agent": request.form.get("key_agent", ""),
                                        "investment_wan": request.form.get("investment_wan", "")})
        outcome.done = f"已标记为重点项目（绿色通道），{marked} 件办件进入绿色通道"
    return redirect(url_for("projects.detail", project_id=project_id))


@bp.post("/projects/<project_id>/link")
@roles_required(*projects.AGENT_ROLES)
def link(project_id: str):
    """Link an existing case by its id or 收件回执 number."""
    with form_outcome("未能关联") as outcome:
        outcome.done = "已关联办件" if _link(project_id, request.form.get("case_id", "")) else "该办件已在本项目中"
    return redirect(url_for("projects.detail", project_id=project_id))


@bp.route("/projects/<project_id>/file/<code>", methods=["GET", "POST"])
@roles_required(*projects.AGENT_ROLES)
def file_case(project_id: str, code: str):
    """Apply at the hub on the enterprise's behalf for one item (one page: 经办人, form, materials)."""
    conn = get_db()
    project = projects.get(conn, project_id)
    _, items = _catalog()
    item = items.get(code)
    if item is None:
        flash("事项不存在")
        return redirect(url_for("projects.detail", project_id=project_id))
    node = current_node()
    error = None
    values = {f"form_{k}": v for k, v in projects.prefill_form(item, project, {}).items()}
    if request.method == "POST":
        values = {k: v for k, v in request.form.items() if k != "csrf_token"}
        payload = {
            "item_code": code,
            "applicant": {k: request.form.get(f"applicant_{k}", "").strip() for k in ("name", "id_number", "phone")},
            "form": {f["name"]: request.form.get(f"form_{f['name']}", "") for f in item["fields"]},
            "situation": {s["code"]: request.form.get(f"situation_{s['code']}", "")
                          for s in item["situations"] if request.form.get(f"situation_{s['code']}")},
        }
        files, total = [], 0
        try:
            for m in item["materials"]:
                for upload in request.files.getlist(f"material_{m['code']}"):
                    data = upload.read()
                    if data:
                        total += len(data)
                        intake.check_sizes(len(data), total, int(node.config["MAX_ATTACHMENT_BYTES"]),
                                           int(node.config["MAX_CASE_ATTACHMENT_BYTES"]), f"materials.{m['code']}")
                        name = (upload.filename or m["name"]).replace("\\", "/").rsplit("/", 1)[-1][:200]
                        files.append((m["code"], name or m["name"], data))
            receipt = _file(project_id, payload, files)
        except LiandongError as exc:
            error = exc
        else:
            flash(f"已代为申请「{item['name']}」，收件编号 {receipt['receipt_no']}，当前状态：{receipt['status_label']}")
            return redirect(url_for("projects.detail", project_id=project_id))
    return render_template("projects/file.html", project=project, item=item, values=values, error=error,
                           materials=required_materials(item), names=FIELD_NAMES), (400 if error else 200)
