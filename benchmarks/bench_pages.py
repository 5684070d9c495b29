"""Server time of every main page with a realistic database (10,000 cases at each tier).

A real hub, township and village are built with ``tests/network.py`` (``init_hub``, enrolment
over HTTP on loopback, accounts from ``add_account``). Each node's database is then filled
directly, in one transaction per node, with ~10,000 cases taken at the village: the bodies are
shaped as ``shared.services.casework.capture`` builds them (``benchmarks/common.case_submit_body``: every
village-accepted seed item, realistic forms, one real PNG material each) and stored with
``shared.services.casework.insert_case`` (village: as taken there; township: as followed in custody;
hub: ``insert_received``). Each case then gets the history its age gives it, recorded with
``shared.services.casework.record_event`` exactly as the deciding node's events arrive: 接件, 受理,
开始审查, 准予 / 不予许可 / 不予受理 / 一次性告知补齐补正, and 送达 for most decided cases,
spread over a year of working days. No sync round is needed (and none would be fast: the
sync path has its own benchmarks).

Server time is measured with each app's Flask test client (no socket, no browser): the
time between the request and the complete response body, median and p95 over ``--requests``
calls after two warm-up calls. Run from the repository root::

    .venv/bin/python benchmarks/bench_pages.py [--cases 10000] [--requests 20] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's code, as bench_wire and bench_drain do
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import case_submit_body, emit, rng, village_items  # noqa: E402
from network import Network  # noqa: E402

from shared.core.clock import iso  # noqa: E402
from shared.core.storage import write_transaction  # noqa: E402
from shared.rules import states  # noqa: E402
from shared.services import casework  # noqa: E402

#: A tiny valid PNG, the material of every case (the case page previews it).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def lifecycle(r, body: dict, office_node: str, village: str, now) -> list[tuple[dict, dict | None]]:
    """The events a case of this age has had by ``now``: [(event, decision or None)]."""
    submitted = now - timedelta(days=body["_age_days"], minutes=r.randrange(600))
    body["submitted_at"] = body["event"]["at"] = iso(submitted)
    out: list[tuple[dict, dict | None]] = []
    status, at = "SUBMITTED", submitted
    age = body["_age_days"]

    def step(action: str, days: float, comment: str = "", detail: dict | None = None, node: str = office_node):
        nonlocal status, at
        at = min(now, at + timedelta(days=days, minutes=r.randrange(240)))
        new = states.apply_action(status, action, comment, **(detail or {}))
        event = casework.new_event(node, "system" if action == "receive" else "window", action, status, new, at,
                                   comment, detail)
        decision = None
        if action in casework.DECISION_ACTIONS:
            decision = {"result": action, "result_label": casework.DECISION_ACTIONS[action], "comment": comment,
                        "decided_at": iso(at), "decided_by": "window", "office": body["route"]["office"]}
        out.append((event, decision))
        status = new

    step("receive", 0.001)
    if age < 1:
        return out
    roll = r.random()
    if roll < 0.03:
        step("reject", 0.5, "申请事项依法不需要取得行政许可")
        return out
    if roll < 0.08:
        step("request_correction", 0.5, "请补正", {"missing_items": ["户口簿复印件", "收入证明"]})
        if age < 6:
            return out
        step("resubmit", 3, node=village)
    step("accept", 0.5)
    if age < 3:
        return out
    step("start_review", 1)
    if age < max(6, body["limit_wd"] * 1.4):
        return out
    if r.random() < 0.06:
        step("deny", 2, "经审查，申请人不符合规定条件")
    else:
        step("approve", 2, "符合条件，准予")
    if age > 10 and r.random() < 0.9:
        step("deliver", 2, "申请人本人领取", node=village)
    return out


def generate(n: int, seed: int, village_id: str, township_id: str, hub_id: str, version: int, now) -> list:
    """~n cases taken at ``village_id`` with the history their age gives them: [(body, history)].

    The same ``seed`` gives the same items, forms, ages and histories (not the same case ids).
    """
    r = rng(seed)
    items = village_items()
    cases = []
    for i in range(n):
        item = items[i % len(items)]
        body = case_submit_body(item, village_id, version, i, now)
        body["receipt_no"] = f"{village_id}-{i:08d}"
        body["event"]["detail"]["receipt_no"] = body["receipt_no"]
        body["materials"] = [{"code": item["materials"][0]["code"], "filename": f"扫描{i}.png",
                              "sha256": hashlib.sha256(PNG).hexdigest(), "size": len(PNG)}] if item["materials"] else []
        body["_age_days"] = r.random() ** 2 * 365  # more recent cases than old ones
        office_node = township_id if body["route"]["level"] == "township" else hub_id
        history = lifecycle(r, body, office_node, village_id, now)
        body.pop("_age_days")
        cases.append((body, history))
    return cases


def store(conn, blobs, cases: list, origin: str, sync_state: str, now, whole_history=lambda body: True) -> None:
    """Store ``cases`` (from :func:`generate`) in one node's database, in one transaction: each
    case as ``casework.insert_case`` keeps it in ``sync_state`` and, where ``whole_history(body)``,
    its events recorded as the deciding node's events arrive (``casework.record_event``)."""
    blobs.put(PNG)
    with write_transaction(conn):
        conn.execute("INSERT OR IGNORE INTO blobs(sha256, size, received_at) VALUES (?,?,?)",
                     (hashlib.sha256(PNG).hexdigest(), len(PNG), iso(now)))
        for body, history in cases:
            casework.insert_case(conn, body, origin=origin, status="SUBMITTED", sync_state=sync_state)
            if not whole_history(body):
                continue
            for event, decision in history:
                casework.record_event(conn, body["case_id"], event, decision)


