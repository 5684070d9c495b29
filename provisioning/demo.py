"""The demo network: one hub, one township, two villages, each its own process and SQLite file.

Everything goes through the real paths: the hub is initialised, tokens are issued, the township
and villages generate their keys and enrol over HTTP, accounts are created per node. The first
run writes ``demo.json`` (URLs, logins, API tokens) into the data folder; later runs reuse it.

Stopping one node (the tour kills the township to show queueing) leaves the others running:
the demo reports it and prints how to start it again. Running ``liandong demo`` again with the
same options starts only the nodes that are not answering.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import click
import requests

from city_hub.enrolment_service import create_token
from provisioning import nodes
from shared.core import storage
from shared.core.clock import Clock
from shared.rules.catalog import DEPARTMENTS, load_seed

HUB = {"node_id": "130926", "name": "肃宁县政务服务中心"}
TOWNSHIP = {"node_id": "130926100", "name": "肃宁镇便民服务站"}
VILLAGES = [
    {"node_id": "130926100201", "name": "东关村便民服务室"},
    {"node_id": "130926100202", "name": "西关村便民服务室"},
]


def _start(data_dir: Path, port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(data_dir), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL if env.get("LIANDONG_DEMO_QUIET") else None,
    )


def _wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"node at {url} exited with {proc.returncode}")
        try:
            # up and serving; 503 only means degraded (e.g. not synced with its parent yet)
            if requests.get(url + "/healthz", timeout=1).status_code in (200, 503):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"node at {url} did not come up")


def _answering_node(url: str) -> str | None:
    """The node id that answers ``/healthz`` at ``url``, or None when nothing answers there."""
    try:
        r = requests.get(url + "/healthz", timeout=1)
        return r.json().get("node_id") if r.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def _restart_command(data_dir: Path, base_port: int, sync_interval: float, clock_start: str | None,
                     clock_speed: float) -> str:
    """The command that starts the demo's missing nodes with the options of this run."""
    command = f"liandong demo --data {data_dir} --base-port {base_port} --sync-interval {sync_interval:g}"
    if clock_start:
        command += f" --clock-start {clock_start} --clock-speed {clock_speed:g}"
    return command


def _password() -> str:
    return "ld-" + secrets.token_urlsafe(9)


def _accounts_for_hub() -> list[dict]:
    seed = load_seed()
    city_departments = sorted({i["department_code"] for i in seed if i["decide_level"] == "city"}
                              | {d for i in seed if i["decide_level"] == "city" for d in i["joint_departments"]})
    result = [
        {"username": "admin", "role": "admin", "office": None, "name": "系统管理员"},
        {"username": "supervisor", "role": "supervisor", "office": None, "name": "电子监察员"},
        {"username": "xmdb", "role": "project_agent", "office": None, "name": "项目代办员"},
    ]
    # Each department: its 窗口首席代表 (受理, 即办件), 首席审批员 (审批决定权 or 初审权 per item)
    # and 部门负责人 (decides after a 初审, approves a 延期).
    for code in city_departments:
        department = DEPARTMENTS.get(code, code)
        for role, suffix, title in (("window", "window", "窗口"), ("chief", "chief", "首席审批员"),
                                    ("head", "head", "负责人")):
            result.append({"username": f"{code}_{suffix}", "role": role, "office": f"{HUB['node_id']}-{code}",
                           "name": f"{department}{title}"})
    return result


def _accounts_for_township() -> list[dict]:
    township_id = TOWNSHIP["node_id"]
    joint = sorted({d for i in load_seed() if i["decide_level"] == "township" for d in i["joint_departments"]})
    return [
        {"username": "clerk", "role": "clerk", "office": township_id, "name": "便民服务站站员"},
        {"username": "admin", "role": "admin", "office": None, "name": "乡镇管理员"},
    ] + [{"username": f"{code}_clerk", "role": "clerk", "office": f"{township_id}-{code}",
          "name": f"{DEPARTMENTS.get(code, code)}联审员"} for code in joint]


def _create(data_dir: Path, url: str, node_id: str, tier: str, account_list: list[dict], manifest: dict) -> None:
    manifest["nodes"].append({"node_id": node_id, "tier": tier, "url": url, "data": str(data_dir)})
    for a in account_list:
        password = _password()
        token = nodes.add_account(data_dir, a["username"], password, a["role"], a["name"], a["office"])
        manifest["accounts"].append({"node_id": node_id, "username": a["username"], "password": password,
                                     "role": a["role"], "office": a["office"], "api_token": token})


def _issue_token(hub_dir: Path, node_id: str, name: str) -> str:
    with nodes.opened(hub_dir, "hub") as (hub, conn), storage.write_transaction(conn):
        return create_token(conn, node_id, name, None, timedelta(hours=1), hub.now(), "demo")


