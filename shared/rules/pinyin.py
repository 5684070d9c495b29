"""Pinyin initials of a Chinese name, for the 办事指南's search (``sydj`` finds 生育登记).

pypinyin reads each character in context: its phrase dictionary picks the reading of a
polyphonic character from the words around it (参保 cān, 重度 zhòng, 银行 háng, 单位 dān),
and only a character outside any known phrase falls back to its most common reading.
Letters and digits in the name (B超, 12345) are kept as they are, lowercased; punctuation is
dropped.

Only the hub needs this (it fills missing initials when it publishes a catalog; nodes receive
them signed), so pypinyin is imported on first use: its dictionaries cost about 55 MB of memory
and a quarter of a second, which a village PC should not pay for nothing.
"""

from __future__ import annotations


def initials(name: str) -> str:
    """The lowercase pinyin initials of ``name``, e.g. ``"城乡居民养老保险参保登记"`` → ``"cxjmylbxcbdj"``."""
    from pypinyin import (  # optional: ~55 MB, loaded on first use (the hub), never in a village process
        Style,
        lazy_pinyin,
    )

    parts = lazy_pinyin(name, style=Style.FIRST_LETTER, strict=False, errors="default")
    return "".join(ch for part in parts for ch in part.lower() if ch.isascii() and ch.isalnum())
