"""制式文书 pages: print a signed document (A4, QR code), verify one offline (page and API), record 送达."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup

from shared.core.crypto import SignatureError
from shared.core.errors import Forbidden, LiandongError, RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.services import accounts, casework, documents, names, retention
from shared.web import access
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.limits import json_object
from sync import envelope
from sync.client import SyncUnavailable
from sync.node_sync import client_for

bp = Blueprint("documents", __name__)


def _qr_svg(text: str | None) -> Markup | None:
    # Inline SVG with a viewBox (no width/height): no image request, prints sharp, works offline,
    # and CSS scales the whole symbol (38 mm for ≤ 95 modules: ≥ 0.4 mm a module).
    if text is None:
        return None
    import segno  # optional: loaded when a QR is first drawn, not with every page of a village (~0.7 MiB)

    return Markup(segno.make(text, error="m").svg_inline(omitsize=True, border=4, dark="#000", svgclass="qr"))


def _load(doc_id: str) -> dict:
    row = get_db().execute("SELECT document FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
    if row is None:
        abort(404)
    return envelope.from_bytes(row["document"])


@bp.get("/cases/<case_id>/documents")
def for_case(case_id: str):
    """The signed documents of a case held at this node."""
    casework.get_row(get_db(), case_id)
    held = [(envelope.document_id(d), envelope.peek(d), documents.verification_code(d))
            for d in documents.for_case(get_db(), case_id)]
    row = casework.get_row(get_db(), case_id)
    return render_template("documents/list.html", case_id=case_id, held=held, purged_at=row["purged_at"],
                           may_refetch=_may_refetch(row))


def _may_refetch(row) -> bool:
    """The node that took the case, with a parent to ask, by its agent or clerk."""
    node = current_node()
    return (row["origin"] == node.node_id and bool(node.config.get("PARENT_URL"))
            and g.account["role"] in ("agent", "clerk"))


def _refetch(case_id: str) -> int:
    conn = get_db()
    row = casework.get_row(conn, case_id)
    if not _may_refetch(row):
        raise Forbidden("只有收件节点的代办员或站员可以向上级取回文书")
    node = current_node()
    try:
        fetched = client_for(node).case_documents(case_id)
    except SyncUnavailable as exc:
        raise LiandongError("parent_unavailable", "暂时无法连接上级节点，请联网后再取回文书", status=503) from exc
    if not isinstance(fetched, list) or not all(isinstance(d, dict) for d in fetched):
        raise LiandongError("parent_unavailable", "上级节点的答复无法识别，请稍后再试", status=502)
    return retention.refetch_documents(conn, node, case_id, fetched, node.trust(conn))


@bp.post("/cases/<case_id>/documents/refetch")
def refetch(case_id: str):
    """取回文书: fetch a case's signed documents again from the parent (reprinting a purged case)."""
    try:
        count = _refetch(case_id)
    except LiandongError as exc:
        flash(exc.message)
    else:
        flash(f"已从上级取回 {count} 份文书，可以打印")
    return redirect(url_for("documents.for_case", case_id=case_id))


@bp.post("/api/v1/cases/<case_id>/documents/refetch")
def api_refetch(case_id: str):
    """取回文书 for machines: how many signed documents the parent returned (now held here)."""
    if request.get_data():
        json_object()  # no parameters; a body, if any, is an (empty) JSON object
    return jsonify({"case_id": case_id, "refetched": _refetch(case_id)})


@bp.get("/documents/<doc_id>")
def show(doc_id: str):
    """One document, ready to print on A4, with its QR code and verification code."""
    signed = _load(doc_id)
    body = envelope.peek(signed)
    access.require_read(body["case_id"])  # the document names the applicant: the case's readers only
    with write_transaction(get_db()):
        accounts.audit(get_db(), g.account["username"], "document.read", body["case_id"], doc_id, current_node().now())
    return render_template("documents/print.html", doc=body, code=documents.verification_code(signed), seal=names.SEAL,
                           qr=_qr_svg(documents.qr_text(signed)))


@bp.route("/verify", methods=["GET", "POST"])
def verify():
    """Check a paper document: scan its QR code into the box (a scanner types it), type its 核验码,
    or paste its full signed record."""
    result = error = None
    if request.method == "POST":
        try:
            result = documents.check(get_db(), current_node().trust(get_db()), token=request.form.get("qr", ""),
                                     code=request.form.get("code", ""), record=request.form.get("record", ""))
        except SignatureError as exc:
            error = f"核验未通过：{exc}"
    return render_template("documents/verify.html", result=result, error=error)


@bp.post("/api/v1/documents/verify")
def verify_api():
    """文书核验 for machines: ``{"token"}``, ``{"code"}`` or ``{"record"}`` (text or the record object)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationError("body", "请求体应为JSON对象")
    record = data.get("record", "")
    if isinstance(record, dict):
        record = envelope.to_bytes(record).decode("utf-8")
    fields = {"token": data.get("token", ""), "code": data.get("code", ""), "record": record}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise ValidationError(name, "应为文本")
    try:
        return jsonify({"valid": True, **documents.check(get_db(), current_node().trust(get_db()), **fields)})
    except SignatureError as exc:
        raise RuleError("document_not_verified", f"核验未通过：{exc}") from exc


@bp.post("/cases/<case_id>/deliver")
def deliver(case_id: str):
    """送达: the node that took the application hands the result to the applicant."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    node = current_node()
    if row["origin"] != node.node_id or g.account["role"] not in ("agent", "clerk"):
        raise Forbidden("只有收件的代办员或站员可以登记送达")
    manner = request.form.get("manner", names.DELIVERY_MANNERS[0])  # API-style posts without it: 直接送达
    if manner not in names.DELIVERY_MANNERS:
        flash("请选择送达方式")
        return redirect(url_for("cases.detail", case_id=case_id))
    with write_transaction(conn):
        casework.deliver(conn, node, case_id, g.account["username"], request.form.get("comment", "").strip(),
                         manner, g.account["display_name"])
    flash("已登记送达，送达回证已生成")
    return redirect(url_for("documents.for_case", case_id=case_id))
