"""How long a village's backlog of N cases takes to drain through its township to the hub.

A real hub and township are served by waitress (subprocesses) on 127.0.0.1, enrolled through the
real token + HTTP flow; the village app runs in this process. N cases are queued with
``shared.services.intake.submit`` while the link is "down" (untimed; 500 submits share one transaction
to make set-up fast), then sync rounds (``sync.node_sync.run_round``) run back to back, a
village round then a township round, with the default ``SYNC_BATCH`` (200), until every
envelope of the village is acknowledged by the hub. At the end the hub must hold exactly N
cases of that village, with N distinct case ids, and N inbox envelopes. The township's register
follows a backlog from its follow queue once the village's pushes pause (docs/sync-protocol.md
§5.3.1): the benchmark then waits for that too and prints when it was done, with the CPU per
case until then (the station's bookkeeping included), beside the drain's own figures.

    .venv/bin/python benchmarks/bench_drain.py               # 10,000 cases
    .venv/bin/python benchmarks/bench_drain.py --cases 2000
    .venv/bin/python benchmarks/bench_drain.py --quick       # 400 cases
    .venv/bin/python benchmarks/bench_drain.py --overlap --township-serves   # as deployed
    .venv/bin/python benchmarks/bench_drain.py --overlap --level township    # delegated items only
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from provisioning import nodes  # noqa: E402
from shared.core.storage import write_transaction  # noqa: E402
from shared.rules import authority  # noqa: E402
from shared.services.intake import submit  # noqa: E402
from sync import outbox  # noqa: E402
from sync.node_sync import SyncState, run_round  # noqa: E402

try:  # the overlapped mode needs drain (issue 12); the lock-step mode runs on older commits too
    from sync.node_sync import drain  # noqa: E402
except ImportError:
    drain = None

FILE_ITEM = "130926-RS-0001"  # 城乡居民养老保险参保登记: its 身份证 material field is "id_card"


def queue_cases(net: common.Network, n: int, material: int = 0, level: str | None = None) -> None:
    """Queue ``n`` cases at the village, taking its items in turn (``level``: only the items
    decided at that level, "city" or "township")."""
    items = [i for i in common.village_items()
             if level is None or authority.route_of_submission(i, i["code"], net.VILLAGE, common.HUB_ID)["level"] == level]
    by_code = {i["code"]: i for i in items}
    conn = net.village_conn
    for start in range(0, n, 500):
        scans = {}
        for i in range(start, min(n, start + 500)) if material else ():
            # One scan per case: a JPEG by its first bytes, random after them. Stored before the
            # transaction, as intake stores them (shared.services.intake.prepare); stored inside
            # it, a store keeping small scans as rows would keep them as files.
            scans[i] = b"\xff\xd8\xff\xe0" + os.urandom(material - 4)
        net.village.blobs.write_batch([(hashlib.sha256(d).hexdigest(), len(d), 0, d) for d in scans.values()],
                                      material)
        with write_transaction(conn):
            for i in range(start, min(n, start + 500)):
                if material:
                    files = [("id_card", "身份证.jpg", scans[i])]
                    submit(conn, net.village, common.api_payload(by_code[FILE_ITEM], i), files, agent="agent")
                else:
                    submit(conn, net.village, common.api_payload(items[i % len(items)], i), [], agent="agent")


def cpu_now(net: common.Network) -> dict:
    """CPU seconds used so far by the hub and township servers and by this process (the village's
    and the township's rounds): less sensitive to the machine's other load than the wall time."""
    times = os.times()
    return {"hub": common.cpu_seconds(net.procs[0].pid), "township": common.cpu_seconds(net.procs[1].pid),
            "rounds": times.user + times.system}


def drain_overlapped(net: common.Network, vclient, tclient, max_seconds: float, township_serves: bool = False) -> dict:
    """The village and the township each drain back to back in their own thread (as their sync
    jobs do: ``sync.node_sync.drain``, the township started at once by every village push);
    a tier with nothing to send waits on the other (10 ms poll here, the kick in a node).

    ``township_serves``: the township's rounds run in its own server, as in a deployment (its
    sync job, kicked by each village push, ``shared/web/jobs.py``); then its write lock is one
    process's, not a file lock two processes poll for, and its CPU is counted with the server's."""
    done, errors, spent, pushed = threading.Event(), [], {"village": 0.0, "township": 0.0}, {"village": 0, "township": 0}
    rounds = {"village": 0, "township": 0}

    def loop(name, node, connect, client):
        conn = connect()
        state = SyncState()
        try:
            while not done.is_set():
                t = time.perf_counter()
                summary = drain(conn, node, state, client=client, force=True)
                spent[name] += time.perf_counter() - t
                rounds[name] += 1
                if "error" in summary:
                    errors.append(f"{name}: {summary['error']}")
                    done.set()
                pushed[name] += summary.get("pushed", 0)
                if name == "village":
                    counts = outbox.counts(conn)
                    if counts["pending"] + counts["custody"] == 0:
                        done.set()
                if not summary.get("pushed") and not summary.get("blobs"):
                    time.sleep(0.01)
        finally:
            conn.close()

    threads = [threading.Thread(target=loop, args=("village", net.village, lambda: net.village_app.extensions[
                   "liandong_db"].connect(net.village_app), vclient))]
    if not township_serves:
        threads.append(threading.Thread(target=loop, args=("township", net.township, lambda: nodes.open_db(
                   net.dirs[net.TOWNSHIP]), tclient)))
    for t in threads:
        t.start()
    done.wait(max_seconds)
    done.set()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return {"rounds": max(rounds.values()), "spent": spent, "pushed": pushed}


def settle(tconn, max_seconds: float, own: bool) -> float:
    """Wait until the township has followed everything it took (``follow_queue`` empty) and, if
    ``own``, the hub has acknowledged every envelope of its own; returns ``perf_counter()`` then."""
    deadline = time.perf_counter() + max_seconds
    while time.perf_counter() < deadline:
        queued = tconn.execute("SELECT COUNT(*) FROM follow_queue").fetchone()[0] if has_follow_queue(tconn) else 0
        unacked = tconn.execute("SELECT COUNT(*) FROM outbox WHERE state != 'acked'").fetchone()[0] if own else 0
        if queued == 0 and unacked == 0:
            break
        time.sleep(0.02)
    return time.perf_counter()


def has_follow_queue(conn) -> bool:
    """Older trees (before the township's follow queue) followed in the push: nothing to wait for."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'follow_queue'").fetchone() is not None


def main(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="ld-bench-drain-") as tmp:
        net = common.Network(Path(tmp), township_env={"LIANDONG_SCHEDULER_ENABLED": "true"} if args.township_serves else None)
        try:
            net.settle()
            session = common.CountingSession()
            t0 = time.perf_counter()
            queue_cases(net, args.cases, args.material, args.level)
            print(f"queued {args.cases} cases at village {net.VILLAGE} in {time.perf_counter() - t0:.1f} s (untimed)")
            vconn, tconn = net.village_conn, net.township_conn
            vstate, tstate = SyncState(), SyncState()
            vclient = common.client_with(net.village, session)
            tclient = common.client_with(net.township, session)
            rounds, pushed = 0, {"village": 0, "township": 0}
            spent = {"village": 0.0, "township": 0.0}
            cpu0 = cpu_now(net)
            start = time.perf_counter()
            if args.overlap:
                result = drain_overlapped(net, vclient, tclient, args.max_seconds, args.township_serves)
                rounds, spent, pushed = result["rounds"], result["spent"], result["pushed"]
            while not args.overlap:
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
            cpu = {k: v - cpu0[k] for k, v in cpu_now(net).items()}
            # The station's register follows a backlog once the village's pushes pause (its follow
            # queue): how long after the start until it has, and its own envelopes (what it
            # decided) are at the hub too, when its server sends them.
            settled = settle(tconn, args.max_seconds, own=args.township_serves) - start
            cpu_settled = {k: v - cpu0[k] for k, v in cpu_now(net).items()}
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
            # The township's own envelopes (its 受理 of the cases it decides) go up with the village's.
            township_own = tconn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            village_cases = vconn.execute("SELECT COUNT(*) FROM cases WHERE sync_state = 'acked'").fetchone()[0]
        finally:
            net.close()
    n = args.cases
    # With scans, every file must have reached the hub too (not only the cases).
    ok = at_hub[0] == n and at_hub[1] == n and inbox == n and quarantined == 0 and (not args.material or blobs_held >= n)
    print(f"drained {n} cases in {elapsed:.1f} s over {rounds} rounds (village + township each):"
          f" {n / elapsed:.0f} cases/s back to back")
    print(f"time in rounds: village {spent['village']:.1f} s, township {spent['township']:.1f} s;"
          f" envelopes pushed: village {pushed['village']} (re-offers included), township {pushed['township']}"
          f" (its own: {township_own})")
    print(f"CPU seconds while draining: hub {cpu['hub']:.1f}, township server {cpu['township']:.1f},"
          f" this process (village and township rounds) {cpu['rounds']:.1f};"
          f" {sum(cpu.values()) / n * 1000:.2f} ms per case in all")
    print(f"the township's register followed every case {settled:.1f} s after the start"
          f"{' and its own envelopes were at the hub' if args.township_serves else ''};"
          f" CPU until then {sum(cpu_settled.values()) / n * 1000:.2f} ms per case")
    print(f"at the default SYNC_INTERVAL_SECONDS=5 the same {rounds} rounds take ~{rounds * 5 / 60:.1f} min")
    print(f"bytes: {sum(session.sent.values())} sent, {sum(session.received.values())} received by the two clients")
    print(f"check: hub holds {at_hub[0]} cases of the village ({at_hub[1]} distinct ids), {inbox} inbox envelopes,"
          f" {quarantined} quarantined, {blobs_held} material files; village shows {village_cases} acked -> {'OK' if ok else 'MISMATCH'}")
    figures = {"benchmark": "drain", "cases": n, "material": args.material, "overlap": args.overlap,
               "level": args.level, "township_serves": args.township_serves,
               "hub_blobs": blobs_held, "bytes_sent": sum(session.sent.values()),
               "bytes_received": sum(session.received.values()), "seconds": round(elapsed, 2), "rounds": rounds,
               "cases_per_s": round(n / elapsed, 1), "village_round_s": round(spent["village"], 2),
               "township_round_s": round(spent["township"], 2), "village_pushed": pushed["village"],
               "township_pushed": pushed["township"], "township_own": township_own, "hub_cases": at_hub[0], "hub_distinct": at_hub[1],
               "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
               "cpu_ms_per_case": round(sum(cpu.values()) / n * 1000, 3), "settled_s": round(settled, 2),
               "cpu_settled_ms_per_case": round(sum(cpu_settled.values()) / n * 1000, 3), "hub_inbox": inbox, "quarantine": quarantined, "ok": ok}
    common.emit(figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--material", type=int, default=0, help="bytes of one scan per case (0: none)")
    parser.add_argument("--overlap", action="store_true",
                        help="village and township drain at the same time, each back to back (sync.node_sync.drain)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="give up an overlapped drain after this")
    parser.add_argument("--level", choices=("city", "township"),
                        help="only items decided at this level (default: every item a village takes, in turn)")
    parser.add_argument("--township-serves", action="store_true",
                        help="with --overlap: the township's server drains towards the hub itself, kicked by each push")
    parser.add_argument("--quick", action="store_true", help="400 cases")
    args = parser.parse_args()
    if args.quick:
        args.cases = 400
    sys.exit(0 if main(args)["ok"] else 1)
