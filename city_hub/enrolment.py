"""``POST /enrol/v1``: a new township or village registers its key with a one-time token."""

from flask import Blueprint, jsonify, request

from city_hub.db import get_db
from city_hub.enrolment_service import enrol
from shared.core import canonical
from shared.core.errors import ValidationError
from shared.core.storage import write_transaction
from shared.web.auth import node_signed
from shared.web.context import current_node

bp = Blueprint("enrolment", __name__, url_prefix="/enrol/v1")


@bp.post("")
@node_signed
def enrol_node():
    """Register a node: the token authorises, the signature proves possession of the key."""
    try:
        document = canonical.loads(request.get_data(), max_bytes=64 * 1024)
    except canonical.CanonicalError as exc:
        raise ValidationError("body", "请求体不是合法的 JSON", code="malformed") from exc
    conn = get_db()
    with write_transaction(conn):
        return jsonify(enrol(conn, current_node(), document)), 201
