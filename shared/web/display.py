"""What every page shares for old browsers and paper: the favicon, the 大字 (large text) switch
and the print view.

All of it works without JavaScript: the 大字 switch is a link that sets a cookie and comes
back; every 打印 button is a link to the same page with ``?print=1``, which shows the page as it
prints (no menus) and asks for Ctrl+P. liandong.js only turns those links into a direct print.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, request, send_from_directory, url_for

from shared.core.clock import CN_TZ, parse_iso
from shared.services import names
from shared.web.auth import public

bp = Blueprint("display", __name__)

TEXT_COOKIE = "liandong_text"  # one name for every node on a PC: the reader's eyes are the same
TEXT_COOKIE_DAYS = 365


def _safe_next(target: str | None) -> str:
    """A local path to go back to (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@bp.get("/favicon.ico")
@public
def favicon():
    """The node's icon (old browsers ask for /favicon.ico whatever the page links)."""
    return send_from_directory(current_app.blueprints["auth"].static_folder, "favicon.ico",
                               mimetype="image/x-icon", max_age=7 * 86400)


@bp.get("/text-size")
@public
def text_size():
    """Switch between standard and large text (大字), remembered in a cookie for a year."""
    large = request.args.get("size", "large") == "large"
    response = redirect(_safe_next(request.args.get("next")))
    if large:
        response.set_cookie(TEXT_COOKIE, "large", max_age=TEXT_COOKIE_DAYS * 86400, samesite="Lax", httponly=True)
    else:
        response.delete_cookie(TEXT_COOKIE)
    return response


def large_text() -> bool:
    """Whether this reader asked for large text."""
    return request.cookies.get(TEXT_COOKIE) == "large"


def print_view() -> bool:
    """Whether this page is shown as its print view (``?print=1``)."""
    return request.args.get("print") == "1"


def print_url() -> str:
    """This page's print view: the same URL with ``print=1``."""
    return _this_page(print="1")


def screen_url() -> str:
    """This page without its print view (the way back from ``?print=1``)."""
    return _this_page()


def _this_page(**extra: str) -> str:
    """This page's URL with its query (without ``print``) plus ``extra``."""
    # Query names starting with "_" would steer url_for (_external, _scheme …): they are dropped.
    query = {k: v for k, v in request.args.items() if k != "print" and not k.startswith("_")}
    query.update(extra)
    if request.endpoint is None:  # an error page
        return request.path + ("?" + urlencode(query) if query else "")
    return url_for(request.endpoint, **{**query, **(request.view_args or {})})


def text_size_url() -> str:
    """The link that switches text size and comes back here."""
    return url_for("display.text_size", size="normal" if large_text() else "large", next=screen_url())


def cn_date(value) -> str:
    """A timestamp or date as papers print it: ``2026年12月2日`` (Beijing date, no clock time)."""
    if not value:
        return "—"
    try:
        text = str(value)
        day = parse_iso(text).astimezone(CN_TZ).date() if "T" in text else date.fromisoformat(text)
    except (ValueError, TypeError):
        return str(value)
    return f"{day.year}年{day.month}月{day.day}日"


def init_app(app) -> None:
    """Register the routes and the template helpers."""
    app.register_blueprint(bp)
    app.jinja_env.filters.update(cn_date=cn_date, full_stop=names.with_full_stop)
    app.jinja_env.globals.update(large_text=large_text, print_view=print_view, print_url=print_url,
                                 screen_url=screen_url, text_size_url=text_size_url)
