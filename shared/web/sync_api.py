"""The sync endpoints (``/sync/v1/...``), the same on the hub and on a township.

The blueprint authenticates the calling node, parses strictly and hands the work to the tier's
:class:`SyncService` (hub: ingest; township: custody and relay), installed by the node's
``create_app`` as ``app.extensions["liandong_sync"]``. Wire formats: docs/sync-protocol.md.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from shared.core import canonical
from shared.core.crypto import SignatureError
from shared.core.errors import LiandongError, ValidationError
from shared.core.storage import ensure_disk_space, write_transaction
from shared.services import retention
from shared.web.auth import node_signed
from shared.web.context import current_node
from shared.web.db import get_db
from sync.blobs import SHA256_RE, BlobError
from sync.nodeauth import check_request, record_nonce

bp = Blueprint("sync", __name__, url_prefix="/sync/v1")

MAX_PUSH_BYTES = 16 * 1024 * 1024


class SyncError(LiandongError):
    """A sync request that cannot be honoured."""

    default_status = 400


def service():
    """The tier's sync service."""
    return current_app.extensions["liandong_sync"]


def _authenticate() -> str:
    """The calling node, from its signed request headers (the nonce is recorded at once)."""
    conn = get_db()
    caller, nonce = _check_signature(current_node().trust(conn))
    with write_transaction(conn):
        _record_nonce(conn, caller, nonce)
    return caller


def _check_signature(trust) -> tuple[str, int]:
    try:
        return check_request(service().resolve_caller_key(trust), current_node().node_id, request.method,
                             request.full_path.rstrip("?"), request.get_data(cache=True), request.headers)
    except SignatureError as exc:
        raise SyncError("node_auth", f"节点身份验证失败：{exc}", status=401) from exc


def _record_nonce(conn, caller: str, nonce: int) -> None:
    try:
        record_nonce(conn, caller, nonce)
    except SignatureError as exc:
        raise SyncError("node_auth", f"节点身份验证失败：{exc}", status=401) from exc


def _json_body(max_bytes: int = MAX_PUSH_BYTES) -> dict:
    try:
        body = canonical.loads(request.get_data(cache=True), max_bytes=max_bytes)
    except canonical.CanonicalError as exc:
        raise ValidationError("body", f"请求体不是合法的 JSON：{exc}", code="malformed") from exc
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象", code="malformed")
    return body


@bp.post("/push")
@node_signed
def push():
    """Envelopes up the tree: ingest (hub) or custody (township).

    Signatures (the request's and, at the hub, every envelope's) are checked before the write
    lock is taken, so concurrent pushes verify in parallel and the transaction stays short;
    the nonce and the batch then commit together: one fsync per push.
    """
    with service().pushing():  # the hub's apply worker waits while pushes come in
        conn = get_db()
        node = current_node()
        trust = node.trust(conn)
        caller, nonce = _check_signature(trust)
        documents = _json_body().get("envelopes")
        if not isinstance(documents, list):
            raise ValidationError("envelopes", "envelopes 必须是数组", code="malformed")
        prepared = service().prepare_push(conn, node, documents)
        with write_transaction(conn):
            if node.trust(conn) is not trust:  # the registry changed meanwhile (a revocation?): check again
                caller, nonce = _check_signature(node.trust(conn))
            _record_nonce(conn, caller, nonce)
            g.caller = caller
            # Refuse (507) before the disk is full: the sender keeps everything and retries later.
            ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
            return jsonify(service().push(conn, node, caller, documents, prepared))


@bp.post("/pull")
@node_signed
def pull():
    """Acknowledgements, downlink and newer metadata for the caller's subtree."""
    g.caller = _authenticate()
    body = _json_body(1024 * 1024)
    cursors = body.get("cursors", {})
    have = body.get("metadata", {})
    acked = body.get("acked", {})
    if not all(isinstance(x, dict) for x in (cursors, have, acked)) or not all(
        canonical.is_count(v) for x in (cursors, have, acked) for v in x.values()
    ):
        raise ValidationError("cursors", "cursors、metadata 与 acked 必须是以 0 到 2^63-1 的整数为值的对象",
                              code="malformed")
    return jsonify(service().pull(get_db(), current_node(), g.caller, cursors, have, acked))


@bp.post("/blobs/status")
@node_signed
def blob_status():
    """How many bytes of each named blob this node holds (0 = none): the sender resumes there."""
    _authenticate()
    wanted = _json_body(1024 * 1024).get("sha256", [])
    if not isinstance(wanted, list) or not all(isinstance(s, str) and SHA256_RE.match(s) for s in wanted):
        raise ValidationError("sha256", "sha256 必须是十六进制摘要数组", code="malformed")
    blobs = current_node().blobs
    # "complete" tells a full-length partial file (killed before its hash check) from a
    # verified blob: the sender finishes the former with an empty chunk at offset = size.
    return jsonify({"have": {sha: blobs.received(sha) for sha in wanted},
                    "complete": [sha for sha in wanted if blobs.has(sha)]})


@bp.put("/blobs/<sha256>")
@node_signed
def blob_chunk(sha256: str):
    """One chunk of a blob at ``?offset=`` of a blob of ``?size=`` bytes."""
    _authenticate()
    node = current_node()
    ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
    try:
        size, offset = _count_arg("size"), _count_arg("offset")
        complete = node.blobs.write_chunk(
            sha256, size, offset, request.get_data(cache=True), node.config["MAX_ATTACHMENT_BYTES"]
        )
    except (KeyError, ValueError) as exc:
        if isinstance(exc, BlobError):
            raise SyncError("blob_rejected", f"材料文件分块被拒绝：{exc}", status=409) from exc
        raise ValidationError("offset", "size 与 offset 必须是 0 到 2^63-1 的整数", code="malformed") from exc
    acks = []
    if complete:
        acks = service().blob_complete(get_db(), node, sha256, size)
    return jsonify({"sha256": sha256, "received": node.blobs.received(sha256), "complete": complete, "acks": acks})


@bp.post("/documents")
@node_signed
def case_documents():
    """The signed documents held here of a case the caller took (a village reprints a purged case)."""
    g.caller = _authenticate()
    case_id = _json_body(1024 * 1024).get("case_id")
    if not isinstance(case_id, str) or not case_id.isalnum() or len(case_id) > 64:
        raise ValidationError("case_id", "case_id 必须是办件编号", code="malformed")
    return jsonify({"case_id": case_id, "documents": retention.documents_for_caller(get_db(), case_id, g.caller)})


def _count_arg(name: str) -> int:
    """A query argument that is a size or an offset: ASCII digits, ``0 <= n <= 2^63 - 1``.

    :raises KeyError: missing. :raises ValueError: anything else (both answered 400 ``malformed``).
    """
    text = request.args[name]
    if not (text.isascii() and text.isdigit()) or not canonical.is_count(int(text)):
        raise ValueError(f"{name} out of range")
    return int(text)
