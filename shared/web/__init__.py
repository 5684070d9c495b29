"""What every node's Flask app shares: the factory skeleton, database owner, auth, errors.

Each node package keeps its own ``create_app(test_config=None)``; they all call
:func:`create_node_app` so that configuration is loaded the same way everywhere: defaults from
:mod:`shared.settings`, then the data folder's ``config.py``, then ``LIANDONG_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect

from shared.node import Node
from shared.settings import DEFAULTS

csrf = CSRFProtect()
VERSION = "0.1.0"


def create_node_app(import_name: str, tier: str, test_config: dict | None, database) -> Flask:
    """Build a node app of ``tier`` with its ``database`` owner; blueprints are added by the caller.

    The data folder (Flask's instance folder) comes from ``test_config["DATA_DIR"]`` or the
    ``LIANDONG_DATA_DIR`` environment variable.
    """
    data_dir = (test_config or {}).get("DATA_DIR") or os.environ.get("LIANDONG_DATA_DIR")
    if not data_dir:
        raise RuntimeError("set LIANDONG_DATA_DIR to the node's data folder (see `liandong node init`)")
    data_dir = str(Path(data_dir).resolve())
    app = Flask(import_name, instance_path=data_dir, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.config.from_prefixed_env("LIANDONG")
    if app.config["TIER"] != tier:
        raise RuntimeError(f"{data_dir} holds a {app.config['TIER']} node, not a {tier}")
    # CSRF is checked in auth.require_account: forms with a session need it, bearer/node-signed calls do not.
    app.config.update(WTF_CSRF_TIME_LIMIT=None, WTF_CSRF_CHECK_DEFAULT=False,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    from . import limits

    limits.init_app(app)  # first hook: bodies are bounded before anything reads them or authenticates
    app.extensions["liandong_node"] = Node(app.config, data_dir)
    database.init_app(app)
    csrf.init_app(app)

    from . import auth, errors, health

    errors.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    from shared import materials

    app.jinja_env.globals.update(node_name=app.config.get("NODE_NAME"), node_tier=tier, version=VERSION,
                                 material_accept=materials.accept_attribute, material_formats=materials.formats_text)
    return app


def current_node() -> Node:
    """The :class:`Node` of the current app."""
    return current_app.extensions["liandong_node"]
