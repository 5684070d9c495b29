"""Accounts and roles of one node. Each node keeps its own accounts (BRIEF §4).

Passwords are stored with Werkzeug's default hash, scrypt (``scrypt:32768:8:1``, 16-byte
salt); older PBKDF2 hashes are upgraded at the next successful login. A login for an unknown
user still checks a hash, so the answer takes as long as for a wrong password. Failed logins
are audited and throttled per account and per client address (see :func:`login_lock`), and
every account has a *session epoch*: a login session carries the epoch it started under and
is void once the epoch moves on (logout, password reset, deactivation).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from werkzeug.security import check_password_hash, generate_password_hash

from shared.core.audit import audit  # noqa: F401 (accounts.audit: the one audit writer)
from shared.core.clock import iso, parse_iso
from shared.core.errors import ValidationError
from shared.rules.passwords import password_problem

# Migration 13: server-side session revocation and login throttling.

ROLES = {
    "agent": "代办员",
    "clerk": "站员",
    "window": "窗口受理员",
    "chief": "首席审批员",
    "head": "部门负责人",
    "supervisor": "监察员",
    "admin": "管理员",
    "project_agent": "项目代办员",
}
# Roles that may act on cases routed to their office.
DECIDING_ROLES = ("window", "chief", "head", "clerk")
ROLES_BY_TIER = {
    "village": ("agent", "admin"),
    "township": ("clerk", "admin", "supervisor"),
    "hub": ("window", "chief", "head", "supervisor", "admin", "project_agent"),
}


def token_hash(token: str) -> str:
    """How an API token is stored: only its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_account(conn: sqlite3.Connection, username: str, password: str, role: str, display_name: str,
                   office: str | None, now, with_token: bool = True) -> str | None:
    """Create an account; returns its new API token (shown once) when ``with_token``."""
    if role not in ROLES:
        raise ValidationError("role", f"未知角色「{role}」，可选：{'、'.join(ROLES)}")
    if not username or not username.isascii() or not username.replace("_", "").replace("-", "").isalnum():
        raise ValidationError("username", "用户名只能包含字母、数字、下划线和连字符")
    problem = password_problem(password)
    if problem:
        raise ValidationError("password", problem, code="weak_password")
    token = secrets.token_urlsafe(32) if with_token else None
    conn.execute(
        "INSERT INTO accounts(username, display_name, role, office, password_hash, token_hash, created_at)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET display_name = excluded.display_name,"
        " role = excluded.role, office = excluded.office, password_hash = excluded.password_hash,"
        " token_hash = excluded.token_hash, session_epoch = accounts.session_epoch + 1",
        (username, display_name, role, office, hash_password(password),
         token_hash(token) if token else None, iso(now)),
    )
    return token


def hash_password(password: str) -> str:
    """How a password is stored: Werkzeug's default scrypt hash with a random salt."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


PASSWORD_METHOD = "scrypt"
_dummy_hashes: dict[str, str] = {}


def _dummy_password_hash() -> str:
    """A hash of a random password, checked when the user is unknown (same cost as a real one)."""
    if PASSWORD_METHOD not in _dummy_hashes:
        _dummy_hashes[PASSWORD_METHOD] = hash_password(secrets.token_urlsafe(16))
    return _dummy_hashes[PASSWORD_METHOD]


def authenticate(conn: sqlite3.Connection, username: str, password: str) -> sqlite3.Row | None:
    """The active account with this username and password, or None.

    An unknown or inactive user costs one hash check too, so timing does not tell whether the
    account exists. Reads only: :func:`logged_in` records the success.
    """
    row = conn.execute("SELECT * FROM accounts WHERE username = ? AND active = 1", (username,)).fetchone()
    stored = row["password_hash"] if row is not None else _dummy_password_hash()
    if not check_password_hash(stored, password) or row is None:
        return None
    return row


def logged_in(conn: sqlite3.Connection, row: sqlite3.Row, password: str, address: str | None, now) -> None:
    """After a successful login: forget its failures, upgrade an old hash, audit. In a write transaction."""
    if not row["password_hash"].startswith(PASSWORD_METHOD + ":"):
        conn.execute("UPDATE accounts SET password_hash = ? WHERE username = ?", (hash_password(password), row["username"]))
    clear_login_failures(conn, row["username"])
    audit(conn, row["username"], "login", row["username"], f"address {address or 'unknown'}", now)


def end_sessions(conn: sqlite3.Connection, username: str) -> None:
    """Void every login session of ``username`` at once (logout, password reset, deactivation)."""
    conn.execute("UPDATE accounts SET session_epoch = session_epoch + 1 WHERE username = ?", (username,))


def by_session(conn: sqlite3.Connection, username: str, epoch) -> sqlite3.Row | None:
    """The active account of a login session, or None once that session was ended."""
    row = by_username(conn, username)
    if row is None or epoch is None or row["session_epoch"] != epoch:
        return None
    return row


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed logins lock a subject, within what window, and for how long."""

    max_per_account: int = 5
    max_per_address: int = 20
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)

    @classmethod
    def from_config(cls, config) -> LoginPolicy:
        """The policy of a node's settings (``LOGIN_*``)."""
        return cls(int(config["LOGIN_MAX_FAILURES"]), int(config["LOGIN_MAX_FAILURES_PER_ADDRESS"]),
                   timedelta(seconds=float(config["LOGIN_FAILURE_WINDOW_SECONDS"])),
                   timedelta(seconds=float(config["LOGIN_LOCK_SECONDS"])))


