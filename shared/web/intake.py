"""收件: the 办事指南 catalog, the new-case wizard and the agent's cases (village and township).

The wizard follows the GovStack order 情形 → 表单 → 材料 → 确认 and works without JavaScript:
each step is a plain form post, and everything entered so far travels in hidden fields. Material
files are stored content-addressed when they are picked (an orphan file is harmless) and
referred to by their SHA-256 until the application is submitted.
"""

from __future__ import annotations

from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import MultiDict

from shared.core.clock import parse_iso
from shared.core.errors import LiandongError, ValidationError
from shared.rules import materials, progress, states
from shared.rules import things as thing_rules
from shared.rules.catalog import (
    accepts_at,
    form_errors,
    public_view,
    required_materials,
    search,
)
from shared.rules.fees import fee_terms
from shared.rules.idcard import mask_id_number
from shared.services import drafts, inquiries, intake, scanner
from shared.web import access
from shared.web.cases import page_number
from shared.web.context import current_node
from shared.web.db import get_db
from sync.trust import is_expired, metadata_content

bp = Blueprint("intake", __name__)

#: Decided cases whose result the agent hands to the applicant (送达).
RESULT_STATES = progress.RESULT_STATES

STEPS = ("situation", "form", "materials", "confirm")
STEP_LABELS = {"situation": "情形", "form": "表单", "materials": "材料", "confirm": "确认"}

#: A PC clock further off than this from the parent's shows the clock banner.
CLOCK_SKEW_BANNER_MS = 10 * 60 * 1000


def sync_word(case_row) -> str:
    """The case's position in plain words (:func:`shared.rules.progress.word`)."""
    return progress.word(case_row["status"], case_row["sync_state"], case_row["route_level"],
                         filed_at_township=len(case_row["origin"] or "") == 9)


# ---------------------------------------------------------------------------- banners


