"""A small HTTP/1.1 client on the standard library, for a node talking to its parent.

Why not ``requests``: a village process serves pages with Flask, which already loads the
standard library's ``http.client`` and ``ssl``; ``requests`` with urllib3, charset_normalizer,
idna and certifi added ~5 MiB to every village process for the four POSTs of a sync round
(docs/performance.md, "The village process"). This module keeps what sync needs of it:

* one kept-alive connection per parent (scheme, host, port), taken out of a small idle pool for
  a request and put back after it, so concurrent rounds never share a socket; an idle
  connection the parent closed meanwhile is noticed before it is used (as urllib3 does);
* a timeout for connecting and for each wait on the answer (``socket`` timeouts: the same
  meaning as ``requests``' ``timeout=``);
* answers decoded from ``gzip`` (or ``zstd``) as ``Accept-Encoding`` offered them, with a bound
  on the decoded size; no redirects followed, no proxies, no cookies;
* every failure to get a complete answer is an :class:`OSError` (``ConnectionRefusedError``,
  ``TimeoutError``, :class:`HttpError` for a garbled answer): the caller catches one family.

TLS uses :func:`ssl.create_default_context`: the operating system's certificate store (on
Windows, the machine's store), or ``SSL_CERT_FILE`` where an operator sets one.

:meth:`Transport.request` has the shape of ``requests.Session.request`` (``data=``,
``headers=``, ``timeout=``, ``allow_redirects=``) and its :class:`Response` the attributes the
client reads (``status_code``, ``headers``, ``content``, ``text``), so a test or benchmark may
still hand :class:`sync.client.ParentClient` a ``requests`` session; :meth:`Transport.exchanged`
is the hook that sees the exact bytes of each exchange (benchmarks count wire bytes with it).
"""

from __future__ import annotations

import atexit
import http.client
import json
import select
import ssl
import threading
from urllib.parse import urlsplit

from sync import wire

#: Largest answer accepted, on the wire and decoded: a pull answer is a batch of envelopes and
#: the newest metadata (a few MiB at most); a gzip bomb from a captive portal stops here.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Idle connections kept per parent; a node talks to one parent, rarely from two threads at once.
IDLE_PER_ORIGIN = 2
#: Bodies larger than this are sent after the head, not copied into one buffer with it.
_JOIN_BELOW = 64 * 1024
#: Answers are read in pieces of this size (a read of the whole bound would reserve it).
_READ_BYTES = 256 * 1024


class HttpError(ConnectionError):
    """The parent's answer could not be read as HTTP (garbled, cut short, too large, bad coding)."""


class Response:
    """A complete answer: status, headers, the decoded body, and its size on the wire."""

    def __init__(self, status_code: int, reason: str, headers: http.client.HTTPMessage, content: bytes,
                 head_bytes: int, body_bytes: int):
        self.status_code = status_code
        self.reason = reason
        self.headers = headers  # case-insensitive .get(), like requests' headers
        self.content = content
        self.head_bytes = head_bytes  # status line and headers as received
        self.body_bytes = body_bytes  # the body as received (before decoding)

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced): for error messages."""
        return self.content.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON (:class:`ValueError` if it is not)."""
        return json.loads(self.content)

    def close(self) -> None:
        """Nothing to release: the body is read whole and the connection went back to the pool."""


class _Counting:
    """Counts the bytes a connection writes (request line, headers and body, as sent)."""

    sent = 0

    def send(self, data):  # noqa: D102 - http.client's
        self.sent += len(data)
        super().send(data)


class _HTTPConnection(_Counting, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Counting, http.client.HTTPSConnection):
    pass


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:  # built once: loading the certificate store is slow and takes memory
        _TLS = ssl.create_default_context()
    return _TLS


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection can no longer carry a request: closed, or the peer spoke
    (an idle HTTP/1.1 peer only ever "speaks" by closing)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # no descriptor limit (select's is 1,024 on Linux)
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])  # Windows: select takes any socket
    except (OSError, ValueError):
        return True


