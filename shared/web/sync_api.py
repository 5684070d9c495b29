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
from shared.web.limits import TooLarge
from sync import envelope, formats, relay, wire
from sync.blobs import SHA256_RE, BlobError, QuotaExceeded, park
from sync.nodeauth import check_request, keys_for, record_nonce

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
        if _signed_by_a_revoked_node(trust):
            # Told only to the holder of the revoked key, so its PC can say 本机已停用 for good.
            raise SyncError("node_revoked", "本机已被停用，不能再同步", status=403) from exc
        raise SyncError("node_auth", f"节点身份验证失败：{exc}", status=401) from exc


def _signed_by_a_revoked_node(trust) -> bool:
    """Whether the request is genuinely signed by a node the registry lists as revoked."""
    def revoked_key(node_id: str, kid: str):
        entry = trust.nodes.get(node_id) if trust is not None else None
        return keys_for(entry.keys, kid) if entry is not None and entry.status == "revoked" else None

    try:
        check_request(revoked_key, current_node().node_id, request.method, request.full_path.rstrip("?"),
                      request.get_data(cache=True), request.headers)
    except SignatureError:
        return False
    return True


def _record_nonce(conn, caller: str, nonce: int) -> None:
    try:
        record_nonce(conn, caller, nonce)
    except SignatureError as exc:
        raise SyncError("node_auth", f"节点身份验证失败：{exc}", status=401) from exc


def _body(max_bytes: int) -> bytes:
    """The request body decoded from its ``Content-Encoding`` (at most ``max_bytes`` decoded).

    The node signature is checked on the body as sent (:func:`_check_signature`), never on
    this decoded copy.
    """
    coding = request.headers.get("Content-Encoding", "")
    try:
        return wire.decode(request.get_data(cache=True), coding, max_bytes)
    except wire.CodingError as exc:
        if coding.strip().lower() not in (*wire.CODINGS, "", "identity"):
            raise SyncError("unsupported_encoding", f"不支持的请求体编码：{coding}", status=415) from exc
        if "larger" in str(exc):
            raise TooLarge(max_bytes) from exc
        raise ValidationError("body", f"请求体无法解压：{exc}", code="malformed") from exc


def _json_body(max_bytes: int = MAX_PUSH_BYTES) -> dict:
    try:
        body = canonical.loads(_body(max_bytes), max_bytes=max_bytes)
    except canonical.CanonicalError as exc:
        raise ValidationError("body", f"请求体不是合法的 JSON：{exc}", code="malformed") from exc
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象", code="malformed")
    return body


@bp.after_request
def _compact_answer(response):
    """Say which request codings this node reads (RFC 7694), and compress the JSON answer for
    a caller that accepts it (docs/sync-protocol.md §4.1)."""
    if request.headers.get("Content-Encoding", "").strip().lower() != wire.CODINGS[0]:
        # Said only to a caller not already sending this node's best coding: one that does knows it.
        response.headers["Accept-Encoding"] = ", ".join(wire.CODINGS)
    # No ``Vary: Accept-Encoding``: every sync route is a POST or PUT, whose answers no cache
    # stores without explicit freshness (RFC 9110 §9.3.3, RFC 9111 §3), so it would tell no one anything.
    # A request without an Accept-Encoding asks for its answer in its own body's coding: any
    # coding is acceptable to such a caller (RFC 9110 §12.5.3), and this one it reads.
    accept = request.headers.get("Accept-Encoding")
    coding = wire.choose(accept if accept is not None else request.headers.get("Content-Encoding"))
    if (coding and not response.direct_passthrough and "Content-Encoding" not in response.headers
            and response.mimetype == "application/json"):
        data = response.get_data()
        if wire.worth(coding, len(data)):
            response.set_data(wire.encode(data, coding))
            response.headers["Content-Encoding"] = coding
            if coding == wire.DICT_CODING:
                # Only a node's client reads this coding, and it is always JSON: the type
                # (and nosniff, shared/web/factory.py) would tell no one anything (§5.1.3).
                del response.headers["Content-Type"]
    return response


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
        body = _json_body()
        documents = body.get("envelopes")
        if not isinstance(documents, list):
            raise ValidationError("envelopes", "envelopes 必须是数组", code="malformed")
        # The caller's pull and its files' status, answered inside this answer (§5.3.2): checked
        # before anything is taken.
        asked = _pull_request(body["pull"]) if "pull" in body else None
        files = _blob_names(body["blobs"], wire.MAX_BLOBS_ASKED) if "blobs" in body else None
        held = _held(body["held"], len(documents)) if "held" in body else None
        # A v2 prev sent empty: the id before it; a key id sent short: the registered one (§2.1.2).
        documents, ids = envelope.restore_links_and_ids(documents)
        documents = envelope.restore_keyids(documents, trust.node_keys_starting)  # ids do not cover key ids
        prepared = service().prepare_push(conn, node, documents, ids)
        with write_transaction(conn):
            if node.trust(conn) is not trust:  # the registry changed meanwhile (a revocation?): check again
                caller, nonce = _check_signature(node.trust(conn))
            _record_nonce(conn, caller, nonce)
            g.caller = caller
            # Refuse (507) before the disk is full: the sender keeps everything and retries later.
            ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
            answer = service().push(conn, node, caller, documents, prepared,
                                    receipt="ranges" if body.get("receipt") == "ranges" else None, held=held)
        if body.get("ack") != "wait":
            _forward_soon()
    if body.get("ack") == "wait":  # a newer village: the hub's ack in this answer if it comes in time
        answer = _write_through(conn, node, caller, answer)
    if body.get("answer") == "compact":  # a newer caller: routine outcomes as seq ranges
        answer = {**answer, **wire.compact_results(answer.get("results", []))}
    short = body.get("docs") == "short"  # a newer caller reads signed documents in their short form
    # After the push's transaction, outside the hub's pushing(): reads only.
    if files is not None:
        answer["blobs"] = _blobs_held(files, compact=True)
    if asked is not None:
        answer["pull"] = _pull_answer(caller, *asked, in_push=answer.get("acks", []))
    return jsonify(_short_documents(answer) if short else answer)