def _meta(conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM node_meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else None


def banners() -> list[tuple[str, str]]:
    """``[(level, text)]`` to show on every page: offline, wrong clock, stale catalog."""
    node = current_node()
    conn = get_db()
    now = node.now()
    shown = []
    revoked = intake.revoked_notice(conn, node)
    if revoked is not None:
        return [("bad", revoked)]  # nothing else matters on this PC any more
    parent = node.kind.parent_label
    last = _meta(conn, "last_parent_contact")
    limit = float(current_app.config["OFFLINE_BANNER_SECONDS"])
    if last is None:
        shown.append(("warn", f"尚未与{parent}连通过：收件照常进行，办件会在连通后自动发送。"))
    else:
        try:
            ago = now - parse_iso(last)
        except ValueError:
            ago = timedelta(0)
        if ago > timedelta(seconds=limit):
            minutes = int(ago.total_seconds() // 60)
            when = f"{minutes // 60} 小时" if minutes >= 120 else f"{minutes} 分钟"
            shown.append(("warn", f"已有 {when}未连通{parent}（离线）：收件照常进行，办件会在连通后自动发送。"))
    skew = _meta(conn, "clock_skew_ms")
    try:
        skew_ms = int(skew) if skew is not None else 0
    except ValueError:
        skew_ms = 0
    if abs(skew_ms) > CLOCK_SKEW_BANNER_MS:
        direction = "快" if skew_ms > 0 else "慢"
        shown.append(("bad", f"本机时钟比{parent}{direction}了约 {abs(skew_ms) // 60000} 分钟，请校准电脑的日期和时间。"))
    _, _, expires = metadata_content(conn, "catalog")
    if expires is not None and is_expired(expires, now):
        shown.append(("bad", f"办事指南目录已过有效期（{expires[:10]}），请尽快连通上级更新；办理前请与上级核实事项要求。"))
    return shown


@bp.app_context_processor
def inject_banners() -> dict:
    """Every page of a village or township shows the banners to a signed-in user."""
    if getattr(g, "account", None) is None:
        return {"liandong_banners": []}
    try:
        return {"liandong_banners": banners()}
    except Exception:  # a banner must never take a page down
        current_app.logger.exception("banners failed")
        return {"liandong_banners": []}


# ---------------------------------------------------------------------------- API


@bp.get("/api/v1/catalog")
def api_catalog():
    """The catalog this node holds (offline copy of the hub-signed catalog)."""
    conn = get_db()
    version, items = current_node().catalog(conn)
    return jsonify({"version": version, "items": [public_view(i) for i in items.values()],
                    "things": [thing_rules.public_view(t, items) for t in current_node().things(conn).values()]})


@bp.post("/api/v1/cases")
def api_create_case():
    """Take an application; 201 with the 收件回执 number."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    node = current_node()
    _, items = current_node().catalog(get_db())
    code = payload.get("item_code")
    item = items.get(code) if isinstance(code, str) else None
    if item is None:
        raise ValidationError("item_code", "事项不存在或目录尚未同步")
    files = intake.decode_materials(
        payload.get("materials"), item, int(node.config["MAX_ATTACHMENT_BYTES"]),
        int(node.config["MAX_CASE_ATTACHMENT_BYTES"]),
    )
    receipt = intake.submit(get_db(), node, payload, files, g.account["username"])
    return jsonify(receipt), 201


# ---------------------------------------------------------------------------- catalog


@bp.get("/")
def home():
    """The start page: the catalog."""
    return redirect(url_for("intake.catalog"))


@bp.get("/catalog")
def catalog():
    """办事指南: every item this node may accept, searchable by characters or pinyin initials."""
    version, items = current_node().catalog(get_db())
    node = current_node()
    query = request.args.get("q", "").strip()
    listed = [i for i in items.values() if i.get("consultation_only") or accepts_at(i, node.node_id)]
    bundles = intake.offered_things(get_db(), node) if node.kind.takes_applications else []
    if query:
        listed = search(listed, query)
        bundles = [t for t in bundles if query in t["name"]]
    return render_template("intake/catalog.html", items=listed, query=query, version=version,
                           materials={i["code"]: required_materials(i) for i in listed}, things=bundles,
                           thing_items={c: i["name"] for c, i in items.items()})


@bp.get("/catalog/<code>")
def item_guide(code: str):
    """One item's guide: conditions, materials, limits, process."""
    _, items = current_node().catalog(get_db())
    item = items.get(code) or abort(404)
    return render_template("intake/item.html", item=item, materials=required_materials(item),
                           accepts=accepts_at(item, current_node().node_id), fee=fee_terms(item))


# ---------------------------------------------------------------------------- the wizard


def _input_name(field: str | None) -> str | None:
    """The form input that a :class:`LiandongError` field refers to."""
    if not field:
        return None
    if field.startswith("situations."):
        return "situation_" + field.split(".", 1)[1]
    if field.startswith("materials"):
        return "materials"
    return field.replace(".", "_")


def _step_of(field: str | None) -> str | None:
    if not field:
        return None
    if field.startswith("situations"):
        return "situation"
    if field.startswith(("applicant", "form")):
        return "form"
    if field.startswith("materials"):
        return "materials"
    return None


class FieldErrors(ValidationError):
    """Several field errors of one wizard step, all shown at once (the first names the field)."""

    def __init__(self, errors: list[ValidationError]) -> None:
        super().__init__(errors[0].field, f"有 {len(errors)} 处需要修改，请看标红的栏目：" +
                         "；".join(e.message for e in errors) if len(errors) > 1 else errors[0].message, errors[0].code)
        self.errors = errors


class _State:
    """Everything entered so far, read from the posted form."""

    def __init__(self, item: dict, form) -> None:
        self.item = item
        self.answers = {s["code"]: form.get(f"situation_{s['code']}", "") for s in item["situations"]}
        self.answers = {k: v for k, v in self.answers.items() if v}
        self.applicant = {k: form.get(f"applicant_{k}", "").strip() for k in ("name", "id_number", "phone")}
        self.form = {f["name"]: form.get(f"form_{f['name']}", "") for f in item["fields"]}
        self.entrusted = form.get("entrust_consent") == "yes"
        # 免提交: the QR text of an electronic licence cited for a material that accepts one.
        self.licences = {m["code"]: form.get(f"licence_{m['code']}", "").strip()
                         for m in item["materials"] if m.get("licence_of")}
        self.licences = {k: v for k, v in self.licences.items() if v}
        self.materials = kept_files(form, {m["code"] for m in item["materials"]}, form.get("remove_material", ""))

    def hidden(self, current: str) -> list[tuple[str, str]]:
        """Hidden inputs carrying the steps other than ``current``."""
        out = []
        if current != "situation":
            out += [(f"situation_{k}", v) for k, v in self.answers.items()]
        if current != "form":
            out += [(f"applicant_{k}", v) for k, v in self.applicant.items()]
            out += [(f"form_{k}", v) for k, v in self.form.items()]
        if current != "materials":
            out += [(f"licence_{k}", v) for k, v in self.licences.items()]
        out += [("kept_material", f"{m['code']}:{m['sha256']}:{m['size']}:{m['filename']}") for m in self.materials]
        return out

    def values(self) -> dict:
        """Input name -> value, to refill the visible inputs."""
        out = {f"situation_{k}": v for k, v in self.answers.items()}
        out.update({f"applicant_{k}": v for k, v in self.applicant.items()})
        out.update({f"form_{k}": v for k, v in self.form.items()})
        out.update({f"licence_{k}": v for k, v in self.licences.items()})
        return out

    def needed(self) -> list[dict]:
        try:
            return required_materials(self.item, self.answers)
        except ValidationError:
            return required_materials(self.item)

    def missing(self) -> list[dict]:
        have = {m["code"] for m in self.materials} | set(self.licences)
        return [m for m in self.needed() if m["code"] not in have]

    def add_uploads(self, files) -> None:
        take_uploads(files, self.item["materials"], self.materials)

    def add_scans(self, form) -> list[str]:
        """Attach the files ticked in the scanner folder (``scan_<material code>``: plain file names
        read from ``SCANNER_FOLDER`` only); with ``scan_move_done`` they go to its ``done/`` subfolder."""
        node = current_node()
        folder = scanner.folder_of(node.config.get("SCANNER_FOLDER"))
        max_file = int(node.config["MAX_ATTACHMENT_BYTES"])
        total = sum(m["size"] for m in self.materials)
        attached: list[str] = []
        for m in self.item["materials"]:
            for name in form.getlist(f"scan_{m['code']}"):
                data = scanner.read_scan(folder, name, max_file, f"materials.{m['code']}")
                materials.check_file(data, name, m, f"materials.{m['code']}")
                total += len(data)
                intake.check_sizes(len(data), total, max_file, int(node.config["MAX_CASE_ATTACHMENT_BYTES"]),
                                   f"materials.{m['code']}")
                sha256 = node.blobs.put(data)
                if not any(x["sha256"] == sha256 and x["code"] == m["code"] for x in self.materials):
                    self.materials.append({"code": m["code"], "sha256": sha256, "size": len(data), "filename": name})
                attached.append(name)
        if attached and folder is not None and form.get("scan_move_done") == "yes":
            for name in dict.fromkeys(attached):
                scanner.move_done(folder, name)
        return attached

    def check(self, step: str) -> None:
        """Validate one step; raises the domain error naming the field."""
        if step == "situation":
            required_materials(self.item, self.answers, strict=True)
        elif step == "form":
            errors = intake.applicant_errors(self.applicant) + form_errors(self.item, self.form)
            if errors:
                raise FieldErrors(errors)

    def payload(self) -> dict:
        payload = {"item_code": self.item["code"], "applicant": self.applicant, "form": self.form,
                   "situation": self.answers}
        if current_node().kind.files_on_behalf:
            # 为民代办: the agent files on the villager's behalf, under a signed 委托.
            payload["entrustment"] = {"consent": self.entrusted}
        if self.licences:
            payload["cited_licences"] = [{"material": k, "token": v} for k, v in self.licences.items()]
        return payload

    def files(self) -> list[tuple[str, str, bytes]]:
        node = current_node()
        return [(m["code"], m["filename"], node.blobs.read(m["sha256"])) for m in self.materials]


def kept_files(form, known: set[str], removed: str = "") -> list[dict]:
    """The files picked earlier and carried in ``kept_material`` hidden fields
    (``code:sha256:size:filename``): only of ``known`` material codes, stored here, not
    ``removed``, each once."""
    node = current_node()
    kept: list[dict] = []
    for value in form.getlist("kept_material"):
        parts = value.split(":", 3)
        if len(parts) != 4 or parts[0] not in known or not (parts[2].isascii() and parts[2].isdigit()):
            continue
        code, sha256, size, filename = parts
        if sha256 == removed or not node.blobs.has(sha256):
            continue
        if not any(k["sha256"] == sha256 and k["code"] == code for k in kept):
            kept.append({"code": code, "sha256": sha256, "size": int(size), "filename": filename})
    return kept


def take_uploads(files, wanted: list[dict], kept: list[dict]) -> None:
    """Store the files picked for each of the ``wanted`` materials (``material_<code>`` inputs),
    checked by size and content, and add them to ``kept`` once each (``{code, sha256, size,
    filename}``; the wizard and the 一件事 form carry these in hidden fields)."""
    node = current_node()
    total = sum(k["size"] for k in kept)
    for m in wanted:
        for upload in files.getlist(f"material_{m['code']}"):
            data = upload.read()
            if not data:
                continue
            total += len(data)
            intake.check_sizes(len(data), total, int(node.config["MAX_ATTACHMENT_BYTES"]),
                               int(node.config["MAX_CASE_ATTACHMENT_BYTES"]), f"materials.{m['code']}")
            filename = (upload.filename or m["name"]).replace("\\", "/").rsplit("/", 1)[-1][:200] or m["name"]
            materials.check_file(data, filename, m, f"materials.{m['code']}")
            sha256 = node.blobs.put(data)
            if not any(k["sha256"] == sha256 and k["code"] == m["code"] for k in kept):
                kept.append({"code": m["code"], "sha256": sha256, "size": len(data), "filename": filename})


def _steps(item: dict) -> tuple[str, ...]:
    return STEPS if item["situations"] else STEPS[1:]


@bp.route("/cases/new/<code>", methods=["GET", "POST"])
def new_case(code: str):
    """The new-case wizard (情形 → 表单 → 材料 → 确认); on success the printable 收件回执."""
    _, items = current_node().catalog(get_db())
    item = items.get(code) or abort(404)
    node = current_node()
    if item.get("consultation_only") or not accepts_at(item, node.node_id):
        return redirect(url_for("intake.item_guide", code=code))
    steps = _steps(item)
    step = steps[0]
    posted_form = request.form
    if request.method == "GET" and request.args.get("draft"):
        # 继续 a 暂存 draft: its saved inputs as if they had just been posted.
        draft = drafts.get(get_db(), request.args["draft"])
        if draft["item_code"] != code:
            abort(404)
        saved = draft["state"]
        posted_form = MultiDict([*saved["values"].items(), *(("kept_material", k) for k in saved["kept"]),
                                 ("draft_id", draft["draft_id"])])
        if saved.get("entrusted"):
            posted_form.add("entrust_consent", "yes")
        step = draft["step"] if draft["step"] in steps else step
    state = _State(item, posted_form)
    draft_id = posted_form.get("draft_id", "")
    error = None
    if request.method == "POST":
        posted = request.form.get("step")
        go = request.form.get("go", "next")
        one_page = posted not in steps  # a one-page form post (no wizard): everything at once
        if one_page:
            posted, go = "confirm", "submit"
        step = posted
        try:
            if posted == "materials" or one_page:
                state.add_uploads(request.files)
                state.add_scans(request.form)
            if request.form.get("remove_material"):
                go = "stay"
            elif go == "draft":
                # 暂存: kept on this PC only (no case, no receipt, never sent) until submitted.
                kept = [v for k, v in state.hidden("") if k == "kept_material"]
                drafts.save(get_db(), draft_id or None, item, posted,
                            {"values": state.values(), "kept": kept, "entrusted": state.entrusted},
                            g.account["username"], node.now())
                flash(f"已暂存「{item['name']}」（尚未提交，不会发送）；可在“我的办件”中继续办理")
                return redirect(url_for("intake.my_cases"))
            elif go == "back":
                step = steps[max(0, steps.index(posted) - 1)]
            elif go in steps and steps.index(go) < steps.index(posted):
                step = go
            elif go == "submit":
                for earlier in steps[:-1] if not one_page else ():
                    state.check(earlier)
                receipt = intake.submit(get_db(), node, state.payload(), state.files(), g.account["username"],
                                        also=(lambda conn: drafts.delete(conn, draft_id)) if draft_id else None)
                if draft_id:  # a draft an inquiry became (咨询转办件) now names its case
                    inquiries.link_case(get_db(), draft_id, receipt["case_id"])
                return redirect(url_for("cases.receipt", case_id=receipt["case_id"], new=1))
            elif go != "stay":
                state.check(posted)
                step = steps[min(len(steps) - 1, steps.index(posted) + 1)]
        except LiandongError as exc:
            error = exc
            step = _step_of(exc.field) if _step_of(exc.field) in steps else posted
    return render_template(
        "intake/wizard.html", item=item, steps=steps, step=step, labels=STEP_LABELS, state=state,
        values=state.values(), error=error, error_input=_input_name(getattr(error, "field", None)),
        field_errors={_input_name(e.field): e.message for e in getattr(error, "errors", [error] if error else [])},
        needed=state.needed(), missing=state.missing(), mask=mask_id_number, draft_id=draft_id,
        max_file_mb=int(node.config["MAX_ATTACHMENT_BYTES"]) // (1024 * 1024),
        scanner_set=bool(node.config.get("SCANNER_FOLDER")),
        scans=scanner.list_scans(scanner.folder_of(node.config.get("SCANNER_FOLDER")),
                                 int(node.config["MAX_ATTACHMENT_BYTES"])) if step == "materials" else [],
    ), (400 if error else 200)


# ---------------------------------------------------------------------------- lists


#: Rows per page of the lists (我的办件, 结果送达).
LIST_PAGE = 100


def _own_cases(where: str = "", params: tuple = ()) -> dict:
    """One page of the cases taken here (newest first), with the total and the page numbers."""

    query = request.args.get("q", "").strip()
    readable, readable_args = access.list_filter("cases")
    sql = f" FROM cases WHERE origin = ? AND {readable}" + where
    args: list = [current_node().node_id, *readable_args, *params]
    if query:
        sql += " AND (receipt_no LIKE ? OR applicant_name LIKE ? OR item_name LIKE ?)"
        args += [f"%{query}%"] * 3
    conn = get_db()
    total = conn.execute("SELECT COUNT(*)" + sql, args).fetchone()[0]
    pages = max(1, -(-total // LIST_PAGE))
    page = min(page_number(), pages)
    rows = conn.execute("SELECT *" + sql + " ORDER BY submitted_at DESC LIMIT ? OFFSET ?",
                        [*args, LIST_PAGE, (page - 1) * LIST_PAGE]).fetchall()
    access.audit_list(request.path, [r["case_id"] for r in rows])
    return {"rows": rows, "total": total, "page": page, "pages": pages, "query": query,
            "pager_args": {"q": query} if query else {}}


@bp.get("/cases")
def my_cases():
    """The cases taken at this node, newest first, with where each one is in plain words."""
    return render_template("intake/my_cases.html", **_own_cases(), sync_word=sync_word, mask=mask_id_number,
                           word_classes=progress.WORD_CLASSES, legend=progress.legend,
                           label=states.status_label, drafts=drafts.listed(get_db()), step_labels=STEP_LABELS)


@bp.post("/drafts/<draft_id>/delete")
def delete_draft(draft_id: str):
    """Discard a 暂存 draft (it was never sent)."""
    if drafts.delete(get_db(), draft_id):
        flash("已删除暂存的办件")
    return redirect(url_for("intake.my_cases"))


@bp.get("/results")
def results():
    """Decided cases whose result is to be handed to the applicant (准予 / 不予许可 / 不予受理)."""
    listed = _own_cases(f" AND status IN ({','.join('?' * len(RESULT_STATES))})", RESULT_STATES)
    return render_template("intake/results.html", **listed, mask=mask_id_number, label=states.status_label)
