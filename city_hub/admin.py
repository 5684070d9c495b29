"""The provisioning admin's pages: the node tree (enrol, revoke, reinstate, rotate keys), quarantined envelopes,
accounts and roles, the catalog (show, upload, publish) and the holiday calendar (load, publish).

The operations themselves live in :mod:`city_hub.hub_admin` and :mod:`city_hub.lifecycle`
(shared with the CLI); every form carries its CSRF token.
"""

import json
from datetime import timedelta

from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for

from city_hub import hub_admin, lifecycle
from city_hub import quarantine as quarantined
from city_hub.db import get_db
from city_hub.enrolment_service import create_token
from city_hub.registry import current_catalog, latest
from shared.core.errors import LiandongError
from shared.core.storage import write_transaction
from shared.rules.catalog import DEPARTMENTS, LEVEL_LABELS
from shared.services import accounts
from shared.web.auth import roles_required
from shared.web.context import current_node
from sync import apply
from sync.trust import parsed_content

bp = Blueprint("admin", __name__)


@bp.get("/")
def home():
    """Admins start at the node tree, everyone else at their queue."""
    role = g.account["role"]
    return redirect(url_for({"admin": "admin.nodes", "supervisor": "oversight.board"}.get(role, "cases.queue")))


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
        except (LiandongError, ValueError, OverflowError) as exc:  # OverflowError: an absurd ttl_hours
            error = getattr(exc, "message", str(exc))
    rows = conn.execute(
        "SELECT n.*, (SELECT acked_seq FROM origin_heads h WHERE h.origin = n.node_id) AS acked_seq,"
        " (SELECT COUNT(*) FROM quarantine q WHERE q.origin = n.node_id AND q.resolved_at IS NULL) AS quarantined"
        " FROM nodes n ORDER BY n.node_id"
    ).fetchall()
    quarantine = quarantined.open_rows(conn)
    return render_template("admin/nodes.html", rows=rows, token=token, error=error, quarantine=quarantine,
                           reason_labels=quarantined.REASON_LABELS,
                           keys=lifecycle.key_summary(conn), to_apply=apply.pending(conn))


@bp.post("/admin/nodes/<node_id>/revoke")
@roles_required("admin")
def node_revoke(node_id: str):
    """Revoke a node (a lost PC): its later envelopes are refused everywhere."""
    return _node_status(node_id, "revoke")


@bp.post("/admin/nodes/<node_id>/reinstate")
@roles_required("admin")
def node_reinstate(node_id: str):
    """Lift a revocation or suspension."""
    return _node_status(node_id, "reinstate")


@bp.post("/admin/nodes/<node_id>/rotate-key")
@roles_required("admin")
def node_rotate_key(node_id: str):
    """轮换密钥: send the node a hub-signed command; it makes its new key and announces it by sync."""
    conn = get_db()
    try:
        with write_transaction(conn):
            done = lifecycle.request_rotation(conn, current_node(), node_id, g.account["username"])
        flash(f"已向节点 {node_id} 发送轮换密钥指令（第 {done['seq']} 条下行消息）；节点下次同步时生成新密钥，"
              f"经同步登记后启用，旧密钥签发的消息仍然有效")
    except LiandongError as exc:
        flash(exc.message)
    return redirect(url_for("admin.nodes"))


def _node_status(node_id: str, op: str):
    """Revoke a node (a lost PC: its later envelopes are refused everywhere) or reinstate it."""
    conn = get_db()
    node = current_node()
    try:
        with write_transaction(conn):
            if op == "revoke":
                done = lifecycle.revoke(conn, node, node_id, None, g.account["username"])
                flash(f"已吊销节点 {node_id}（序号 {done['revoked_after_seq']} 之后的消息将被拒收），"
                      f"节点名册第 {done['registry_version']} 版已发布")
            else:
                if conn.execute("SELECT 1 FROM nodes WHERE node_id = ? AND tier != 'hub'", (node_id,)).fetchone() is None:
                    raise LiandongError("not_found", f"节点 {node_id} 不存在", status=404)
                lifecycle.reinstate(conn, node, node_id, g.account["username"])
                flash(f"已恢复节点 {node_id}，新的节点名册已发布")
    except LiandongError as exc:
        flash(exc.message)
    return redirect(url_for("admin.nodes"))


@bp.post("/admin/quarantine/<int:quarantine_id>")
@roles_required("admin")
def quarantine_action(quarantine_id: int):
    """``op=release``: 放行 a quarantined envelope after review (the hub ingests it again);
    ``op=discard``: 作废 it with the ``reason`` the admin gives. Both audited."""
    conn = get_db()
    try:
        with write_transaction(conn):
            if request.form.get("op") == "release":
                done = quarantined.release(conn, current_node(), quarantine_id, g.account["username"])
                flash(f"隔离消息 {quarantine_id} 已放行并重新接收（{done['status']}）")
            else:
                quarantined.discard(conn, current_node(), quarantine_id, request.form.get("reason", ""),
                                    g.account["username"])
                flash(f"隔离消息 {quarantine_id} 已作废")
    except LiandongError as exc:
        flash(exc.message)
    return redirect(url_for("admin.nodes"))


