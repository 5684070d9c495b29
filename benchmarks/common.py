"""Shared set-up for the benchmarks: real nodes on loopback, fast enrolment, realistic cases.

Nodes are served exactly as in production on a small site: ``python -m provisioning.cli node
serve`` (waitress, 4 threads) in a subprocess, with the scheduler switched off
(``LIANDONG_SCHEDULER_ENABLED=false``) so the benchmark drives every sync round itself. On Linux
a subprocess can be pinned to one CPU core (``os.sched_setaffinity``) so a figure can be read
as "per core".
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import requests

from provisioning.memory import settle_collector
from shared.core import storage
from shared.core.clock import iso
from shared.core.crypto import SigningKey
from shared.rules.catalog import accepts_at, load_seed, required_materials, route
from shared.rules.idcard import id_check_char
from shared.services import casework, submission
from sync import envelope
from sync.outbox import GENESIS
from sync.transport import Transport

REPO = Path(__file__).resolve().parent.parent
HUB_ID = "130926"


# ---------------------------------------------------------------- processes and ports


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_node(data_dir: Path, port: int, cpu: int | None = None, threads: int = 4,
               env: dict | None = None) -> subprocess.Popen:
    """Serve a node with waitress in a subprocess (scheduler off unless ``env`` says otherwise:
    ``LIANDONG_*`` settings); wait until /healthz answers."""
    env = {**os.environ, "LIANDONG_SCHEDULER_ENABLED": "false", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "node", "serve", "--data", str(data_dir), "--port", str(port),
         "--threads", str(threads)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {cpu})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node {data_dir} exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"node {data_dir} did not come up on {url}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a node started by :func:`serve_node` (this process's own child, by its pid)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_self(cpu: int | None) -> None:
    """Pin this process to one core (``None``: every core again)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu} if cpu is not None else set(range(os.cpu_count() or 1)))


# ---------------------------------------------------------------- nodes


def wait_applied(hub_dir: Path, timeout: float = 600) -> float:
    """Seconds until the hub's apply worker has emptied its queue (polled every 10 ms)."""
    from provisioning import nodes

    conn = nodes.open_db(hub_dir, "hub")
    start = time.perf_counter()
    try:
        while conn.execute("SELECT COUNT(*) FROM apply_queue").fetchone()[0]:
            if time.perf_counter() - start > timeout:
                raise RuntimeError("the hub did not apply its queue")
            time.sleep(0.01)
        return time.perf_counter() - start
    finally:
        conn.close()


def init_hub(data_dir: Path, url: str) -> None:
    """A fresh hub with the seed catalog (the real ``init_hub``)."""
    from provisioning import nodes

    nodes.init_hub(data_dir, HUB_ID, "肃宁县政务服务中心", url)


def enrol_directly(hub_dir: Path, townships: int, villages_per_township: int,
                   keys: dict[str, SigningKey] | None = None) -> dict[str, SigningKey]:
    """Register many nodes fast: insert them and their keys into the hub DB, republish the registry.

    This is what ``city_hub.enrolment_service.enrol`` writes for each node (nodes, node_keys row,
    then a new registry), minus the token and the HTTP round trip, once for all nodes.
    :param keys: reuse these keys (to build a second hub with the same nodes).
    :returns: ``{node_id: key}`` of every township and village.
    """
    given = keys or {}
    from city_hub import registry
    from provisioning import nodes

    node = nodes.node_for(hub_dir)
    conn = nodes.open_db(hub_dir, "hub")
    keys = {}
    now = iso(node.now())
    try:
        with storage.write_transaction(conn):
            for t in range(townships):
                township = f"{HUB_ID}{100 + t:03d}"
                for node_id, tier, parent in [(township, "township", HUB_ID)] + [
                    (f"{township}{201 + v:03d}", "village", township) for v in range(villages_per_township)
                ]:
                    key = given.get(node_id) or SigningKey.generate()
                    keys[node_id] = key
                    conn.execute("INSERT INTO nodes(node_id, tier, parent, name, created_at) VALUES (?,?,?,?,?)",
                                 (node_id, tier, parent, f"节点{node_id}", now))
                    conn.execute("INSERT INTO node_keys(kid, node_id, public_key, created_at) VALUES (?,?,?,?)",
                                 (key.kid, node_id, key.public_b64, now))
            registry.publish_registry(conn, node)
    finally:
        conn.close()
    return keys


