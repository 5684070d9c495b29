"""The ``liandong sim`` command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from provisioning.memory import limit_malloc_arenas
from provisioning.sim.county import SimConfig
from provisioning.sim.loop import run_sim

#: Options of the fault run that mean nothing in a throughput run (which has no faults), and
#: the other way round; given on the command line with the wrong mode, they are refused.
FAULT_RUN_ONLY = ("cases", "faults", "kill_every", "offline_every", "offline_seconds", "kill_hub", "rate",
                  "clock_start", "clock_speed", "sabotage_outbox")
THROUGHPUT_ONLY = ("seconds", "window")


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
@click.option("--throughput", is_flag=True,
              help="Measure county throughput instead: no faults, every village keeps --window cases in flight "
                   "and takes the next as the hub acknowledges one, for --seconds; reports cases/s at the hub, "
                   "latency percentiles and peak RSS.")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Throughput run: seconds of load (then the county drains and is counted).")
@click.option("--window", default=8, show_default=True, type=click.IntRange(min=1, max=1000),
              help="Throughput run: cases in flight per village (taken, not yet acknowledged by the hub).")
@click.option("--workers", default=None, type=click.IntRange(min=1, max=64),
              help="Threads running the villages' sync rounds (default: 6; 16 with --throughput, where the "
                   "villages are the load and wait on the townships most of the time).")
@click.option("--sabotage-outbox", is_flag=True, hidden=True,
              help="Self-test: drop one unsent envelope at a village; the run must fail.")
@click.pass_context
def sim(ctx: click.Context, townships: int, villages: int, cases: int, seed: int, data_dir: Path | None,
        faults: bool, kill_every: float, offline_every: float, offline_seconds: float, kill_hub: bool,
        rate: float | None, quiesce_seconds: float, clock_start: str | None, clock_speed: float, throughput: bool,
        seconds: float, window: int, workers: int | None, sabotage_outbox: bool) -> None:
    """Run a whole county on loopback under faults (or, with --throughput, load it as fast as it
    absorbs cases); the last line is a JSON summary, the exit status 1 if anything was lost or
    duplicated."""
    if townships < 1 or villages < townships or townships > 899:
        raise click.UsageError("need 1–899 townships and at least one village per township")
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    # --no-faults and --no-kill-hub say what a throughput run does anyway.
    wrong = (given & set(FAULT_RUN_ONLY)) - ({"faults"} if not faults else set()) - ({"kill_hub"} if not kill_hub
                                                                                    else set())
    if throughput and wrong:
        raise click.UsageError("--throughput runs a clean county without faults; drop "
                               + ", ".join("--" + n.replace("_", "-") for n in sorted(wrong)))
    if not throughput and given & set(THROUGHPUT_ONLY):
        raise click.UsageError(", ".join("--" + n for n in sorted(given & set(THROUGHPUT_ONLY)))
                               + ": only with --throughput")
    if throughput:
        faults = kill_hub = False
    workers = workers or (16 if throughput else 6)
    config = SimConfig(townships=townships, villages=villages, cases=cases, seed=seed, data_dir=data_dir,
                       faults=faults, kill_every=kill_every, offline_every=offline_every,
                       offline_seconds=offline_seconds, kill_hub=kill_hub and faults, rate=rate,
                       quiesce_seconds=quiesce_seconds, sabotage_outbox=sabotage_outbox,
                       clock_start=clock_start, clock_speed=clock_speed, throughput=throughput,
                       seconds=seconds, window=window, workers=workers)
    # Before any thread: the villages' sync threads would otherwise each grow a malloc arena
    # (provisioning/memory.py).
    limit_malloc_arenas()
    try:
        summary = run_sim(config, lambda line: click.echo(line))
    except (RuntimeError, OSError) as exc:  # a node that would not start, a full disk: said plainly
        raise click.ClickException(f"the simulation stopped: {exc}") from exc
    click.echo(json.dumps(summary, ensure_ascii=False))
    sys.exit(0 if summary["ok"] else 1)
