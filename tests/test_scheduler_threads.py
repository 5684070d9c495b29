"""The scheduled jobs without APScheduler (issue 12 item 5): one thread per interval job that
survives a failing run and stops on shutdown; and the malloc arena cap of ``node serve``."""

from __future__ import annotations

import sys
import threading
import time

import pytest

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
