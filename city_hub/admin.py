"""The provisioning admin's pages: the node tree, enrolment tokens, quarantined envelopes."""

from datetime import timedelta

from flask import Blueprint, g, redirect, render_template, request, url_for

from provisioning.enrolment import create_token
from shared.errors import LiandongError
from shared.storage import write_transaction
from shared.web import current_node
from shared.web.auth import roles_required

from .db import get_db

bp = Blueprint("admin", __name__)


@bp.get("/")
def home():
    """Admins start at the node tree, everyone else at their queue."""
    return redirect(url_for("admin.nodes" if g.account["role"] == "admin" else "cases.queue"))


@bp.route("/admin/nodes", methods=["GET", "POST"])
@roles_required("admin", "supervisor")
def nodes():
    """The node tree; an admin creates enrolment tokens here."""
    conn = get_db()
    token = error = None
    if request.method == "POST" and g.account["role"] == "admin":
        try:
            with write_transaction(conn):
                token = create_token(conn, request.form.get("node_id", "").strip(), request.form.get("name", "").strip(),
                                     None, timedelta(hours=int(request.form.get("ttl_hours") or 24)),
                                     current_node().now(), g.account["username"])
        except (LiandongError, ValueError) as exc:
            error = getattr(exc, "message", str(exc))
    rows = conn.execute(
        "SELECT n.*, (SELECT acked_seq FROM origin_heads h WHERE h.origin = n.node_id) AS acked_seq,"
        " (SELECT COUNT(*) FROM quarantine q WHERE q.origin = n.node_id AND q.resolved_at IS NULL) AS quarantined"
        " FROM nodes n ORDER BY n.node_id"
    ).fetchall()
    quarantine = conn.execute(
        "SELECT id, origin, seq, reason, detail, received_at FROM quarantine WHERE resolved_at IS NULL"
        " ORDER BY id DESC LIMIT 100"
    ).fetchall()
    return render_template("admin/nodes.html", rows=rows, token=token, error=error, quarantine=quarantine)
