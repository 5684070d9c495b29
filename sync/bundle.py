"""USB bundles: the sync exchange written to a file when there is no network at all.

A village exports its unsent envelopes and their material files into one signed file; the
township imports it exactly as if the village had pushed (same custody, same idempotency) and
writes back an answer bundle holding what a pull would have returned (custody receipt, hub
acknowledgements, downlink, metadata), which the village imports. Both files are signed by
their author's node key (``BUNDLE`` documents), so a stick cannot carry forged content.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from pathlib import Path

from shared.core import canonical
from shared.core.clock import iso
from shared.core.crypto import SignatureError, write_private_file
from sync import envelope, node_sync, outbox

MAX_BUNDLE_BYTES = 512 * 1024 * 1024

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def export_outbox(conn: sqlite3.Connection, node, path: Path, progress: Progress = _no_progress) -> dict:
    """Write this node's unacknowledged envelopes and their files into a signed bundle."""
    rows = outbox.unacked(conn)
    documents = [envelope.from_bytes(r["document"]) for r in rows]
    hashes: dict[str, int] = {}
    for d in documents:
        for a in envelope.peek(d).get("attachments", []):
            hashes[a["sha256"]] = a["size"]
    blobs = []
    for i, sha in enumerate(sorted(hashes), 1):
        if node.blobs.has(sha):
            blobs.append({"sha256": sha, "data": base64.b64encode(node.blobs.read(sha)).decode("ascii")})
        progress("blobs", i, len(hashes))
    cursors, have = node_sync.pull_request(conn, node)
    body = {
        "kind": "outbox", "from": node.node_id, "to": node.config["PARENT_ID"], "created_at": iso(node.now()),
        "envelopes": documents, "blobs": blobs, "cursors": cursors, "metadata": have,
    }
    write_private_file(Path(path), canonical.dumps(envelope.sign(node.key, envelope.BUNDLE, body)))
    return {"envelopes": len(documents), "blobs": len(blobs), "bytes": Path(path).stat().st_size}


def _open(node, conn: sqlite3.Connection, path: Path, expected_kind: str) -> dict:
    data = Path(path).read_bytes()
    try:
        document = canonical.loads(data, max_bytes=MAX_BUNDLE_BYTES)
        opened = envelope.open_signed(document, envelope.BUNDLE, node.trust(conn).node_key, max_bytes=MAX_BUNDLE_BYTES)
    except (SignatureError, canonical.CanonicalError) as exc:
        raise SignatureError(f"bundle refused: {exc}") from exc
    body = opened.body
    signer = node.trust(conn).node_of_key(opened.kid)
    if body.get("kind") != expected_kind or body.get("to") != node.node_id or signer.node_id != body.get("from"):
        raise SignatureError("bundle is not addressed to this node or not signed by its sender")
    return body


def import_at_township(conn: sqlite3.Connection, node, service, path: Path, answer_path: Path,
                       progress: Progress = _no_progress) -> dict:
    """Take custody of a village's bundle and write the answer bundle for it."""
    body = _open(node, conn, path, "outbox")
    village = body["from"]
    entry = node.trust(conn).nodes.get(village)
    if entry is None or entry.parent != node.node_id:
        raise SignatureError("the bundle's village is not below this township")
    max_size = int(node.config["MAX_ATTACHMENT_BYTES"])
    for i, blob in enumerate(body["blobs"], 1):
        data = base64.b64decode(blob["data"])
        if len(data) <= max_size and node.blobs.write_chunk(blob["sha256"], len(data), 0, data, max_size):
            service.blob_complete(conn, node, blob["sha256"], len(data))
        progress("blobs", i, len(body["blobs"]))
    pushed = service.push(conn, node, village, body["envelopes"])
    pulled = service.pull(conn, node, village, body.get("cursors", {}), body.get("metadata", {}))
    answer = {
        "kind": "answer", "from": node.node_id, "to": village, "created_at": iso(node.now()),
        "receipt": pushed["receipt"], "results": pushed["results"], "acks": pulled["acks"],
        "downlink": pulled["downlink"], "metadata": pulled["metadata"], "server": node.node_id,
        "server_time": pulled["server_time"],
    }
    write_private_file(Path(answer_path), canonical.dumps(envelope.sign(node.key, envelope.BUNDLE, answer)))
    custody = sum(1 for r in pushed["results"] if r["status"] == "custody")
    return {"village": village, "envelopes": len(body["envelopes"]), "custody": custody, "blobs": len(body["blobs"])}


def import_answer(conn: sqlite3.Connection, node, path: Path) -> dict:
    """Apply the township's answer bundle at the village."""
    body = _open(node, conn, path, "answer")
    node_sync.apply_push_answer(conn, node, body)
    result = node_sync.apply_pull_answer(conn, node, body)
    return {**result, "counts": outbox.counts(conn)}
