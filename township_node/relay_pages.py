"""The relay's health per village, and the village submissions passing through this township."""

from datetime import timedelta

from flask import Blueprint, render_template, request

from shared.core.clock import parse_iso
from shared.rules import link_trouble, states
from shared.rules.idcard import mask_id_number
from shared.services import names as node_names
from shared.web import access
from shared.web.cases import page_number
from shared.web.context import current_node
from shared.web.intake import sync_word
from sync import outbox
from sync.trust import metadata_content
from township_node.db import get_db

bp = Blueprint("relay", __name__, url_prefix="/relay")

#: A village not heard from for this long is shown as 需关注; three times as long, 失联.
QUIET_AFTER = timedelta(minutes=30)


def _names(conn) -> dict[str, str]:
    _, registry, _ = metadata_content(conn, "registry")
    return {n["node_id"]: n.get("name", "") for n in (registry or {}).get("nodes", [])}


def _ago(now, value: str | None) -> tuple[str, str]:
    """('3 分钟前', health) for a timestamp; health is ok / quiet / lost / never."""
    if not value:
        return "从未连入", "never"
    seconds = (now - parse_iso(value)).total_seconds()
    health = "ok" if seconds <= QUIET_AFTER.total_seconds() else (
        "quiet" if seconds <= 3 * QUIET_AFTER.total_seconds() else "lost")
    if seconds < 60:
        text = "刚刚"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} 分钟前"
    elif seconds < 86400:
        text = f"{int(seconds // 3600)} 小时前"
    else:
        text = f"{int(seconds // 86400)} 天前"
    return text, health


@bp.get("")
def overview():
    """Per village: last seen, what the township holds for it, how far the hub acknowledged it."""
    conn = get_db()
    node = current_node()
    now = node.now()
    names = _names(conn)
    hub = node_names.hub_name(node.trust(conn))
    seen = {r["node_id"]: r for r in conn.execute("SELECT * FROM peer_status")}
    custody = {r["origin"]: r for r in conn.execute(
        "SELECT origin, COUNT(*) AS n, MIN(received_at) AS oldest, MAX(attempts) AS attempts,"
        " MAX(last_error) AS last_error FROM custody GROUP BY origin")}
    acked = {r["origin"]: r["acked_seq"] for r in conn.execute("SELECT origin, acked_seq FROM acks")}
    villages = sorted({*seen, *custody, *(n for n in names if len(n) == 12 and n.startswith(node.node_id))})
    rows = []
    for vid in villages:
        last_seen = seen[vid]["last_seen"] if vid in seen else None
        ago, health = _ago(now, last_seen)
        held = custody.get(vid)
        oldest_ago = _ago(now, held["oldest"])[0] if held else None
        rows.append({
            "node_id": vid, "name": names.get(vid, ""), "last_seen": last_seen, "ago": ago, "health": health,
            "last_push_count": seen[vid]["last_push_count"] if vid in seen else 0,
            "in_custody": held["n"] if held else 0, "oldest": oldest_ago,
            "attempts": held["attempts"] if held else 0,
            "last_error": link_trouble.explain(held["last_error"], hub) if held else None,
            "acked_seq": acked.get(vid) or 0,
            "cases": conn.execute("SELECT COUNT(*) FROM cases WHERE origin = ?", (vid,)).fetchone()[0],
        })
    last = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()
    parent_ago, parent_health = _ago(now, last["value"] if last else None)
    return render_template(
        "relay/overview.html", villages=rows, own=outbox.counts(conn),
        custody_total=sum(r["in_custody"] for r in rows),
        to_follow=conn.execute("SELECT COUNT(*) FROM follow_queue").fetchone()[0],
        last_contact=last["value"] if last else None, parent_ago=parent_ago, parent_health=parent_health,
    )


#: Rows per page of 村级报件.
LIST_PAGE = 100


@bp.get("/cases")
def village_cases():
    """Applications taken at this township's villages, with where each one is (100 per page)."""

    conn = get_db()
    node = current_node()
    names = _names(conn)
    village = request.args.get("village", "").strip()
    # Village codes are the township's code plus three digits: a range the (origin, submitted_at) index serves.
    readable, readable_args = access.list_filter("cases")  # a department clerk: only what it is asked about
    sql = f" FROM cases WHERE origin > ? AND origin < ? AND {readable}"
    params: list = [node.node_id, node.node_id + ":", *readable_args]
    if village:
        sql += " AND origin = ?"
        params.append(village)
    total = conn.execute("SELECT COUNT(*)" + sql, params).fetchone()[0]
    pages = max(1, -(-total // LIST_PAGE))
    page = min(page_number(), pages)
    # The page's row ids come from the (origin, submitted_at) index alone; only those rows are read.
    # Over a range of villages the index is not in submitted_at order, so "SELECT *" with the sort
    # read every row of every village, in an order that jumps around the table (26 ms at 10,000
    # cases against 2.5 ms so; docs/performance.md). rowid breaks ties, so pages never overlap.
    order = " ORDER BY submitted_at DESC, rowid DESC"
    rows = conn.execute("SELECT * FROM cases WHERE rowid IN (SELECT rowid" + sql + order + " LIMIT ? OFFSET ?)" + order,
                        [*params, LIST_PAGE, (page - 1) * LIST_PAGE]).fetchall()
    access.audit_list("relay.cases", [r["case_id"] for r in rows])
    villages = sorted({*(n for n in names if len(n) == 12 and n.startswith(node.node_id)),
                       *(r["origin"] for r in conn.execute(
                           "SELECT DISTINCT origin FROM cases WHERE origin > ? AND origin < ?",
                           (node.node_id, node.node_id + ":")))})
    return render_template("relay/cases.html", rows=rows, names=names, village=village, villages=villages,
                           sync_word=sync_word, label=states.status_label, mask=mask_id_number, total=total,
                           page=page, pages=pages, pager_args={"village": village} if village else {})
