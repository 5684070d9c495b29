"""Resident memory of a village process with 10,000 cases once its pages have been requested,
against a minimal Flask + waitress process (issue 12 item 5).

A hub, township and village are built and filled as ``bench_pages.py`` does (``--cases`` per
node); the hub and township are then stopped (a village's parent is often unreachable, and its
memory is what matters here). The village is served as ``liandong node serve`` in its own
process (waitress, 4 threads, scheduler on; without the servers' ``fast`` extra, which a village PC
does not install: ``--without``), every main village page is requested
``--requests`` times over HTTP, and the process's ``VmRSS`` and ``VmHWM`` are read from
``/proc/<pid>/status`` (Linux; psutil's ``memory_info().rss`` is the same figure), with the
1-minute load average at that moment. The same is done for a minimal Flask app under waitress
with one page.

    .venv/bin/python benchmarks/bench_memory.py [--cases 10000] [--requests 5] [--quick]
    .venv/bin/python benchmarks/bench_memory.py --compare ../other-checkout   # and another release's serve,
                                                                          # interleaved, same data
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's code builds the data, as bench_wire and bench_drain do
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_pages import fill, sample_case  # noqa: E402
from common import emit, free_port  # noqa: E402
from network import Network  # noqa: E402

MINIMAL = ("import sys, flask, waitress\n"
           "app = flask.Flask('minimal')\n"
           "app.get('/')(lambda: '<p>ok</p>')\n"
           "waitress.serve(app, host='127.0.0.1', port=int(sys.argv[1]), threads=4)\n")


def status(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def measure(cmd: list[str], cwd: Path, env: dict, port: int, paths: list[str], token: str | None, rounds: int) -> dict:
    """Serve, request every path ``rounds`` times, read the memory, stop."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/", proc)
        started = status(proc.pid)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for _ in range(rounds):
            for path in paths:
                r = requests.get(url + path, headers=headers, timeout=60)
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code}")
        time.sleep(0.5)
        return {"start_mib": started["VmRSS"], **{k.lower() + "_mib": v for k, v in status(proc.pid).items()},
                "load": round(os.getloadavg()[0], 2)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5, help="rounds over the village pages")
    parser.add_argument("--repeat", type=int, default=3, help="processes measured per variant (median)")
    parser.add_argument("--quick", action="store_true", help="1,000 cases, 2 rounds, 1 process")
    parser.add_argument("--without", default="orjson,zstandard",
                        help="modules the village process may not import: the servers' 'fast' extra, which a"
                             " village PC does not install (empty: whatever this environment has)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another checkout whose `node serve` is measured too, interleaved, on the same data")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.requests, args.repeat = 1000, 2, 1
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="liandong-bench-memory-") as tmp:
        net = Network.build(Path(tmp), villages=1)
        try:
            fill(net, args.cases)
            village = net.village()
            token = village.account("agent", "agent")
            case = sample_case(village, "status = 'CONCLUDED'")
            data_dir = village.data_dir
        finally:
            net.close()
        paths = ["/catalog", "/cases", "/cases?q=王", "/results", f"/cases/{case}", "/sync-status"]
        checkouts = {"village": HERE.parent, **({"compared": args.compare.resolve()} if args.compare else {})}
        runs: dict[str, list[dict]] = {name: [] for name in [*checkouts, "minimal"]}
        # `liandong node serve`, with the modules of --without made unimportable (as if not installed).
        hidden = (f"import sys\nfor m in {[m for m in args.without.split(',') if m]!r}: sys.modules[m] = None\n"
                  "sys.argv[0] = 'liandong'\nfrom provisioning.cli import main\nmain()\n")
        for _ in range(args.repeat):  # interleaved: the machine's load moves all alike
            for name, code_dir in checkouts.items():
                env = {**os.environ, "PYTHONPATH": str(code_dir)}
                env.pop("MALLOC_ARENA_MAX", None)
                port = free_port()
                serve = [sys.executable, "-c", hidden, "node", "serve", "--data", str(data_dir), "--port", str(port)]
                runs[name].append(measure(serve, code_dir, env, port, paths, token, args.requests))
                print(f"{name}: {runs[name][-1]}", flush=True)
            port = free_port()
            runs["minimal"].append(measure([sys.executable, "-c", MINIMAL, str(port)], HERE.parent, dict(os.environ),
                                           port, ["/"], None, args.requests))
            print(f"minimal: {runs['minimal'][-1]}", flush=True)
    figures = {"cases": args.cases, "compared": str(args.compare) if args.compare else None, "without": args.without}
    for name, results in runs.items():
        for key in ("start_mib", "vmrss_mib", "vmhwm_mib"):
            figures[f"{name}_{key}"] = statistics.median(r[key] for r in results)
    figures["ratio_rss"] = round(figures["village_vmrss_mib"] / figures["minimal_vmrss_mib"], 2)
    if args.compare:
        figures["compared_ratio_rss"] = round(figures["compared_vmrss_mib"] / figures["minimal_vmrss_mib"], 2)
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    for key, value in figures.items():
        print(f"{key}: {value}")
    emit({"benchmark": "memory", **figures})


if __name__ == "__main__":
    main()
