"""Identifiers that sort by the time they were made.

A case's id is the key of the register's largest index at every tier. A random id (UUID version
4) lands anywhere in that B-tree, so each case stored dirties a page of its own and every commit
writes those pages to the WAL; at a hub of many thousand cases that was a fifth of applying a
pushed case (docs/performance.md, tenth round). An id that begins with the time lands at the
index's right edge, next to the ids just made, as UUID version 7 does (RFC 9562 §5.7).
"""

from __future__ import annotations

import os


def time_ordered_id(unix_ms: int) -> str:
    """32 lowercase hex digits laid out as a UUID version 7 (RFC 9562 §5.7): 48 bits of Unix
    milliseconds, the version, 74 random bits and the variant. Ids made by many nodes in the same
    millisecond differ by their random bits; ids from one node sort by time, to the millisecond."""
    if not 0 <= unix_ms < 1 << 48:
        raise ValueError("unix_ms out of the 48-bit range")
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 + 62 used
    value = (unix_ms << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return f"{value:032x}"
