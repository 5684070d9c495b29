"""The one place that maps exceptions to responses: JSON for the API, a Chinese page for people.

JSON shape everywhere: ``{"error": {"code": "...", "message": "<中文>", "field": "..."}}``.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from flask import Flask, flash, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from shared.core.errors import LiandongError
from shared.core.storage import DiskFullError


@contextmanager
def form_outcome(refused: str, done: str = "") -> Iterator[SimpleNamespace]:
    """A page form's action: a rule it breaks is flashed as ``refused：reason`` and the page is
    shown again; 403/404 still raise (the one error page). On success ``done`` is flashed (the
    action may set ``outcome.done`` to what it did)."""
    outcome = SimpleNamespace(done=done)
    try:
        yield outcome
    except LiandongError as exc:
        if exc.status in (403, 404):
            raise
        flash(f"{refused}：{exc.message}")
    else:
        flash(outcome.done)


HTTP_MESSAGES = {
    400: "请求有误",
    401: "请先登录",
    403: "无权执行此操作",
    404: "页面或记录不存在",
    405: "不支持该请求方法",
    409: "当前状态下不能执行该操作",
    413: "提交的内容过大",
    500: "系统内部错误，请稍后重试",
}

API_PREFIXES = ("/api/", "/sync/", "/enrol/")


def wants_json() -> bool:
    """API, sync and enrolment clients get JSON; browsers get a page."""
    return request.path.startswith(API_PREFIXES) or request.accept_mimetypes.best == "application/json"


def error_response(status: int, code: str, message: str, field: str | None = None):
    """Render one error in the shape the caller expects."""
    if wants_json():
        body = {"code": code, "message": message}
        if field:
            body["field"] = field
        return jsonify({"error": body}), status
    return render_template("errors/error.html", status=status, message=message, field=field), status


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(LiandongError)
    def domain_error(exc: LiandongError):
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(400, "csrf", "页面已过期或来源不明，请刷新后重新提交")

    @app.errorhandler(DiskFullError)
    def disk_full(exc: Exception):
        return error_response(507, "disk_full", "磁盘空间不足，已暂停收件，请联系管理员清理磁盘")

    @app.errorhandler(OSError)
    def os_error(exc: OSError):
        if exc.errno == errno.ENOSPC:  # a write that ran out of space where no reserve check came first
            return disk_full(exc)
        raise exc

    @app.errorhandler(sqlite3.OperationalError)
    def sqlite_error(exc: sqlite3.OperationalError):
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return disk_full(exc)
        raise exc

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        return error_response(status, f"http_{status}", HTTP_MESSAGES.get(status, exc.description or "请求失败"))
