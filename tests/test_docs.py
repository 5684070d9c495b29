"""The operator and API docs keep up with the code: settings, CLI commands and HTTP routes.

* every setting in ``shared.core.settings.SETTINGS`` has a heading or table row in docs/operations.md;
* every ``liandong`` command (the click group walked recursively) has a heading there;
* every route of the three apps under /api/, /sync/, /enrol/, /healthz and /metrics is a path of
  docs/openapi.yaml, with each of its methods.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"
API_PREFIXES = ("/api/", "/sync/", "/enrol/", "/healthz", "/metrics")
METHODS = ("get", "put", "post", "delete", "patch")


def operations_text() -> str:
    return (DOCS / "operations.md").read_text(encoding="utf-8")


def documented_in_table_or_heading(text: str, name: str) -> bool:
    heading = re.compile(rf"^#+ .*`?\b{re.escape(name)}\b`?", re.MULTILINE)
    row = re.compile(rf"^\|\s*`?{re.escape(name)}`?\s*\|", re.MULTILINE)
    return bool(heading.search(text) or row.search(text))


def test_every_setting_is_documented():
    from shared.core.settings import SETTINGS

    text = operations_text()
    missing = [s.name for s in SETTINGS if not documented_in_table_or_heading(text, s.name)]
    assert not missing, f"settings missing from docs/operations.md: {missing}"


def cli_commands(group: click.Group, prefix: str = "liandong") -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found += cli_commands(command, path) if isinstance(command, click.Group) else [path]
    return found


def test_every_cli_command_has_a_heading():
    from provisioning.cli import main

    commands = cli_commands(main)
    assert "liandong hub init" in commands and "liandong demo" in commands
    headings = "\n".join(line for line in operations_text().splitlines() if line.startswith("#"))
    missing = [c for c in commands if not re.search(rf"`{re.escape(c)}`", headings)]
    assert not missing, f"CLI commands without a heading in docs/operations.md: {missing}"


def openapi_paths() -> dict[str, set[str]]:
    """``paths`` of docs/openapi.yaml read without a YAML library: 2-space path keys, 4-space methods."""
    paths: dict[str, set[str]] = {}
    in_paths, current = False, None
    for line in (DOCS / "openapi.yaml").read_text(encoding="utf-8").splitlines():
        if re.match(r"^\S", line):
            in_paths, current = line.rstrip() == "paths:", None
            continue
        if not in_paths:
            continue
        path = re.match(r"^  (/\S*):\s*$", line)
        if path:
            current = path.group(1)
            paths[current] = set()
            continue
        method = re.match(rf"^    ({'|'.join(METHODS)}):\s*$", line)
        if method and current:
            paths[current].add(method.group(1))
    return paths


def app_routes(tmp_path) -> dict[str, set[str]]:
    from city_hub import create_app as hub_app
    from township_node import create_app as township_app
    from village_node import create_app as village_app

    routes: dict[str, set[str]] = {}
    for factory, tier, node_id in ((hub_app, "hub", "130926"), (township_app, "township", "130926100"),
                                   (village_app, "village", "130926100201")):
        app = factory({"DATA_DIR": str(tmp_path / tier), "TIER": tier, "NODE_ID": node_id, "HUB_ID": "130926",
                       "SECRET_KEY": "docs-test-" + "0" * 32, "SCHEDULER_ENABLED": False})
        for rule in app.url_map.iter_rules():
            if rule.rule.startswith(API_PREFIXES):
                path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
                routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return routes


def test_every_api_route_is_in_openapi(tmp_path):
    documented = openapi_paths()
    routes = app_routes(tmp_path)
    assert "/sync/v1/push" in routes and "/api/v1/cases/{case_id}" in routes
    missing = {p: sorted(m - documented.get(p, set())) for p, m in routes.items() if m - documented.get(p, set())}
    assert not missing, f"routes or methods missing from docs/openapi.yaml paths: {missing}"
    stale = sorted(set(documented) - set(routes))
    assert not stale, f"docs/openapi.yaml documents paths no app serves: {stale}"


def test_openapi_is_valid_yaml():
    spec = yaml.safe_load((DOCS / "openapi.yaml").read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1")
    assert {p: {m for m in ops if m in METHODS} for p, ops in spec["paths"].items()} == openapi_paths()
