"""Every configuration key the code reads is declared once in ``shared/core/settings.py``.

The scan parses every module of the six packages and collects string keys read as
``<x>.config[...]``, ``<x>.config.get(...)``, ``config[...]`` or ``config.get(...)``
(``app.config``, ``current_app.config``, ``node.config``, a ``config`` dict from ``read_config``).
A key Flask itself defines (``TESTING``, ``SESSION_COOKIE_*``…) needs no declaration.
"""

from __future__ import annotations

import ast
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "sync", "city_hub", "township_node", "village_node", "provisioning")


def _is_config(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "config") or (
        isinstance(node, ast.Name) and node.id == "config")


def config_reads(tree: ast.AST) -> list[tuple[str, int]]:
    """``(key, line)`` of every string key read from a config mapping in ``tree``."""
    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and _is_config(node.value) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and _is_config(node.func.value) and node.args):
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.append((key.value, node.lineno))
    return found


def all_config_reads() -> dict[str, list[str]]:
    """Key → ``file:line`` places that read it, over the project's packages."""
    reads: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for key, line in config_reads(tree):
                reads.setdefault(key, []).append(f"{path.relative_to(ROOT)}:{line}")
    return reads


def test_the_scan_sees_subscripts_and_get_calls():
    source = 'a = app.config["A"]\nb = current_app.config.get("B", 1)\nc = config["C"]\napp.config["W"] = 1\n'
    assert sorted(k for k, _ in config_reads(ast.parse(source))) == ["A", "B", "C"]


def test_every_config_key_read_is_declared_in_settings():
    from shared.core.settings import DEFAULTS

    reads = all_config_reads()
    # The scan must actually see the code's reads, or the test proves nothing.
    assert {"NODE_ID", "SYNC_INTERVAL_SECONDS", "OFFLINE_BANNER_SECONDS"} <= set(reads)
    flask_own = set(Flask.default_config)
    undeclared = {k: v for k, v in reads.items() if k not in DEFAULTS and k not in flask_own}
    assert not undeclared, f"config keys read but not declared in shared/core/settings.py: {undeclared}"
