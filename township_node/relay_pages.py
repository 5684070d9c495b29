"""The relay's health: per village, when it was last seen and what is in custody."""

from flask import Blueprint, render_template

from sync import outbox

from .db import get_db

bp = Blueprint("relay", __name__, url_prefix="/relay")


@bp.get("")
def overview():
    """Custody per village and what is waiting upstream."""
    conn = get_db()
    villages = conn.execute(
        "SELECT p.node_id, p.last_seen, p.last_push_count,"
        " (SELECT COUNT(*) FROM custody c WHERE c.origin = p.node_id) AS in_custody,"
        " (SELECT acked_seq FROM acks a WHERE a.origin = p.node_id) AS acked_seq"
        " FROM peer_status p ORDER BY p.node_id"
    ).fetchall()
    last = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()
    return render_template(
        "relay/overview.html", villages=villages, own=outbox.counts(conn),
        custody_total=conn.execute("SELECT COUNT(*) FROM custody").fetchone()[0],
        last_contact=last["value"] if last else None,
    )
