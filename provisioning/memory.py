"""Process memory settings applied by ``liandong node serve`` before any thread starts.

glibc gives each thread that contends for the heap its own malloc arena (up to eight per core),
and freed memory in an arena is rarely returned: a node process with waitress's worker threads
and its job threads kept ~8 MiB more resident than the same work with two arenas
(docs/performance.md, memory). ``MALLOC_ARENA_MAX=2`` in the environment does the same when set
before the process starts; ``serve`` calls ``mallopt(M_ARENA_MAX, 2)`` itself so a service
needs no wrapper, and leaves an operator's own ``MALLOC_ARENA_MAX`` alone.

The number of arenas is the ``MALLOC_ARENAS`` setting, else the tier's (one at a village,
which serves one or two agents; two at a township or hub). After start-up and then whenever a
request ends with no other in flight, ``serve`` also hands the heap's free pages back to the
system (``malloc_trim``, once none has been in flight for ``TRIM_IDLE_SECONDS``; the
``MALLOC_TRIM_IDLE`` setting), and freezes what start-up built out of
Python's garbage collector (``GC_YOUNG_THRESHOLD``, :func:`settle_collector`).

Windows needs no equivalent: its process heap (the low-fragmentation / segment heap used by
the CRT) is shared by all threads, with no per-thread arenas to cap, and decommits free blocks
itself. macOS's allocator uses per-CPU magazines that are small and trimmed, and musl has no
arenas; the calls are skipped or are no-ops there.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True when the cap was applied here.

    Call it before threads start: arenas already created stay.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (no mallopt symbol)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))



def settle_collector(young_threshold: int) -> bool:
    """After start-up, before serving: what start-up built is frozen out of Python's cyclic
    garbage collector, and its youngest generation collected every ``young_threshold`` new
    container objects instead of every 700. True when applied (``0``: Python's defaults kept).

    A node's app, modules, routes, catalogs and templates are ~50,000 tracked objects that are
    never garbage, yet every full collection walked them all (~15-30 ms), and a push of 200
    envelopes allocates enough to trigger collections every few pushes: the collector was ~3 %
    of the hub's ingest in a native profile (docs/performance.md, tenth round). ``gc.freeze``
    moves them to a generation no collection scans; a cycle among them that start-up dropped
    is then never freed, so it comes after a collection. The larger threshold costs at most
    that many objects of cyclic garbage held a little longer (a few MiB at most).
    """
    if young_threshold <= 0:
        return False
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    return True


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none (Windows, macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def trim_free_memory() -> bool:
    """Give the heap's free pages back to the system now; True where glibc did it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


#: How long a node's server must have had no request in flight before it trims: a village's
#: drain or a county's uploads keep a township busy with gaps of milliseconds between requests,
#: and a trim after each gave back the 4-8 MB a file batch had used, for the next one to fault
#: in again (11 % of the CPU of a drain with scans: docs/performance.md, thirteenth round).
TRIM_IDLE_SECONDS = 0.2


class TrimWhenIdle:
    """WSGI middleware: once no request has been in flight for ``idle_seconds``, give the
    heap's free pages back to the system (``malloc_trim(0)``).

    A page over 10,000 cases allocates a few MiB (query rows, the rendered HTML, SQLite's page
    cache) and frees them at its end; glibc keeps free pages in the middle of the heap resident
    for the next allocation, and only ``malloc_trim`` returns them. It costs ~0.4 ms, on a
    thread of its own (0: on the thread that served the last request, after the answer was
    written). A busy township is rarely idle and so rarely trims.
    """

    def __init__(self, app, trim, idle_seconds: float = TRIM_IDLE_SECONDS):
        self.app = app
        self.trim = trim
        self.idle_seconds = idle_seconds
        self._changed = threading.Condition()
        self._active = 0
        self._idle_since: float | None = None  # when the last request in flight ended (untrimmed)
        self._trimmer: threading.Thread | None = None

    def __call__(self, environ, start_response):
        with self._changed:
            self._active += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return (_SizedClosingBody if hasattr(body, "__len__") else _ClosingBody)(body, self._done)

    def _done(self) -> None:
        with self._changed:
            self._active -= 1
            if self._active:
                return
            if self.idle_seconds > 0:
                self._idle_since = time.monotonic()
                if self._trimmer is None:
                    self._trimmer = threading.Thread(target=self._trim_when_quiet, name="malloc-trim", daemon=True)
                    self._trimmer.start()
                self._changed.notify()
                return
        self.trim(0)

    def _trim_when_quiet(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._active or self._idle_since is None:
                        self._changed.wait()  # a request's end sets _idle_since again
                        continue
                    left = self._idle_since + self.idle_seconds - time.monotonic()
                    if left <= 0:
                        self._idle_since = None
                        break
                    self._changed.wait(left)
            self.trim(0)


class _ClosingBody:
    """A WSGI body that calls ``on_close`` once the server has closed it (the answer is sent)."""

    def __init__(self, body, on_close):
        self._body, self._on_close = body, on_close

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._on_close()


class _SizedClosingBody(_ClosingBody):
    """The same for a body of known length (a server sets Content-Length from a one-item list)."""

    def __len__(self) -> int:
        return len(self._body)


def trim_when_idle(app):
    """``app`` wrapped in :class:`TrimWhenIdle`, or ``app`` itself where there is no
    ``malloc_trim`` (not glibc: Windows' and macOS' heaps give freed memory back themselves)."""
    trim = _malloc_trim()
    return app if trim is None else TrimWhenIdle(app, trim)