def enrol_for_real(hub_dir: Path, node_dir: Path, node_id: str, name: str, parent_url: str) -> dict:
    """Enrol one township or village through the real flow: token at the hub, HTTP to the parent."""
    from city_hub.enrolment_service import create_token
    from provisioning import nodes

    conn = nodes.open_db(hub_dir, "hub")
    try:
        with storage.write_transaction(conn):
            token = create_token(conn, node_id, name, None, timedelta(hours=1), nodes.node_for(hub_dir).now(), "bench")
    finally:
        conn.close()
    return nodes.enrol_node(node_dir, token, parent_url, name)


class Network:
    """Hub and township served on loopback (waitress subprocesses), one village app in-process.

    ``uplink``: a :class:`CountingProxy` between the township and the hub, which every request of
    the township towards the hub goes through (its rounds run here and, with ``township_env``
    turning its scheduler on, those its server starts itself: write-through, §5.3.3)."""

    TOWNSHIP = f"{HUB_ID}100"
    VILLAGE = f"{HUB_ID}100201"

    def __init__(self, root: Path, hub_cpu: int | None = None, township_cpu: int | None = None,
                 uplink: bool = False, township_env: dict | None = None):
        self.root = Path(root)
        self.dirs = {n: self.root / n for n in (HUB_ID, self.TOWNSHIP, self.VILLAGE)}
        self.ports = {HUB_ID: free_port(), self.TOWNSHIP: free_port()}
        self.urls = {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}
        self.procs: list[subprocess.Popen] = []
        self.uplink: CountingProxy | None = None
        init_hub(self.dirs[HUB_ID], self.urls[HUB_ID])
        self.procs.append(serve_node(self.dirs[HUB_ID], self.ports[HUB_ID], hub_cpu))
        enrol_for_real(self.dirs[HUB_ID], self.dirs[self.TOWNSHIP], self.TOWNSHIP, "肃宁镇便民服务站",
                       self.urls[HUB_ID])
        env = dict(township_env or {})
        if uplink:
            self.uplink = CountingProxy(self.ports[HUB_ID])
            env["LIANDONG_PARENT_URL"] = self.uplink.url
        self.procs.append(serve_node(self.dirs[self.TOWNSHIP], self.ports[self.TOWNSHIP], township_cpu, env=env))
        enrol_for_real(self.dirs[HUB_ID], self.dirs[self.VILLAGE], self.VILLAGE, "东关村便民服务室",
                       self.urls[self.TOWNSHIP])
        from village_node import create_app as village_app

        # The village app itself (its node runtime and database owner); its rounds are driven by hand.
        self.village_app = village_app({"DATA_DIR": str(self.dirs[self.VILLAGE]), "SCHEDULER_ENABLED": False})
        self.village = self.village_app.extensions["liandong_node"]
        self.village_conn = self.village_app.extensions["liandong_db"].connect(self.village_app)
        # The township's own sync rounds (towards the hub) run here, on its data folder.
        from provisioning import nodes

        self.township = nodes.node_for(self.dirs[self.TOWNSHIP])
        if self.uplink is not None:
            self.township.config["PARENT_URL"] = self.uplink.url
        self.township_conn = nodes.open_db(self.dirs[self.TOWNSHIP])
        # What the village's `liandong node serve` does once the app is built (provisioning/memory.py).
        settle_collector(self.village.kind.gc_young_threshold)

    def settle(self, session: Transport | None = None) -> None:
        """One township round, then one village round: the township learns the registry that
        lists the new village (until then it refuses the village's requests), the village
        gets the newest metadata."""
        from sync.node_sync import SyncState, run_round

        session = session or Transport()
        for node, conn in ((self.township, self.township_conn), (self.village, self.village_conn)):
            summary = run_round(conn, node, SyncState(), client=client_with(node, session), force=True)
            if "error" in summary:
                raise RuntimeError(f"settling round of {node.node_id} failed: {summary['error']}")

    def hub_conn(self):
        from provisioning import nodes

        return nodes.open_db(self.dirs[HUB_ID], "hub")

    def close(self) -> None:
        self.village_conn.close()
        self.township_conn.close()
        for proc in reversed(self.procs):
            stop(proc)
        if self.uplink is not None:
            self.uplink.close()


