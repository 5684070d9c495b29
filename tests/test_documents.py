"""制式文书: numbered and signed at the deciding node, carried down with the decision, verified
offline from the QR text alone, and 送达 recorded at the village with its 送达回证."""

from __future__ import annotations

import base64
import re

import pytest
from network import catalog, create_case, pick_item
from network_session import session_for

from shared.core.crypto import SignatureError
from shared.services import documents
from sync import envelope


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=2)


@pytest.fixture(scope="module")
def decided(net):
    """A city case filed at village 1, accepted and approved at the hub, synced back."""
    village = net.village(0)
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    receipt = create_case(village, agent, item)
    net.sync_all()
    office = f"130926-{item['department_code']}"
    window = net.hub.account("window", "window", office)
    for action in ("accept", "approve"):
        r = net.hub.api("POST", f"/api/v1/cases/{receipt['case_id']}/actions", window,
                        json={"action": action, "comment": "符合条件"})
        assert r.status_code == 200, r.text
    return {"case_id": receipt["case_id"], "agent": agent, "window": window, "item": item}


def _docs(handle, case_id):
    return {envelope.peek(d)["kind"]: d for d in documents.for_case(handle.conn, case_id)}


def test_the_hub_numbers_and_signs_its_notices(net, decided):
    held = _docs(net.hub, decided["case_id"])
    assert {"accept", "approve"} <= held.keys()
    body = envelope.peek(held["approve"])
    assert re.fullmatch(r".+准字〔\d{4}〕第\d{4}号", body["number"])
    assert body["title"] == "准予许可决定书" and body["issuer"] == "130926"
    assert body["applicant_id"].count("*") == 8  # masked on paper
    assert documents.verify(held["approve"], net.hub.node.trust(net.hub.conn))["case_id"] == decided["case_id"]


def test_a_village_offline_since_the_decision_verifies_the_paper(net, decided):
    # Village 2 never received this decision; it has only the keys it trusts.
    other = net.village(1)
    agent2 = other.account("agent", "agent", other.node_id)
    signed = _docs(net.hub, decided["case_id"])["approve"]
    s = session_for(other, "agent")
    page = s.get(other.url + "/verify", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    ok = s.post(other.url + "/verify", data={"qr": documents.qr_text(signed), "csrf_token": token}, timeout=10)
    assert "核验通过" in ok.text and envelope.peek(signed)["number"] in ok.text
    assert documents.verification_code(signed) in ok.text
    assert agent2  # the account exists; verification needs a login like every page


def test_a_tampered_paper_fails_verification(net, decided):
    signed = _docs(net.hub, decided["case_id"])["approve"]
    body = envelope.peek(signed)
    forged = dict(signed)
    forged["payload"] = base64.b64encode(envelope.to_bytes({**body, "comment": "准予（伪造）"})).decode()
    trust = net.village(1).node.trust(net.village(1).conn)
    with pytest.raises(SignatureError):
        documents.verify(forged, trust)
    with pytest.raises(SignatureError):
        documents.from_qr_text(documents.qr_text(signed)[:-20])


def test_decision_documents_reach_the_village_and_print(net, decided):
    net.sync_all()
    village = net.village(0)
    held = _docs(village, decided["case_id"])
    assert {"receipt", "accept", "approve"} <= held.keys()
    doc_id = envelope.document_id(held["approve"])
    page = village.api("GET", f"/documents/{doc_id}", decided["agent"])
    assert page.status_code == 200
    assert "准予许可决定书" in page.text and "<svg" in page.text
    assert documents.verification_code(held["approve"]) in page.text


def test_delivery_at_the_village_concludes_the_case_everywhere(net, decided):
    village = net.village(0)
    s = session_for(village, "agent")
    page = s.get(f"{village.url}/cases/{decided['case_id']}", timeout=10).text
    assert "登记送达" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = s.post(f"{village.url}/cases/{decided['case_id']}/deliver", data={"comment": "本人领取", "csrf_token": token},
               timeout=10)
    assert r.status_code == 200
    assert village.api("GET", f"/api/v1/cases/{decided['case_id']}", decided["agent"]).json()["status"] == "CONCLUDED"
    assert "deliver" in _docs(village, decided["case_id"])
    net.sync_all()
    hub_case = net.hub.api("GET", f"/api/v1/cases/{decided['case_id']}", decided["window"]).json()
    assert hub_case["status"] == "CONCLUDED"
    assert "deliver" in _docs(net.hub, decided["case_id"])


def test_refusals_state_the_appeal_rights(net):
    village = net.village(0)
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    receipt = create_case(village, agent, item)
    net.sync_all()
    window = net.hub.account("window", "window", f"130926-{item['department_code']}")
    r = net.hub.api("POST", f"/api/v1/cases/{receipt['case_id']}/actions", window,
                    json={"action": "reject", "comment": "不属于本机关职权范围"})
    assert r.status_code == 200
    body = envelope.peek(_docs(net.hub, receipt["case_id"])["reject"])
    assert "行政复议" in body["rights"] and "行政诉讼" in body["rights"]
