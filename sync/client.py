"""HTTP client of a node towards its parent: node-signed push, pull and blob transfer.

Only an explicit 2xx with a JSON body counts as success (a captive portal's 200 HTML page does
not parse); everything else raises :class:`SyncUnavailable` and the round is retried later.
The HTTP itself is :mod:`sync.transport` (the standard library, connections kept alive per
parent); ``session=`` takes any object of its shape (a ``requests.Session`` too: tests and
benchmarks count bytes or inject faults through it).
"""

from __future__ import annotations

from urllib.parse import urlencode

from shared.core import canonical
from shared.core.crypto import SigningKey
from sync import envelope, transport, wire
from sync.blobs import CHUNK_BYTES
from sync.nodeauth import NonceSource, sign_request

#: Bytes of file data per batched blob request (docs/sync-protocol.md §6.1).
BLOB_BATCH_BYTES = 4 * 1024 * 1024

# What each parent (by URL) said it accepts for request bodies: its ``Accept-Encoding`` answer
# header (RFC 7694), remembered for the process's life; None = plain (an older parent).
_REQUEST_CODING: dict[str, str | None] = {}
# Parents (by URL) that refused the compact ``Liandong-Auth`` header and took the three long
# ones (a node from before it, docs/sync-protocol.md §5.1): long headers for the process's life.
_LONG_AUTH: set[str] = set()


class SyncUnavailable(Exception):
    """The parent could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def pull_body(cursors: dict[str, int], have: dict[str, int], acked: dict[str, int] | None = None) -> dict:
    """The body of a pull (also what a push carries as ``"pull"``, docs/sync-protocol.md §7.1)."""
    body = {"cursors": cursors, "metadata": have}
    if acked is not None:
        body["acked"] = acked
    return body


def _failure(exc: OSError) -> str:
    """The log's line for a request that got no answer: ``Timeout: …`` or ``ConnectionError: …``
    first, the words shared/rules/link_trouble.py and the 立即同步 page read."""
    kind = "Timeout" if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ else "ConnectionError"
    name = type(exc).__name__
    return f"{kind}: {exc}" if name == kind else f"{kind}: {name}: {exc}"


def stored_push_body(documents: list[bytes], compact: bool = False, ids: list[str] | None = None,
                     pull: dict | None = None, blobs: list[str] | None = None, wait: bool = False,
                     held: dict | None = None, short_keyids: bool = False) -> bytes:
    """The body :meth:`ParentClient.push_stored` sends (its arguments have the same meaning):
    canonical JSON joined from the stored documents' bytes."""
    if ids is not None:
        documents = envelope.elide_stored(documents, ids)
    head = b'{"ack":"wait",' if wait else b"{"
    # A compact answer, its signed documents in their short form too (§2.1.2).
    head += b'"answer":"compact","docs":"short","envelopes":[' if compact else b'"envelopes":['
    # The members: ack, answer, docs, envelopes, then blobs, held, pull, receipt.
    asked = b',"blobs":' + canonical.dumps(blobs) if blobs is not None else b""
    asked += b',"held":' + canonical.dumps(held) if held is not None else b""
    asked += b',"pull":' + canonical.dumps(pull) if pull is not None else b""
    tail = b"]" + asked + (b',"receipt":"ranges"}' if compact else b"}")
    joined = b",".join(bytes(d) for d in documents)
    return head + (envelope.shorten_keyids(joined) if short_keyids else joined) + tail


