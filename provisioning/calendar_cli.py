"""``liandong calendar``: working-day arithmetic and loading a year's official holiday schedule."""

from __future__ import annotations

from pathlib import Path

import click

from city_hub.hub_admin import publish_calendar
from provisioning import nodes
from provisioning.cli_errors import CliError
from shared.core import storage
from shared.rules.workdays import WorkCalendar, fallback_warning, load_schedule


@click.group()
def calendar() -> None:
    """Working days (工作日) with the State Council's holidays and 调休."""


def _calendar(data_dir: Path | None) -> WorkCalendar:
    return nodes.node_for(data_dir).calendar if data_dir else WorkCalendar()


@calendar.command("add")
@click.argument("start", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.argument("days", type=int)
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Use the schedules loaded on this node (default: the built-in calendar).")
def calendar_add(start, days: int, data_dir: Path | None) -> None:
    """Print the date DAYS working days after START (START itself does not count)."""
    cal = _calendar(data_dir)
    result = cal.add_working_days(start.date(), days)
    click.echo(result.isoformat())
    if cal.used_fallback:
        click.echo(fallback_warning(sorted(cal.used_fallback)), err=True)


@calendar.command("between")
@click.argument("start", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.argument("end", type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Use the schedules loaded on this node.")
def calendar_between(start, end, data_dir: Path | None) -> None:
    """Print the number of working days in (START, END]."""
    cal = _calendar(data_dir)
    click.echo(cal.working_days_between(start.date(), end.date()))
    if cal.used_fallback:
        click.echo(fallback_warning(sorted(cal.used_fallback)), err=True)


@calendar.command("load")
@click.argument("schedule_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The hub's data folder.")
def calendar_load(schedule_file: Path, data_dir: Path) -> None:
    """Load a year's official schedule at the hub and publish it (signed) to every node."""

    try:
        schedule = load_schedule(schedule_file)
    except ValueError as exc:
        raise CliError(f"节假日安排文件有误：{exc}", "invalid_schedule") from exc
    config = nodes.read_config(data_dir)
    if config["TIER"] != "hub":
        raise CliError("节假日安排只能在市(县)中心载入，再由同步分发到各节点", "hub_only")
    with nodes.opened(data_dir, "hub") as (node, conn), storage.write_transaction(conn):
        version = publish_calendar(conn, node, schedule, "cli")
    click.echo(f"{schedule['year']} schedule loaded; calendar version {version} published")
