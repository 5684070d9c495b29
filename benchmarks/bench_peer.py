"""Liandong beside the PouchDB peer: the same figures, interleaved pairs, one sitting, ratios.

The peer is the PouchDB push-replication benchmark kept beside this repository in
``../shared/peers/pouchdb`` (its README describes it: one-shot ``PouchDB.replicate`` of N case
documents from a field PouchDB to express-pouchdb, LevelDB on disk at both ends, 1 hop over
loopback HTTP, unsigned). It is not copied into this repository: as its own ``run.sh`` does,
its ``bench.js`` and pinned ``package-lock.json`` are copied to a cache folder outside the
repository (``$POUCHDB_PEER_DIR``, default ``~/.cache/liandong-pouchdb-peer``) and
``npm ci`` installs the dependencies there once.

Each pair runs Liandong (A) then the peer (B), for every figure, and pairs repeat A B A B…:

* **drain**: a village's N queued cases without files drain village → township → hub, every
  envelope and request signed (``bench_drain``), against the peer replicating N docs;
* **scan drain**: the same with one incompressible scan per case (default 2,000 cases of 20 KB),
  against N docs with one attachment of the same size;
* **wire**: bytes per case per hop, both directions, headers included, divided by the case's own
  content (``bench_wire``: the application's JSON), for a batch and for one case alone, against
  the peer's bytes per doc (``bytes_on_wire``) divided by the doc's own JSON.

Every figure is printed with the 1-minute load average (``os.getloadavg``) read just before it
was measured: the machine is shared, so rates move with the other load; the ratios of one pair
are the figures to compare. The summary gives medians over the pairs.

    .venv/bin/python benchmarks/bench_peer.py                       # 3 pairs, 10,000 and 2,000 cases
    .venv/bin/python benchmarks/bench_peer.py --pairs 5 --only drain,wire
    .venv/bin/python benchmarks/bench_peer.py --quick               # 1 pair, 1,000 and 200 cases
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_drain, bench_wire, common  # noqa: E402

#: Where the peer benchmark lives: the sibling folder ``shared`` of the repository.
DEFAULT_PEER_DIR = common.REPO.parent / "shared" / "peers" / "pouchdb"
FIGURES = ("drain", "scan", "wire")


def load() -> float:
    """The 1-minute load average now."""
    return round(os.getloadavg()[0], 2)


def peer_workdir(src: Path) -> Path:
    """The peer's benchmark copied to a cache folder, its pinned dependencies installed there once."""
    if not (src / "bench.js").is_file():
        raise SystemExit(f"no PouchDB peer benchmark in {src} (give --peer-dir)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    work = Path(os.environ.get("POUCHDB_PEER_DIR") or cache / "liandong-pouchdb-peer")
    work.mkdir(parents=True, exist_ok=True)
    for name in ("bench.js", "package.json", "package-lock.json"):
        shutil.copyfile(src / name, work / name)
    if not (work / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=work, check=True, stdout=sys.stderr)
    return work


def run_peer(work: Path, docs: int, attachment_bytes: int = 0, timeout_s: int = 240) -> dict:
    """One run of the peer's ``bench.js``: its JSON line, plus the load average before it."""
    before = load()
    done = subprocess.run(["node", "bench.js", "--docs", str(docs), "--attachment-bytes", str(attachment_bytes),
                           "--timeout-s", str(timeout_s)], cwd=work, capture_output=True, text=True,
                          timeout=timeout_s + 30)
    if done.returncode != 0:
        raise RuntimeError(f"peer benchmark failed ({done.returncode}): {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load": before}


def run_quietly(main, **options) -> dict:
    """A benchmark's ``main`` with its own progress lines swallowed; its figures, plus the load before."""
    before = load()
    with contextlib.redirect_stdout(io.StringIO()):
        figures = main(argparse.Namespace(**options))
    return {**figures, "load": before}


def drain_pair(args, work: Path, cases: int, scan_bytes: int) -> dict:
    """Liandong's drain, then the peer's replication of as many docs; rates and their ratio."""
    # The tiers drain back to back and overlap, as their sync jobs do (bench_drain --overlap);
    # the township's rounds run in its own server, as deployed (--township-serves), unless
    # --rounds-here asks for the earlier set-up (its rounds in the benchmark's process).
    ours = run_quietly(bench_drain.main, cases=cases, material=scan_bytes, max_rounds=args.max_rounds, overlap=True,
                       max_seconds=1800.0, level=None, township_serves=not args.rounds_here)
    if not ours["ok"]:
        raise RuntimeError(f"Liandong drain lost or duplicated cases: {ours}")
    peer = run_peer(work, cases, scan_bytes)
    return {"ours": ours["cases_per_s"], "ours_load": ours["load"], "peer": peer["docs_per_s"],
            "peer_load": peer["load"], "ratio": round(ours["cases_per_s"] / peer["docs_per_s"], 3),
            "ours_rounds": ours["rounds"], "ours_village_s": ours["village_round_s"],
            "ours_township_s": ours["township_round_s"], "peer_requests": peer["http_requests"]}


def drain_line(p: dict) -> str:
    """One pair of drain figures as a line (with where Liandong's time went: its rounds per tier)."""
    return (f"Liandong {p['ours']:.0f} cases/s [load {p['ours_load']:.2f}] ({p['ours_rounds']} rounds;"
            f" village {p['ours_village_s']:.1f} s, township {p['ours_township_s']:.1f} s in rounds);"
            f" PouchDB {p['peer']:.0f} docs/s [load {p['peer_load']:.2f}] ({p['peer_requests']} requests);"
            f" ratio {p['ratio']:.3f}")


def wire_pair(args, work: Path) -> dict:
    """Liandong's bytes per case per hop (batch and alone), then the peer's; each ÷ the case's content."""
    ours = run_quietly(bench_wire.main, batch=args.batch, no_write_through=False)
    by_cases = {r["cases"]: r for r in ours["results"] if r["material_bytes"] == 0}
    out = {"ours_load": ours["load"]}
    for label, cases in (("batch", args.batch), ("single", 1)):
        r = by_cases[cases]
        hops = [r[hop]["all_traffic"] for hop in ("village_township", "township_hub")]
        peer = run_peer(work, cases)
        peer_per_doc = peer["bytes_on_wire"] / cases
        out[label] = {
            "case_bytes": r["case_bytes"], "hop_bytes": hops,
            "per_hop": round(sum(hops) / 2 / r["case_bytes"], 2),
            "both_hops": round(sum(hops) / r["case_bytes"], 2),
            "peer_doc_bytes": peer["doc_json_bytes_avg"], "peer_bytes": round(peer_per_doc),
            "peer": round(peer_per_doc / peer["doc_json_bytes_avg"], 2), "peer_load": peer["load"],
        }
    return out


def median(values) -> float:
    return round(statistics.median(values), 3)


def summary(pairs: list[dict], args) -> dict:
    """Medians over the pairs, printed as the table of docs/performance.md."""
    out = {}
    print(f"\nmedians over {len(pairs)} pair(s); load average (1 min) range in brackets")
    for key, label in (("drain", f"drain {args.cases} cases, no files"),
                       ("scan", f"drain {args.scan_cases} cases, one {args.scan_bytes} B scan each")):
        got = [p[key] for p in pairs if key in p]
        if not got:
            continue
        loads = [x for p in got for x in (p["ours_load"], p["peer_load"])]
        out[key] = {"ours": median(p["ours"] for p in got), "peer": median(p["peer"] for p in got),
                    "ratio": median(p["ratio"] for p in got), "ratios": [p["ratio"] for p in got],
                    "load": [min(loads), max(loads)]}
        s = out[key]
        print(f"  {label}: Liandong {s['ours']:.0f} cases/s, PouchDB {s['peer']:.0f} docs/s,"
              f" ratio {s['ratio']:.3f} (pairs {', '.join(f'{r:.3f}' for r in s['ratios'])})"
              f" [load {s['load'][0]:.2f}-{s['load'][1]:.2f}]")
    wires = [p["wire"] for p in pairs if "wire" in p]
    for label, key in ((f"batch of {args.batch}", "batch"), ("single case", "single")):
        if not wires:
            break
        got = [w[key] for w in wires]
        loads = [x for w in wires for x in (w["ours_load"], w[key]["peer_load"])]
        out[f"wire_{key}"] = s = {
            "per_hop": median(g["per_hop"] for g in got), "both_hops": median(g["both_hops"] for g in got),
            "peer": median(g["peer"] for g in got), "load": [min(loads), max(loads)],
            "hop_bytes": got[-1]["hop_bytes"], "case_bytes": got[-1]["case_bytes"],
            "peer_bytes": got[-1]["peer_bytes"], "peer_doc_bytes": got[-1]["peer_doc_bytes"]}
        s["ratio_per_hop"] = round(s["per_hop"] / s["peer"], 2)
        print(f"  wire, {label}: Liandong {s['per_hop']}x per hop ({' + '.join(map(str, s['hop_bytes']))} B"
              f" for {s['case_bytes']} B), {s['both_hops']}x both hops; PouchDB {s['peer']}x"
              f" ({s['peer_bytes']} B for {s['peer_doc_bytes']} B, 1 hop); per hop ÷ PouchDB {s['ratio_per_hop']}"
              f" [load {s['load'][0]:.2f}-{s['load'][1]:.2f}]")
    return out


def main(args) -> dict:
    work = peer_workdir(Path(args.peer_dir))
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    unknown = only - set(FIGURES)
    if unknown:
        raise SystemExit(f"--only: unknown figure(s) {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    print(f"PouchDB peer from {work}; {args.pairs} pair(s), Liandong first in each; load now {load()}")
    pairs = []
    for i in range(1, args.pairs + 1):
        pair: dict = {}
        print(f"pair {i}/{args.pairs}")
        if "drain" in only:
            p = pair["drain"] = drain_pair(args, work, args.cases, 0)
            print(f"  drain {args.cases}, no files: {drain_line(p)}", flush=True)
        if "scan" in only:
            p = pair["scan"] = drain_pair(args, work, args.scan_cases, args.scan_bytes)
            print(f"  drain {args.scan_cases}, {args.scan_bytes} B scan each: {drain_line(p)}", flush=True)
        if "wire" in only:
            w = pair["wire"] = wire_pair(args, work)
            for key in ("batch", "single"):
                x = w[key]
                print(f"  wire {key}: Liandong {x['per_hop']}x per hop, {x['both_hops']}x both hops"
                      f" ({' + '.join(map(str, x['hop_bytes']))} B for {x['case_bytes']} B) [load {w['ours_load']:.2f}];"
                      f" PouchDB {x['peer']}x ({x['peer_bytes']} B for {x['peer_doc_bytes']} B)"
                      f" [load {x['peer_load']:.2f}]", flush=True)
        pairs.append(pair)
    figures = {"benchmark": "peer", "pairs": pairs, "summary": summary(pairs, args),
               "options": {k: getattr(args, k) for k in ("cases", "scan_cases", "scan_bytes", "batch", "pairs")}}
    common.emit(figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs (Liandong, then PouchDB)")
    parser.add_argument("--cases", type=int, default=10000, help="cases in the drain without files")
    parser.add_argument("--scan-cases", type=int, default=2000, help="cases in the drain with a scan each")
    parser.add_argument("--scan-bytes", type=int, default=20000, help="size of each case's scan")
    parser.add_argument("--batch", type=int, default=50, help="cases in the wire batch")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(FIGURES)}")
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--rounds-here", action="store_true",
                        help="the township's rounds in this process, as before 2026-12-02 (default: in its server)")
    parser.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR), help="the PouchDB peer benchmark's folder")
    parser.add_argument("--quick", action="store_true", help="1 pair, 1,000 cases, 200 with scans, batch of 10")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.cases, args.scan_cases, args.batch = 1, 1000, 200, 10
    main(args)
