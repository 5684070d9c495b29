"""HTTP client of a node towards its parent: node-signed push, pull and blob transfer.

Only an explicit 2xx with a JSON body counts as success (a captive portal's 200 HTML page does
not parse); everything else raises :class:`SyncUnavailable` and the round is retried later.
"""

from __future__ import annotations

from urllib.parse import urlencode

import requests

from shared.core import canonical
from shared.core.crypto import SigningKey
from sync.blobs import CHUNK_BYTES
from sync.nodeauth import NonceSource, sign_request


class SyncUnavailable(Exception):
    """The parent could not be reached or answered with an error."""


class ParentClient:
    """Talks to one parent node on behalf of one node."""

    def __init__(self, base_url: str, parent_id: str, node_id: str, key: SigningKey, nonces: NonceSource,
                 timeout: float = 10.0, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.parent_id = parent_id
        self.node_id = node_id
        self.key = key
        self.nonces = nonces
        self.timeout = timeout
        self.session = session or requests.Session()

    def _call(self, method: str, path: str, body: bytes, content_type: str = "application/json") -> dict:
        headers = sign_request(self.key, self.node_id, self.parent_id, method, path, body, self.nonces.next())
        headers["Content-Type"] = content_type
        try:
            response = self.session.request(method, self.base_url + path, data=body, headers=headers,
                                            timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise SyncUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise SyncUnavailable(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            return canonical.loads(response.content) if response.content else {}
        except canonical.CanonicalError:
            # Servers answer with ordinary JSON (floats never occur, but be lenient in parsing replies).
            try:
                return response.json()
            except ValueError as exc:
                raise SyncUnavailable("parent answered with something that is not JSON") from exc

    def push(self, documents: list[dict]) -> dict:
        """Send envelopes; the parent's per-envelope results, receipt and acks."""
        return self._call("POST", "/sync/v1/push", canonical.dumps({"envelopes": documents}))

    def case_documents(self, case_id: str) -> list[dict]:
        """The signed documents the parent holds for one of our cases (reprinting a purged case)."""
        return self._call("POST", "/sync/v1/documents", canonical.dumps({"case_id": case_id})).get("documents", [])

    def pull(self, cursors: dict[str, int], have: dict[str, int], acked: dict[str, int] | None = None) -> dict:
        """Fetch acks newer than ``acked``, downlink after ``cursors``, metadata newer than ``have``."""
        body = {"cursors": cursors, "metadata": have}
        if acked is not None:
            body["acked"] = acked
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
            answer = self._call("PUT", path, chunk, "application/octet-stream")
            if answer.get("complete") or not chunk:
                return answer
            offset = answer.get("received", offset + len(chunk))