def _short_documents(answer: dict) -> dict:
    """``answer`` with its acknowledgements and custody receipt (also those of a pull inside it)
    in their short transport form (docs/sync-protocol.md §2.1.2): same signed bytes, fewer on the wire."""
    out = dict(answer)
    if isinstance(out.get("acks"), list):
        out["acks"] = [envelope.short_form(a) for a in out["acks"]]
    if out.get("receipt") is not None:
        out["receipt"] = envelope.short_form(out["receipt"])
    if isinstance(out.get("pull"), dict):
        out["pull"] = _short_documents(out["pull"])
    return out


def _write_through(conn, node, caller: str, answer: dict) -> dict:
    """A village's small push forwarded to the hub at once, answered with the hub's signed
    acknowledgement if it comes within ``SYNC_WRITE_THROUGH_SECONDS`` (docs/sync-protocol.md
    §5.3.3). The ack covers every envelope of the push that custody took: the custody receipt
    then says nothing more and is left out. Otherwise (the hub slow, offline, holding the
    envelopes for their files; a larger push; a node that does not forward) the answer is the
    ordinary one, receipt included, and the round that was started goes on in the background."""
    forward = current_app.extensions.get("liandong_sync_forward")  # a node with a parent and its jobs
    seconds = float(node.config["SYNC_WRITE_THROUGH_SECONDS"])
    results = answer.get("results", [])
    held = [r for r in results if r.get("status") == "custody"]
    if (forward is None or seconds <= 0 or not held or answer.get("receipt") is None
            or len(results) > int(node.config["SYNC_WRITE_THROUGH_MAX_ENVELOPES"])
            or relay.files_missing(conn, node.blobs.has, [r["envelope_id"] for r in held])):
        _forward_soon()  # a case's scans follow its push: the hub acknowledges it only after them
        return answer
    found: list[dict] = []

    def acknowledged() -> bool:
        ack = relay.ack_covering(conn, caller, held)
        if ack is not None:
            found[:] = [ack]
        return ack is not None

    if not forward(acknowledged, seconds):
        return answer
    return {**{k: v for k, v in answer.items() if k != "receipt"}, "acks": found}


def _blob_names(wanted, limit: int | None = None) -> list[str]:
    """A list of material file hashes (``sha256`` of a status request, ``blobs`` of a push);
    :raises ValidationError: not such a list, or longer than ``limit``."""
    if not isinstance(wanted, list) or not all(isinstance(s, str) and SHA256_RE.match(s) for s in wanted):
        raise ValidationError("sha256", "sha256 必须是十六进制摘要数组", code="malformed")
    if limit is not None and len(wanted) > limit:
        raise ValidationError("blobs", f"一次最多询问 {limit} 个材料文件", code="malformed")
    return wanted


def _blobs_held(wanted: list[str], compact: bool = False) -> dict:
    """How many bytes of each named blob this node holds, and which it holds complete and
    verified ("complete" tells a full-length partial file, killed before its hash check, from a
    verified blob: the sender finishes the former with an empty chunk at offset = size).
    ``compact`` (inside a push answer): ``have`` lists only partial files, 0 and complete left out."""
    held = current_node().blobs.holdings(wanted)  # one query for those kept as rows, a stat for the others
    complete = [sha for sha in wanted if held[sha][1]]
    have = {sha: held[sha][0] for sha in wanted if not (compact and held[sha][1])}
    return {"have": {sha: n for sha, n in have.items() if n or not compact}, "complete": complete}


