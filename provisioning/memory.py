"""Process memory settings applied by ``liandong node serve`` before any thread starts.

glibc gives each thread that contends for the heap its own malloc arena (up to eight per core),
and freed memory in an arena is rarely returned: a node process with waitress's worker threads
and its job threads kept ~8 MiB more resident than the same work with two arenas
(docs/performance.md, memory). ``MALLOC_ARENA_MAX=2`` in the environment does the same when set
before the process starts; ``serve`` calls ``mallopt(M_ARENA_MAX, 2)`` itself so a service
needs no wrapper, and leaves an operator's own ``MALLOC_ARENA_MAX`` alone.

Windows needs no equivalent: its process heap (the low-fragmentation / segment heap used by
the CRT) is shared by all threads, with no per-thread arenas to cap. macOS's allocator uses
per-CPU magazines that are small and trimmed, and musl has no arenas; the call is skipped or
is a no-op there.
"""

from __future__ import annotations

import ctypes
import os
import sys

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
