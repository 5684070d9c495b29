"""The service tier of the tests: one real hub in-process, without a network.

The deciding node's rules (deemed acceptance, 容缺 expiry, 电子监察 cards, 延期, statistics,
绩效…) need no running township or village: a real hub (``init_hub``: keys, database, signed
catalog) serves its app through Flask's test client, its township and village are enrolled in
its registry with real keys (the real ``POST /enrol/v1`` route: the hub knows them and their
names) but never run, cases enter its register as the ingest would store them, and the
scheduled rules run on its own connection with a moved clock. What is about the network (sync,
custody, downlink) stays in the multi-node tests of ``tests/network.py``.
"""

from __future__ import annotations

import itertools
import re
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from network import HUB_ID, PASSWORD, TOWNSHIP_ID, form_for, valid_id_number

from city_hub import create_app
from city_hub.enrolment_service import create_token, proof_of_possession
from provisioning import nodes
from shared.core import canonical
from shared.core.clock import Clock, FixedClock, iso
from shared.core.crypto import SigningKey
from shared.core.storage import write_transaction
from shared.rules import states
from shared.rules.catalog import route
from shared.services import casework, feedback
from sync import envelope
from sync.outbox import GENESIS

VILLAGE = f"{TOWNSHIP_ID}201"  # the origin the cases name: enrolled at the hub, never running here


