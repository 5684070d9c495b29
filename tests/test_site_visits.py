"""现场核查 over a real network: recorded at the township, it reaches the hub's and the
village's case history without changing the status; only the township above the case may
send it (a village's attempt is quarantined at the hub)."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from network import case_payload, catalog, sha256_hex
from network_session import session_for

from shared.core.storage import write_transaction
from shared.services import casework
from sync import outbox


def _png() -> bytes:
    """A valid 1×1 PNG (a site photo stand-in)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x33\x66\x99")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


@pytest.fixture(scope="module")
def villager(net):
    return net.village().account("agent", "agent", net.village().node_id)


@pytest.fixture(scope="module")
def clerk(net):
    return net.township.account("clerk", "clerk", net.township.node_id, "林业站王站长")


def _village_case(net, villager, code: str) -> str:
    item = next(i for i in catalog(net.village(), villager) if i["code"] == code)
    response = net.village().api("POST", "/api/v1/cases", villager, json=case_payload(item))
    assert response.status_code == 201, response.text
    net.sync_all()
    return response.json()["case_id"]


def _visit(**overrides) -> dict:
    body = {"inspectors": ["王林", "李森"], "visit_date": "2026-01-05", "result": "符合",
            "findings": "现场林木为杨树，权属清楚，四至与申请一致，蓄积约25立方米。"}
    body.update(overrides)
    return body


def _history(handle, token, case_id) -> list[dict]:
    response = handle.api("GET", f"/api/v1/cases/{case_id}", token)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_site_visit_at_the_township_reaches_the_hub_and_the_village(net, villager, clerk):
    # 林木采伐许可证核发: taken at the village, decided by the county 林业局, site visit by the township.
    case_id = _village_case(net, villager, "130926-LY-0001")
    assert net.township.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,)) == "RECEIVED"
    today = net.township.node.clock.today_cn().isoformat()

    one = net.township.api("POST", f"/api/v1/cases/{case_id}/site-visits", clerk, json=_visit(inspectors=["王林"],
                                                                                                   visit_date=today))
    assert one.status_code == 400 and one.json()["error"]["field"] == "inspectors"
    assert "两名以上" in one.json()["error"]["message"]
    bad_result = net.township.api("POST", f"/api/v1/cases/{case_id}/site-visits", clerk,
                                  json=_visit(result="合格", visit_date=today))
    assert bad_result.status_code == 400 and bad_result.json()["error"]["field"] == "result"

    photo = _png()
    response = net.township.api("POST", f"/api/v1/cases/{case_id}/site-visits", clerk, json=_visit(
        visit_date=today, photos=[{"filename": "现场.png", "content_base64": base64.b64encode(photo).decode()}]))
    assert response.status_code == 201, response.text
    event = response.json()["event"]
    assert event["action"] == "site_visit" and event["from_status"] == event["to_status"] == "RECEIVED"
    assert event["detail"]["inspectors"] == ["王林", "李森"] and event["detail"]["photos"][0]["sha256"] == sha256_hex(photo)

    net.sync_all()
    window = net.hub.account("w_ly", "chief", "130926-ly")
    at_hub = _history(net.hub, window, case_id)
    visits = [h for h in at_hub["history"] if h["action"] == "site_visit"]
    assert len(visits) == 1 and at_hub["status"] == "RECEIVED"
    assert visits[0]["node"] == net.township.node_id and visits[0]["action_label"] == "现场核查"
    assert visits[0]["detail"]["result"] == "符合" and "王林、李森" in visits[0]["comment"]
    # The photo travelled with the envelope and is shown at the hub.
    shown = net.hub.api("GET", f"/cases/{case_id}/site-visit/photos/{sha256_hex(photo)}", window)
    assert shown.status_code == 200 and shown.content == photo and shown.headers["Content-Type"] == "image/png"
    assert net.hub.scalar("SELECT COUNT(*) FROM quarantine") == 0

    # The village that took the case sees the visit in its history; its status is untouched.
    at_village = _history(net.village(), villager, case_id)
    assert [h["action"] for h in at_village["history"]].count("site_visit") == 1
    assert at_village["status"] == "RECEIVED"

    # The county decides afterwards, as usual; the visit stays in every history.
    token = net.hub.account("w_ly", "chief", "130926-ly")
    for action in ("accept", "approve"):
        r = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action, "comment": "符合"})
        assert r.status_code == 200, r.text
    net.sync_all()
    at_village = _history(net.village(), villager, case_id)
    assert at_village["status"] == "APPROVED" and "site_visit" in [h["action"] for h in at_village["history"]]


