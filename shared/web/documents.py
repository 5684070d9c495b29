"""制式文书 pages: print a signed document (A4, QR code), verify one offline, record 送达."""

from __future__ import annotations

import segno
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from shared.core.crypto import SignatureError
from shared.core.errors import Forbidden
from shared.core.storage import write_transaction
from shared.services import accounts, casework, documents
from shared.web.context import current_node
from shared.web.db import get_db
from sync import envelope

bp = Blueprint("documents", __name__)


def _qr_svg(text: str) -> Markup:
    # Inline SVG: no image request, prints sharp, works offline.
    return Markup(segno.make(text, error="l").svg_inline(scale=2, dark="#000"))


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
    return render_template("documents/list.html", case_id=case_id, held=held)


@bp.get("/documents/<doc_id>")
def show(doc_id: str):
    """One document, ready to print on A4, with its QR code and verification code."""
    signed = _load(doc_id)
    body = envelope.peek(signed)
    with write_transaction(get_db()):
        accounts.audit(get_db(), g.account["username"], "document.read", body["case_id"], doc_id, current_node().now())
    return render_template("documents/print.html", doc=body, code=documents.verification_code(signed),
                           qr=_qr_svg(documents.qr_text(signed)))


@bp.route("/verify", methods=["GET", "POST"])
def verify():
    """Check a paper document: scan its QR code into the box (a scanner types it) or enter its code."""
    result = error = None
    if request.method == "POST":
        text = request.form.get("qr", "").strip()
        code = request.form.get("code", "").strip().upper()
        trust = current_node().trust(get_db())
        try:
            if text:
                signed = documents.from_qr_text(text)
            elif code:
                row = get_db().execute("SELECT document FROM documents WHERE code = ?", (code,)).fetchone()
                if row is None:
                    raise SignatureError("本节点没有该校验码对应的文书，请扫描文书上的二维码核验")
                signed = envelope.from_bytes(row["document"])
            else:
                raise SignatureError("请扫描二维码或输入校验码")
            result = {"doc": documents.verify(signed, trust), "code": documents.verification_code(signed)}
            if code and code != result["code"]:
                raise SignatureError("校验码与二维码中的文书不一致")
        except SignatureError as exc:
            result, error = None, f"核验未通过：{exc}"
    return render_template("documents/verify.html", result=result, error=error)


@bp.post("/cases/<case_id>/deliver")
def deliver(case_id: str):
    """送达: the node that took the application hands the result to the applicant."""
    conn = get_db()
    row = casework.get_row(conn, case_id)
    node = current_node()
    if row["origin"] != node.node_id or g.account["role"] not in ("agent", "clerk"):
        raise Forbidden("只有收件的代办员或站员可以登记送达")
    with write_transaction(conn):
        casework.deliver(conn, node, case_id, g.account["username"], request.form.get("comment", ""))
    flash("已登记送达，送达回证已生成")
    return redirect(url_for("documents.for_case", case_id=case_id))