def fill(net: Network, n: int, seed: int = 7) -> dict:
    """~n cases at the village, the township (custody copies) and the hub; returns sample ids."""
    village, township, hub = net.village(), net.township, net.hub
    version = hub.scalar("SELECT MAX(version) FROM metadata WHERE role = 'catalog'") or 1
    now = hub.node.now()
    cases = generate(n, seed, village.node_id, township.node_id, hub.node_id, version, now)
    store(village.conn, village.node.blobs, cases, village.node_id, "acked", now)
    # The township follows city cases only up to custody.
    store(township.conn, township.node.blobs, cases, village.node_id, "custody", now,
          lambda body: body["route"]["level"] == "township")
    store(hub.conn, hub.node.blobs, cases, village.node_id, "hub", now)
    statuses = Counter(s for (s,) in hub.query("SELECT status FROM cases"))
    offices = Counter(o for (o,) in hub.query(
        f"SELECT route_office FROM cases WHERE status IN ({','.join('?' * len(states.OPEN_STATES))})",
        tuple(states.OPEN_STATES)))
    city_offices = [(o, k) for o, k in offices.most_common() if o.startswith(hub.node_id + "-")]
    return {"statuses": dict(statuses), "busiest_office": city_offices[0][0], "open_in_office": city_offices[0][1],
            "township_open": offices.get(township.node_id, 0)}


def sample_case(handle, where: str, params: tuple = ()) -> str:
    return handle.scalar(f"SELECT case_id FROM cases WHERE {where} ORDER BY submitted_at DESC LIMIT 1", params)


def measure(app, token: str, path: str, count: int) -> dict:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    for i in range(count + 2):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        body = response.get_data()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {body[:300]!r}")
        if i >= 2:
            times.append(elapsed)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)], 1),
            "bytes": len(body)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1,000 cases, 5 requests per page")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.requests = 1000, 5
    with tempfile.TemporaryDirectory(prefix="liandong-bench-pages-") as tmp:
        net = Network.build(Path(tmp), villages=1)
        try:
            t0 = time.perf_counter()
            facts = fill(net, args.cases)
            fill_s = time.perf_counter() - t0
            village, township, hub = net.village(), net.township, net.hub
            office = facts["busiest_office"]
            tokens = {
                "agent": village.account("agent", "agent"),
                "clerk": township.account("clerk", "clerk", township.node_id),
                "window": hub.account("window", "window", office),
                "supervisor": hub.account("supervisor", "supervisor"),
                "admin": hub.account("admin", "admin"),
            }
            v_case = sample_case(village, "status = 'CONCLUDED'")
            t_case = sample_case(township, "route_office = ? AND status = 'IN_REVIEW'", (township.node_id,))
            h_case = sample_case(hub, "route_office = ? AND status = 'IN_REVIEW'", (office,))
            pages = [
                ("village", "agent", "办事指南", "/catalog", village),
                ("village", "agent", "我的办件", "/cases", village),
                ("village", "agent", "我的办件 查找", "/cases?q=" + "王", village),
                ("village", "agent", "结果送达", "/results", village),
                ("village", "agent", "办件页", f"/cases/{v_case}", village),
                ("village", "agent", "同步状态", "/sync-status", village),
                ("township", "clerk", "中转状态", "/relay", township),
                ("township", "clerk", "村级报件", "/relay/cases", township),
                ("township", "clerk", "村级报件 一村", f"/relay/cases?village={village.node_id}", township),
                ("township", "clerk", "村级报件 第50页", "/relay/cases?page=50", township),
                ("township", "clerk", "待办办件", "/queue", township),
                ("township", "clerk", "办件页", f"/cases/{t_case}", township),
                ("hub", "window", "待办办件", "/queue", hub),
                ("hub", "window", "办件页", f"/cases/{h_case}", hub),
                ("hub", "supervisor", "电子监察", "/admin/supervision", hub),
                ("hub", "supervisor", "统计", "/admin/stats", hub),
                ("hub", "admin", "节点", "/admin/nodes", hub),
            ]
            print(f"filled {args.cases} cases per node in {fill_s:.1f} s; hub statuses {facts['statuses']}")
            print(f"busiest office {office}: {facts['open_in_office']} open; township open {facts['township_open']}")
            print(f"{'tier':9} {'role':10} {'page':14} {'median ms':>9} {'p95 ms':>8} {'KB':>7}  path")
            results = []
            for tier, role, name, path, handle in pages:
                m = measure(handle.app, tokens[role], path, args.requests)
                results.append({"tier": tier, "role": role, "page": name, "path": path.split("?")[0], **m})
                print(f"{tier:9} {role:10} {name:14} {m['median_ms']:9.1f} {m['p95_ms']:8.1f} "
                      f"{m['bytes'] / 1024:7.1f}  {path[:60]}")
        finally:
            net.close()
    emit({"benchmark": "pages", "cases": args.cases, "requests": args.requests,
          "max_median_ms": max(r["median_ms"] for r in results), "max_p95_ms": max(r["p95_ms"] for r in results),
          "pages": {f"{r['tier']} {r['page']}": [r["median_ms"], r["p95_ms"]] for r in results}})


if __name__ == "__main__":
    main()