# ---------------------------------------------------------------- realistic cases


ADDRESSES = ["肃宁县肃宁镇东关村三街12号", "肃宁县梁家村镇西街村五组7号", "肃宁县窝北镇北石堡村中心街21号"]
SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗"
GIVEN = ["建国", "秀英", "桂兰", "志强", "海燕", "丽娟", "国华", "玉梅", "春生", "淑珍"]


def id_number(i: int) -> str:
    """A valid GB 11643 number, different for each ``i``."""
    first17 = f"130926{1950 + i % 50:04d}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    return first17 + id_check_char(first17)


def person(i: int) -> dict:
    """An applicant."""
    return {"name": SURNAMES[i % len(SURNAMES)] + GIVEN[i % len(GIVEN)], "id_number": id_number(i),
            "phone": f"13{i % 10}{i % 100_000_000:08d}"}


def sample_form(item: dict, i: int) -> dict:
    """A valid, realistically filled form for ``item`` (every field, optional ones too)."""
    form: dict = {}
    for f in item["fields"]:
        if f["type"] == "select":
            form[f["name"]] = f["options"][i % len(f["options"])]
        elif f["type"] == "number":
            low = f.get("min", 0)
            form[f["name"]] = min(low + 1 + i % 5, f.get("max", low + 10))
        elif f["type"] == "date":
            form[f["name"]] = "2026-03-02"
        elif f.get("format") == "id_number":
            form[f["name"]] = id_number(i + 7)
        elif f.get("format") == "phone":
            form[f["name"]] = "13812345678"
        elif f["type"] == "textarea":
            form[f["name"]] = ("家中老人年迈多病，收入来源单一，特申请办理此项业务，请予审核。" * 2)[: f.get("max", 500)]
        else:
            text = ADDRESSES[i % len(ADDRESSES)] if "address" in f["name"] or "location" in f["name"] \
                else person(i)["name"]
            form[f["name"]] = text[: f.get("max", 100)]
    return form


def village_items() -> list[dict]:
    """Seed catalog items a village may take (not consultation-only)."""
    return [i for i in load_seed() if not i["consultation_only"] and accepts_at(i, f"{HUB_ID}100201")]


def api_payload(item: dict, i: int) -> dict:
    """The application as an agent sends it to ``POST /api/v1/cases`` (no materials)."""
    return {"item_code": item["code"], "applicant": person(i), "form": sample_form(item, i)}


def case_submit_body(item: dict, origin: str, catalog_version: int, i: int, now) -> dict:
    """The body of a ``case.submit`` envelope, shaped as ``shared.services.casework.capture`` builds it."""
    receipt_no = f"{origin}-{now:%Y%m%d}-{i + 1:04d}"
    return {
        "case_id": casework.new_id(now),
        "receipt_no": receipt_no,
        "item_code": item["code"],
        "item_name": item["name"],
        "catalog_version": catalog_version,
        "limit_wd": item.get("promise_limit_wd", 0),
        "route": route(item, origin, HUB_ID),
        "applicant": person(i),
        "form": sample_form(item, i),
        "materials": [],
        "agent": "agent",
        "submitted_at": iso(now),
        "event": casework.new_event(origin, "agent", "submit", None, "SUBMITTED", now,
                                    detail={"receipt_no": receipt_no}),
        "missing_materials": [m["name"] for m in required_materials(item, {})],
    }


