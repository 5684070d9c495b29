"""The running node of the current Flask app, and the app-wide extensions every blueprint uses."""

from __future__ import annotations

from flask import current_app
from flask_wtf.csrf import CSRFProtect

from shared.core.version import __version__ as VERSION  # noqa: F401 (templates and /healthz)
from sync.node import Node

csrf = CSRFProtect()


def current_node() -> Node:
    """The :class:`Node` of the current app."""
    return current_app.extensions["liandong_node"]