def test_the_township_form_records_a_visit(net, villager, clerk):
    case_id = _village_case(net, villager, "130926-LY-0001")
    s = session_for(net.township, "clerk")
    page = s.get(f"{net.township.url}/cases/{case_id}/site-visit", timeout=10)
    assert page.status_code == 200 and "登记现场核查" in page.text and "两名以上" in page.text
    assert case_id in s.get(f"{net.township.url}/site-visits", timeout=10).text
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    today = net.township.node.clock.today_cn().isoformat()
    form = {"csrf_token": token, "inspectors": "王林\n李森", "visit_date": today, "result": "需整改",
            "findings": "伐区界桩缺失，需补设后复核。"}
    r = s.post(f"{net.township.url}/cases/{case_id}/site-visit", data=form,
               files={"photos": ("现场.png", _png(), "image/png")}, timeout=10)
    assert r.status_code == 200 and "伐区界桩缺失" in r.text and "需整改" in r.text
    not_a_photo = s.post(f"{net.township.url}/cases/{case_id}/site-visit", data=form,
                         files={"photos": ("a.png", b"<script>x</script>", "image/png")}, timeout=10)
    assert not_a_photo.status_code == 400 and "现场照片" in not_a_photo.text
    net.sync_all()
    results = [h["detail"]["result"] for h in _history(net.hub, net.hub.account("w_ly", "chief", "130926-ly"),
                                                       case_id)["history"] if h["action"] == "site_visit"]
    assert results == ["需整改"]


def test_only_cases_in_the_area_and_only_the_township_clerk(net, villager, clerk):
    # 城乡居民养老保险参保登记: a county item without a site visit in its catalog entry.
    case_id = _village_case(net, villager, "130926-RS-0001")
    today = net.township.node.clock.today_cn().isoformat()
    r = net.township.api("POST", f"/api/v1/cases/{case_id}/site-visits", clerk, json=_visit(visit_date=today))
    assert r.status_code == 403
    ly_case = _village_case(net, villager, "130926-LY-0001")
    future = net.township.api("POST", f"/api/v1/cases/{ly_case}/site-visits", clerk, json=_visit(visit_date="2099-01-01"))
    assert future.status_code == 400 and future.json()["error"]["field"] == "visit_date"
    window = net.hub.account("w_ly", "chief", "130926-ly")
    at_hub = net.hub.api("POST", f"/api/v1/cases/{ly_case}/site-visits", window, json=_visit(visit_date=today))
    assert at_hub.status_code == 403
    at_village = net.village().api("POST", f"/api/v1/cases/{ly_case}/site-visits", villager, json=_visit(visit_date=today))
    assert at_village.status_code == 403


def test_a_village_cannot_send_a_site_visit(net, villager):
    case_id = _village_case(net, villager, "130926-LY-0001")
    village = net.village()
    node, conn = village.node, village.conn
    row = casework.get_row(conn, case_id)
    event = casework.new_event(node.node_id, "agent", "site_visit", row["status"], row["status"], node.now(),
                               "自行核查", {"inspectors": ["甲", "乙"], "result": "符合"})
    with write_transaction(conn):
        outbox.append(conn, node.key, node.node_id, "case.event", casework.update_message(row, event, None),
                      str(node.hlc.now()), node.now(), case_id=case_id)
    net.sync_all()
    reasons = {r["reason"] for r in net.hub.query("SELECT reason FROM quarantine WHERE origin = ?", (node.node_id,))}
    assert "invalid_content" in reasons
    assert net.hub.scalar("SELECT COUNT(*) FROM case_events WHERE case_id = ? AND action = 'site_visit'",
                          (case_id,)) == 0
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE state != 'acked'") == 0
