"""A real Liandong network in a temporary folder, for tests.

Every node is the real thing: the hub is created with ``init_hub``, townships and villages
generate their keys and enrol over HTTP through ``enrol_node``, accounts come from
``add_account``. Each node's Flask app is served by werkzeug on its own free loopback port in
a background thread, with the scheduler off: tests drive sync rounds explicitly with
:meth:`NodeHandle.sync`, so what happens is deterministic and fast. A server can be stopped
(the link is down: connection refused) and started again on the same port.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from city_hub import create_app as create_hub_app
from city_hub.enrolment_service import create_token
from provisioning import nodes
from shared.core import storage
from shared.core.clock import FixedClock
from shared.rules.idcard import id_check_char
from sync.client import ParentClient
from sync.node_sync import SyncState, run_round
from township_node import create_app as create_township_app
from village_node import create_app as create_village_app

HUB_ID = "130926"
TOWNSHIP_ID = "130926100"
PASSWORD = "test-password-1"
APP_FACTORIES = {"hub": create_hub_app, "township": create_township_app, "village": create_village_app}


def valid_id_number(first17: str = "13092619800101123") -> str:
    """A 身份证号 with a correct GB 11643 check character."""
    return first17 + id_check_char(first17)


def wrong_id_number(first17: str = "13092619800101123") -> str:
    """The same number with a wrong check character."""
    right = id_check_char(first17)
    return first17 + ("1" if right != "1" else "2")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(WSGIRequestHandler):
    """One request per connection (so a stopped server is really unreachable) and no log lines."""

    protocol_version = "HTTP/1.0"

    def log(self, type, message, *args):  # noqa: A002 - werkzeug's signature
        pass


class Server:
    """A werkzeug server for one app on a fixed loopback port, in a background thread."""

    def __init__(self, app, port: int):
        self.app = app
        self.port = port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True, request_handler=_Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"liandong-test-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None
        self._thread = None


@dataclass
class NodeHandle:
    """One running node of the test network."""

    node_id: str
    tier: str
    data_dir: Path
    port: int
    app: object = None
    server: Server | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    hub: NodeHandle | None = None  # a township's hub: applied after each of its sync rounds
    _conn: object = None
    _client: object = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node(self):
        """The app's :class:`sync.node.Node` (identity, key, blobs, trust)."""
        return self.app.extensions["liandong_node"]

    @property
    def conn(self):
        """A migrated connection to this node's database, for sync rounds and checks."""
        if self._conn is None:
            self._conn = self.app.extensions["liandong_db"].connect(self.app)
        return self._conn

    def serve(self) -> None:
        if self.app is None:
            self.app = APP_FACTORIES[self.tier]({"DATA_DIR": str(self.data_dir), "SCHEDULER_ENABLED": False})
            self.server = Server(self.app, self.port)
        self.server.start()

    def stop(self) -> None:
        """Take the node off the network (its port refuses connections)."""
        self.server.stop()

    def start(self) -> None:
        """Bring the node back on the same port."""
        self.server.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def sync(self) -> dict:
        """One forced sync round towards the parent (never raises for network trouble)."""
        self.apply_accepted()  # a township: what its follow worker would have followed by now
        summary = run_round(self.conn, self.node, SyncState(), force=True)
        if self.hub is not None:
            self.hub.apply_accepted()
        return summary

    def apply_accepted(self) -> int:
        """Hub: apply what it accepted now, as its apply worker would a moment later (sync/apply.py);
        township: follow the custody it queued, as its follow worker would.

        Checks, API calls and sync rounds in tests call this first, so they see a settled node.
        """
        if self.app is None or self.tier == "village":
            return 0
        service = self.app.extensions["liandong_sync"]
        return service.apply_all(self.conn) if self.tier == "hub" else service.follow_all(self.conn)

    def client_to_parent(self) -> ParentClient:
        """A node-signed HTTP client of this node towards its parent."""
        node = self.node
        return ParentClient(node.config["PARENT_URL"], node.config["PARENT_ID"], node.node_id, node.key, node.nonces)

    def account(self, username: str, role: str, office: str | None = None, display_name: str | None = None) -> str:
        """Create an account (once) and return its API token."""
        if username not in self.tokens:
            self.tokens[username] = nodes.add_account(self.data_dir, username, PASSWORD, role,
                                                      display_name or username, office)
        return self.tokens[username]

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        """An HTTP request to this node's API, over loopback."""
        headers = dict(kwargs.pop("headers", {}) or {})
        self.apply_accepted()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def local(self, method: str, path: str, token: str | None = None, **kwargs):
        """The same request as :meth:`api`, answered by this node's app through Flask's test client
        (no socket): for checks that send hundreds of requests about what the node answers, not
        about the transport (``status_code`` and ``text`` as from :meth:`api`)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        self.apply_accepted()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self._client is None:
            self._client = self.app.test_client(use_cookies=False)  # a bearer token per request, no session
        return self._client.open(path, method=method, headers=headers, **kwargs)

    def local_login(self, username: str):
        """A test client of this node's app with its own cookies, signed in through the login form
        as ``username`` (password :data:`PASSWORD`): the in-process counterpart of :func:`login`."""
        client = self.app.test_client()
        token = csrf_token(client.get("/login").text)
        answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 302 and "/login" not in answer.headers["Location"], answer.text[:300]
        return client

    def query(self, sql: str, params: tuple = ()) -> list:
        """Rows of a read-only query on this node's database."""
        self.apply_accepted()
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple = ()):
        self.apply_accepted()
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


