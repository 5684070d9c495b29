"""Helpers for the fault and security tests: the CLI as a user runs it, materials, decisions.

Everything here drives real code: ``liandong`` through click's runner on
:func:`provisioning.cli.main`, the real HTTP API of the nodes of a :class:`network.Network`,
and real signatures (a forged document is signed by a real key, just not the right one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.client import HTTPMessage
from pathlib import Path

import requests
from click.testing import CliRunner
from network import Network, NodeHandle, catalog, create_case, pick_item

from provisioning.cli import main
from shared.core import canonical
from shared.core.crypto import SigningKey
from sync import envelope
from sync.transport import Response, Transport


def cli(*args: str, ok: bool = True):
    """Run ``liandong <args>``; with ``ok`` assert it succeeded. Returns click's result."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def last_json(output: str) -> dict:
    """The JSON object a CLI command printed on its last line."""
    return json.loads(output.strip().splitlines()[-1])


def city_item(handle: NodeHandle, token: str) -> dict:
    """An item the hub decides that a village may take, as the village's catalog shows it."""
    return pick_item(catalog(handle, token), "city")


def material_files(item: dict, tag: str) -> list[tuple[str, str, bytes]]:
    """One distinct file per required material of ``item`` (content depends on ``tag``)."""
    return [
        (m["code"], f"{m['code']}.pdf", f"%PDF-1.4 {tag} {m['code']} ".encode() + os.urandom(64))
        for m in item["materials"] if m.get("required")
    ]


def new_case(handle: NodeHandle, token: str, item: dict, tag: str = "") -> tuple[dict, list]:
    """A case with every required material, created through the node's API; (receipt, files)."""
    files = material_files(item, tag or os.urandom(4).hex())
    return create_case(handle, token, item, files), files


def decide(net: Network, case_id: str, office: str, actions=("accept", "approve")) -> None:
    """A hub window account of the deciding office applies ``actions`` over HTTP."""
    token = net.hub.account(f"win-{office}", "chief", office=office)
    for action in actions:
        response = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action})
        assert response.status_code == 200, response.text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_signed(path: Path) -> dict:
    """The signed document of a bundle file: its manifest (version 2, a zip) or the whole file (version 1)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return canonical.loads(zf.read("manifest.json"), max_bytes=1 << 30)
    return canonical.loads(Path(path).read_bytes(), max_bytes=1 << 30)


def resign(document: dict, key: SigningKey, **changes) -> dict:
    """The document's body with ``changes``, signed again by ``key`` (a real, but wrong, signer)."""
    body = canonical.loads(base64.b64decode(document["payload"]), max_bytes=1 << 30)
    return envelope.sign(key, document["payloadType"], {**body, **changes})


def write_signed(path: Path, document: dict) -> Path:
    """A bundle file holding ``document`` as its signed manifest (a version 2 zip)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", canonical.dumps(document))
    return Path(path)


def outbox_states(handle: NodeHandle) -> dict[int, str]:
    """seq -> state of a node's outbox."""
    return {r["seq"]: r["state"] for r in handle.query("SELECT seq, state FROM outbox ORDER BY seq")}


def village_cases(handle: NodeHandle) -> dict[str, dict]:
    """case_id -> row (as dict) of the cases a node holds."""
    return {r["case_id"]: dict(r) for r in handle.query("SELECT * FROM cases")}


# ------------------------------------------------------------------ real processes


class NodeProcess:
    """A node served by ``python -m provisioning.cli node serve`` in its own process (kill -9 able).

    It runs its own scheduler (sync and supervision jobs) with short intervals, exactly as a
    station PC runs it, on the loopback port its :class:`NodeHandle` was given.
    """

    def __init__(self, handle: NodeHandle, sync_interval: float = 0.2, backoff_max: float = 0.5,
                 extra_env: dict | None = None):
        self.handle = handle
        self.env = {**os.environ, "LIANDONG_SYNC_INTERVAL_SECONDS": str(sync_interval),
                    "LIANDONG_SYNC_BACKOFF_MAX_SECONDS": str(backoff_max), "LIANDONG_SYNC_TIMEOUT_SECONDS": "3",
                    **(extra_env or {})}
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and wait until ``/healthz`` answers."""
        assert self.proc is None or self.proc.poll() is not None
        # stderr to a file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(self.handle.data_dir),
                 "--port", str(self.handle.port)],
                env=self.env, stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.handle.node_id} exited: {self.log_tail()}")
            try:
                if requests.get(self.handle.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.handle.node_id} did not come up on port {self.handle.port}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, whatever the process was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self) -> None:
        """Stop the process (test clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    @property
    def log_path(self) -> Path:
        return self.handle.data_dir / "serve.log"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what the process wrote to stderr (all its runs)."""
        return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace") if self.log_path.exists() else ""


@contextmanager
def open_readonly(handle: NodeHandle) -> Iterator[sqlite3.Connection]:
    """A plain connection to a node's database file (the node may run in another process)."""
    conn = sqlite3.connect(str(handle.data_dir / "node.sqlite3"), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


class WireSession(Transport):
    """The client's own HTTP transport, counting what goes on the wire and able to drop the
    link mid-transfer.

    :param drop_after_puts: raise a connection error instead of sending the PUT after this
        many PUTs went through (the link dies in the middle of a blob).
    """

    def __init__(self, drop_after_puts: int | None = None, batch_route: bool = True):
        super().__init__()
        self.drop_after_puts = drop_after_puts
        self.batch_route = batch_route  # False: the parent is an older node, without POST /blobs/batch
        self.puts = 0
        self.put_bytes = 0
        self.requests: list[tuple[str, str, int]] = []

    def request(self, method, url, *args, data=None, **kwargs):
        size = len(data or b"")
        if method.upper() == "PUT":
            if self.drop_after_puts is not None and self.puts >= self.drop_after_puts:
                raise ConnectionError("link dropped by the test")
            self.puts += 1
            self.put_bytes += size
        self.requests.append((method.upper(), url, size))
        if not self.batch_route and url.endswith("/sync/v1/blobs/batch"):
            return Response(404, "Not Found", HTTPMessage(), b"{}", 0, 2)
        return super().request(method, url, *args, data=data, **kwargs)


def client_with(handle: NodeHandle, session: Transport):
    """The node's signed client towards its parent, over ``session``."""
    from sync.client import ParentClient

    node = handle.node
    return ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces,
                        session=session)