def run_demo(data_dir: Path, base_port: int, sync_interval: float, clock_start: str | None,
             clock_speed: float) -> int:
    """Create (first run) or reuse the demo network and serve it until Ctrl-C."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = data_dir / "demo.json"
    # Rules run every few seconds in the demo, so an accelerated clock shows deadlines passing.
    env = {**os.environ, "LIANDONG_SYNC_INTERVAL_SECONDS": str(sync_interval), "PYTHONUNBUFFERED": "1",
           "LIANDONG_SUPERVISION_INTERVAL_SECONDS": "5"}
    if clock_start:
        env["LIANDONG_CLOCK_START"] = clock_start
        env["LIANDONG_CLOCK_SPEED"] = str(clock_speed)
    clock = Clock.from_settings(clock_start, clock_speed)
    ports = {HUB["node_id"]: base_port, TOWNSHIP["node_id"]: base_port + 1}
    ports.update({v["node_id"]: base_port + 2 + i for i, v in enumerate(VILLAGES)})
    url = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    folder = {k: data_dir / k for k in ports}
    procs: dict[str, subprocess.Popen] = {}  # the nodes this run started (others were already up)
    names = {HUB["node_id"]: HUB["name"], TOWNSHIP["node_id"]: TOWNSHIP["name"],
             **{v["node_id"]: v["name"] for v in VILLAGES}}

    def start(node_id: str) -> None:
        answering = _answering_node(url[node_id])
        if answering == node_id:
            click.echo(f"{node_id} is already running at {url[node_id]}")
            return
        if answering is not None:
            raise click.ClickException(f"port {ports[node_id]} is taken by node {answering}; use --base-port")
        proc = _start(folder[node_id], ports[node_id], env)
        procs[node_id] = proc
        _wait_healthy(url[node_id], proc)

    def stop(*_args) -> None:
        for proc in reversed(procs.values()):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            for n in manifest["nodes"]:
                start(n["node_id"])
        else:
            manifest = {"nodes": [], "accounts": []}
            hub_id, township_id = HUB["node_id"], TOWNSHIP["node_id"]
            nodes.init_hub(folder[hub_id], hub_id, HUB["name"], url[hub_id], clock)
            _create(folder[hub_id], url[hub_id], hub_id, "hub", _accounts_for_hub(), manifest)
            start(hub_id)
            token = _issue_token(folder[hub_id], township_id, TOWNSHIP["name"])
            nodes.enrol_node(folder[township_id], token, url[hub_id], TOWNSHIP["name"], url[township_id],
                             clock=clock)
            _create(folder[township_id], url[township_id], township_id, "township", _accounts_for_township(), manifest)
            start(township_id)
            for v in VILLAGES:
                token = _issue_token(folder[hub_id], v["node_id"], v["name"])
                nodes.enrol_node(folder[v["node_id"]], token, url[township_id], v["name"], clock=clock)
                _create(folder[v["node_id"]], url[v["node_id"]], v["node_id"], "village", [
                    {"username": "agent", "role": "agent", "office": v["node_id"], "name": "村代办员"},
                ], manifest)
                start(v["node_id"])
            storage_text = json.dumps(manifest, ensure_ascii=False, indent=2)
            nodes.write_private_file(manifest_path, storage_text.encode("utf-8"))
        _print_manifest(manifest, manifest_path, {k: p.pid for k, p in procs.items()})
        restart = _restart_command(data_dir, base_port, sync_interval, clock_start, clock_speed)
        _supervise(procs, names, restart)
        return 0
    except KeyboardInterrupt:
        click.echo("\nstopping the demo network…")
        return 0
    finally:
        stop()


def _supervise(procs: dict[str, subprocess.Popen], names: dict[str, str], restart: str) -> None:
    """Wait while any node of this run is up; report each one that stops, once, and go on."""
    reported: set[str] = set()
    while any(p.poll() is None for p in procs.values()):
        for node_id, proc in procs.items():
            if node_id not in reported and proc.poll() is not None:
                reported.add(node_id)
                click.echo(f"\nnode {node_id} ({names.get(node_id, '')}) stopped with exit code {proc.returncode}; "
                           f"the other nodes keep running.\nTo start it again, run in another terminal:\n"
                           f"  {restart}\n(it starts only the nodes that are not running)", err=True)
        time.sleep(0.5)
    click.echo("every node this demo started has stopped" if procs else "every node was already running", err=True)


def _print_manifest(manifest: dict, path: Path, pids: dict[str, int]) -> None:
    tiers = {"hub": "市(县)中心", "township": "乡镇便民服务站", "village": "村便民服务室"}
    click.echo("\nLiandong demo network is up:")
    for n in manifest["nodes"]:
        pid = f"pid {pids[n['node_id']]}" if n["node_id"] in pids else "already running"
        click.echo(f"  {tiers[n['tier']]:<8} {n['node_id']:<13} {n['url']}/  ({pid})")
    click.echo("\nLogins (node  username / password  role  office):")
    for a in manifest["accounts"]:
        click.echo(f"  {a['node_id']:<13} {a['username']:<14} / {a['password']:<16} {a['role']:<10} {a['office'] or ''}")
    click.echo(f"\nAPI tokens and all of the above: {path}\nPress Ctrl-C to stop.", nl=True)
    sys.stdout.flush()