def _read_body(answer: http.client.HTTPResponse) -> bytes:
    """The whole body (Content-Length, chunked or up to the close), at most MAX_ANSWER_BYTES."""
    if answer.length is not None and answer.length > MAX_ANSWER_BYTES:
        raise HttpError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    pieces, size = [], 0
    while piece := answer.read(_READ_BYTES):
        pieces.append(piece)
        size += len(piece)
        if size > MAX_ANSWER_BYTES:
            raise HttpError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    if answer.length:  # read(amt) stops quietly at a close before Content-Length was reached
        raise HttpError(f"IncompleteRead: the answer ended {answer.length} bytes early")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class Transport:
    """Kept-alive HTTP/1.1 connections to parents; thread-safe; ``requests.Session``-shaped."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, data: bytes | None = None, headers: dict | None = None,
                timeout: float | None = None, allow_redirects: bool = False) -> Response:
        """Send one request and read its whole answer.

        A redirect is returned as it is (``allow_redirects`` is accepted for the shape and never
        followed: a parent does not redirect sync). :raises OSError: no complete answer.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = data or b""
        conn = self._checkout(key, timeout)
        try:
            conn.sent = 0
            conn.putrequest(method, target, skip_accept_encoding=True)
            given = {name.lower() for name in (headers or {})}
            if not given & {"accept-encoding", "content-encoding"}:
                # Every coding we decode, unless the caller narrowed it or asks for its answer in
                # its own body's coding (docs/sync-protocol.md §5.1.1).
                conn.putheader("Accept-Encoding", ", ".join(wire.CODINGS))
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body or method.upper() in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            if len(body) < _JOIN_BELOW:
                conn.endheaders(body or None)  # one segment: no Nagle/delayed-ACK wait
            else:
                conn.endheaders()
                conn.send(body)
            answer = conn.getresponse()
            raw = _read_body(answer)
            coding = (answer.getheader("Content-Encoding") or "").strip().lower()
            try:
                content = wire.decode(raw, coding, MAX_ANSWER_BYTES) if coding else raw
            except wire.CodingError as exc:
                raise HttpError(f"answer body: {exc}") from exc
            head = (f"HTTP/{answer.version // 10}.{answer.version % 10} {answer.status} {answer.reason}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in answer.getheaders()) + "\r\n")
            response = Response(answer.status, answer.reason, answer.msg, content,
                                len(head.encode("latin-1", "replace")), len(raw))
            sent = conn.sent
            reusable = not answer.will_close and answer.isclosed()
        except http.client.HTTPException as exc:
            conn.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._checkin(key, conn)
        else:
            conn.close()
        self.exchanged(method.upper(), url, headers or {}, body, sent, response)
        return response

    def exchanged(self, method: str, url: str, headers: dict, body: bytes, sent: int, response: Response) -> None:
        """Called after each complete exchange: the request as the caller gave it, ``sent`` =
        the bytes written for it (request line, every header, the body as sent), and the answer
        (``head_bytes`` + ``body_bytes`` as received). Nothing here; a subclass counts or records."""

    def close(self) -> None:
        """Close every idle connection (one in use closes when its request ends)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def open_connections(self) -> int:
        """Idle connections held now."""
        with self._lock:
            return sum(len(conns) for conns in self._idle.values())

    def _checkout(self, key: tuple[str, str, int], timeout: float | None) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None:
                break
            if _dropped(conn):
                conn.close()
                continue
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            return conn
        scheme, host, port = key
        if scheme == "https":
            return _HTTPSConnection(host, port, timeout=timeout, context=_tls_context())
        return _HTTPConnection(host, port, timeout=timeout)

    def _checkin(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < IDLE_PER_ORIGIN:
                conns.append(conn)
                return
        conn.close()


_SHARED: Transport | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> Transport:
    """The process's transport: every client of this process towards the same parent reuses its
    connections (a round builds a new client; the connection outlives it)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Transport()
            atexit.register(_SHARED.close)  # hang up politely at exit (no unclosed-socket warnings)
        return _SHARED
