"""The password rule every account on every node follows (a plain function, no I/O).

Node accounts guard personal data, so a password must be at least ``MIN_LENGTH`` characters,
mix at least two kinds of character (lower case, upper case, digits, others) and not be one of
the few passwords every guessing list starts with. Long random passphrases pass easily.
"""

from __future__ import annotations

MIN_LENGTH = 10

# The first entries of every leaked-password list (and the project's own names).
COMMON_PASSWORDS = frozenset({
    "1234567890", "0123456789", "12345678910", "1234567890a", "a1234567890", "qwertyuiop", "qwerty12345",
    "1qaz2wsx3edc", "password12", "password123", "password1!", "passw0rd12", "iloveyou12", "abc1234567",
    "abcd123456", "admin12345", "admin123456", "administrator", "woaini1314", "woaini520", "liandong123",
    "liandong2026", "88888888a", "a123456789", "aa123456789", "qq123456789", "zxcvbnm123",
})


def _classes(password: str) -> int:
    return sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))


def password_problem(password: str) -> str | None:
    """Why ``password`` is too weak (a Chinese sentence for the user), or None if it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"密码至少{MIN_LENGTH}位"
    if password.lower() in COMMON_PASSWORDS:
        return "密码过于常见，请换一个"
    if _classes(password) < 2 or len(set(password)) < 4:
        return "密码过于简单：请混合字母、数字或符号中的至少两类"
    return None
