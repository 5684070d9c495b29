"""The running node of the current Flask app, and the app-wide extensions every blueprint uses."""

from __future__ import annotations

from flask import current_app
from flask_wtf.csrf import CSRFProtect

from sync.node import Node

csrf = CSRFProtect()
VERSION = "0.1.0"


def current_node() -> Node:
    """The :class:`Node` of the current app."""
    return current_app.extensions["liandong_node"]
