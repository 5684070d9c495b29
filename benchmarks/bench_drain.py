"""How long a village's backlog of N cases takes to drain through its township to the hub.

A real hub and township are served by waitress (subprocesses) on 127.0.0.1, enrolled through the
real token + HTTP flow; the village app runs in this process. N cases are queued with
``shared.services.intake.submit`` while the link is "down" (untimed; 500 submits share one transaction
to make set-up fast), then sync rounds (``sync.node_sync.run_round``) run back to back, a
village round then a township round, with the default ``SYNC_BATCH`` (200), until every
envelope of the village is acknowledged by the hub. At the end the hub must hold exactly N
cases of that village, with N distinct case ids, and N inbox envelopes. With ``--scan-bytes K``
each case carries one K-byte incompressible scan, which crosses both hops as a material file
(the hub acknowledges a case only once its files are there) and must be at the hub at the end.

    .venv/bin/python benchmarks/bench_drain.py               # 10,000 cases
    .venv/bin/python benchmarks/bench_drain.py --cases 2000 --scan-bytes 20000
    .venv/bin/python benchmarks/bench_drain.py --quick       # 400 cases
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from shared.core.storage import write_transaction  # noqa: E402
from shared.services.intake import submit  # noqa: E402
from sync import outbox  # noqa: E402
from sync.node_sync import SyncState, run_round  # noqa: E402


def scan(i: int, size: int) -> bytes:
    """``size`` incompressible bytes, different for every case (like a JPEG scan)."""
    return random.Random(i).randbytes(size)


def queue_cases(net: common.Network, n: int, scan_bytes: int = 0) -> None:
    """Queue ``n`` cases at the village; with ``scan_bytes``, each carries one scan of that size."""
    items = common.village_items()
    conn = net.village_conn
    for start in range(0, n, 500):
        with write_transaction(conn):
            for i in range(start, min(n, start + 500)):
                item = items[i % len(items)]
                code = item["materials"][0]["code"] if item["materials"] else "scan"
                files = [(code, f"扫描{i}.jpg", scan(i, scan_bytes))] if scan_bytes else []
                submit(conn, net.village, common.api_payload(item, i), files, agent="agent")


def main(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="ld-bench-drain-") as tmp:
        net = common.Network(Path(tmp))
        try:
            net.settle()
            session = common.CountingSession()
            t0 = time.perf_counter()
            queue_cases(net, args.cases, args.scan_bytes)
            print(f"queued {args.cases} cases at village {net.VILLAGE} in {time.perf_counter() - t0:.1f} s (untimed)"
                  + (f", one {args.scan_bytes} B scan each" if args.scan_bytes else ""))
            vconn, tconn = net.village_conn, net.township_conn
            vstate, tstate = SyncState(), SyncState()
            vclient = common.client_with(net.village, session)
            tclient = common.client_with(net.township, session)
            rounds, pushed = 0, {"village": 0, "township": 0}
            spent = {"village": 0.0, "township": 0.0}
            start = time.perf_counter()
            while True:
                counts = outbox.counts(vconn)
                if counts["pending"] + counts["custody"] == 0:
                    break
                rounds += 1
                if rounds > args.max_rounds:
                    raise RuntimeError(f"not drained after {args.max_rounds} rounds: {counts}")
                for name, node, conn, state, client in (("village", net.village, vconn, vstate, vclient),
                                                        ("township", net.township, tconn, tstate, tclient)):
                    t = time.perf_counter()
                    summary = run_round(conn, node, state, client=client, force=True)
                    spent[name] += time.perf_counter() - t
                    if "error" in summary:
                        raise RuntimeError(f"{name} round failed: {summary['error']}")
                    pushed[name] += summary["pushed"]
            elapsed = time.perf_counter() - start
            common.wait_applied(net.dirs[common.HUB_ID])  # the hub's apply worker writes the last cases a moment later
            hub = net.hub_conn()
            try:
                at_hub = hub.execute("SELECT COUNT(*), COUNT(DISTINCT case_id) FROM cases WHERE origin = ?",
                                     (net.VILLAGE,)).fetchone()
                inbox = hub.execute("SELECT COUNT(*) FROM inbox WHERE origin = ?", (net.VILLAGE,)).fetchone()[0]
                quarantined = hub.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
                blobs_held = hub.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
            finally:
                hub.close()
            village_cases = vconn.execute("SELECT COUNT(*) FROM cases WHERE sync_state = 'acked'").fetchone()[0]
        finally:
            net.close()
    n = args.cases
    ok = at_hub[0] == n and at_hub[1] == n and inbox == n and quarantined == 0 and (
        not args.scan_bytes or blobs_held >= n)
    print(f"drained {n} cases in {elapsed:.1f} s over {rounds} rounds (village + township each):"
          f" {n / elapsed:.0f} cases/s back to back")
    print(f"time in rounds: village {spent['village']:.1f} s, township {spent['township']:.1f} s;"
          f" envelopes pushed: village {pushed['village']} (re-offers included), township {pushed['township']}")
    print(f"at the default SYNC_INTERVAL_SECONDS=5 the same {rounds} rounds take ~{rounds * 5 / 60:.1f} min")
    print(f"bytes: {sum(session.sent.values())} sent, {sum(session.received.values())} received by the two clients")
    print(f"check: hub holds {at_hub[0]} cases of the village ({at_hub[1]} distinct ids), {inbox} inbox envelopes,"
          f" {quarantined} quarantined, {blobs_held} material files; village shows {village_cases} acked -> {'OK' if ok else 'MISMATCH'}")
    figures = {"benchmark": "drain", "cases": n, "scan_bytes": args.scan_bytes, "hub_blobs": blobs_held,
               "bytes_sent": sum(session.sent.values()), "bytes_received": sum(session.received.values()),
               "seconds": round(elapsed, 2), "rounds": rounds,
               "cases_per_s": round(n / elapsed, 1), "village_round_s": round(spent["village"], 2),
               "township_round_s": round(spent["township"], 2), "village_pushed": pushed["village"],
               "township_pushed": pushed["township"], "hub_cases": at_hub[0], "hub_distinct": at_hub[1],
               "hub_inbox": inbox, "quarantine": quarantined, "ok": ok}
    common.emit(figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--scan-bytes", type=int, default=0, help="one scan of this size per case (0: none)")
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="400 cases")
    args = parser.parse_args()
    if args.quick:
        args.cases = 400
    sys.exit(0 if main(args)["ok"] else 1)
