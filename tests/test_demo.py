"""The demo as the README tour runs it: stopping one node leaves the others running, the demo
says so and how to restart it, and running `liandong demo` again starts only the missing node."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow
HUB, TOWNSHIP, VILLAGES = "130926", "130926100", ("130926100201", "130926100202")


def _free_base_port() -> int:
    """A port P with P..P+3 free on 127.0.0.1."""
    for base in range(23000 + os.getpid() % 2000 * 4, 60000, 4):
        try:
            sockets = []
            for port in range(base, base + 4):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


def _answers(port: int) -> str | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["node_id"]
    except (requests.RequestException, ValueError):
        return None


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _demo(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "LIANDONG_DEMO_QUIET": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "provisioning.cli", "demo", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[1])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the demo terminates the nodes it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_killing_one_node_leaves_the_demo_running_and_it_restarts(tmp_path):
    base = _free_base_port()
    ports = {HUB: base, TOWNSHIP: base + 1, VILLAGES[0]: base + 2, VILLAGES[1]: base + 3}
    args = ["--data", str(tmp_path / "demo"), "--base-port", str(base), "--sync-interval", "1"]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _demo(args, first_log)
    second = None
    try:
        _wait_for(lambda: "Press Ctrl-C" in first_log.read_text(), 180, "the demo to come up")
        text = first_log.read_text()
        pid = int(re.search(rf"{TOWNSHIP}\s+\S+\s+\(pid (\d+)\)", text).group(1))
        os.kill(pid, signal.SIGKILL)  # README tour step 6: stop the township
        _wait_for(lambda: f"node {TOWNSHIP}" in first_log.read_text(), 20, "the demo to report the stop")
        time.sleep(1.5)
        assert first.poll() is None, first_log.read_text()
        assert _answers(ports[TOWNSHIP]) is None
        for node_id in (HUB, *VILLAGES):
            assert _answers(ports[node_id]) == node_id
        report = first_log.read_text()
        assert "the other nodes keep running" in report
        restart = re.search(r"^\s+liandong demo (.+)$", report, re.MULTILINE).group(1).split()
        # The printed command starts only what is missing.
        second = _demo(restart, second_log)
        _wait_for(lambda: _answers(ports[TOWNSHIP]) == TOWNSHIP, 60, "the township to be back")
        _wait_for(lambda: "Press Ctrl-C" in second_log.read_text(), 30, "the second run to settle")
        assert second_log.read_text().count("already running") >= 3
        assert first.poll() is None and second.poll() is None
    finally:
        for proc in (second, first):
            if proc is not None:
                _stop(proc)
