"""A nearly full disk (issue 3 item 7): stop taking cases with a clear message before SQLite fails.

``DISK_RESERVE_BYTES`` larger than the free space of the node's file system is exactly what a
full disk looks like to the intake check; nothing of the refused case may be written.
"""

from __future__ import annotations

import pytest
from faults import city_item, material_files
from network import case_payload, form_for, valid_id_number

from shared.core.storage import free_bytes


def _footprint(handle) -> dict:
    blob_files = sorted(p.name for p in (handle.data_dir / "blobs").rglob("*") if p.is_file())
    return {
        "cases": handle.scalar("SELECT COUNT(*) FROM cases"),
        "outbox": handle.scalar("SELECT COUNT(*) FROM outbox"),
        "events": handle.scalar("SELECT COUNT(*) FROM case_events"),
        "blobs": handle.scalar("SELECT COUNT(*) FROM blobs"),
        "blob_files": blob_files,
        "outbox_seq": handle.scalar("SELECT value FROM node_meta WHERE key = 'outbox_seq'"),
    }


@pytest.mark.parametrize("tier", ["village", "township"])
def test_a_full_disk_refuses_new_cases_with_507_and_writes_nothing(build_network, tier):
    net = build_network(villages=1)
    handle = net.village() if tier == "village" else net.township
    agent = handle.account("agent", "agent")
    item = city_item(handle, agent)
    payload = case_payload(item, material_files(item, "disk"))
    before = _footprint(handle)

    handle.node.config["DISK_RESERVE_BYTES"] = free_bytes(handle.data_dir) + 10 * 1024 ** 3
    response = handle.api("POST", "/api/v1/cases", agent, json=payload)
    assert response.status_code == 507
    error = response.json()["error"]
    assert error["code"] == "disk_full"
    assert "磁盘空间不足" in error["message"]
    assert _footprint(handle) == before

    # Space freed: the same application is taken.
    handle.node.config["DISK_RESERVE_BYTES"] = 1024
    assert handle.api("POST", "/api/v1/cases", agent, json=payload).status_code == 201
    assert _footprint(handle)["cases"] == before["cases"] + 1


def test_the_form_shows_the_disk_full_page(build_network):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    before = _footprint(village)
    village.node.config["DISK_RESERVE_BYTES"] = free_bytes(village.data_dir) + 10 * 1024 ** 3
    form = {"applicant_name": "张三", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678"}
    form.update({f"form_{k}": v for k, v in form_for(item).items()})
    response = village.api("POST", f"/cases/new/{item['code']}", agent, data=form, headers={"Accept": "text/html"})
    assert response.status_code == 507
    assert "磁盘空间不足" in response.text
    assert _footprint(village) == before
