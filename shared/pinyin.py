"""Pinyin initials of a Chinese name, for the 办事指南's search (``sydj`` finds 生育登记).

pypinyin reads each character in context: its phrase dictionary picks the reading of a
polyphonic character from the words around it (参保 cān, 重度 zhòng, 银行 háng, 单位 dān),
and only a character outside any known phrase falls back to its most common reading.
Letters and digits in the name (B超, 12345) are kept as they are, lowercased; punctuation is
dropped.
"""

from __future__ import annotations

from pypinyin import Style, lazy_pinyin


def initials(name: str) -> str:
    """The lowercase pinyin initials of ``name``, e.g. ``"城乡居民养老保险参保登记"`` → ``"cxjmylbxcbdj"``."""
    parts = lazy_pinyin(name, style=Style.FIRST_LETTER, strict=False, errors="default")
    return "".join(ch for part in parts for ch in part.lower() if ch.isascii() and ch.isalnum())
