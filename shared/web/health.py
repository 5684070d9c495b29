"""``GET /healthz``: public liveness and identity of a node."""

from flask import Blueprint, jsonify

from shared.web.auth import public
from shared.web.context import VERSION, current_node

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz():
    """Node id, tier and version; public."""
    node = current_node()
    return jsonify({"node_id": node.node_id, "tier": node.tier, "version": VERSION, "time": node.now().isoformat()})
