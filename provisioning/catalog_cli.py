"""``liandong catalog``: publish a new signed version of the 实施清单 from a JSON file, or export it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from city_hub.hub_admin import parse_catalog, parse_things, publish_catalog
from city_hub.registry import current_catalog, current_things
from provisioning import nodes
from provisioning.cli_errors import CliError
from shared.core import storage
from shared.core.errors import ValidationError

DATA = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The hub's data folder.")


@click.group()
def catalog() -> None:
    """The catalog of service items (实施清单): export, edit, publish."""


def _hub(data_dir: Path) -> None:
    if nodes.read_config(data_dir)["TIER"] != "hub":
        raise CliError("事项目录只能在市(县)中心发布，再由同步分发到各节点", "hub_only")


@catalog.command("publish")
@click.argument("catalog_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA
def catalog_publish(catalog_file: Path, data_dir: Path) -> None:
    """Validate CATALOG_FILE (a JSON list of items, or {"items": [...]}) and publish it signed."""

    _hub(data_dir)
    try:
        text = catalog_file.read_bytes()
        items = parse_catalog(text)
        things = parse_things(text, items)
    except ValidationError as exc:
        raise CliError(f"事项目录未通过校验：{exc.message}", exc.code) from exc
    with nodes.opened(data_dir, "hub") as (node, conn), storage.write_transaction(conn):
        version = publish_catalog(conn, node, items, "cli", things)
    click.echo(f"catalog version {version} published with {len(items)} items")


@catalog.command("export")
@DATA
def catalog_export(data_dir: Path) -> None:
    """Print the published catalog as JSON (to edit and publish again)."""

    _hub(data_dir)
    with nodes.opened(data_dir, "hub") as (_, conn):
        version, items = current_catalog(conn)
        things = list(current_things(conn).values())
    click.echo(json.dumps({"version": version, "items": list(items.values()), "things": things},
                          ensure_ascii=False, indent=1))
