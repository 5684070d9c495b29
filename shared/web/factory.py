"""What every node's Flask app shares: the factory skeleton, database owner, auth, errors.

Each node package keeps its own ``create_app(test_config=None)``; they all call
:func:`create_node_app` so that configuration is loaded the same way everywhere: defaults from
:mod:`shared.core.settings`, then the data folder's ``config.py``, then ``LIANDONG_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Config, Flask, current_app, request
from jinja2 import FileSystemBytecodeCache
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.core import storage
from shared.core.settings import DEFAULTS
from shared.rules import materials
from shared.web import access, auth, display, errors, health, limits, metrics
from shared.web.context import VERSION, csrf
from sync.node import Node
from sync.tier import Tier

# Secrets seen in examples and tutorials: a node refuses them like a missing one.
KNOWN_SECRETS = frozenset({"dev", "development", "secret", "secret-key", "secretkey", "changeme", "change-me",
                           "test", "testing", "liandong", "please-change-me"})
MIN_SECRET_LENGTH = 16
SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",  # no page of a node may be framed (clickjacking)
    "X-Frame-Options": "DENY",  # the same for old browsers
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # case ids in URLs stay on the node
}


def check_secret_key(secret, data_dir: str) -> None:
    """Refuse to start without a real session secret (else every login would fail or be forgeable)."""
    text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
    if not isinstance(text, str) or len(text) < MIN_SECRET_LENGTH or text.strip().lower() in KNOWN_SECRETS:
        raise RuntimeError(
            f"SECRET_KEY of the node in {data_dir} is missing, shorter than {MIN_SECRET_LENGTH} characters or a "
            "well-known example: set SECRET_KEY in its config.py (written by `liandong hub init` / `node init`) to "
            "the output of: python -c \"import secrets; print(secrets.token_hex(32))\"")


def load_settings(config: Config, test_config: dict | None = None) -> Config:
    """Fill ``config`` (rooted at the data folder) in the documented layers: defaults, the data
    folder's ``config.py``, ``test_config``, then ``LIANDONG_*`` environment variables."""
    config.from_mapping(DEFAULTS)
    config.from_pyfile("config.py", silent=True)
    if test_config is not None:
        config.from_mapping(test_config)
    config.from_prefixed_env("LIANDONG")
    return config


def create_node_app(import_name: str, tier: Tier, test_config: dict | None, database) -> Flask:
    """Build a node app of ``tier`` (the tier package's :class:`sync.tier.Tier`) with its
    ``database`` owner; blueprints are added by the caller.

    The data folder (Flask's instance folder) comes from ``test_config["DATA_DIR"]`` or the
    ``LIANDONG_DATA_DIR`` environment variable.
    """
    data_dir = (test_config or {}).get("DATA_DIR") or os.environ.get("LIANDONG_DATA_DIR")
    if not data_dir:
        raise RuntimeError("set LIANDONG_DATA_DIR to the node's data folder (see `liandong node init`)")
    data_dir = str(Path(data_dir).resolve())
    os.umask(0o077)  # everything the node creates (database, blobs, folders) is the service account's alone
    app = Flask(import_name, instance_path=data_dir, instance_relative_config=True)
    load_settings(app.config, test_config)
    if app.config["TIER"] != tier.name:
        raise RuntimeError(f"{data_dir} holds a {app.config['TIER']} node, not a {tier.name}")
    check_secret_key(app.config.get("SECRET_KEY"), data_dir)
    # CSRF is checked in auth.require_account: forms with a session need it, bearer/node-signed calls do not.
    app.config.update(WTF_CSRF_TIME_LIMIT=None, WTF_CSRF_CHECK_DEFAULT=False,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      # Cookies are per host, not per port: on one machine (the demo on 127.0.0.1)
                      # every node would share one "session" cookie and a login at one would log
                      # the others out. One cookie name per node keeps their sessions apart.
                      SESSION_COOKIE_NAME=session_cookie_name(app.config.get("NODE_ID")))
    limits.init_app(app)  # first hook: bodies are bounded before anything reads them or authenticates
    if int(app.config["PROXY_HOPS"] or 0) > 0:
        hops = int(app.config["PROXY_HOPS"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    app.after_request(_security_headers)
    app.extensions["liandong_node"] = Node(app.config, data_dir, tier)
    database.init_app(app)
    csrf.init_app(app)

    errors.init_app(app)
    metrics.init_app(app)  # access log on every node; /metrics on hub and township
    display.init_app(app)  # favicon, 大字
    app.register_blueprint(auth.bp)
    access.init_app(app)  # need-to-know on every case route, after the login hook
    app.register_blueprint(health.bp)
    # Compiled templates are kept in <data>/cache/templates (keyed by each template's source, so
    # an upgrade recompiles what changed): a later start loads them instead of compiling each
    # page's template on its first request (~0.7 s for the case page on a slow PC, and ~0.8 MiB
    # of a village process's memory that the compiler's garbage leaves resident).
    compiled = Path(data_dir) / "cache" / "templates"
    storage.private_dir(compiled)
    app.jinja_env.bytecode_cache = FileSystemBytecodeCache(str(compiled))
    app.jinja_env.globals.update(node_name=app.config.get("NODE_NAME"), node_tier=tier.name, node_kind=tier,
                                 version=VERSION, has_page=auth.may_open,
                                 material_accept=materials.accept_attribute, material_formats=materials.formats_text)
    return app


def session_cookie_name(node_id: str | None) -> str:
    """The session cookie of node ``node_id``: ``liandong_<node_id>``."""
    return f"liandong_{node_id or 'node'}"


#: What a node-to-node answer keeps of :data:`SECURITY_HEADERS` (docs/sync-protocol.md §5.1.3):
#: its JSON is read by a node's client, never rendered, framed or followed by a browser, so
#: the clickjacking and referrer headers do nothing there; nosniff stops a browser that is
#: pointed at such a URL from reading the JSON as HTML.
NODE_API_HEADERS = ("X-Content-Type-Options",)


def _security_headers(response):
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    node_api = getattr(view, "liandong_node_signed", False)  # the sync and enrolment API between nodes
    if node_api and "Content-Type" not in response.headers:
        return response  # a dictionary-coded answer (no browser can decode it) or no body: nothing to sniff
    for name, value in SECURITY_HEADERS.items():
        if not node_api or name in NODE_API_HEADERS:
            response.headers.setdefault(name, value)
    return response
