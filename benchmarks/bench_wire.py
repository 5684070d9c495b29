"""Bytes on the wire per case, village → township → hub, against the case's own size.

A real hub and township are served by waitress (subprocesses) on 127.0.0.1 and enrolled through
the real token + HTTP flow; the village app runs in this process. A case is taken with
``shared.services.intake.submit`` (what ``POST /api/v1/cases`` calls), then sync rounds
(``sync.node_sync.run_round``) run village, township, village until the village holds the hub's
acknowledgement. Every request and answer is counted at the HTTP layer (request line, headers
and body as written; status line, headers and body as received) by the client's own HTTP
transport (``common.CountingSession``, sync/transport.py) under the village's own ``ParentClient``,
and between township and hub by a relay in front of the hub (``common.CountingProxy``): the
township forwards a village's small push itself, at once, and answers with the hub's ack
(write-through, docs/sync-protocol.md §5.3.3), so its server runs with its jobs on (the sync
interval an hour: only what arrives starts a round). The rounds stop as soon as the village holds
the hub's acknowledgement of everything.
Pulls are part of the count: a round that pushes asks its pull in the push (docs/sync-protocol.md
§5.3.2; "pull answers" below are then only the separate pulls), one that does not pulls separately.

    .venv/bin/python benchmarks/bench_wire.py            # 1 case alone, 200 KB material, batch of 50
    .venv/bin/python benchmarks/bench_wire.py --quick    # batch of 10
    .venv/bin/python benchmarks/bench_wire.py --quick --no-write-through   # the township answers at once
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from shared.core import canonical  # noqa: E402
from shared.services.intake import submit  # noqa: E402
from sync import outbox  # noqa: E402
from sync.node_sync import SyncState, run_round  # noqa: E402

ITEM = "130926-RS-0001"  # 城乡居民养老保险参保登记: decided at the hub, so a 接件 message comes back down


def _township_forwards(net: common.Network, vconn, timeout: float = 30.0) -> bool:
    """Wait until the township holds the hub's ack of every envelope of the village (its own
    rounds, started by what arrived, forward them); False after ``timeout``."""
    last = outbox.last_seq(vconn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = net.township_conn.execute("SELECT acked_seq FROM acks WHERE origin = ?", (net.VILLAGE,)).fetchone()
        if row is not None and row["acked_seq"] >= last:
            return True
        time.sleep(0.05)
    return False


def run_scenario(net: common.Network, sessions: dict, counters: dict, label: str, cases: int, material: int,
                 start: int, write_through: bool = True) -> dict:
    village, vconn = net.village, net.village_conn
    items = {i["code"]: i for i in common.village_items()}
    for s in counters.values():
        s.reset()
    own = 0
    for i in range(cases):
        payload = common.api_payload(items[ITEM], start + i)
        # A JPEG by its first bytes (materials are checked by content), random after them.
        files = [("id_card", "身份证.jpg", b"\xff\xd8\xff\xe0" + os.urandom(material - 4))] if material else []
        own += len(canonical.dumps(payload)) + material
        submit(vconn, village, payload, files, agent="agent")
    rounds = 0

    def unacknowledged() -> int:
        return outbox.counts(vconn)["pending"] + outbox.counts(vconn)["custody"]

    while unacknowledged() and rounds < 10:
        rounds += 1
        for name, node, conn in (("village", village, vconn), ("township", net.township, net.township_conn),
                                 ("village", village, vconn)):
            if name == "township" and write_through and _township_forwards(net, vconn):
                continue  # its server forwarded on its own (what arrived started a round): nothing to drive
            summary = run_round(conn, node, SyncState(), client=common.client_with(node, sessions[name]), force=True)
            if "error" in summary:
                raise RuntimeError(f"{name} round failed: {summary['error']}")
            if not unacknowledged():
                break
    if unacknowledged():
        raise RuntimeError("the village's cases were not acknowledged")
    out = {"scenario": label, "cases": cases, "material_bytes": material, "rounds": rounds,
           "case_bytes": round(own / cases)}
    total = 0
    for hop, s in (("village_township", counters["village"]), ("township_hub", counters["township"])):
        push = s.sent.get("/sync/v1/push", 0)
        pull_answers = s.received.get("/sync/v1/pull", 0)
        blob_puts = s.sent.get("/sync/v1/blobs/<sha256>", 0)
        everything = sum(s.sent.values()) + sum(s.received.values())
        total += everything
        out[hop] = {"push_request": round(push / cases), "pull_answers": round(pull_answers / cases),
                    "blob_puts": round(blob_puts / cases), "core": round((push + pull_answers + blob_puts) / cases),
                    "all_traffic": round(everything / cases), "calls": dict(sorted(s.calls.items()))}
    out["all_traffic_per_case"] = round(total / cases)
    out["overhead_factor"] = round(total / own, 2)
    return out


def main(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="ld-bench-wire-") as tmp:
        # Write-through needs the township's own rounds (its jobs); without it they stay off and
        # this benchmark drives every township round, as before write-through.
        jobs = {} if args.no_write_through else {
            "LIANDONG_SCHEDULER_ENABLED": "true", "LIANDONG_SYNC_INTERVAL_SECONDS": "3600",
            "LIANDONG_SUPERVISION_INTERVAL_SECONDS": "3600"}
        net = common.Network(Path(tmp), uplink=True, township_env=jobs)
        try:
            # The village's requests counted by its transport, the township's by the relay in front of the hub.
            sessions = {"village": common.CountingSession(), "township": common.Transport()}
            counters = {"village": sessions["village"], "township": net.uplink}
            net.settle()
            # A running township has talked to the hub before: its first request of a process goes
            # plain until the hub's answer names the codings it reads (§5.1.1). Not counted.
            run_scenario(net, sessions, counters, "warm-up", 1, 0, 900, not args.no_write_through)
            results = [
                run_scenario(net, sessions, counters, "one case, no material", 1, 0, 0, not args.no_write_through),
                run_scenario(net, sessions, counters, "one case, 200 KB material", 1, 200 * 1024, 1, not args.no_write_through),
                run_scenario(net, sessions, counters, f"batch of {args.batch}, no material", args.batch, 0, 2, not args.no_write_through),
            ]
        finally:
            net.close()
    for r in results:
        print(f"{r['scenario']}: case {r['case_bytes']} B (application JSON + material), {r['rounds']} round(s)")
        for hop in ("village_township", "township_hub"):
            h = r[hop]
            print(f"  {hop:<16} push {h['push_request']:>7} B  pull answers {h['pull_answers']:>6} B"
                  f"  blob PUTs {h['blob_puts']:>7} B  = {h['core']:>7} B;  all requests+answers {h['all_traffic']:>7} B")
        print(f"  both hops, all traffic: {r['all_traffic_per_case']} B per case = {r['overhead_factor']}x the case")
    figures = {"benchmark": "wire", "results": [{k: v for k, v in r.items()} for r in results]}
    common.emit(figures)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=50, help="cases in the batch scenario")
    parser.add_argument("--quick", action="store_true", help="batch of 10")
    parser.add_argument("--no-write-through", action="store_true",
                        help="the township answers a push at once (SYNC_WRITE_THROUGH_SECONDS = 0)")
    args = parser.parse_args()
    if args.quick:
        args.batch = 10
    main(args)
