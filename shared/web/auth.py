"""Login, API tokens and roles. Default deny: every view needs an account unless marked.

A view is reachable without an account only when decorated :func:`public` (login, health,
static files) or :func:`node_signed` (sync and enrolment endpoints, which authenticate the
calling *node* by its signature instead). Everything else needs a session from the login page
or ``Authorization: Bearer <token>``; :func:`roles_required` narrows it to roles.
"""

from __future__ import annotations

import functools

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for

from shared.core.errors import Forbidden, Unauthorized
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

        return wrapped

    return decorator


def _load_account():
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return accounts.by_token(get_db(), header[7:].strip())
    username = session.get("username")
    return accounts.by_username(get_db(), username) if username else None


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


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    """The login page of this node."""
    if request.method == "POST":
        account = accounts.authenticate(get_db(), request.form.get("username", ""), request.form.get("password", ""))
        if account is None:
            flash("用户名或密码错误")
        else:
            session.clear()
            session["username"] = account["username"]
            target = request.args.get("next") or "/"
            if not target.startswith("/") or target.startswith("//"):
                target = "/"
            return redirect(target)
    return render_template("auth/login.html", node=current_node())


@bp.post("/logout")
def logout():
    """End the session."""
    session.clear()
    return redirect(url_for("auth.login"))
