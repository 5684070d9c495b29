from datetime import date

import pytest

from shared.core.errors import ValidationError
from shared.rules.idcard import (
    birth_date_of,
    id_check_char,
    mask_id_number,
    validate_id_number,
    validate_phone,
)

TODAY = date(2026, 3, 2)


def make_id(first17: str) -> str:
    """Complete 17 digits with the check character computed from first principles.

    Written out independently of the module: weight_i = 2**(17-i) mod 11,
    check = (12 - sum mod 11) mod 11, and 10 is written X.
    """
    total = sum(int(c) * (2 ** (17 - i) % 11) for i, c in enumerate(first17))
    value = (12 - total % 11) % 11
    return first17 + ("X" if value == 10 else str(value))


# 130926 = 肃宁县, born 1990-03-07, sequence 123.
VALID = make_id("13092619900307123")


def test_public_example_is_valid():
    assert validate_id_number("11010519491231002X", today=TODAY) == "11010519491231002X"


def test_computed_number_is_valid_and_normalised():
    assert validate_id_number(f"  {VALID.lower()} ", today=TODAY) == VALID
    assert birth_date_of(VALID) == date(1990, 3, 7)


def test_check_char_matches_independent_formula():
    for base in ("13092619900307123", "11010519491231002", "13092620000229001"):
        assert id_check_char(base) == make_id(base)[-1]


def test_lowercase_x_is_uppercased():
    assert validate_id_number("11010519491231002x", today=TODAY).endswith("X")


@pytest.mark.parametrize("wrong", [c for c in "0123456789X" if c != VALID[-1]])
def test_every_wrong_check_char_is_refused(wrong):
    with pytest.raises(ValidationError) as exc:
        validate_id_number(VALID[:17] + wrong, today=TODAY)
    assert exc.value.message == "身份证号校验位错误"
    assert exc.value.field == "id_number"


def test_single_digit_typo_is_caught():
    typo = VALID[:3] + str((int(VALID[3]) + 1) % 10) + VALID[4:]
    with pytest.raises(ValidationError, match="校验位"):
        validate_id_number(typo, today=TODAY)


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "请填写身份证号"),
        ("13092619900307123", "身份证号应为18位"),
        ("1309261990030712345", "身份证号应为18位"),
        ("13092619900307A23X", "身份证号前17位应为数字，最后一位为数字或X"),
        (make_id("99092619900307123"), "身份证号地区码无效"),
        (make_id("13092619900230123"), "身份证号中的出生日期无效"),
        (make_id("13092618991231123"), "身份证号中的出生日期无效"),
        (make_id("13092620260303123"), "身份证号中的出生日期晚于今天"),
    ],
)
def test_malformed_numbers_are_refused_with_reason(value, message):
    with pytest.raises(ValidationError) as exc:
        validate_id_number(value, today=TODAY)
    assert exc.value.message == message


def test_birth_today_is_allowed_and_leap_day_checked():
    assert validate_id_number(make_id("13092620260302001"), today=TODAY)
    assert validate_id_number(make_id("13092620000229001"), today=TODAY)
    with pytest.raises(ValidationError, match="出生日期无效"):
        validate_id_number(make_id("13092619000229001"), today=TODAY)


def test_field_name_is_reported():
    with pytest.raises(ValidationError) as exc:
        validate_id_number("123", field="form.mother_id_number", today=TODAY)
    assert exc.value.field == "form.mother_id_number"
    assert exc.value.to_dict()["error"]["field"] == "form.mother_id_number"


def test_default_today_comes_from_the_clock():
    # A birth date in the year 2999 is in the future whatever the real date is.
    with pytest.raises(ValidationError, match="晚于今天"):
        validate_id_number(make_id("13092629990101001"))


def test_mask_keeps_first_six_and_last_four():
    assert mask_id_number("13092619900307123X") == "130926********123X"
    assert mask_id_number(VALID) == VALID[:6] + "********" + VALID[-4:]
    assert len(mask_id_number(VALID)) == 18


def test_mask_never_reveals_short_values():
    assert mask_id_number("1309261990") == "**********"
    assert mask_id_number(None) == ""


@pytest.mark.parametrize(
    "value, expected",
    [
        ("13812345678", "13812345678"),
        ("138 1234 5678", "13812345678"),
        ("+8613812345678", "13812345678"),
        ("0317-5012345", "0317-5012345"),
        ("010-12345678", "010-12345678"),
        ("031750123456", "031750123456"),
    ],
)
def test_valid_phones(value, expected):
    assert validate_phone(value) == expected


@pytest.mark.parametrize(
    "value", ["12812345678", "1381234567", "138123456789", "317-5012345", "0317-50123", "abc"]
)
def test_invalid_phones(value):
    with pytest.raises(ValidationError) as exc:
        validate_phone(value)
    assert exc.value.field == "phone"
    assert exc.value.code == "invalid_phone"


def test_empty_phone_is_required():
    with pytest.raises(ValidationError) as exc:
        validate_phone("  ")
    assert exc.value.code == "required"
