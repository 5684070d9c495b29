"""电子证照 at the hub: a holder's licences and their revocation (rules in shared/rules/licences.py)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for

from shared.core.errors import LiandongError, ValidationError
from shared.core.storage import write_transaction
from shared.services import accounts, licences
from shared.web.auth import roles_required
from shared.web.context import current_node
from shared.web.db import get_db
from shared.web.errors import form_outcome

bp = Blueprint("licences", __name__)

#: Who looks up a holder's licences (the offices that check them, and oversight).
VIEW_ROLES = ("window", "chief", "head", "supervisor", "admin")
#: Who revokes one: the department's head, or the hub's admin.
REVOKE_ROLES = ("head", "admin")


def _for_holder(holder: str) -> list[dict]:
    node = current_node()
    conn = get_db()
    found = licences.for_holder(conn, holder, node.clock.today_cn())
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "licence.read", holder.strip().upper(), None, node.now())
    return found


def _revoke(doc_id: str, reason) -> dict:
    node = current_node()
    conn = get_db()
    with write_transaction(conn):
        done = licences.revoke(conn, node, doc_id, reason, g.account["username"])
        accounts.audit(conn, g.account["username"], "licence.revoke", doc_id, done["reason"], node.now())
    return done


@bp.get("/api/v1/licences")
@roles_required(*VIEW_ROLES)
def api_for_holder():
    """The licences the hub holds for ``?holder=`` (身份证号 or 统一社会信用代码)."""
    return jsonify({"licences": _for_holder(request.args.get("holder", ""))})


@bp.post("/api/v1/licences/<doc_id>/revoke")
@roles_required(*REVOKE_ROLES)
def api_revoke(doc_id: str):
    """Revoke a licence ``{"reason"}``: it no longer verifies here, nor where the revocation reaches."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    return jsonify({"revocation": _revoke(doc_id, body.get("reason"))})


@bp.get("/licences")
@roles_required(*VIEW_ROLES)
def index():
    """Look up a holder's licences."""
    holder = request.args.get("holder", "").strip()
    error, rows = None, []
    if holder:
        try:
            rows = _for_holder(holder)
        except LiandongError as exc:
            error = exc
    return render_template("licences/index.html", holder=holder, rows=rows, error=error,
                           may_revoke=g.account["role"] in REVOKE_ROLES)


@bp.post("/licences/<doc_id>/revoke")
@roles_required(*REVOKE_ROLES)
def revoke(doc_id: str):
    """The revoke form of the licences page."""
    with form_outcome("未能吊销", "电子证照已吊销"):
        _revoke(doc_id, request.form.get("reason", ""))
    return redirect(url_for("licences.index", holder=request.form.get("holder", "")))
