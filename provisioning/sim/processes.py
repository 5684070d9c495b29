"""The hub and townships as real ``liandong node serve`` processes on loopback ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NodeProcess:
    """A hub or township served by ``liandong node serve`` in its own process."""

    def __init__(self, node_id: str, data_dir: Path, port: int, env: dict):
        self.node_id = node_id
        self.data_dir = data_dir
        self.port = port
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: float = 60.0) -> None:
        if self.running:
            return
        if self._log is None:
            self._log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(self.data_dir),
             "--port", str(self.port)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id} exited with {self.proc.returncode}; see {self.data_dir}/serve.log")
            try:
                # up and serving; 503 only means degraded (e.g. not synced with its parent yet). The
                # answer must be this node's: on a shared machine another process may have taken the
                # port between free_port() and our bind (ours then exits: "address in use" above).
                answer = requests.get(self.url + "/healthz", timeout=1)
                if answer.status_code in (200, 503) and answer.json().get("node_id") == self.node_id:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.node_id} did not come up on {self.url}")

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def close(self) -> None:
        self.signal(signal.SIGTERM)
        if self._log is not None:
            self._log.close()
            self._log = None
