"""同步状态: what is queued, what the township holds, what the hub acknowledged; sync now."""

from flask import Blueprint, current_app, flash, redirect, render_template, url_for

from shared.web.context import current_node
from sync import outbox
from sync.node_sync import SyncState, run_round
from village_node.db import get_db

bp = Blueprint("syncstatus", __name__, url_prefix="/sync-status")


@bp.get("")
def overview():
    """The queue in plain words and the link's state."""
    conn = get_db()
    state = current_app.extensions.get("liandong_sync_state")
    last = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()
    return render_template("syncstatus/overview.html", counts=outbox.counts(conn), state=state,
                           last_contact=last["value"] if last else None, node=current_node())


@bp.post("/now")
def sync_now():
    """Run a sync round at once (the agent's 立即同步 button)."""
    run = current_app.extensions.get("liandong_sync_now")
    if run is not None:
        result = run()
    elif current_app.config.get("PARENT_URL"):  # scheduler off: one round in this request
        state = current_app.extensions.setdefault("liandong_sync_state", SyncState())
        result = run_round(get_db(), current_node(), state, force=True)
    else:
        result = {"error": "未配置上级节点"}
    flash("同步完成" if "error" not in result else f"暂时无法连接乡镇：{result['error']}")
    return redirect(url_for("syncstatus.overview"))
