"""现场核查 pages and API (rules in :mod:`shared.services.site_visits`).

The township clerk records a visit (form with photos, or ``POST /api/v1/cases/<id>/site-visits``);
every node lists the visits it holds for a case and shows the photos it has.
"""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, url_for

from shared.core.errors import Forbidden, LiandongError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import states
from shared.services import accounts, casework, site_visits
from shared.web import access
from shared.web.context import current_node
from shared.web.db import get_db

bp = Blueprint("site_visits", __name__)


def _items() -> dict:
    return current_node().catalog(get_db())[1]


def _require_recorder() -> None:
    if not current_node().kind.records_site_visits or g.account["role"] not in site_visits.RECORDING_ROLES:
        raise Forbidden("现场核查由乡镇便民服务站站员登记")


def _decode_photos(photos) -> list[tuple[str, bytes]]:
    if photos is None:
        return []
    if not isinstance(photos, list):
        raise ValidationError("photos", "photos 必须是数组")
    out = []
    for i, p in enumerate(photos):
        if not isinstance(p, dict):
            raise ValidationError(f"photos[{i}]", "照片格式不正确")
        try:
            data = base64.b64decode(p.get("content_base64", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValidationError(f"photos[{i}].content_base64", "照片内容不是有效的 Base64 编码") from None
        filename = p.get("filename") if isinstance(p.get("filename"), str) else ""
        out.append((filename.strip() or f"照片{i + 1}", data))
    return out


def _record(case_id: str, payload: dict, photos: list[tuple[str, bytes]]) -> dict:
    _require_recorder()
    return site_visits.record(get_db(), current_node(), case_id, payload, photos, g.account["username"], _items())


@bp.post("/api/v1/cases/<case_id>/site-visits")
def api_record(case_id: str):
    """Record a 现场核查 ``{inspectors[], visit_date, findings, result, photos[{filename, content_base64}]}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    event = _record(case_id, body, _decode_photos(body.get("photos")))
    return jsonify({"event": event, "site_visits": site_visits.visits_of(get_db(), case_id)}), 201


@bp.get("/api/v1/cases/<case_id>/site-visits")
def api_list(case_id: str):
    """The site visits of a case held at this node."""
    casework.get_row(get_db(), case_id)
    return jsonify({"case_id": case_id, "site_visits": site_visits.visits_of(get_db(), case_id)})


@bp.get("/site-visits")
def overview():
    """Township: cases in the area that may get a site visit now; every node: recent site visits."""
    node = current_node()
    conn = get_db()
    items = _items()
    rows = (site_visits.candidates(conn, node.node_id, items, access.list_filter("cases"))
            if node.kind.records_site_visits else [])
    access.audit_list("site_visits", [r["case_id"] for r in rows])
    visited = {r["case_id"] for r in conn.execute("SELECT DISTINCT case_id FROM case_events WHERE action = 'site_visit'")}
    return render_template("site_visits/overview.html", rows=rows, visited=visited, label=states.status_label,
                           recent=site_visits.recent(conn))


@bp.route("/cases/<case_id>/site-visit", methods=["GET", "POST"])
def case_page(case_id: str):
    """A case's site visits, and the clerk's form to record one."""
    conn = get_db()
    node = current_node()
    row = casework.get_row(conn, case_id)
    item = _items().get(row["item_code"])
    may_record = (node.kind.records_site_visits and g.account["role"] in site_visits.RECORDING_ROLES
                  and site_visits.in_area(row, item, node.node_id)
                  and row["status"] in states.TRANSITIONS["site_visit"][0])
    error, values = None, {}
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in ("inspectors", "visit_date", "findings", "result")}
        photos = [((f.filename or "照片").replace("\\", "/").rsplit("/", 1)[-1], f.read())
                  for f in request.files.getlist("photos") if f and f.filename]
        try:
            _record(case_id, values, photos)
        except LiandongError as exc:
            if exc.status == 403:
                raise
            error = exc
        else:
            flash("已登记现场核查，将随同步报送市（县）中心")
            return redirect(url_for("site_visits.case_page", case_id=case_id))
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "case.read", case_id, "site_visits", node.now())
    return render_template(
        "site_visits/case.html", row=row, item=item, visits=site_visits.visits_of(conn, case_id),
        may_record=may_record, error=error, values=values, results=states.SITE_VISIT_RESULTS,
        today=node.clock.today_cn().isoformat(), has_photo=node.blobs.has, label=states.status_label,
    ), (400 if error else 200)


@bp.get("/cases/<case_id>/site-visit/photos/<sha256>")
def photo(case_id: str, sha256: str):
    """A site-visit photo held at this node (images only, logged)."""
    conn = get_db()
    node = current_node()
    found = site_visits.photo_of(conn, case_id, sha256)
    if found is None or not node.blobs.has(sha256):
        abort(404)
    data = node.blobs.read(sha256)
    mime = site_visits.photo_type(data[:8])
    if mime is None:
        abort(404)
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "material.read", case_id, sha256, node.now())
    return Response(data, mimetype=mime, headers={"Content-Disposition": "inline", "X-Content-Type-Options": "nosniff",
                                                  "Content-Security-Policy": "default-src 'none'; sandbox"})