def signed_chain(key: SigningKey, origin: str, bodies: list[dict], wall_ms: int, version: int = 1) -> list[dict]:
    """``case.submit`` envelopes 1..n of one origin, chained as ``sync.outbox.append`` does;
    ``version`` 2: the text payload and compact body a village sends to a parent that takes it."""
    docs, prev = [], GENESIS
    for seq, body in enumerate(bodies, start=1):
        if version == 2:
            body = submission.compact({**body, "event": {**body["event"], "event_id": casework.submit_event_id(
                body["case_id"])}}, origin)
        doc = envelope.sign(key, envelope.ENVELOPE_V2 if version == 2 else envelope.ENVELOPE, {
            "v": version, "origin": origin, "seq": seq, "prev": prev, "hlc": f"{wall_ms + seq:016d}-0000-{origin}",
            "kind": "case.submit", "body": body, "attachments": [],
        })
        prev = envelope.document_id(doc)
        docs.append(doc)
    return docs


# ---------------------------------------------------------------- HTTP byte counting


class CountingSession(Transport):
    """The sync client's own HTTP transport (sync/transport.py), counting every request and
    answer as they went on the wire.

    Request: request line + every header (Host, Content-Length, Accept-Encoding included) + body
    as sent (compressed if it was), the bytes the connection wrote. Answer: status line +
    headers + body as received (waitress answers with Content-Length, no chunking; a compressed
    answer counts its compressed length). Grouped by the path before ``?``.
    """

    def __init__(self):
        super().__init__()
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._counting = threading.Lock()  # the village's and the township's rounds overlap

    def exchanged(self, method, url, headers, body, sent, response):
        path = urlsplit(url).path
        if path.startswith("/sync/v1/blobs/") and path != "/sync/v1/blobs/status":
            path = "/sync/v1/blobs/<sha256>"
        with self._counting:
            self.sent[path] = self.sent.get(path, 0) + sent
            self.received[path] = self.received.get(path, 0) + response.head_bytes + response.body_bytes
            self.calls[path] = self.calls.get(path, 0) + 1

    def reset(self) -> None:
        self.sent.clear()
        self.received.clear()
        self.calls.clear()


def _path_of(target: str) -> str:
    """The path a count is grouped by: before ``?``, one name for every blob."""
    path = urlsplit(target).path
    return "/sync/v1/blobs/<sha256>" if path.startswith("/sync/v1/blobs/") and path != "/sync/v1/blobs/status" \
        else path


def _read_message(stream) -> bytes:
    """One HTTP/1.1 message from ``stream``: head and a ``Content-Length`` body (b"" at EOF)."""
    head = b""
    while True:
        line = stream.readline(65537)
        if not line:
            return b""
        head += line
        if line in (b"\r\n", b"\n"):
            break
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + (stream.read(length) if length else b"")


class CountingProxy:
    """A loopback HTTP/1.1 relay to ``127.0.0.1:<upstream_port>`` counting every request and
    answer byte for byte as they cross it (request line, headers, body; status line, headers,
    body), grouped by path like :class:`CountingSession`: it counts what a node's server sends
    on its own (a township forwarding write-through), which no client-side session sees."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent: dict[str, int] = {}
        self.received: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._counting = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                inbound, outbound = client.makefile("rb"), upstream.makefile("rb")
                while request := _read_message(inbound):
                    upstream.sendall(request)
                    answer = _read_message(outbound)
                    if not answer:
                        return
                    client.sendall(answer)
                    path = _path_of(request.split(b" ", 2)[1].decode("latin-1"))
                    with self._counting:
                        self.sent[path] = self.sent.get(path, 0) + len(request)
                        self.received[path] = self.received.get(path, 0) + len(answer)
                        self.calls[path] = self.calls.get(path, 0) + 1
        except OSError:
            return

    def reset(self) -> None:
        with self._counting:
            self.sent.clear()
            self.received.clear()
            self.calls.clear()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()


def client_with(node, session: Transport):
    """The node's ``ParentClient`` (as ``sync.node_sync.client_for`` builds it) on ``session``."""
    from sync.client import ParentClient

    return ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces,
                        timeout=60.0, session=session)


def emit(figures: dict) -> None:
    """The final machine-readable line."""
    print(json.dumps(figures, ensure_ascii=False, sort_keys=True))


def rng(seed: int = 7) -> random.Random:
    return random.Random(seed)
