"""``POST /enrol/v1`` at a township: a village enrols through its township, which forwards."""

import requests
from flask import Blueprint, Response, current_app, request

from shared.core.errors import LiandongError
from shared.web.auth import node_signed

bp = Blueprint("enrol_relay", __name__, url_prefix="/enrol/v1")


@bp.post("")
@node_signed
def forward():
    """Forward the enrolment request unchanged to the hub; the hub checks token and proof."""
    try:
        upstream = requests.post(current_app.config["PARENT_URL"].rstrip("/") + "/enrol/v1",
                                 data=request.get_data(), headers={"Content-Type": "application/json"}, timeout=30)
    except requests.RequestException as exc:
        raise LiandongError("hub_unreachable", "乡镇暂时无法连接市中心，请稍后再注册", status=503) from exc
    return Response(upstream.content, status=upstream.status_code, content_type="application/json")
