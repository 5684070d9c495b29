"""Login, API tokens and roles. Default deny: every view needs an account unless marked.

A view is reachable without an account only when decorated :func:`public` (login, health,
static files) or :func:`node_signed` (sync and enrolment endpoints, which authenticate the
calling *node* by its signature instead). Everything else needs a session from the login page
or ``Authorization: Bearer <token>``; :func:`roles_required` narrows it to roles.
"""

from __future__ import annotations

import functools
import math
import secrets
import unicodedata
from urllib.parse import unquote

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from shared.core.errors import Forbidden, Unauthorized
from shared.core.storage import write_transaction
from shared.services import accounts
from shared.web.context import csrf, current_node
from shared.web.db import get_db

bp = Blueprint("auth", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


def public(view):
    """Mark a view as reachable without an account."""
    view.liandong_public = True
    return view


def node_signed(view):
    """Mark a view that authenticates the calling node by signature (no account)."""
    view.liandong_public = True
    view.liandong_node_signed = True
    return view


def roles_required(*roles: str):
    """Restrict a view to accounts with one of ``roles``."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if g.account["role"] not in roles:
                raise Forbidden(f"该操作需要以下角色之一：{'、'.join(accounts.ROLES[r] for r in roles)}")
            return view(*args, **kwargs)

        wrapped.liandong_roles = frozenset(roles)  # the menu shows the page only to these (may_open)
        return wrapped

    return decorator


def may_open(endpoint: str) -> bool:
    """Whether the menu offers ``endpoint`` to the signed-in account: the page exists here and
    the account's role may open it (:func:`roles_required`)."""
    view = current_app.view_functions.get(endpoint)
    if view is None:
        return False
    roles = getattr(view, "liandong_roles", None)
    return roles is None or (g.get("account") is not None and g.account["role"] in roles)


def _load_account():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return accounts.by_token(get_db(), header[7:].strip())
    username = session.get("username")
    if not username:
        return None
    account = accounts.by_session(get_db(), username, session.get("epoch"))
    if account is None:
        session.clear()  # ended on the server (logout elsewhere, password reset, deactivated)
    return account


@bp.before_app_request
def require_account():
    """Default deny: resolve the caller's account or refuse."""
    g.account = None
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if view is None or request.endpoint == "static" or request.endpoint.endswith(".static"):
        return None
    if getattr(view, "liandong_node_signed", False):
        return None  # the view verifies the calling node's signature itself
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    g.account = _load_account()
    if g.account is None and not getattr(view, "liandong_public", False):
        if request.path.startswith("/api/") or request.headers.get("Authorization"):
            raise Unauthorized("需要登录或有效的 API 令牌（Authorization: Bearer <token>）")
        return redirect(url_for("auth.login", next=request.full_path))
    if request.method not in ("GET", "HEAD", "OPTIONS") and not bearer:
        csrf.protect()  # forms with a session cookie (and the login form) need the token
    return None


def _unsafe_char(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "CZ"


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``.

    Browsers drop tabs and newlines and read ``\\`` as ``/``, so ``/%09/evil.example/`` would
    leave the site: the path must start with exactly one ``/``, and neither the raw value nor
    its percent-decoded path may hold a control character, whitespace or a backslash.
    """
    if not target or any(_unsafe_char(c) for c in target):
        return "/"
    path = unquote(target.split("?", 1)[0])
    if not path.startswith("/") or path.startswith("//") or "\\" in path or any(_unsafe_char(c) for c in path):
        return "/"
    return target


def _locked_message(until, now) -> str:
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    return f"登录失败次数过多，已暂时锁定，请在 {minutes} 分钟后再试，或请管理员解锁"


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    """The login page of this node: throttled per account and address, every failure audited."""
    if request.method == "POST":
        conn, node = get_db(), current_node()
        username, password = request.form.get("username", ""), request.form.get("password", "")
        address, now = request.remote_addr, node.now()
        locked = accounts.login_lock(conn, username, address, now)
        # The password is checked only outside the lock: a locked account refuses the right one too.
        account = None if locked else accounts.authenticate(conn, username, password)
        with write_transaction(conn):
            if locked:
                accounts.audit(conn, "anonymous", "login.refused", username[:64], f"address {address} locked", now)
            elif account is None:
                locked = accounts.record_login_failure(conn, username, address, now,
                                                       accounts.LoginPolicy.from_config(current_app.config))
            else:
                accounts.logged_in(conn, account, password, address, now)
        if locked:
            flash(_locked_message(locked, now))
        elif account is None:
            flash("用户名或密码错误")
        else:
            session.clear()  # a fresh session: nothing of the anonymous one carries over
            session["username"] = account["username"]
            session["epoch"] = account["session_epoch"]
            session["nonce"] = secrets.token_urlsafe(16)
            return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", node=current_node())


@bp.post("/logout")
def logout():
    """End the session, here and on the server: a copy of the cookie no longer works."""
    if session.get("username"):
        conn = get_db()
        with write_transaction(conn):
            accounts.end_sessions(conn, g.account["username"])
            accounts.audit(conn, g.account["username"], "logout", g.account["username"], None, current_node().now())
    session.clear()
    return redirect(url_for("auth.login"))
