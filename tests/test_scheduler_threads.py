"""The scheduled jobs without APScheduler (issue 12 item 5): one thread per interval job that
survives a failing run and stops on shutdown; and the process settings of ``node serve`` (the
malloc arena cap, the garbage collector settled after start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from provisioning import cli, nodes
from provisioning.memory import limit_malloc_arenas
from shared.web.jobs import Scheduler


def test_an_interval_job_runs_again_after_a_failure_and_stops_on_shutdown():
    runs = []
    twice = threading.Event()

    def job():
        runs.append(time.monotonic())
        if len(runs) >= 3:
            twice.set()
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    scheduler = Scheduler()
    scheduler.add_job(job, 0.02, "test")
    scheduler.start()
    assert twice.wait(5), "the loop stopped after the failing run"
    scheduler.shutdown()
    assert not any(t.is_alive() for t in scheduler.threads)
    count = len(runs)
    time.sleep(0.1)
    assert len(runs) == count  # nothing runs after shutdown


def test_runs_of_one_job_never_overlap():
    inside, overlaps, done = [0], [], threading.Event()

    def slow():
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.05)
        inside[0] -= 1
        if len(overlaps) >= 3:
            done.set()

    scheduler = Scheduler()
    scheduler.add_job(slow, 0.001, "slow")
    scheduler.start()
    assert done.wait(5)
    scheduler.shutdown()
    assert set(overlaps) == {1}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_arena_cap_is_applied_unless_the_operator_set_one(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_serve_freezes_what_start_up_built_and_raises_the_young_threshold():
    """``settle_collector`` (what ``liandong node serve`` calls after building the app): start-up's
    objects leave the collector's generations and the youngest one is collected less often;
    ``0`` keeps Python's defaults. Run in a child process: a frozen test process would keep
    every later test's cyclic garbage."""
    script = (
        "import gc, json\n"
        "from provisioning.memory import settle_collector\n"
        "before = gc.get_threshold()\n"
        "kept = settle_collector(0)\n"
        "untouched = (gc.get_threshold() == before, gc.get_freeze_count())\n"
        "applied = settle_collector(12345)\n"
        "print(json.dumps([kept, untouched, applied, gc.get_threshold()[0], gc.get_freeze_count() > 1000]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [False, [True, 0], True, 12345, True]


@pytest.mark.parametrize("setting, expected", [(None, 10000), ("0", 0), ("2000", 2000)])
def test_node_serve_settles_the_collector_once_the_app_is_built(tmp_path, monkeypatch, setting, expected):
    """The wiring: ``node serve`` calls it with ``GC_YOUNG_THRESHOLD`` after building the app and
    before serving (waitress and the call itself replaced here, so this process stays as it is)."""
    nodes.init_hub(tmp_path / "hub", "130926", "测试县政务服务中心")
    monkeypatch.setenv("LIANDONG_SCHEDULER_ENABLED", "false")  # no job threads left behind in this process
    if setting is not None:
        monkeypatch.setenv("LIANDONG_GC_YOUNG_THRESHOLD", setting)
    calls = []
    monkeypatch.setattr(cli, "settle_collector", lambda threshold: calls.append(("settle", threshold)))
    monkeypatch.setattr("waitress.serve", lambda app, **kw: calls.append(("serve", kw["port"])))
    result = CliRunner().invoke(cli.main, ["node", "serve", "--data", str(tmp_path / "hub"), "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert calls == [("settle", expected), ("serve", 5999)]


def test_a_village_keeps_pythons_own_young_threshold():
    """10,000 kept ~2.8 MiB more garbage resident in a village process (docs/operations.md, Memory)."""
    from provisioning.tiers import TIERS

    assert TIERS["village"].gc_young_threshold == 700 and TIERS["township"].gc_young_threshold == 10000



def test_a_round_asked_for_while_the_last_one_ends_is_not_lost(monkeypatch):
    """A kick that finds the lock taken just after the running round last looked for more work
    (between its last check and the release) is run by that round: otherwise it waited for the
    next interval, and a write-through push for its whole bound (shared/web/jobs.py)."""
    from types import SimpleNamespace

    from shared.web import jobs

    drains, kicked = [], []
    app = SimpleNamespace(config={"SYNC_INTERVAL_SECONDS": 3600}, extensions={})

    class Conn:
        def close(self):  # after the last look at `wanted`, before the release: a kick arrives
            if not kicked:
                kicked.append(True)
                app.extensions["liandong_sync_kick"]()  # its thread finds the lock taken and leaves
                time.sleep(0.3)

    app.extensions.update({"liandong_node": object(), "liandong_db": SimpleNamespace(connect=lambda a: Conn())})
    monkeypatch.setattr(jobs, "drain", lambda conn, node, state, force=False, timeout=None: drains.append(1) or {})
    jobs._add_sync(app, Scheduler())  # the interval loop is not started: rounds are asked for below
    app.extensions["liandong_sync_now"]()
    assert kicked and len(drains) == 2  # the round ran once more for the kick it kept out