def _held(value, envelopes: int) -> dict:
    """The push's ``held`` member (§5.3: when a township took what it forwards), at most one
    run per envelope; :raises ValidationError: malformed."""
    try:
        return wire.held_times(value, max(envelopes, 1))
    except ValueError:
        raise ValidationError("held", "held 必须是以来源节点为键、[起始序号, 结束序号, 时间] 为元素的对象",
                              code="malformed") from None


def _pull_request(body) -> tuple[dict, dict, dict]:
    """(cursors, metadata versions, acked) of a pull body (§7.1); :raises ValidationError: malformed."""
    if not isinstance(body, dict):
        raise ValidationError("pull", "pull 必须是 JSON 对象", code="malformed")
    cursors = body.get("cursors", {})
    have = body.get("metadata", {})
    acked = body.get("acked", {})
    if not all(isinstance(x, dict) for x in (cursors, have, acked)) or not all(
        canonical.is_count(v) for x in (cursors, have, acked) for v in x.values()
    ):
        raise ValidationError("cursors", "cursors、metadata 与 acked 必须是以 0 到 2^63-1 的整数为值的对象",
                              code="malformed")
    return cursors, have, acked


def _pull_answer(caller: str, cursors: dict, have: dict, acked: dict, in_push: list | None = None) -> dict:
    """The tier's pull answer plus the envelope versions this node takes from the caller (it signs
    v2 only once told, sync/formats.py). ``in_push``: the acks of the push answer this pull rides
    in; then the pull leaves out what that answer says already (those acks, ``server`` and its
    time) and its empty lists, and the caller's visit is not recorded twice."""
    conn, node = get_db(), current_node()
    answer = service().pull(conn, node, caller, cursors, have, acked, **({"in_push": True} if in_push is not None
                                                                          else {}))
    answer = {**answer, "envelope_versions": formats.advertised(conn, node), "keyids": formats.SHORT_KEYIDS}
    if in_push is None:
        return answer
    answer["acks"] = [ack for ack in answer.get("acks", []) if ack not in in_push]
    return {k: v for k, v in answer.items() if k not in ("server", "server_time") and v != []
            or k in ("envelope_versions", "keyids")}


@bp.post("/pull")
@node_signed
def pull():
    """Acknowledgements, downlink and newer metadata for the caller's subtree."""
    g.caller = _authenticate()
    body = _json_body(1024 * 1024)
    cursors, have, acked = _pull_request(body)
    _await_ack(g.caller, acked.get(g.caller, 0), body.get("wait"))
    answer = _pull_answer(g.caller, cursors, have, acked)
    return jsonify(_short_documents(answer) if body.get("docs") == "short" else answer)


def _await_ack(caller: str, reported: int, wait) -> None:
    """A pull asking to ``wait`` (seconds, §7.1) while this node holds envelopes of the caller
    the hub has not acknowledged beyond ``reported``: forward them now and answer once a newer
    acknowledgement is here, the round begun for it has finished without one, or the wait (at
    most ``SYNC_WRITE_THROUGH_SECONDS``) is over. A village that has pushed its backlog learns
    of the hub's acks as they come, without asking again and again. Elsewhere (the hub, a node
    holding nothing of the caller's): at once.

    :raises ValidationError: ``wait`` is not a whole number of seconds from 0 to 60.
    """
    if wait is None:
        return
    if not canonical.is_count(wait) or wait > 60:
        raise ValidationError("wait", "wait 必须是 0 到 60 之间的整数秒", code="malformed")
    forward = current_app.extensions.get("liandong_sync_forward")  # a node with a parent and its jobs
    seconds = min(float(wait), float(current_node().config["SYNC_WRITE_THROUGH_SECONDS"]))
    conn = get_db()
    if forward is None or seconds <= 0 or conn.execute(
            "SELECT 1 FROM custody WHERE origin = ? AND seq > ? LIMIT 1", (caller, reported)).fetchone() is None:
        return

    def newer_ack() -> bool:
        row = conn.execute("SELECT acked_seq FROM acks WHERE origin = ?", (caller,)).fetchone()
        return row is not None and row[0] > reported

    if not newer_ack():
        forward(newer_ack, seconds)


@bp.post("/blobs/status")
@node_signed
def blob_status():
    """How many bytes of each named blob this node holds (0 = none): the sender resumes there."""
    _authenticate()
    return jsonify(_blobs_held(_blob_names(_json_body(1024 * 1024).get("sha256", []))))