class ServiceHub:
    """A hub in a temporary folder, driven in-process."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        nodes.init_hub(self.data_dir, HUB_ID, "测试县政务服务中心")
        self.app = create_app({"DATA_DIR": str(self.data_dir), "SCHEDULER_ENABLED": False})
        self.client = self.app.test_client()
        self.node = self.app.extensions["liandong_node"]
        self.node_id = self.node.node_id
        self.conn = self.app.extensions["liandong_db"].connect(self.app)
        self.tokens: dict[str, str] = {}
        self.receipts = itertools.count(1)  # the village's 收件编号 of the day, as it numbers them
        self.chains: dict[str, tuple] = {}  # (seq, envelope id) of each sender's last envelope sent up
        self.keys = {node_id: self.enrol(node_id, name)
                     for node_id, name in ((TOWNSHIP_ID, "测试镇便民服务站"), (VILLAGE, "测试村便民服务室"))}

    def close(self) -> None:
        self.conn.close()

    def enrol(self, node_id: str, name: str) -> SigningKey:
        """Register ``node_id`` at the hub as its enrolment would (a one-time token, then the
        signed proof of its new key through ``POST /enrol/v1``); returns the node's key."""
        with write_transaction(self.conn):
            token = create_token(self.conn, node_id, name, None, timedelta(hours=1), self.node.now(), "test")
        key = SigningKey.generate()
        response = self.client.post("/enrol/v1", data=canonical.dumps(proof_of_possession(key, node_id, token)),
                                    headers={"Content-Type": "application/json"})
        assert response.status_code == 201, response.get_data(as_text=True)
        return key

    def account(self, username: str, role: str, office: str | None = None, display_name: str | None = None) -> str:
        """An account (created once) and its API token."""
        if username not in self.tokens:
            self.tokens[username] = nodes.add_account(self.data_dir, username, PASSWORD, role,
                                                      display_name or username, office)
        return self.tokens[username]

    def item(self, code: str) -> dict:
        return self.node.catalog(self.conn)[1][code]

    def submit_body(self, code: str, submitted_at: datetime | None = None, **form) -> dict:
        """A ``case.submit`` body of item ``code`` as the village sends it, with a file of every
        required material; taken at ``submitted_at`` (default: now)."""
        item = self.item(code)
        taken = submitted_at or self.node.now()
        return {
            "case_id": uuid.uuid4().hex, "receipt_no": f"{VILLAGE}-{taken:%Y%m%d}-{next(self.receipts):04d}",
            "item_code": code, "item_name": item["name"], "catalog_version": self.node.catalog(self.conn)[0],
            "limit_wd": item.get("promise_limit_wd", 0), "route": route(item, VILLAGE, HUB_ID),
            "applicant": {"name": "张三", "id_number": valid_id_number(), "phone": "13812345678"},
            "form": {**form_for(item), **form}, "agent": "agent", "submitted_at": iso(taken),
            "materials": [{"code": m["code"], "filename": f"{m['code']}.png", "sha256": uuid.uuid4().hex * 2,
                           "size": 1} for m in item["materials"] if m.get("required")],
            "event": casework.new_event(VILLAGE, "agent", "submit", None, "SUBMITTED", taken),
        }

    def received_case(self, code: str, submitted_at: datetime | None = None, **form) -> str:
        """A case of item ``code`` in the register, 接件 now (the hub's clock), with a file of every
        required material; taken at the village at ``submitted_at`` (default: now)."""
        body = self.submit_body(code, submitted_at, **form)
        with write_transaction(self.conn):
            casework.insert_received(self.conn, body, VILLAGE, HUB_ID, self.node.now())
        return body["case_id"]

    def from_village(self, kind: str, body: dict) -> None:
        """One envelope of the village (``case.event``, ``complaint``…), signed with its enrolled key
        and chained after its earlier ones, relayed by its township into the hub's real ingest and
        applied at once, as the hub's apply worker would (the hub's clock stamps both)."""
        self.from_village_all([(kind, body)])

    def from_village_all(self, messages: list[tuple[str, dict]], via: str = TOWNSHIP_ID,
                         origin: str = VILLAGE, held: dict | None = None) -> None:
        """:meth:`from_village` for several envelopes ``(kind, body)``: one push, then one apply
        chunk for all of them. ``via``: the node that pushes them (the village itself, if it
        bypassed its township); ``origin``: whose envelopes they are (the township's own);
        ``held``: the push's ``held`` member (when the township took them)."""
        documents = []
        for kind, body in messages:
            seq, prev = self.chains.get(origin, (0, GENESIS))
            documents.append(envelope.sign(self.keys[origin], envelope.ENVELOPE, {
                "v": 1, "origin": origin, "seq": seq + 1, "prev": prev,
                "hlc": f"{self.node.wall_ms():016d}-0000-{origin}", "kind": kind, "body": body, "attachments": []}))
            self.chains[origin] = (seq + 1, envelope.document_id(documents[-1]))
        hub_sync = self.app.extensions["liandong_sync"]
        with write_transaction(self.conn):
            result = hub_sync.ingestor(self.conn).ingest(documents, via=via, now=self.node.now(),
                                                         wall_ms=self.node.wall_ms(), held=held)
        assert [r["status"] for r in result.results] == ["accepted"] * len(documents), result.results
        hub_sync.apply_all(self.conn)

    def village_event(self, case_id: str, action: str, comment: str = "", detail: dict | None = None) -> dict:
        """A step the village takes on its case (送达…) at the hub's clock, sent up as its
        ``case.event`` (:meth:`from_village`)."""
        row = casework.get_row(self.conn, case_id)
        event = casework.new_event(VILLAGE, "agent", action, row["status"],
                                   states.apply_action(row["status"], action, comment), self.node.now(), comment,
                                   detail)
        self.from_village("case.event", {"case_id": case_id, "status": event["to_status"], "event": event,
                                         "decision": None, "documents": []})
        assert casework.get_row(self.conn, case_id)["status"] == event["to_status"], "the hub refused the step"
        return event

    def village_complaint(self, payload: dict) -> str:
        """A complaint taken at the village (checked and shaped as ``feedback.take_complaint`` does
        there), sent up as its ``complaint`` envelope; returns its id."""
        body = {"complaint_id": uuid.uuid4().hex, **feedback.validate_complaint(self.conn, payload),
                "taken_by": "agent", "taken_at": iso(self.node.now())}
        self.from_village("complaint", body)
        return body["complaint_id"]

    def fill(self, n: int, seed: int = 7) -> None:
        """~n cases of the village with a year of history in the register, generated and stored
        as ``benchmarks/bench_pages.py`` fills a hub (接件, 受理, 审查, decisions, 补正, 送达)."""
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
        from bench_pages import generate, store

        version = self.node.catalog(self.conn)[0]
        now = self.node.now()
        store(self.conn, self.node.blobs, generate(n, seed, VILLAGE, TOWNSHIP_ID, HUB_ID, version, now),
              VILLAGE, "hub", now)

    def act(self, token: str, case_id: str, **body):
        """``POST /api/v1/cases/<id>/actions`` through the test client."""
        return self.client.post(f"/api/v1/cases/{case_id}/actions", json=body,
                                headers={"Authorization": f"Bearer {token}"})

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        """A request to the hub's API through the test client (``json=``, ``query_string=``, ``data=``…)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def case(self, token: str, case_id: str) -> dict:
        response = self.client.get(f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def login(self, username: str):
        """A browser-like test client of its own (cookies), signed in as ``username``."""
        client = self.app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302 and "/login" not in response.headers["Location"], response.text[:300]
        return client

    def query(self, sql: str, params: tuple = ()) -> list:
        """Rows of a read-only query on the hub's database."""
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple = ()):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def days_later(self, days: int):
        """The hub's clock moved ``days`` ahead for what runs inside."""
        self.node.clock = FixedClock(Clock().now() + timedelta(days=days))
        try:
            yield
        finally:
            self.node.clock = Clock()
