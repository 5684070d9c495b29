"""The second stage of hub ingest: apply accepted envelopes to the case register.

Ingest (sync/ingest.py) verifies an envelope, places it in its origin's chain, queues it in
``apply_queue`` and acknowledges it, all in the push's transaction: the acknowledgement means
"the hub holds it", which is what a node needs before it prunes. Applying the content (a case
stored and routed, an event checked against the state machine) happens here, from the queue,
in acceptance order, so per-origin order holds exactly as if it were done inline. The split is
the "accepted" versus "committed" of CommCare and DHIS2 (../shared/reference/
offline-sync-anchors.md §b5): a township back from a week offline is acknowledged at ingest
speed, and a burst of pushes is not slowed by the register's indexes.

:class:`ApplyWorker` runs the queue in a background thread once pushes pause (or once work has
waited ``max_lag`` seconds, so a sustained flood never starves it). Each chunk is one write
transaction that reads, applies and dequeues its rows together: a crash between accept and
apply, or in the middle of a chunk, leaves the rows queued, and they are applied exactly once
after restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, NamedTuple

from shared.core.errors import LiandongError
from shared.core.storage import write_transaction
from sync import envelope
from sync.ingest import quarantine

log = logging.getLogger("liandong.apply")

Applier = Callable[[sqlite3.Connection, envelope.Opened], None]


class Deferred(NamedTuple):
    """What a two-phase applier's ``prepare`` may return instead of a writer: ``rows`` to be
    written by ``write_many(conn, [rows, ...])`` together with the rows the chunk's next
    envelopes defer to the same ``write_many`` (one ``executemany`` per table for a run of
    envelopes instead of statements per envelope).

    The rows are written before any other applier of the chunk runs, and at the end of the
    chunk, so every envelope still sees the effects of those before it. A ``prepare`` that
    defers must read nothing that the deferred rows of earlier envelopes could change (the
    hub's ``case.submit`` reads only the catalog); ``write_many`` must give what writing the
    rows one envelope at a time in that order gives (a repeated case: the first one stands).
    """

    write_many: Callable[[sqlite3.Connection, list], None]
    rows: Any

# Content faults of one envelope: quarantined as invalid_content, the rest goes on.
CONTENT_ERRORS = (LiandongError, KeyError, ValueError, TypeError)


def pending(conn: sqlite3.Connection) -> int:
    """How many accepted envelopes wait to be applied."""
    return conn.execute("SELECT COUNT(*) FROM apply_queue").fetchone()[0]


def apply_pending(conn: sqlite3.Connection, appliers: dict[str, Applier], now, limit: int = 200) -> int:
    """Apply up to ``limit`` queued envelopes, oldest first, in one write transaction.

    Returns how many were taken from the queue. A content fault quarantines its envelope
    (``invalid_content``) and the others go on. Any other error while writing fails the chunk;
    it is then retried one envelope per savepoint, where such an error quarantines that envelope
    alone (``apply_failed``), so one poison envelope never blocks the queue.
    """
    if conn.execute("SELECT 1 FROM apply_queue LIMIT 1").fetchone() is None:
        return 0  # nothing queued (the usual answer to a pull's wake-up): no write lock taken
    try:
        return _apply_chunk(conn, appliers, now, limit, isolate=False)
    except Exception:
        log.exception("applying a chunk failed; retrying it one envelope at a time")
        return _apply_chunk(conn, appliers, now, limit, isolate=True)


def _apply_chunk(conn, appliers, now, limit: int, isolate: bool) -> int:
    with write_transaction(conn):
        rows = conn.execute(
            "SELECT q.id, i.origin, i.seq, i.envelope_id, i.document, i.received_at, i.via, h.held_at"
            " FROM apply_queue q JOIN inbox i ON i.origin = q.origin AND i.seq = q.seq"
            " LEFT JOIN inbox_held h ON h.origin = q.origin AND h.seq = q.seq ORDER BY q.id LIMIT ?",
            (limit,),
        ).fetchall()
        pending = _Pending(conn)
        for row in rows:
            opened = envelope.open_stored(envelope.from_bytes(row["document"]), row["envelope_id"], row["received_at"],
                                          row["via"], row["held_at"])
            if isolate:
                _apply_isolated(conn, appliers.get(opened.body["kind"]), opened, row, now)
            else:
                _apply_one(conn, appliers.get(opened.body["kind"]), opened, row, now, pending)
        pending.flush()
        if rows:
            conn.execute("DELETE FROM apply_queue WHERE id <= ?", (rows[-1]["id"],))
    return len(rows)


class _Pending:
    """Rows deferred by two-phase appliers, written together (see :class:`Deferred`)."""

    def __init__(self, conn):
        self.conn = conn
        self.write_many = None
        self.rows: list = []

    def add(self, deferred: Deferred) -> None:
        if deferred.write_many is not self.write_many:
            self.flush()
            self.write_many = deferred.write_many
        self.rows.append(deferred.rows)

    def flush(self) -> None:
        if self.rows:
            self.write_many(self.conn, self.rows)
            self.rows = []


def _apply_one(conn, applier, opened, row, now, pending: _Pending) -> None:
    prepare = getattr(applier, "prepare", None)
    if prepare is not None:
        # Two-phase applier: every check runs and every row is built before anything is
        # written, so a refusal leaves nothing to undo and needs no SAVEPOINT (which costs a
        # statement journal per envelope).
        try:
            write = prepare(conn, opened)
        except CONTENT_ERRORS as exc:
            _refuse(conn, row, "invalid_content", exc, now)
            return
        if isinstance(write, Deferred):
            pending.add(write)
            return
        pending.flush()
        if write is not None:
            write()
            return
    pending.flush()
    _apply_isolated(conn, applier, opened, row, now, catch=CONTENT_ERRORS)


def _apply_isolated(conn, applier, opened, row, now, catch=(Exception,)) -> None:
    """Apply one envelope in a savepoint; a refused content rolls back only its own effects."""
    conn.execute("SAVEPOINT apply_envelope")
    try:
        if applier is None:
            raise LiandongError("unknown_kind", f"未知的消息类型 {opened.body['kind']}")
        applier(conn, opened)
    except catch as exc:
        # The envelope stays in the chain (the hub holds it); its content waits for review.
        conn.execute("ROLLBACK TO apply_envelope")
        _refuse(conn, row, "invalid_content" if isinstance(exc, CONTENT_ERRORS) else "apply_failed", exc, now)
    conn.execute("RELEASE apply_envelope")


def _refuse(conn, row, reason: str, exc: BaseException, now) -> None:
    quarantine(conn, row["origin"], row["seq"], row["envelope_id"], reason, repr(exc)[:500], None, now)


class ApplyWorker:
    """Runs ``apply_once`` (one chunk; returns how many it applied) in a daemon thread.

    Pushes call :meth:`pushing` around their work; the worker waits until none is in flight
    and none has finished for ``quiet`` seconds, unless the work woke it ``max_lag`` seconds
    ago already: a burst is acknowledged first, a flood is applied alongside.
    """

    def __init__(self, apply_once: Callable[[], int], quiet: float = 0.05, max_lag: float = 10.0,
                 paced: bool = False):
        """``paced``: once ``max_lag`` has passed with pushes still coming, one chunk and then
        another wait (for a pause, or ``max_lag`` again), not every chunk at once: a township's
        following keeps up with a county's steady trickle without slowing a village's drain."""
        self.apply_once = apply_once
        self.quiet = quiet
        self.max_lag = max_lag
        self.paced = paced
        self._cv = threading.Condition()
        self._wake = threading.Event()
        self._inflight = 0
        self._last_push = 0.0
        self._thread: threading.Thread | None = None

    @contextmanager
    def pushing(self):
        """Mark a push in flight; wake the worker when it ends."""
        with self._cv:
            self._inflight += 1
        try:
            yield
        finally:
            with self._cv:
                self._inflight -= 1
                self._last_push = time.monotonic()
                self._cv.notify_all()
            self.poke()

    def poke(self) -> None:
        """There may be work: start the thread if needed and wake it."""
        if self._thread is None or not self._thread.is_alive():
            with self._cv:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="liandong-apply", daemon=True)
                    self._thread.start()
        self._wake.set()

    def _wait_quiet(self, deadline: float) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                busy = self._inflight > 0 or now - self._last_push < self.quiet
                if not busy or now >= deadline:
                    return
                self._cv.wait(min(self.quiet, deadline - now))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            deadline = time.monotonic() + self.max_lag
            while True:
                self._wait_quiet(deadline)
                try:
                    if not self.apply_once():
                        break
                except Exception:  # logged; the rows stay queued and are retried
                    log.exception("applying accepted envelopes failed")
                    time.sleep(1.0)
                if self.paced and time.monotonic() >= deadline:  # that chunk was forced by the lag
                    deadline = time.monotonic() + self.max_lag