@bp.put("/blobs/<sha256>")
@node_signed
def blob_chunk(sha256: str):
    """One chunk of a blob at ``?offset=`` of a blob of ``?size=`` bytes."""
    g.caller = _authenticate()
    node = current_node()
    ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
    try:
        size, offset = _count_arg("size"), _count_arg("offset")
        if not node.blobs.has(sha256) and sha256 not in service().blobs_expected(get_db(), [sha256]):
            # No envelope here names it yet: parked, within the uploader's quota.
            with write_transaction(get_db()):
                park(get_db(), g.caller, sha256, size, int(node.config["BLOB_PARK_QUOTA_BYTES"]), node.now())
        complete = node.blobs.write_chunk(
            sha256, size, offset, request.get_data(cache=True), node.config["MAX_ATTACHMENT_BYTES"]
        )
    except (KeyError, ValueError) as exc:
        if isinstance(exc, QuotaExceeded):
            raise SyncError("blob_quota", f"材料文件暂存超出本节点的配额：{exc}", status=409) from exc
        if isinstance(exc, BlobError):
            raise SyncError("blob_rejected", f"材料文件分块被拒绝：{exc}", status=409) from exc
        raise ValidationError("offset", "size 与 offset 必须是 0 到 2^63-1 的整数", code="malformed") from exc
    acks = []
    if complete:
        acks = service().blob_complete(get_db(), node, sha256, size)
        _forward_soon()
    return jsonify({"sha256": sha256, "received": node.blobs.received(sha256), "complete": complete, "acks": acks})


@bp.post("/blobs/batch")
@node_signed
def blob_batch():
    """Many files, or pieces of them, in one request (docs/sync-protocol.md §6.3).

    Each frame is checked like one ``PUT /blobs/<sha256>`` chunk (resumable per file and per
    offset; a frame that does not fit is reported for its file, the others still count). The
    batch's files are made durable together (:meth:`sync.blobs.BlobStore.write_batch`); only
    then one transaction records the nonce, registers every completed file and returns the
    acknowledgements they released.
    """
    # A township's following waits while files arrive as while pushes do (the hub's apply does
    # not: under a county's steady uploads its register would lag by APPLY_MAX_LAG_SECONDS).
    with service().receiving_files():
        conn = get_db()
        node = current_node()
        caller, nonce = _check_signature(node.trust(conn))
        known = conn.execute("SELECT nonce FROM request_nonces WHERE node_id = ?", (caller,)).fetchone()
        if known is not None and nonce <= known["nonce"]:  # a replay must not even write a chunk
            raise SyncError("node_auth", "节点身份验证失败：replayed request nonce", status=401)
        ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
        try:
            frames = wire.blob_frames(_body(int(current_app.config["MAX_PUSH_BYTES"])))
        except wire.CodingError as exc:
            raise ValidationError("body", f"材料文件批次格式错误：{exc}", code="malformed") from exc
        frames, over_quota, held = _park_unnamed(conn, node, caller, frames)
        # Written, then made durable together (data, renames, folders), before anything is said.
        batch = node.blobs.write_batch(frames, node.config["MAX_ATTACHMENT_BYTES"], held)
        batch.rejected.update(over_quota)
        with write_transaction(conn):
            _record_nonce(conn, caller, nonce)
            acks = service().blobs_complete(conn, node, list(batch.complete.items())) if batch.complete else []
        g.caller = caller
        if batch.complete:
            _forward_soon()
    return jsonify({"complete": sorted(batch.complete), "partial": batch.partial, "rejected": batch.rejected,
                    "acks": acks})


def _park_unnamed(conn, node, caller: str, frames: list) -> tuple[list, dict[str, str], set[str]]:
    """The frames of files this node holds or an envelope here names, and of the others (parked)
    as far as the caller's quota of unnamed uploads goes, as ``PUT /blobs/<sha256>`` parks them;
    the files beyond it are left out and reported; and which of the files are here complete.
    Without this, a batch was a way round ``BLOB_PARK_QUOTA_BYTES``: unnamed files kept for ever."""
    held = node.blobs.held(sha for sha, _, _, _ in frames)  # one query, not one per frame
    new = list(dict.fromkeys(sha for sha, _, _, _ in frames if sha not in held))
    expected = service().blobs_expected(conn, new)
    unnamed = {sha: size for sha, size, _, _ in frames if sha not in held and sha not in expected}
    if not unnamed:
        return frames, {}, held
    refused: dict[str, str] = {}
    quota = int(node.config["BLOB_PARK_QUOTA_BYTES"])
    with write_transaction(conn):
        for sha, size in unnamed.items():
            try:
                park(conn, caller, sha, size, quota, node.now())
            except QuotaExceeded as exc:
                refused[sha] = f"blob_quota: {exc}"
    return [f for f in frames if f[0] not in refused], refused, held


def _forward_soon() -> None:
    """A township forwards what it just received at once (docs/sync-protocol.md §4.2)."""
    kick = current_app.extensions.get("liandong_sync_kick")
    if kick is not None:
        kick()


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
