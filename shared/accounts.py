"""Accounts and roles of one node. Each node keeps its own accounts (BRIEF §4)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3

from werkzeug.security import check_password_hash, generate_password_hash

from shared.clock import iso
from shared.errors import ValidationError
from shared.passwords import password_problem

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
        " token_hash = excluded.token_hash",
        (username, display_name, role, office, generate_password_hash(password, method="pbkdf2:sha256:200000"),
         token_hash(token) if token else None, iso(now)),
    )
    return token


def authenticate(conn: sqlite3.Connection, username: str, password: str) -> sqlite3.Row | None:
    """The active account with this username and password, or None."""
    row = conn.execute("SELECT * FROM accounts WHERE username = ? AND active = 1", (username,)).fetchone()
    if row is None or not check_password_hash(row["password_hash"], password):
        return None
    return row


def by_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The active account holding this API token, or None."""
    return conn.execute(
        "SELECT * FROM accounts WHERE token_hash = ? AND active = 1", (token_hash(token),)
    ).fetchone()


def by_username(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    """The active account with this username, or None."""
    return conn.execute("SELECT * FROM accounts WHERE username = ? AND active = 1", (username,)).fetchone()


def audit(conn: sqlite3.Connection, actor: str, action: str, target: str | None, detail: str | None, now) -> None:
    """Append to the audit log (append-only by trigger)."""
    conn.execute(
        "INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?,?,?,?,?)",
        (iso(now), actor, action, target, detail),
    )
