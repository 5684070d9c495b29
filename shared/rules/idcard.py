"""Validation of personal identifiers: 身份证号 (GB 11643-1999) and phone numbers.

A citizen identity number has 18 characters::

    130926 19900307 123 X
    ^region ^birth   ^seq ^check (ISO 7064 MOD 11-2; 10 is written "X")

Only the structure is checked here (province part of the region code, a real
birth date, the check character); whether the number belongs to the person
is for the window clerk, who sees the card.
"""

from __future__ import annotations

import re
from datetime import date

from shared.core.clock import Clock
from shared.core.errors import ValidationError

# Weights are 2**(17 - i) mod 11 for positions 0..16 (ISO 7064 MOD 11-2).
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# Indexed by (weighted sum mod 11); "X" stands for the value 10.
_CHECK_CHARS = "10X98765432"

# First two digits of the region code (GB/T 2260 provinces; 83 = 港澳台居民居住证).
_PROVINCES = frozenset(
    {
        "11", "12", "13", "14", "15",
        "21", "22", "23",
        "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46",
        "50", "51", "52", "53", "54",
        "61", "62", "63", "64", "65",
        "71", "81", "82", "83",
    }
)  # fmt: skip

# ASCII digits only: ``\d`` would also match full-width and other scripts' digits.
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_LANDLINE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}")
# Full-width digits, X and x (what a Chinese IME in full-width mode types) and the full-width
# hyphen, to their ASCII forms.
_FULL_WIDTH = str.maketrans({**{chr(0xFF10 + i): str(i) for i in range(10)}, "\uff38": "X", "\uff58": "X",
                             "\uff0d": "-", "\uff0b": "+"})


def id_check_char(first17: str) -> str:
    """Return the GB 11643 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("first17 must be exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalise_id_number(s: str) -> str:
    """A 身份证号 as typed, in the one form it is checked and stored in: full-width digits and
    ``Ｘ``/``ｘ`` become ASCII, every space (also the ideographic space) is removed, ``x`` is upper-cased."""
    return "".join(s.translate(_FULL_WIDTH).split()).upper()


def _text_input(s: object, field: str, what: str) -> str:
    if s is None:
        return ""
    if not isinstance(s, str):
        raise ValidationError(field, f"{what}必须是文本", code="invalid_field")
    return s


def validate_id_number(s: str | None, *, field: str = "id_number", today: date | None = None) -> str:
    """Validate an 18-character 身份证号 and return it normalised (:func:`normalise_id_number`).

    Full-width digits and ``Ｘ`` are read as their ASCII forms and spaces are removed before the
    check, so the stored number is always 17 ASCII digits and a digit or ``X``.

    :param s: the number as typed.
    :param field: field name reported in the error.
    :param today: the date birth dates may not exceed; defaults to today in
        China (:meth:`shared.core.clock.Clock.today_cn`). Pass the node's clock
        date in simulations.
    :raises ValidationError: with a Chinese message naming the defect.
    """
    value = normalise_id_number(_text_input(s, field, "身份证号"))
    if not value:
        raise ValidationError(field, "请填写身份证号", code="required")
    if len(value) != 18:
        raise ValidationError(field, "身份证号应为18位", code="id_length")
    if not _ID_SHAPE.fullmatch(value):
        raise ValidationError(field, "身份证号前17位应为数字，最后一位为数字或X", code="id_format")
    if value[:2] not in _PROVINCES:
        raise ValidationError(field, "身份证号地区码无效", code="id_region")
    try:
        birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise ValidationError(field, "身份证号中的出生日期无效", code="id_birth_date") from None
    if birth.year < 1900:
        raise ValidationError(field, "身份证号中的出生日期无效", code="id_birth_date")
    if today is None:

        today = Clock().today_cn()
    if birth > today:
        raise ValidationError(field, "身份证号中的出生日期晚于今天", code="id_birth_date")
    if id_check_char(value[:17]) != value[17]:
        raise ValidationError(field, "身份证号校验位错误", code="id_checksum")
    return value


def birth_date_of(id_number: str) -> date:
    """Return the birth date encoded in an already validated 身份证号."""
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def mask_id_number(s: str | None) -> str:
    """Mask a 身份证号 for lists and printouts: first 6 + ``********`` + last 4.

    Values shorter than 14 characters are masked entirely: showing 10 of
    them would reveal most of a malformed number.
    """
    value = (s or "").strip().upper()
    if len(value) < 14:
        return "*" * len(value)
    return value[:6] + "********" + value[-4:]


def validate_phone(s: str | None, *, field: str = "phone") -> str:
    """Validate a mainland mobile number or a landline with area code.

    Accepts ``1[3-9]`` + 9 digits (an optional ``+86``/``86`` prefix and inner
    spaces are removed) or ``0`` + 2–3 digit area code, optional ``-``, then
    7–8 digits; full-width digits are read as ASCII. Returns the number with
    spaces and the country prefix removed.

    :raises ValidationError: if the number matches neither form.
    """
    value = "".join(_text_input(s, field, "联系电话").translate(_FULL_WIDTH).split())
    if not value:
        raise ValidationError(field, "请填写联系电话", code="required")
    mobile = re.sub(r"^(\+86|86)(?=1[0-9]{10}$)", "", value)
    if _MOBILE.fullmatch(mobile):
        return mobile
    if _LANDLINE.fullmatch(value):
        return value
    raise ValidationError(field, "联系电话格式不正确，应为11位手机号或带区号的固定电话", code="invalid_phone")
