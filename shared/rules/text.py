"""Text that people type into names, addresses and other fields: only what can be seen.

Control characters (NUL and the rest of C0 and C1), bidirectional overrides and isolates
(U+202A–U+202E, U+2066–U+2069, and the marks U+200E, U+200F, U+061C) and zero-width characters
(U+200B–U+200D, U+2060, U+FEFF) are invisible on screen and on paper, yet they change how a name
sorts, searches and prints, or make ``张三`` and ``张\u200b三`` two different people (the "Trojan
Source" trick applied to data). They are refused with a Chinese message, never silently removed:
the clerk sees what was wrong and retypes it. Line breaks and tabs are allowed where the field
is multi-line (a textarea).
"""

from __future__ import annotations

import re

from shared.core.errors import ValidationError

_HIDDEN = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff"
HIDDEN_CHARACTERS = re.compile(f"[{_HIDDEN}\t\n\r]")
HIDDEN_IN_MULTILINE = re.compile(f"[{_HIDDEN}]")


def refuse_hidden_characters(value: str, field: str, label: str, multiline: bool = False) -> str:
    """Return ``value`` unchanged if every character in it is visible (see the module docstring).

    :param label: the field's Chinese name, for the message.
    :param multiline: allow line breaks and tabs (a textarea).
    :raises ValidationError: ``hidden_characters``, naming ``field``.
    """
    pattern = HIDDEN_IN_MULTILINE if multiline else HIDDEN_CHARACTERS
    found = pattern.search(value)
    if found:
        raise ValidationError(field, f"「{label}」中含有看不见的控制字符（如零宽字符、文字方向控制符，"
                                     f"位置：第{found.start() + 1}个字），请删除后重新输入", code="hidden_characters")
    return value


def clean_text(value, field: str, label: str, max_len: int, required: bool = True, multiline: bool = False) -> str:
    """Typed text of at most ``max_len`` characters, stripped, all visible; ``""`` when optional and blank.

    :raises ValidationError: naming ``field`` (missing, too long, or ``hidden_characters``).
    """
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise ValidationError(field, f"请填写{label}")
    if len(text) > max_len:
        raise ValidationError(field, f"{label}不能超过{max_len}个字")
    return refuse_hidden_characters(text, field, label, multiline=multiline)