@bp.route("/admin/accounts", methods=["GET", "POST"])
@roles_required("admin")
def accounts_page():
    """Accounts and roles of the hub: list, create (API token shown once), deactivate."""
    conn = get_db()
    node = current_node()
    error = token = None
    form = request.form
    if request.method == "POST":
        try:
            with write_transaction(conn):
                token = hub_admin.create_hub_account(
                    conn, node, form.get("username", "").strip(), form.get("password", ""), form.get("role", ""),
                    form.get("display_name", ""), form.get("office") or None, g.account["username"])
            flash(f"已创建账号 {form.get('username', '').strip()}")
        except LiandongError as exc:
            error = exc
    return render_template("admin/accounts.html", rows=hub_admin.list_accounts(conn), error=error, token=token,
                           locks=accounts.locked_subjects(conn, node.now()),
                           form=form if error else {}, roles={r: accounts.ROLES[r] for r in accounts.ROLES_BY_TIER["hub"]},
                           offices=hub_admin.hub_offices(node.node_id))


@bp.post("/admin/accounts/<username>/deactivate")
@roles_required("admin")
def account_deactivate(username: str):
    """Deactivate an account: it can no longer log in or use its token."""
    return _account_status(username, "deactivate")


@bp.post("/admin/accounts/<username>/activate")
@roles_required("admin")
def account_activate(username: str):
    """Activate an account again."""
    return _account_status(username, "activate")


@bp.post("/admin/login-locks/unlock")
@roles_required("admin")
def login_unlock():
    """Lift a login lock (of an account or a client address) before it runs out; audited."""
    conn = get_db()
    username, address = request.form.get("username") or None, request.form.get("address") or None
    with write_transaction(conn):
        lifted = accounts.unlock(conn, username, address, g.account["username"], current_node().now())
    flash(f"已解除{'账号 ' + username if username else '地址 ' + str(address)}的登录锁定" if lifted else "没有需要解除的锁定")
    return redirect(url_for("admin.accounts_page"))


def _account_status(username: str, op: str):
    conn = get_db()
    try:
        with write_transaction(conn):
            hub_admin.set_account_active(conn, current_node(), username, op == "activate", g.account["username"])
        flash(f"账号 {username} 已{'启用' if op == 'activate' else '停用'}")
    except LiandongError as exc:
        flash(exc.message)
    return redirect(url_for("admin.accounts_page"))


def _upload(field: str, file_field: str) -> str:
    upload = request.files.get(file_field)
    if upload is not None and upload.filename:
        return upload.read()
    return request.form.get(field, "")


@bp.route("/admin/catalog", methods=["GET", "POST"])
@roles_required("admin")
def catalog_page():
    """The published catalog; upload or paste a catalog JSON, validated, published as a new signed version."""

    conn = get_db()
    error = None
    if request.method == "POST":
        try:
            text = _upload("catalog_json", "catalog_file")
            if not text or (isinstance(text, str) and not text.strip()):
                raise LiandongError("empty", "请上传目录文件或粘贴目录 JSON")
            items = hub_admin.parse_catalog(text)
            things = hub_admin.parse_things(text, items)
            with write_transaction(conn):
                version = hub_admin.publish_catalog(conn, current_node(), items, g.account["username"], things)
            flash(f"事项目录第 {version} 版已签名发布（{len(items)} 个事项），各节点同步后生效；已有办件仍按原版本办理")
            return redirect(url_for("admin.catalog_page"))
        except LiandongError as exc:
            error = exc.message
    version, items = current_catalog(conn)
    published = conn.execute("SELECT published_at FROM metadata WHERE role = 'catalog' AND version = ?",
                             (version,)).fetchone()
    return render_template("admin/catalog.html", version=version, items=list(items.values()), error=error,
                           published_at=published["published_at"] if published else None,
                           departments=DEPARTMENTS, levels=LEVEL_LABELS, pasted=request.form.get("catalog_json", ""))


@bp.get("/admin/catalog/v<int:version>.json")
@roles_required("admin")
def catalog_json(version: int):
    """A published catalog version as a JSON file, to edit and upload again."""
    row = get_db().execute("SELECT document FROM metadata WHERE role = 'catalog' AND version = ?", (version,)).fetchone()
    if row is None:
        raise LiandongError("not_found", f"没有第 {version} 版事项目录", status=404)

    content = parsed_content(row["document"])
    body = json.dumps({"version": version, "items": content["items"], "things": content.get("things", [])},
                      ensure_ascii=False, indent=1)
    return Response(body, content_type="application/json; charset=utf-8",
                    headers={"Content-Disposition": f"attachment; filename=catalog-v{version}.json"})


@bp.route("/admin/calendar", methods=["GET", "POST"])
@roles_required("admin")
def calendar_page():
    """Load a year's official holiday schedule (国务院办公厅放假通知) and publish it to every node."""

    conn = get_db()
    node = current_node()
    error = None
    if request.method == "POST":
        try:
            text = _upload("schedule_json", "schedule_file")
            if not text or (isinstance(text, str) and not text.strip()):
                raise LiandongError("empty", "请上传节假日安排文件或粘贴其 JSON")
            schedule = hub_admin.parse_calendar(text)
            with write_transaction(conn):
                version = hub_admin.publish_calendar(conn, node, schedule, g.account["username"])
            flash(f"{schedule['year']}年节假日安排已导入，日历第 {version} 版已签名发布，各节点同步后生效")
            return redirect(url_for("admin.calendar_page"))
        except LiandongError as exc:
            error = exc.message
    version, _ = latest(conn, "calendar")
    today = node.clock.today_cn()
    years = [{"year": y, "loaded": y in node.calendar.schedules, "covered": node.calendar.covers(y),
              "source": node.calendar.schedules.get(y, {}).get("source")} for y in range(today.year - 1, today.year + 3)]
    return render_template("admin/calendar.html", version=version, years=years,
                           schedules=sorted(node.calendar.schedules.values(), key=lambda s: s["year"]), error=error,
                           pasted=request.form.get("schedule_json", ""))
