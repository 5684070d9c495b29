"""USB bundle of a village's scans: file size against the scans, time and peak memory of export
and import (issue 12 item 6).

A real hub and township are served on loopback and the village enrolled through the real flow
(``common.Network``); the village then takes ``--cases`` cases with one ``--scan-kb`` scan each
(JPEG by its first bytes, random after them: incompressible, like a real scan) and never syncs
them. Export (village), import (township, answer written) and answer import (village) each run
as ``liandong node …-bundle`` in their own process; the peak resident memory of each is that
process's ``VmHWM`` from ``/proc/self/status`` (Linux), read when it exits.

    .venv/bin/python benchmarks/bench_bundle.py                  # 115 cases × 1 MiB scan ≈ 115 MiB
    .venv/bin/python benchmarks/bench_bundle.py --quick          # 20 × 256 KiB
    .venv/bin/python benchmarks/bench_bundle.py --code-dir ../other-checkout   # another release's CLI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from shared.services.intake import submit  # noqa: E402

ITEM = "130926-RS-0001"
ROOT = Path(__file__).resolve().parent.parent
# Runs the CLI and reports the process's peak RSS on exit (click's main ends with sys.exit).
PEAK = ("import atexit, sys\n"
        "def peak():\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "    sys.stderr.write('PEAK_KB ' + line.split()[1] + '\\n')\n"
        "atexit.register(peak)\n"
        "from provisioning.cli import main\n"
        "main(sys.argv[1:])\n")


def run_cli(code_dir: Path, *args) -> dict:
    """One CLI command in its own process: seconds, peak RSS (MiB) and its JSON output."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], env=env, cwd=code_dir,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed: {proc.stderr[-2000:]}")
    peak_kb = int(next(line for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")).split()[1])
    out = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    return {"seconds": round(seconds, 2), "peak_mib": round(peak_kb / 1024, 1), "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=115)
    parser.add_argument("--scan-kb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--code-dir", type=Path, default=ROOT, help="checkout whose CLI exports and imports")
    parser.add_argument("--split-mb", type=int, default=None, help="export in volumes of this many MiB")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.scan_kb = 20, 256
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        root = Path(tmp)
        net = common.Network(root / "net")
        try:
            net.settle()
            items = {i["code"]: i for i in common.village_items()}
            scans = 0
            for i in range(args.cases):
                scan = b"\xff\xd8\xff\xe0" + os.urandom(args.scan_kb * 1024 - 4)
                scans += len(scan)
                submit(net.village_conn, net.village, common.api_payload(items[ITEM], i),
                       [("id_card", "身份证.jpg", scan)], agent="agent")
            net.procs[-1].terminate()  # the township's server: from here on only files travel
            net.procs[-1].wait()
            usb = root / "usb"
            usb.mkdir()
            split = ["--split-mb", args.split_mb] if args.split_mb else []
            export = run_cli(args.code_dir, "node", "export-bundle", "--data", net.dirs[net.VILLAGE],
                             "--out", usb / "out.ldbundle", *split)
            first = export["out"].get("files", [str(usb / "out.ldbundle")])[0]
            imported = run_cli(args.code_dir, "node", "import-bundle", "--data", net.dirs[net.TOWNSHIP],
                               "--in", first, "--answer", usb / "answer.ldbundle")
            answered = run_cli(args.code_dir, "node", "import-bundle", "--data", net.dirs[net.VILLAGE],
                               "--in", usb / "answer.ldbundle")
        finally:
            net.close()
    size = export["out"]["bytes"]
    figures = {
        "cases": args.cases, "scan_bytes": scans, "bundle_bytes": size, "size_ratio": round(size / scans, 4),
        "export_s": export["seconds"], "export_peak_mib": export["peak_mib"],
        "import_s": imported["seconds"], "import_peak_mib": imported["peak_mib"],
        "custody": imported["out"]["custody"], "answer_s": answered["seconds"],
        "answer_peak_mib": answered["peak_mib"], "volumes": len(export["out"].get("files", [1])),
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    common.emit(figures)


if __name__ == "__main__":
    main()
