"""收件: the 办事指南 catalog, the new-case form and the agent's cases (village and township)."""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, url_for

from shared import intake, states
from shared.catalog import accepts_at, public_view, required_materials, search
from shared.errors import LiandongError, ValidationError
from shared.idcard import mask_id_number

from . import current_node
from .db import get_db

bp = Blueprint("intake", __name__)

SYNC_WORDS = {"pending": "未发送", "custody": "已到乡镇", "acked": "已到市中心"}


def sync_word(case_row) -> str:
    """The case's position in plain words (未发送 / 已到乡镇 / 已到市中心 / 已受理 / 已办结)."""
    if case_row["status"] in ("CONCLUDED",):
        return "已办结"
    if case_row["status"] not in ("SUBMITTED", "RECEIVED"):
        return states.status_label(case_row["status"])
    return SYNC_WORDS.get(case_row["sync_state"], "已提交")


@bp.get("/api/v1/catalog")
def api_catalog():
    """The catalog this node holds (offline copy of the hub-signed catalog)."""
    version, items = intake.catalog_items(get_db())
    return jsonify({"version": version, "items": [public_view(i) for i in items.values()]})


@bp.post("/api/v1/cases")
def api_create_case():
    """Take an application; 201 with the 收件回执 number."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    node = current_node()
    _, items = intake.catalog_items(get_db())
    item = items.get(payload.get("item_code"))
    if item is None:
        raise ValidationError("item_code", "事项不存在或目录尚未同步")
    files = intake.decode_materials(
        payload.get("materials"), item, int(node.config["MAX_ATTACHMENT_BYTES"]),
        int(node.config["MAX_CASE_ATTACHMENT_BYTES"]),
    )
    receipt = intake.submit(get_db(), node, payload, files, g.account["username"])
    return jsonify(receipt), 201


@bp.get("/")
def home():
    """The start page: the catalog."""
    return redirect(url_for("intake.catalog"))


@bp.get("/catalog")
def catalog():
    """办事指南: every item this node may accept, searchable by characters or pinyin initials."""
    version, items = intake.catalog_items(get_db())
    node = current_node()
    query = request.args.get("q", "").strip()
    listed = [i for i in items.values() if i.get("consultation_only") or accepts_at(i, node.node_id)]
    if query:
        listed = search(listed, query)
    return render_template("intake/catalog.html", items=listed, query=query, version=version)


@bp.get("/catalog/<code>")
def item_guide(code: str):
    """One item's guide: conditions, materials, limits, process."""
    _, items = intake.catalog_items(get_db())
    item = items.get(code) or abort(404)
    return render_template("intake/item.html", item=item, materials=required_materials(item))


@bp.route("/cases/new/<code>", methods=["GET", "POST"])
def new_case(code: str):
    """The application form; on success the printable 收件回执."""
    _, items = intake.catalog_items(get_db())
    item = items.get(code) or abort(404)
    node = current_node()
    error = None
    if request.method == "POST":
        payload = {
            "item_code": code,
            "applicant": {k: request.form.get(f"applicant_{k}", "") for k in ("name", "id_number", "phone")},
            "form": {f["name"]: request.form.get(f"form_{f['name']}", "") for f in item["fields"]},
        }
        files, total = [], 0
        try:
            for m in item["materials"]:
                for upload in request.files.getlist(f"material_{m['code']}"):
                    data = upload.read()
                    if data:
                        total += len(data)
                        intake.check_sizes(len(data), total, int(node.config["MAX_ATTACHMENT_BYTES"]),
                                           int(node.config["MAX_CASE_ATTACHMENT_BYTES"]), m["name"])
                        files.append((m["code"], upload.filename or m["name"], data))
            receipt = intake.submit(get_db(), node, payload, files, g.account["username"])
        except LiandongError as exc:
            error = exc
        else:
            return redirect(url_for("cases.receipt", case_id=receipt["case_id"]))
    return render_template("intake/new_case.html", item=item, error=error, values=request.form), (400 if error else 200)


@bp.get("/cases")
def my_cases():
    """The cases taken at this node, newest first, with where each one is."""
    rows = get_db().execute(
        "SELECT * FROM cases WHERE origin = ? ORDER BY submitted_at DESC LIMIT 500", (current_node().node_id,)
    ).fetchall()
    return render_template("intake/my_cases.html", rows=rows, sync_word=sync_word, mask=mask_id_number)
