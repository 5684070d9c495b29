"""The service tier of the tests: one real hub in-process, without a network.

The deciding node's rules (deemed acceptance, 容缺 expiry, 电子监察 cards, 延期…) need no
township or village: a real hub (``init_hub``: keys, database, signed catalog) serves its app
through Flask's test client, cases enter its register as the ingest would store them, and the
scheduled rules run on its own connection with a moved clock. What is about the network (sync,
custody, downlink) stays in the multi-node tests of ``tests/network.py``.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from network import HUB_ID, PASSWORD, form_for, valid_id_number

from city_hub import create_app
from provisioning import nodes
from shared.core.clock import Clock, FixedClock, iso
from shared.core.storage import write_transaction
from shared.rules.catalog import route
from shared.services import casework

VILLAGE = "130926100201"  # the origin the cases name (no such node runs here)


class ServiceHub:
    """A hub in a temporary folder, driven in-process."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        nodes.init_hub(self.data_dir, HUB_ID, "测试县政务服务中心")
        self.app = create_app({"DATA_DIR": str(self.data_dir), "SCHEDULER_ENABLED": False})
        self.client = self.app.test_client()
        self.node = self.app.extensions["liandong_node"]
        self.conn = self.app.extensions["liandong_db"].connect(self.app)
        self.tokens: dict[str, str] = {}

    def close(self) -> None:
        self.conn.close()

    def account(self, username: str, role: str, office: str | None = None) -> str:
        """An account (created once) and its API token."""
        if username not in self.tokens:
            self.tokens[username] = nodes.add_account(self.data_dir, username, PASSWORD, role, username, office)
        return self.tokens[username]

    def item(self, code: str) -> dict:
        return self.node.catalog(self.conn)[1][code]

    def received_case(self, code: str, **form) -> str:
        """A case of item ``code`` in the register, 接件 now, with a file of every required material."""
        item = self.item(code)
        now = self.node.now()
        case_id = uuid.uuid4().hex
        body = {
            "case_id": case_id, "receipt_no": f"{VILLAGE}-{now:%Y%m%d}-{case_id[:4]}", "item_code": code,
            "item_name": item["name"], "catalog_version": self.node.catalog(self.conn)[0],
            "limit_wd": item.get("promise_limit_wd", 0), "route": route(item, VILLAGE, HUB_ID),
            "applicant": {"name": "张三", "id_number": valid_id_number(), "phone": "13812345678"},
            "form": {**form_for(item), **form}, "agent": "agent", "submitted_at": iso(now),
            "materials": [{"code": m["code"], "filename": f"{m['code']}.png", "sha256": uuid.uuid4().hex * 2,
                           "size": 1} for m in item["materials"] if m.get("required")],
            "event": casework.new_event(VILLAGE, "agent", "submit", None, "SUBMITTED", now),
        }
        with write_transaction(self.conn):
            casework.insert_received(self.conn, body, VILLAGE, HUB_ID, now)
        return case_id

    def act(self, token: str, case_id: str, **body):
        """``POST /api/v1/cases/<id>/actions`` through the test client."""
        return self.client.post(f"/api/v1/cases/{case_id}/actions", json=body,
                                headers={"Authorization": f"Bearer {token}"})

    def case(self, token: str, case_id: str) -> dict:
        response = self.client.get(f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    @contextmanager
    def days_later(self, days: int):
        """The hub's clock moved ``days`` ahead for what runs inside."""
        self.node.clock = FixedClock(Clock().now() + timedelta(days=days))
        try:
            yield
        finally:
            self.node.clock = Clock()
