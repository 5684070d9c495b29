"""一件事一次办 and 证照联办 (seed 004 §7, §11): one merged form, one receipt, one progress.

The merged form is one page that works without JavaScript (a village PC offline serves it from
its own catalog copy): each shared field and each shared material once. Files picked are
stored content-addressed at once and kept in hidden fields, so a form sent back with an error
does not ask for them again. The thing's cases are ordinary cases; its page shows them
together and prints the one 收件回执 and, once every step has its result, the one
办结通知书 for the villager.
"""

from __future__ import annotations

from flask import Blueprint, abort, g, jsonify, redirect, render_template, request, url_for

from shared.core.errors import LiandongError, ValidationError
from shared.rules import things as rules
from shared.rules.catalog import required_materials
from shared.rules.idcard import mask_id_number
from shared.services import intake, things
from shared.web import access
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.intake import kept_files, take_uploads

bp = Blueprint("things", __name__)


def progress_for_reader(thing_id: str) -> dict:
    """A thing's progress, if the account may read every case of it (else 404, as for a case)."""
    found = things.progress(get_db(), current_node(), thing_id)
    unmasked = all([access.require_read(step["case_id"]).unmasked for step in found["steps"]])
    if not unmasked:
        found["id_number"] = mask_id_number(found["id_number"])
    return found


# ---------------------------------------------------------------------------- API


@bp.post("/api/v1/things")
def api_create_thing():
    """一件事一次办: one merged application; 201 with the thing id and a receipt per case."""
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    node, conn = current_node(), get_db()
    thing, items = intake.acceptable_thing(conn, node, payload.get("thing_code"))
    union = {m["code"]: m for item in rules.step_items(thing, items) for m in item["materials"]}
    files = intake.decode_materials(payload.get("materials"), {"materials": list(union.values())},
                                    int(node.config["MAX_ATTACHMENT_BYTES"]),
                                    int(node.config["MAX_CASE_ATTACHMENT_BYTES"]))
    return jsonify(intake.submit_thing(conn, node, payload, files, g.account["username"])), 201


@bp.get("/api/v1/things/<thing_id>")
def api_thing(thing_id: str):
    """One thing's overall progress: each step's case and status."""
    return jsonify(progress_for_reader(thing_id))


# ---------------------------------------------------------------------------- pages


class _MergedForm:
    """What the merged form holds so far, read from the posted form."""

    def __init__(self, thing: dict, items: dict, form) -> None:
        self.situations = rules.merged_situations(thing, items)
        self.fields = rules.merged_fields(thing, items)
        self.answers = {s["code"]: form.get(f"situation_{s['code']}", "") for s in self.situations}
        self.answers = {k: v for k, v in self.answers.items() if v}
        self.applicant = {k: form.get(f"applicant_{k}", "").strip() for k in ("name", "id_number", "phone")}
        self.form = {f["name"]: form.get(f"form_{f['name']}", "") for f in self.fields}
        self.entrusted = form.get("entrust_consent") == "yes"
        self.materials = rules.merged_materials(thing, items, self._valid_answers(), required_materials)
        self.kept = kept_files(form, {m["code"] for m in self.materials if not m["from_step"]})

    def _valid_answers(self) -> dict:
        """The answers given so far that are options of their question (they decide what is required)."""
        answers = {}
        for s in self.situations:
            if self.answers.get(s["code"]) in {o["value"] for o in s["options"]}:
                answers[s["code"]] = self.answers[s["code"]]
        return answers

    def add_uploads(self, files) -> None:
        take_uploads(files, [m for m in self.materials if not m["from_step"]], self.kept)

    def check(self) -> None:
        for s in self.situations:
            if s["code"] not in self.answers:
                raise ValidationError(f"situations.{s['code']}", f"请回答：{s['question']}", code="required")
        errors = intake.applicant_errors(self.applicant)
        if errors:
            raise errors[0]

    def payload(self, thing: dict) -> dict:
        payload = {"thing_code": thing["code"], "applicant": self.applicant, "form": self.form,
                   "situation": self.answers}
        if current_node().kind.files_on_behalf:
            payload["entrustment"] = {"consent": self.entrusted}  # 为民代办, as for one case
        return payload

    def files(self) -> list[tuple[str, str, bytes]]:
        node = current_node()
        return [(k["code"], k["filename"], node.blobs.read(k["sha256"])) for k in self.kept]


def _input_name(field: str | None) -> str | None:
    if not field:
        return None
    if field.startswith("situations."):
        return "situation_" + field.split(".", 1)[1]
    return field.replace(".", "_")


@bp.route("/things/new/<code>", methods=["GET", "POST"])
def new_thing(code: str):
    """The merged form of a 一件事; on success its page with the one 收件回执."""
    conn, node = get_db(), current_node()
    try:
        thing, items = intake.acceptable_thing(conn, node, code)
    except LiandongError:
        abort(404)
    state = _MergedForm(thing, items, request.form)
    error = None
    if request.method == "POST":
        try:
            state.add_uploads(request.files)
            if request.form.get("go") == "submit":
                state.check()
                done = intake.submit_thing(conn, node, state.payload(thing), state.files(), g.account["username"])
                return redirect(url_for("things.thing_page", thing_id=done["thing_id"], new=1))
        except LiandongError as exc:
            error = exc
    return render_template(
        "things/new.html", thing=thing, items=items, steps=rules.step_items(thing, items), state=state, error=error,
        error_input=_input_name(getattr(error, "field", None)), mask=mask_id_number,
        max_file_mb=int(node.config["MAX_ATTACHMENT_BYTES"]) // (1024 * 1024),
    ), (400 if error else 200)


@bp.get("/things/<thing_id>")
def thing_page(thing_id: str):
    """A thing's overall progress and its one printable 收件回执."""
    found = progress_for_reader(thing_id)
    return render_template("things/thing.html", thing=found, node=current_node(), fresh=request.args.get("new") == "1")


@bp.get("/things/<thing_id>/notice")
def thing_notice(thing_id: str):
    """The one printable 一件事办结通知书, once every step has its result."""
    found = progress_for_reader(thing_id)
    if found["overall"] == "in_progress":
        raise ValidationError("status", "该一件事尚有事项未办结，暂不能打印办结通知书")
    conn = get_db()
    for step in found["steps"]:
        step["documents"] = [dict(r) for r in conn.execute(
            "SELECT kind, number, code FROM documents WHERE case_id = ? AND kind NOT IN ('receipt', 'deliver')"
            " ORDER BY issued_at", (step["case_id"],))]
    return render_template("things/notice.html", thing=found, node=current_node())