def login_subjects(username: str, address: str | None) -> tuple[str, str]:
    """The two throttling subjects of a login attempt: the account name and the client address."""
    return f"account:{username[:64]}", f"address:{address or 'unknown'}"


def login_lock(conn: sqlite3.Connection, username: str, address: str | None, now: datetime) -> datetime | None:
    """Until when logins for this account or from this address are refused, or None.

    Checked before the password: while locked even the right password is refused.
    """
    until = None
    for subject in login_subjects(username, address):
        row = conn.execute("SELECT locked_until FROM login_failures WHERE subject = ?", (subject,)).fetchone()
        if row is not None and row["locked_until"] and parse_iso(row["locked_until"]) > now:
            until = max(until or now, parse_iso(row["locked_until"]))
    return until


def record_login_failure(conn: sqlite3.Connection, username: str, address: str | None, now: datetime,
                         policy: LoginPolicy) -> datetime | None:
    """Count a failed login against the account and the address and audit it (never the password).

    Returns the lock's end when this failure locked either subject. In a write transaction.
    """
    conn.execute("DELETE FROM login_failures WHERE first_at < ? AND (locked_until IS NULL OR locked_until < ?)",
                 (iso(now - policy.window), iso(now)))
    locked = None
    for subject, limit in zip(login_subjects(username, address), (policy.max_per_account, policy.max_per_address),
                              strict=True):
        row = conn.execute("SELECT failures, first_at FROM login_failures WHERE subject = ?", (subject,)).fetchone()
        if row is None or parse_iso(row["first_at"]) < now - policy.window:
            failures, first_at = 1, now
        else:
            failures, first_at = row["failures"] + 1, parse_iso(row["first_at"])
        until = now + policy.lock if failures >= limit else None
        conn.execute("INSERT INTO login_failures(subject, failures, first_at, locked_until) VALUES (?,?,?,?)"
                     " ON CONFLICT(subject) DO UPDATE SET failures = excluded.failures, first_at = excluded.first_at,"
                     " locked_until = excluded.locked_until",
                     (subject, failures, iso(first_at), iso(until) if until else None))
        if until is not None:
            locked = until
    audit(conn, "anonymous", "login.failed", username[:64], f"address {address or 'unknown'}", now)
    if locked is not None:
        audit(conn, "anonymous", "login.locked", username[:64],
              f"address {address or 'unknown'} until {iso(locked)}", now)
    return locked


def clear_login_failures(conn: sqlite3.Connection, username: str) -> None:
    """Forget an account's failed logins (after a successful one)."""
    conn.execute("DELETE FROM login_failures WHERE subject = ?", (login_subjects(username, None)[0],))


def unlock(conn: sqlite3.Connection, username: str | None, address: str | None, actor: str, now) -> int:
    """Lift the login lock of an account and/or an address (admin); returns how many were lifted."""
    subjects = [s for s, given in zip(login_subjects(username or "", address), (username, address), strict=True) if given]
    lifted = 0
    for subject in subjects:
        lifted += conn.execute("DELETE FROM login_failures WHERE subject = ?", (subject,)).rowcount
        audit(conn, actor, "login.unlocked", subject, None, now)
    return lifted


def locked_subjects(conn: sqlite3.Connection, now) -> dict[str, str]:
    """``{subject: locked_until}`` of every lock in force."""
    return {r["subject"]: r["locked_until"] for r in conn.execute(
        "SELECT subject, locked_until FROM login_failures WHERE locked_until > ? ORDER BY subject", (iso(now),))}


def by_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The active account holding this API token, or None."""
    return conn.execute(
        "SELECT * FROM accounts WHERE token_hash = ? AND active = 1", (token_hash(token),)
    ).fetchone()


def by_username(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    """The active account with this username, or None."""
    return conn.execute("SELECT * FROM accounts WHERE username = ? AND active = 1", (username,)).fetchone()