class Network:
    """A hub, a township and villages under ``root``, all served on loopback."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hub: NodeHandle | None = None
        self.townships: dict[str, NodeHandle] = {}
        self.villages: dict[str, NodeHandle] = {}

    # ---------------------------------------------------------------- building

    @classmethod
    def build(cls, root: Path, villages: int = 1, township: bool = True) -> Network:
        """Hub 130926, township 130926100 and villages 130926100201, 202, …"""
        net = cls(root)
        net.add_hub()
        if township:
            net.add_township(TOWNSHIP_ID)
            for i in range(villages):
                net.add_village(f"{TOWNSHIP_ID}{201 + i}")
        return net

    def add_hub(self, hub_id: str = HUB_ID, name: str = "测试县政务服务中心") -> NodeHandle:
        port = free_port()
        handle = NodeHandle(hub_id, "hub", self.root / hub_id, port)
        nodes.init_hub(handle.data_dir, hub_id, name, handle.url)
        handle.serve()
        self.hub = handle
        return handle

    def issue_token(self, node_id: str, name: str = "测试节点", ttl: timedelta = timedelta(hours=1),
                    now=None) -> str:
        """A fresh enrolment token from the hub (as `liandong node token` would issue it)."""
        conn = nodes.open_db(self.hub.data_dir, "hub")
        try:
            with storage.write_transaction(conn):
                return create_token(conn, node_id, name, None, ttl, now or self.hub.node.now(), "test")
        finally:
            conn.close()

    def add_township(self, node_id: str, name: str = "测试镇便民服务站") -> NodeHandle:
        port = free_port()
        handle = NodeHandle(node_id, "township", self.root / node_id, port, hub=self.hub)
        token = self.issue_token(node_id, name)
        nodes.enrol_node(handle.data_dir, token, self.hub.url, name, handle.url)
        handle.serve()
        self.townships[node_id] = handle
        return handle

    def add_village(self, node_id: str, name: str = "测试村便民服务室") -> NodeHandle:
        """Enrol a village through its township (which forwards to the hub) and serve it."""
        township = self.townships[node_id[:9]]
        port = free_port()
        handle = NodeHandle(node_id, "village", self.root / node_id, port)
        token = self.issue_token(node_id, name)
        nodes.enrol_node(handle.data_dir, token, township.url, name, handle.url)
        handle.serve()
        self.villages[node_id] = handle
        township.sync()  # the township learns the new registry (it only serves villages it knows)
        return handle

    @property
    def township(self) -> NodeHandle:
        return self.townships[TOWNSHIP_ID]

    def village(self, index: int = 0) -> NodeHandle:
        return list(self.villages.values())[index]

    def all_nodes(self) -> list[NodeHandle]:
        return [n for n in (self.hub, *self.townships.values(), *self.villages.values()) if n is not None]

    def close(self) -> None:
        for handle in reversed(self.all_nodes()):
            handle.close()

    # ---------------------------------------------------------------- running

    def sync_all(self, rounds: int = 2) -> None:
        """Villages then townships, ``rounds`` times: enough for up and down again."""
        for _ in range(rounds):
            for v in self.villages.values():
                v.sync()
            for t in self.townships.values():
                t.sync()
        for v in self.villages.values():
            v.sync()


# -------------------------------------------------------------------- cases


def catalog(handle: NodeHandle, token: str) -> list[dict]:
    """The catalog as the node's API serves it."""
    response = handle.api("GET", "/api/v1/catalog", token)
    response.raise_for_status()
    return response.json()["items"]


