"""同步状态: what is queued, what the township holds, what the hub acknowledged; sync now.

Failures are told in plain Chinese with what to do (shared/rules/link_trouble.py); the raw
error stays in the node's log. 立即同步 waits at most SYNC_NOW_TIMEOUT_SECONDS a request (the
agent is watching), then says it gave up; the background round keeps retrying.
"""

from flask import Blueprint, current_app, flash, redirect, render_template, url_for

from shared.rules import link_trouble
from shared.services import names
from shared.web.context import current_node
from sync import outbox
from sync.node_sync import SyncState, run_round
from village_node.db import get_db

bp = Blueprint("syncstatus", __name__, url_prefix="/sync-status")


def parent_name() -> str:
    """The township this PC reports to, by its registered name."""
    node = current_node()
    return names.node_name(node.trust(get_db()), node.config.get("PARENT_ID"), "乡镇便民服务站")


@bp.get("")
def overview():
    """The queue in plain words and the link's state."""
    conn = get_db()
    state = current_app.extensions.get("liandong_sync_state")
    last = conn.execute("SELECT value FROM node_meta WHERE key = 'last_parent_contact'").fetchone()
    trouble = link_trouble.explain(state.last_error if state else None, parent_name())
    return render_template("syncstatus/overview.html", counts=outbox.counts(conn), state=state, trouble=trouble,
                           last_contact=last["value"] if last else None, node=current_node(),
                           parent=parent_name(), wait_seconds=float(current_app.config["SYNC_NOW_TIMEOUT_SECONDS"]))


@bp.post("/now")
def sync_now():
    """Run a sync round at once (the agent's 立即同步 button), giving up after a short wait."""
    timeout = float(current_app.config["SYNC_NOW_TIMEOUT_SECONDS"])
    run = current_app.extensions.get("liandong_sync_now")
    if run is not None:
        result = run(timeout)
    elif current_app.config.get("PARENT_URL"):  # scheduler off: one round in this request
        state = current_app.extensions.setdefault("liandong_sync_state", SyncState())
        result = run_round(get_db(), current_node(), state, force=True, timeout=timeout)
    else:
        result = {"error": "本机尚未配置上级节点，请联系乡镇便民服务站完成注册"}
    if "error" not in result:
        flash("同步完成")
    elif "Timeout" in result["error"] or "timed out" in result["error"]:
        flash(link_trouble.gave_up(parent_name(), timeout))
    else:
        flash("同步未成功：" + link_trouble.explain(result["error"], parent_name()))
    return redirect(url_for("syncstatus.overview"))
