"""The ``liandong sim`` command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from provisioning.sim.county import SimConfig
from provisioning.sim.loop import run_sim


@click.command("sim")
@click.option("--townships", default=9, show_default=True, help="Township stations.")
@click.option("--villages", default=253, show_default=True, help="Village rooms, spread over the townships.")
@click.option("--cases", default=1000, show_default=True, help="Applications taken at random villages.")
@click.option("--seed", default=1, show_default=True, help="Seed of every random choice and fault.")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Empty folder to build the county in (kept); default: a temporary folder, removed.")
@click.option("--faults/--no-faults", default=True, show_default=True, help="Inject link and node faults.")
@click.option("--kill-every", default=20.0, show_default=True,
              help="Seconds between SIGKILLs of a township process (0: only once).")
@click.option("--offline-every", default=30.0, show_default=True, help="Seconds between townships going offline.")
@click.option("--offline-seconds", default=12.0, show_default=True, help="How long a township stays offline.")
@click.option("--kill-hub/--no-kill-hub", default=True, show_default=True, help="Kill the hub with SIGKILL once.")
@click.option("--rate", default=None, type=float, help="Cases per second (default: 8–15 by county size).")
@click.option("--quiesce-seconds", default=240.0, show_default=True, help="Bound of the final catch-up.")
@click.option("--clock-start", default=None, help="Start every node's clock at this ISO time (sim only).")
@click.option("--clock-speed", default=1.0, show_default=True, help="Run the clocks this many times faster.")
@click.option("--sabotage-outbox", is_flag=True, hidden=True,
              help="Self-test: drop one unsent envelope at a village; the run must fail.")
def sim(townships: int, villages: int, cases: int, seed: int, data_dir: Path | None, faults: bool,
        kill_every: float, offline_every: float, offline_seconds: float, kill_hub: bool, rate: float | None,
        quiesce_seconds: float, clock_start: str | None, clock_speed: float, sabotage_outbox: bool) -> None:
    """Run a whole county on loopback under faults; the last line is a JSON summary."""
    if townships < 1 or villages < townships or townships > 899:
        raise click.UsageError("need 1–899 townships and at least one village per township")
    config = SimConfig(townships=townships, villages=villages, cases=cases, seed=seed, data_dir=data_dir,
                       faults=faults, kill_every=kill_every, offline_every=offline_every,
                       offline_seconds=offline_seconds, kill_hub=kill_hub and faults, rate=rate,
                       quiesce_seconds=quiesce_seconds, sabotage_outbox=sabotage_outbox,
                       clock_start=clock_start, clock_speed=clock_speed)
    summary = run_sim(config, lambda line: click.echo(line))
    click.echo(json.dumps(summary, ensure_ascii=False))
    sys.exit(0 if summary["ok"] else 1)