class ParentClient:
    """Talks to one parent node on behalf of one node."""

    def __init__(self, base_url: str, parent_id: str, node_id: str, key: SigningKey, nonces: NonceSource,
                 timeout: float = 10.0, session: transport.Transport | None = None):
        self.base_url = base_url.rstrip("/")
        self.parent_id = parent_id
        self.node_id = node_id
        self.key = key
        self.nonces = nonces
        self.timeout = timeout
        self.session = session or transport.shared()

    def _call(self, method: str, path: str, body: bytes, content_type: str = "application/json",
              compress: bool = True, long_auth: bool = False) -> dict:
        coding = _REQUEST_CODING.get(self.base_url) if compress else None
        coding = coding if wire.worth(coding, len(body)) else None
        sent = wire.encode(body, coding) if coding else body
        # The request signature covers the body as sent: the compressed bytes (nodeauth).
        compact = not long_auth and self.base_url not in _LONG_AUTH
        headers = sign_request(self.key, self.node_id, self.parent_id, method, path, sent, self.nonces.next(),
                               compact=compact)
        if coding != wire.DICT_CODING or content_type != "application/json":
            headers["Content-Type"] = content_type  # a body in the dictionary coding is JSON (§5.1.1)
        if coding:
            headers["Content-Encoding"] = coding
        known = _REQUEST_CODING.get(self.base_url)
        if known and known != coding:
            # The parent encodes what it decodes: asking for its best one alone is enough, and a
            # body already in it asks for it by its Content-Encoding (§5.1.1).
            headers["Accept-Encoding"] = known
        try:
            response = self.session.request(method, self.base_url + path, data=sent, headers=headers,
                                            timeout=self.timeout, allow_redirects=False)
        except OSError as exc:  # refused, reset, timed out, garbled (requests' exceptions are OSErrors too)
            raise SyncUnavailable(_failure(exc)) from exc
        if coding and response.status_code in (400, 415):
            # A parent downgraded since it said so: plain bodies from now on, this one again.
            _REQUEST_CODING[self.base_url] = None
            return self._call(method, path, body, content_type, compress=False, long_auth=long_auth)
        if compact and response.status_code == 401:
            # Perhaps a parent from before the compact header: the same request with the long
            # ones (a new nonce); only if that one passes are they kept for this parent.
            answer = self._call(method, path, body, content_type, compress, long_auth=True)
            _LONG_AUTH.add(self.base_url)
            return answer
        offer = response.headers.get("Accept-Encoding")
        if offer is not None or not coding:  # a parent leaves its offer out when we use its best coding already
            _REQUEST_CODING[self.base_url] = wire.choose(offer)
        if not 200 <= response.status_code < 300:
            raise SyncUnavailable(f"HTTP {response.status_code}: {response.text[:300]}", response.status_code)
        try:
            return canonical.loads(response.content) if response.content else {}
        except canonical.CanonicalError:
            # Servers answer with ordinary JSON (floats never occur, but be lenient in parsing replies).
            try:
                return response.json()
            except ValueError as exc:
                raise SyncUnavailable("parent answered with something that is not JSON") from exc

    def push(self, documents: list[dict], compact: bool = False, elide: bool = False) -> dict:
        """Send envelopes; the parent's per-envelope results, receipt and acks.

        ``compact``: ask for routine outcomes as seq ranges (``ok``) and only the exceptions in
        ``results``, and for a custody receipt of seq ranges (``custody`` v2); an older parent
        ignores both and lists every envelope, in both. ``elide``: the parent takes v2 envelopes, so
        a ``prev`` that is the id of the envelope before it travels empty (``envelope.elide_links``).
        """
        body = {"envelopes": envelope.elide_links(documents) if elide else documents,
                **({"answer": "compact", "docs": "short", "receipt": "ranges"} if compact else {})}
        return self._call("POST", "/sync/v1/push", canonical.dumps(body))

    def push_stored(self, documents: list[bytes], compact: bool = False, ids: list[str] | None = None,
                    pull: dict | None = None, blobs: list[str] | None = None, wait: bool = False,
                    held: dict | None = None, short_keyids: bool = False) -> dict:
        """:meth:`push` for documents as this node stored them (:func:`sync.envelope.to_bytes`:
        sorted keys, no spaces, UTF-8, i.e. their canonical JSON already). The body is joined from
        those bytes, the same bytes :meth:`push` would send, without parsing each document and
        serialising (and re-checking) the whole batch again: that was a fifth of a township's round.
        ``ids`` (the documents' envelope ids): the parent takes v2, links are elided
        (:func:`sync.envelope.elide_stored`). ``pull`` (the body of a :meth:`pull`): ask for the
        pull's answer inside the push's (``"pull"`` member of the answer), one request instead of
        two; an older parent ignores it and answers without that member (docs/sync-protocol.md §5.3.2).
        ``blobs`` (hashes of files): ask what :meth:`blob_status` would, answered as ``"blobs"``.
        ``wait`` (a village towards its township): ask it to forward these at once and answer with
        the hub's acknowledgement if it comes in time, the receipt then left out (``"ack":"wait"``,
        docs/sync-protocol.md §5.3.3); an older parent ignores it. ``held`` (a township towards
        the hub, :func:`sync.wire.held_ranges`): when it took the forwarded envelopes (§5.3).
        ``short_keyids``: the parent said it reads key ids cut short (§2.1.2)."""
        return self._call("POST", "/sync/v1/push", stored_push_body(documents, compact, ids, pull, blobs, wait, held,
                                                                    short_keyids))

    def case_documents(self, case_id: str) -> list[dict]:
        """The signed documents the parent holds for one of our cases (reprinting a purged case)."""
        return self._call("POST", "/sync/v1/documents", canonical.dumps({"case_id": case_id})).get("documents", [])

    def pull(self, cursors: dict[str, int], have: dict[str, int], acked: dict[str, int] | None = None,
             wait: int | None = None) -> dict:
        """Fetch acks newer than ``acked``, downlink after ``cursors``, metadata newer than ``have``;
        ``wait``: whole seconds a township may hold the answer for the hub's next acknowledgement (§7.1)."""
        body = {**pull_body(cursors, have, acked), "docs": "short", **({"wait": wait} if wait else {})}
        return self._call("POST", "/sync/v1/pull", canonical.dumps(body))

    def blob_status(self, hashes: list[str]) -> tuple[dict[str, int], set[str]]:
        """(bytes the parent holds of each blob, the blobs it holds complete and verified)."""
        answer = self._call("POST", "/sync/v1/blobs/status", canonical.dumps({"sha256": hashes}))
        return answer.get("have", {}), set(answer.get("complete", []))

    def send_blob(self, sha256: str, data: bytes, offset: int) -> dict:
        """Send a blob from ``offset`` on, chunk by chunk; returns the last answer.

        At ``offset == size`` one empty chunk asks the receiver to check and keep what it has.
        """
        size = len(data)
        while True:
            chunk = data[offset: offset + CHUNK_BYTES]
            path = f"/sync/v1/blobs/{sha256}?" + urlencode({"size": size, "offset": offset})
            answer = self._call("PUT", path, chunk, "application/octet-stream", compress=False)
            if answer.get("complete") or not chunk:
                return answer
            offset = answer.get("received", offset + len(chunk))

    def send_blob_batch(self, files: list[tuple[str, bytes, int]], max_bytes: int | None = None) -> list[dict]:
        """Send ``(sha256, data, offset)`` files, many per request, each from its offset.

        A file larger than the room left goes in pieces over successive requests; one empty
        frame at ``offset == size`` asks the parent to check and keep a whole partial file.
        Returns each request's answer; ``max_bytes`` defaults to :data:`BLOB_BATCH_BYTES`. :raises SyncUnavailable: also ``status`` 404 from a
        parent without the batch route (an older node): send file by file then.
        """
        queue, answers = list(files), []
        while queue:
            frames, room = [wire.BLOB_BATCH_MAGIC], max_bytes or BLOB_BATCH_BYTES
            while queue and room > 0:
                sha256, data, offset = queue[0]
                chunk = data[offset: offset + room]
                frames.append(wire.blob_frame(sha256, len(data), offset, chunk))
                room -= len(chunk) + wire.FRAME_HEAD_BYTES
                if offset + len(chunk) >= len(data):
                    queue.pop(0)
                else:
                    queue[0] = (sha256, data, offset + len(chunk))
            # Scans are JPEG or PDF: compressing them again only costs CPU.
            answers.append(self._call("POST", "/sync/v1/blobs/batch", b"".join(frames), wire.BLOB_BATCH_TYPE,
                                      compress=False))
        return answers