def pick_item(items: list[dict], decide_level: str, accept_level: str = "village") -> dict:
    """The first applyable item decided at ``decide_level`` that ``accept_level`` may take."""
    for item in items:
        if (item["decide_level"] == decide_level and accept_level in item["accept_levels"]
                and not item.get("consultation_only")):
            return item
    raise LookupError(f"no {decide_level}-decided item acceptable at {accept_level}")


def form_for(item: dict) -> dict:
    """Valid values for every field of an item."""
    form = {}
    for f in item["fields"]:
        if f["type"] == "select":
            form[f["name"]] = f["options"][0]
        elif f["type"] == "number":
            low, high = f.get("min", 1), f.get("max", 100)
            form[f["name"]] = max(low, min(high, 1))
        elif f["type"] == "date":
            form[f["name"]] = "2026-03-02"
        elif f.get("format") == "id_number":
            form[f["name"]] = valid_id_number()
        elif f.get("format") == "phone":
            form[f["name"]] = "13812345678"
        else:
            form[f["name"]] = "测试"[: f.get("max", 2)]
    return form


#: A small PNG (materials are checked by content) attached for every required material by default.
REQUIRED_SCAN = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(48))


def case_payload(item: dict, files: list[tuple[str, str, bytes]] | None = None, **overrides) -> dict:
    """A complete ``POST /api/v1/cases`` body for ``item`` with ``files`` as (code, filename, bytes);
    by default a scan of every required material, so the deciding office may accept it (受理)."""
    if files is None:
        files = [(m["code"], f"{m['code']}.png", REQUIRED_SCAN) for m in item["materials"] if m.get("required")]
    payload = {
        "item_code": item["code"],
        "applicant": {"name": "张三", "id_number": valid_id_number(), "phone": "13812345678"},
        "form": form_for(item),
        "materials": [
            {"code": code, "filename": filename, "content_base64": base64.b64encode(data).decode("ascii")}
            for code, filename, data in files
        ],
    }
    payload.update(overrides)
    return payload


def create_case(handle: NodeHandle, token: str, item: dict, materials: list[tuple[str, str, bytes]] | None = None) -> dict:
    """Create a case through the node's API over HTTP; returns the 201 receipt."""
    response = handle.api("POST", "/api/v1/cases", token, json=case_payload(item, materials))
    assert response.status_code == 201, response.text
    return response.json()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(handle: NodeHandle, username: str) -> requests.Session:
    """A browser-like session signed in to ``handle`` as ``username`` (password :data:`PASSWORD`)."""
    session = requests.Session()
    token = csrf_token(session.get(handle.url + "/login", timeout=10).text)
    session.post(f"{handle.url}/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
                 timeout=10)
    return session


@contextmanager
def clock_at(handle: NodeHandle, when: datetime):
    """Run ``handle``'s node with its clock stopped at ``when`` (retention, months, the day of a booking)."""
    node = handle.node
    saved = node.clock
    node.clock = FixedClock(when)
    try:
        yield
    finally:
        node.clock = saved
