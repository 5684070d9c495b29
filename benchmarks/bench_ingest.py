"""Hub ingest throughput through ``POST /sync/v1/push``, against raw Ed25519 verification.

The hub is served by waitress (``liandong node serve``, 4 threads) in a subprocess pinned to one
core; this process pins itself to that same core to measure the raw verify rate (libsodium's
``VerifyKey.verify`` (PyNaCl) over the same PAE payloads, the library every node signs and verifies with, keys already loaded), then moves to the
other core and pushes pre-signed ``case.submit`` envelopes of many villages in node-signed
batches through ``sync.client.ParentClient``. The villages and townships are registered by
inserting them into the hub's tables and republishing the registry (what enrolment writes,
without its HTTP round trip per node). Cases carry no material files.

Ingest is two stages (docs/sync-protocol.md §5.4.1): the push verifies, chains and
acknowledges; the hub's apply worker then writes the case register. The benchmark times the
acknowledged rate during the burst (the bar's figure), then waits until the worker has applied
everything and reports that end-to-end rate too, with both CPU-second figures.

    .venv/bin/python benchmarks/bench_ingest.py            # 20,000 envelopes
    .venv/bin/python benchmarks/bench_ingest.py --clients 2  # two townships pushing at once
    .venv/bin/python benchmarks/bench_ingest.py --quick    # 2,000, a few seconds
    .venv/bin/python benchmarks/bench_ingest.py --profile  # also cProfile the same push path in-process
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from provisioning.memory import settle_collector  # noqa: E402
from shared.core import canonical  # noqa: E402
from shared.core.clock import Clock, iso  # noqa: E402
from shared.core.crypto import b64d, load_public, pae  # noqa: E402
from sync import envelope, wire  # noqa: E402
from sync.client import ParentClient, stored_push_body  # noqa: E402
from sync.nodeauth import NonceSource, sign_request  # noqa: E402


class PreparedClient(ParentClient):
    """``ParentClient`` whose push body was serialised beforehand (the client's CPU stays out of the timing)."""

    def push_bytes(self, body: bytes) -> dict:
        return self._call("POST", "/sync/v1/push", body)


def signed_bytes(document: dict) -> bytes:
    """The payload bytes a signature covers: the text of a v2 envelope, the decoded base64 of a v1."""
    if document["payloadType"] in envelope.TEXT_PAYLOAD_TYPES:
        return document["payload"].encode("utf-8")
    return b64d(document["payload"])


def raw_verify_rate(docs: list[dict], keys_by_kid: dict, seconds: float = 1.5) -> tuple[float, float]:
    """(verifies/s with loaded keys, verifies/s loading the base64 key each time as shared.core.crypto does)."""
    items = []
    for d in docs:
        sig = d["signatures"][0]
        items.append((keys_by_kid[sig["keyid"]], b64d(sig["sig"]), pae(d["payloadType"], signed_bytes(d))))
    loaded = {pk: load_public(pk) for pk in keys_by_kid.values()}
    rates = []
    for reload in (False, True):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for pk, sig, message in items:
                (load_public(pk) if reload else loaded[pk]).verify(message, sig)
            n += len(items)
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def build(args, keys: dict) -> tuple[list[tuple[str, bytes, int]], list[dict]]:
    """Pre-signed envelopes grouped into push batches: (caller township, body bytes, count)."""
    items = common.village_items()
    villages = sorted(n for n in keys if len(n) == 12)
    per_village = max(1, args.envelopes // len(villages))
    now = Clock().now()
    wall_ms = int(now.timestamp() * 1000)
    chains, i = {}, 0
    for n, v in enumerate(villages):
        bodies = []
        for k in range(per_village):
            # Taken over the last seconds, the villages' cases interleaved in time as when they all
            # work at once (case ids sort by the time they were taken: shared/core/ids.py).
            taken = now - timedelta(milliseconds=(per_village - k) * len(villages) - n)
            bodies.append(common.case_submit_body(items[i % len(items)], v, 1, i, taken))
            i += 1
        chains[v] = common.signed_chain(keys[v], v, bodies, wall_ms, version=args.envelope_version)
    # A township forwards its custody oldest first: a batch holds a slice of several villages' chains.
    # Each push comes from one township, so a group never mixes villages of two townships (the hub
    # quarantines an envelope relayed by another township as wrong_relay).
    per_origin = max(1, args.batch // args.origins_per_batch)
    batches, groups = [], []
    for township in sorted({v[:9] for v in villages}):
        below = [v for v in villages if v[:9] == township]
        groups += [below[g: g + args.origins_per_batch] for g in range(0, len(below), args.origins_per_batch)]
    held_at = iso(now)  # when the township took them into custody, as its push says
    for group in groups:
        for k in range(0, per_village, per_origin):
            docs = [d for v in group for d in chains[v][k: k + per_origin]]
            batches.append((group[0][:9], push_body(docs, held_at, args.legacy_body), len(docs)))
    return batches, [d for c in chains.values() for d in c]


def accepted_in(answer: dict) -> int:
    """Envelopes a push answer took: its routine seq ranges (a compact answer's ``ok``: no
    duplicate is pushed here) and the results listed as accepted."""
    ranges = sum(last - first + 1 for runs in answer.get("ok", {}).values() for first, last in runs)
    return ranges + sum(1 for r in answer["results"] if r["status"] == "accepted")


def push_body(docs: list[dict], held_at: str, legacy: bool) -> bytes:
    """The body a township of this release forwards ``docs`` in (what ``node_sync`` sends:
    compact answer, links elided, key ids cut short, when it took them); ``legacy``: the plain
    ``{"envelopes": [...]}`` of an older township (the form of the rounds before 2026-12-02 15:16 UTC)."""
    if legacy:
        return canonical.dumps({"envelopes": docs})
    v2 = all(d["payloadType"] in envelope.TEXT_PAYLOAD_TYPES for d in docs)
    held = wire.held_ranges([{"origin": o, "seq": s, "received_at": held_at}
                             for o, s in ((envelope.peek(d)["origin"], envelope.peek(d)["seq"]) for d in docs)])
    return stored_push_body([envelope.to_bytes(d) for d in docs], compact=True,
                            ids=[envelope.document_id(d) for d in docs] if v2 else None, held=held, short_keyids=True)


def count_rows(hub_dir: Path) -> dict:
    """Rows of the hub's inbox, quarantine, apply queue and case register."""
    from provisioning import nodes

    conn = nodes.open_db(hub_dir, "hub")
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("inbox", "quarantine", "apply_queue", "cases")}
    finally:
        conn.close()


def profile_in_process(root: Path, keys: dict, batches, args) -> str:
    """The same pushes through the hub app's Flask test client, under cProfile (no waitress, no socket)."""
    from city_hub import create_app

    hub_dir = root / "hub-profile"
    common.init_hub(hub_dir, "http://127.0.0.1:9")
    common.enrol_directly(hub_dir, args.townships, args.villages // args.townships, keys)
    app = create_app({"DATA_DIR": str(hub_dir), "SCHEDULER_ENABLED": False})
    client = app.test_client()
    nonces = {t: NonceSource(lambda: int(time.time() * 1000)) for t in {b[0] for b in batches}}
    # The apply worker's chunks run in its own thread: profiled apart, with their own profiler.
    worker = app.extensions["liandong_sync"].worker
    apply_profiler, apply_chunk = cProfile.Profile(), worker.apply_once
    worker.apply_once = lambda: apply_profiler.runcall(apply_chunk)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for caller, body, _ in batches:
        headers = sign_request(keys[caller], caller, common.HUB_ID, "POST", "/sync/v1/push", body,
                               nonces[caller].next())
        response = client.post("/sync/v1/push", data=body, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    profiler.disable()
    elapsed = time.perf_counter() - start
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    (root / "ingest.prof").parent.mkdir(parents=True, exist_ok=True)
    stats.dump_stats(str(root / "ingest.prof"))
    common.wait_applied(hub_dir)
    time.sleep(0.5)  # the worker's last (empty) chunk
    out.write("\n==== apply worker (case register), same envelopes ====\n")
    stats = pstats.Stats(apply_profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    total = sum(b[2] for b in batches)
    return f"in-process (test client, profiler on): {total / elapsed:.0f} envelopes/s\n" + out.getvalue()


def cpu_in_process(root: Path, keys: dict, batches, docs: list[dict], args) -> dict:
    """CPU time per envelope, in this one thread: the pushes through the hub app's Flask test client
    (no waitress, no socket), then the apply worker's chunks, then raw Ed25519 verification of the
    same envelopes; interleaved ``--cpu-rounds`` times on fresh hubs, medians reported.

    ``time.thread_time`` counts only this thread's CPU, so the figures (and their ratios) move far
    less with the machine's other load than the wall-clock rates of :func:`main` do.
    """
    from city_hub import create_app

    keys_by_kid = {k.kid: k.public_b64 for k in keys.values()}
    loaded = {kid: load_public(pk) for kid, pk in keys_by_kid.items()}
    items = [(loaded[d["signatures"][0]["keyid"]], b64d(d["signatures"][0]["sig"]), pae(d["payloadType"],
              signed_bytes(d))) for d in docs]
    total = sum(b[2] for b in batches)
    runs = []
    for r in range(args.cpu_rounds):
        hub_dir = root / f"hub-cpu-{r}"
        common.init_hub(hub_dir, "http://127.0.0.1:9")
        common.enrol_directly(hub_dir, args.townships, args.villages // args.townships, keys)
        app = create_app({"DATA_DIR": str(hub_dir), "SCHEDULER_ENABLED": False})
        settle_collector(app.extensions["liandong_node"].kind.gc_young_threshold)  # as `liandong node serve` does
        hub_sync = app.extensions["liandong_sync"]
        hub_sync.worker.poke = lambda: None  # no worker thread: its chunks run below, in this thread
        client = app.test_client()
        nonces = {t: NonceSource(lambda: int(time.time() * 1000)) for t in {b[0] for b in batches}}
        push_cpu = 0.0
        for caller, body, _ in batches:
            headers = sign_request(keys[caller], caller, common.HUB_ID, "POST", "/sync/v1/push", body,
                                   nonces[caller].next())
            t0 = time.thread_time()
            response = client.post("/sync/v1/push", data=body, headers={**headers, "Content-Type": "application/json"})
            push_cpu += time.thread_time() - t0
            assert response.status_code == 200, response.get_data(as_text=True)[:300]
        conn = app.extensions["liandong_db"].connect(app)
        t0 = time.thread_time()
        applied = hub_sync.apply_all(conn)
        apply_cpu = time.thread_time() - t0
        cases = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        conn.close()
        if applied != total or cases != total:
            raise RuntimeError(f"in-process hub applied {applied}, holds {cases} cases of {total}")
        t0 = time.thread_time()
        for pk, sig, message in items:
            pk.verify(message, sig)
        verify_cpu = time.thread_time() - t0
        runs.append({"push_us": push_cpu / total * 1e6, "apply_us": apply_cpu / total * 1e6,
                     "verify_us": verify_cpu / len(items) * 1e6, "load": round(os.getloadavg()[0], 2)})
    med = {k: statistics.median(run[k] for run in runs) for k in ("push_us", "apply_us", "verify_us")}
    ratios = [run["verify_us"] / run["push_us"] for run in runs]
    e2e = [run["verify_us"] / (run["push_us"] + run["apply_us"]) for run in runs]
    print(f"in-process CPU per envelope (medians of {len(runs)} rounds, load {[r['load'] for r in runs]}):"
          f" push {med['push_us']:.0f} us, apply {med['apply_us']:.0f} us, raw verify {med['verify_us']:.0f} us;"
          f" acknowledged / raw verify {statistics.median(ratios):.1%}, end to end {statistics.median(e2e):.1%}")
    return {"cpu_push_us": round(med["push_us"], 1), "cpu_apply_us": round(med["apply_us"], 1),
            "cpu_verify_us": round(med["verify_us"], 1), "cpu_ratio": round(statistics.median(ratios), 3),
            "cpu_applied_ratio": round(statistics.median(e2e), 3), "cpu_rounds": runs}


def main(args) -> dict:
    if args.cpu_only:
        return main_cpu_only(args)
    hub_cpu = args.cpu
    client_cpu = (hub_cpu + 1) % (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="ld-bench-ingest-") as tmp:
        root = Path(tmp)
        port = common.free_port()
        hub_dir = root / "hub"
        common.init_hub(hub_dir, f"http://127.0.0.1:{port}")
        t0 = time.perf_counter()
        keys = common.enrol_directly(hub_dir, args.townships, args.villages // args.townships)
        print(f"enrolled {len(keys)} nodes directly in the hub DB in {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        batches, docs = build(args, keys)
        total = sum(b[2] for b in batches)
        payload_sizes = [len(signed_bytes(d)) for d in docs]
        print(f"pre-signed {total} case.submit envelopes in {len(batches)} pushes of {args.batch}"
              f" ({args.origins_per_batch} villages per push) in {time.perf_counter() - t0:.1f} s;"
              f" payload {min(payload_sizes)}-{max(payload_sizes)} B,"
              f" mean {sum(payload_sizes) / len(payload_sizes):.0f} B")

        common.pin_self(hub_cpu)
        keys_by_kid = {k.kid: k.public_b64 for k in keys.values()}
        raw, raw_reload = raw_verify_rate(docs[:2000], keys_by_kid)
        print(f"raw Ed25519 verify (libsodium, core {hub_cpu}): {raw:.0f} /s;"
              f" with base64 key load per verify: {raw_reload:.0f} /s")

        common.pin_self(client_cpu)
        proc = common.serve_node(hub_dir, port, cpu=hub_cpu)
        try:
            clients = {t: PreparedClient(f"http://127.0.0.1:{port}", common.HUB_ID, t, keys[t],
                                         NonceSource(lambda: int(time.time() * 1000)), timeout=120)
                       for t in {b[0] for b in batches}}
            warm = max(1, len(batches) // 20)
            for caller, body, _ in batches[:warm]:
                clients[caller].push_bytes(body)
            common.wait_applied(hub_dir)
            timed = batches[warm:]
            n_timed = sum(b[2] for b in timed)
            # Each township's pushes stay in order on one connection; --clients townships push at once.
            lanes: list[list] = [[] for _ in range(args.clients)]
            for caller, body, _ in timed:
                lanes[sorted(clients).index(caller) % args.clients].append((caller, body))
            counts = [0] * args.clients

            def push_lane(i: int) -> None:
                for caller, body in lanes[i]:
                    answer = clients[caller].push_bytes(body)
                    counts[i] += accepted_in(answer)

            cpu0, start = common.cpu_seconds(proc.pid), time.perf_counter()
            threads = [threading.Thread(target=push_lane, args=(i,)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            accepted = sum(counts)
            elapsed = time.perf_counter() - start
            hub_cpu_s = common.cpu_seconds(proc.pid) - cpu0
            # The second stage: the hub's apply worker stores and routes the cases once pushes pause.
            apply_wait = common.wait_applied(hub_dir)
            applied_elapsed = time.perf_counter() - start
            hub_cpu_applied = common.cpu_seconds(proc.pid) - cpu0
        finally:
            common.stop(proc)
            common.pin_self(None)
        rows = count_rows(hub_dir)
        rate = n_timed / elapsed
        rate_cpu = n_timed / hub_cpu_s if hub_cpu_s else float("nan")
        applied_rate = n_timed / applied_elapsed
        applied_rate_cpu = n_timed / hub_cpu_applied
        print(f"ingest over HTTP (waitress, hub on core {hub_cpu}): {rate:.0f} envelopes/s acknowledged"
              f" ({n_timed} in {elapsed:.2f} s, {n_timed / len(timed):.0f} per push,"
              f" {elapsed / len(timed) * 1000:.0f} ms per push)")
        print(f"hub CPU: {hub_cpu_s:.2f} s for {n_timed} envelopes = {rate_cpu:.0f} envelopes per CPU-second"
              f" (core busy {hub_cpu_s / elapsed:.0%} of the time)")
        print(f"ratio ingest / raw verify: {rate / raw:.1%} (per hub CPU-second: {rate_cpu / raw:.1%});"
              f" bar: >= 40%")
        print(f"applied to the case register {apply_wait:.2f} s after the last push:"
              f" {applied_rate:.0f} envelopes/s from first push to last case stored"
              f" ({applied_rate / raw:.1%} of raw verify), {applied_rate_cpu:.0f} per hub CPU-second"
              f" ({applied_rate_cpu / raw:.1%})")
        ok = rows["inbox"] == total and rows["quarantine"] == 0 and rows["apply_queue"] == 0 and rows["cases"] == total
        print(f"check: accepted {accepted} of {n_timed} timed; inbox {rows['inbox']}, cases {rows['cases']}"
              f" of {total}; quarantine {rows['quarantine']}; still queued {rows['apply_queue']}")
        figures = {
            "benchmark": "ingest", "envelopes": total, "timed_envelopes": n_timed, "batch": args.batch,
            "origins_per_batch": args.origins_per_batch, "villages": args.villages,
            "mean_payload_bytes": round(sum(payload_sizes) / len(payload_sizes)),
            "raw_verify_per_s": round(raw), "raw_verify_with_key_load_per_s": round(raw_reload),
            "ingest_per_s": round(rate), "ingest_per_hub_cpu_s": round(rate_cpu),
            "ratio": round(rate / raw, 3), "ratio_cpu": round(rate_cpu / raw, 3),
            "apply_wait_s": round(apply_wait, 2), "applied_per_s": round(applied_rate),
            "applied_per_hub_cpu_s": round(applied_rate_cpu), "applied_ratio": round(applied_rate / raw, 3),
            "applied_ratio_cpu": round(applied_rate_cpu / raw, 3),
            **rows, "ok": ok,
        }
        if args.profile:
            report = profile_in_process(root, keys, batches, args)
            Path(args.profile_out).write_text(report, encoding="utf-8")
            print(report.split("\n", 1)[0])
            print(f"cProfile report written to {args.profile_out}")
        common.emit(figures)
        return figures


def main_cpu_only(args) -> dict:
    """Only :func:`cpu_in_process` (no served hub): the figure to compare two commits on a busy machine."""
    with tempfile.TemporaryDirectory(prefix="ld-bench-ingest-") as tmp:
        root = Path(tmp)
        seed_dir = root / "keys"
        common.init_hub(seed_dir, "http://127.0.0.1:9")
        keys = common.enrol_directly(seed_dir, args.townships, args.villages // args.townships)
        batches, docs = build(args, keys)
        figures = {"benchmark": "ingest-cpu", "envelopes": sum(b[2] for b in batches), "batch": args.batch,
                   **cpu_in_process(root, keys, batches, docs, args), "ok": True}
        common.emit(figures)
        return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envelopes", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=200, help="envelopes per push (SYNC_BATCH)")
    parser.add_argument("--envelope-version", type=int, choices=(1, 2), default=2,
                        help="2: what a village sends a parent that takes it (text payload, compact body); 1: older")
    parser.add_argument("--legacy-body", action="store_true",
                        help="push bodies as an older township sent them: every result listed, links and key ids in full")
    parser.add_argument("--villages", type=int, default=100)
    parser.add_argument("--townships", type=int, default=5)
    parser.add_argument("--origins-per-batch", type=int, default=10, help="villages whose envelopes share a push")
    parser.add_argument("--clients", type=int, default=1, help="townships pushing at the same time")
    parser.add_argument("--cpu", type=int, default=0, help="core the hub (and the raw verify loop) runs on")
    parser.add_argument("--quick", action="store_true", help="2,000 envelopes")
    parser.add_argument("--profile", action="store_true", help="also run the pushes in-process under cProfile")
    parser.add_argument("--profile-out", default="ingest-profile.txt")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--cpu-only", action="store_true",
                        help="only the in-process CPU figures per envelope (push, apply, raw verify), interleaved")
    parser.add_argument("--cpu-rounds", type=int, default=3, help="rounds of --cpu-only")
    args = parser.parse_args()
    if args.quick:
        args.envelopes, args.villages = 2000, 20
    sys.exit(0 if main(args)["ok"] else 1)
