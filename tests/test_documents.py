"""制式文书: numbered and signed at the deciding node, carried down with the decision, verified
offline from the QR text alone, and 送达 recorded at the village with its 送达回证."""

from __future__ import annotations

import base64
import re

import pytest
from network import catalog, create_case, pick_item
from network_session import session_for

from shared.core.crypto import SignatureError
from shared.services import document_token, documents
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
    window = net.hub.account("window", "chief", office)
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
    assert body["title"] == documents.title_for("approve", decided["item"]["item_type"]) and body["issuer"] == "130926"
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
    ok = s.post(other.url + "/verify", data={"record": documents.record_text(signed), "csrf_token": token}, timeout=10)
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
        documents.from_record_text(documents.record_text(signed)[:-20])


def test_decision_documents_reach_the_village_and_print(net, decided):
    net.sync_all()
    village = net.village(0)
    held = _docs(village, decided["case_id"])
    assert {"receipt", "accept", "approve"} <= held.keys()
    doc_id = envelope.document_id(held["approve"])
    page = village.api("GET", f"/documents/{doc_id}", decided["agent"])
    assert page.status_code == 200
    assert envelope.peek(held["approve"])["title"] in page.text and "<svg" in page.text
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
    window = net.hub.account("window", "chief", f"130926-{item['department_code']}")
    r = net.hub.api("POST", f"/api/v1/cases/{receipt['case_id']}/actions", window,
                    json={"action": "reject", "comment": "不属于本机关职权范围"})
    assert r.status_code == 200
    body = envelope.peek(_docs(net.hub, receipt["case_id"])["reject"])
    assert "行政复议" in body["rights"] and "行政诉讼" in body["rights"]


# --- The compact token in the QR code, and the 核验码 -----------------------------------------


def _verify_api(handle, account, **fields):
    return handle.api("POST", "/api/v1/documents/verify", account, json=fields)


def test_every_document_carries_a_short_alphanumeric_token(net, decided):
    import segno

    for kind, signed in _docs(net.hub, decided["case_id"]).items():
        token = documents.qr_text(signed)
        assert token and len(token) <= 200, (kind, token)
        assert segno.make(token, error="m").mode == "alphanumeric"
        assert token.split(".")[-1][:16] == documents.verification_code(signed).replace("-", "")


def test_the_token_verifies_at_a_village_that_never_received_the_decision(net, decided):
    other = net.village(1)
    agent2 = other.account("agent", "agent", other.node_id)
    signed = _docs(net.hub, decided["case_id"])["approve"]
    assert other.conn.execute("SELECT 1 FROM documents WHERE case_id = ?", (decided["case_id"],)).fetchone() is None
    r = _verify_api(other, agent2, token=documents.qr_text(signed))
    assert r.status_code == 200, r.text
    answer = r.json()
    body = envelope.peek(signed)
    assert answer["valid"] and answer["method"] == "token" and not answer["held"] and answer["document"] is None
    assert answer["token"]["kind"] == "approve" and answer["token"]["issuer"] == "130926"
    assert body["number"].endswith(answer["token"]["number_tail"][1:])  # 准字〔YYYY〕第NNNN号
    assert answer["code"] == documents.verification_code(signed)
    # The page says the same in Chinese.
    s = session_for(other, "agent")
    page = s.get(other.url + "/verify", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    ok = s.post(other.url + "/verify", data={"qr": documents.qr_text(signed), "csrf_token": csrf}, timeout=10).text
    assert "核验通过：准予决定" in ok and answer["token"]["number_tail"] in ok and "本节点未保存该文书全文" in ok


def test_a_node_holding_the_record_shows_it_for_the_token_and_the_code(net, decided):
    net.sync_all()
    village = net.village(0)
    signed = _docs(village, decided["case_id"])["approve"]
    answer = _verify_api(village, decided["agent"], token=documents.qr_text(signed)).json()
    assert answer["held"] and answer["document"]["number"] == envelope.peek(signed)["number"]
    code = documents.verification_code(signed)
    typed = code.replace("-", " ").lower().replace("o", "0").replace("i", "1")  # as a person types it
    by_code = _verify_api(village, decided["agent"], code=typed)
    assert by_code.status_code == 200, by_code.text
    assert by_code.json()["method"] == "code" and by_code.json()["document"]["case_id"] == decided["case_id"]
    record = _verify_api(village, decided["agent"], record=documents.record_text(signed)).json()
    assert record["method"] == "record" and record["code"] == code
    as_object = _verify_api(village, decided["agent"], record=signed).json()  # the record's JSON itself
    assert as_object["method"] == "record" and as_object["document"]["case_id"] == decided["case_id"]


def test_an_unknown_code_is_refused_with_advice(net, decided):
    other = net.village(1)
    agent2 = other.account("agent", "agent", other.node_id)
    signed = _docs(net.hub, decided["case_id"])["approve"]
    r = _verify_api(other, agent2, code=documents.verification_code(signed))
    assert r.status_code == 409 and r.json()["error"]["code"] == "document_not_verified"
    assert "请扫描文书上的二维码" in r.json()["error"]["message"]
    bad = _verify_api(other, agent2, code="ABC")
    assert bad.status_code == 409 and "16位" in bad.json()["error"]["message"]
    assert _verify_api(other, agent2, token=123).status_code == 400


def _reblock(token: str, raw: bytes) -> str:
    return token[:token.rindex(".") + 1] + base64.b32encode(raw).decode().rstrip("=")


def test_a_changed_token_is_refused(net, decided):
    other = net.village(1)
    agent2 = other.account("agent", "agent", other.node_id)
    token = documents.qr_text(_docs(net.hub, decided["case_id"])["approve"])
    parts = token.split(".")
    later = ".".join(parts[:5] + [str(int(parts[5]) + 1)] + parts[6:])  # another 文号
    raw = bytearray(base64.b32decode(parts[-1] + "=" * (-len(parts[-1]) % 8)))
    raw[0] ^= 1  # another digest
    for forged in (later, _reblock(token, bytes(raw)), token.replace(".AP.", ".DN.")):
        r = _verify_api(other, agent2, token=forged)
        assert r.status_code == 409, forged
        assert r.json()["error"]["code"] == "document_not_verified"
    assert "已损坏" in _verify_api(other, agent2, token=token[:-5]).json()["error"]["message"]
    # The last base32 character carries 1 bit and 4 unused ones: another text of the same bytes is refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    other_text = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert base64.b32decode(other_text.split(".")[-1] + "===") == base64.b32decode(token.split(".")[-1] + "===")
    assert _verify_api(other, agent2, token=other_text).status_code == 409


def test_a_village_key_cannot_sign_a_decision_token(net, decided):
    """A village (or a stolen village PC) signs only receipts and 送达回证, in tokens as in records."""
    village = net.village(0)
    signed = _docs(net.hub, decided["case_id"])["approve"]
    body = envelope.peek(signed)
    forged = document_token.make(village.node.key, doc_id=envelope.document_id(signed), issuer=village.node_id,
                                 office=body["office"], kind="approve", issued_on="2026-12-01", seq=1)
    trust = net.village(1).node.trust(net.village(1).conn)
    with pytest.raises(SignatureError, match="村便民服务室无权签发"):
        document_token.verify_token(document_token.parse(forged), trust)
    # Claiming the hub as issuer does not help: the village key is not a hub key.
    as_hub = document_token.make(village.node.key, doc_id=envelope.document_id(signed), issuer="130926",
                                 office=body["office"], kind="approve", issued_on="2026-12-01", seq=1)
    with pytest.raises(SignatureError, match="没有与二维码相符的密钥"):
        document_token.verify_token(document_token.parse(as_hub), trust)


def test_a_token_that_names_another_record_than_the_one_held_is_refused(net, decided):
    net.sync_all()
    village = net.village(0)
    held = _docs(village, decided["case_id"])
    accept_token = document_token.parse(documents.qr_text(held["accept"]))
    approve = held["approve"]
    # A hub-signed token pointing at the 准予 record but stating the 受理 number: genuine signature,
    # wrong pairing. Only the hub could sign it; the check still catches a mismatch.
    hub_key = net.hub.node.key
    mixed = document_token.make(hub_key, doc_id=envelope.document_id(approve), issuer="130926",
                                office=accept_token.office, kind="accept", issued_on=accept_token.date,
                                seq=accept_token.seq)
    r = _verify_api(village, decided["agent"], token=mixed)
    assert r.status_code == 409 and "不一致" in r.json()["error"]["message"]


def test_a_township_decision_token_verifies_at_the_hub_and_another_village(net):
    """Townships sign the decisions on items delegated to them: the token names the township as
    issuer and office, and verifies with its registry key at nodes that never saw the case."""
    village, township = net.village(0), net.township
    agent = village.account("agent", "agent", village.node_id)
    clerk = township.account("clerk", "clerk", township.node_id)
    item = pick_item(catalog(village, agent), "township")
    case_id = create_case(village, agent, item)["case_id"]
    village.sync()
    for action in ("accept", "approve"):
        r = township.api("POST", f"/api/v1/cases/{case_id}/actions", clerk, json={"action": action, "comment": "符合条件"})
        assert r.status_code == 200, r.text
    signed = _docs(township, case_id)["approve"]
    token = document_token.parse(documents.qr_text(signed))
    assert token.issuer == token.office == township.node_id
    other = net.village(1)
    answer = _verify_api(other, other.account("agent", "agent", other.node_id), token=documents.qr_text(signed))
    assert answer.status_code == 200 and answer.json()["token"]["issuer_name"], answer.text
    window = net.hub.account("window", "chief", "130926-mz")
    assert _verify_api(net.hub, window, token=documents.qr_text(signed)).status_code == 200
    # The same key cannot speak for a city office.
    forged = document_token.make(township.node.key, doc_id=envelope.document_id(signed), issuer=township.node_id,
                                 office="130926-mz", kind="approve", issued_on=token.date, seq=token.seq)
    r = _verify_api(other, other.account("agent", "agent", other.node_id), token=forged)
    assert r.status_code == 409 and "本乡镇审批事项" in r.json()["error"]["message"]


def test_a_document_stored_as_signed_or_verified_is_the_row_the_long_way_writes(net, decided):
    """``store(known=...)`` (the body and id the issuer signed, or the receiver verified) writes
    exactly the row that parsing and hashing the document again writes."""
    columns = "doc_id, case_id, kind, number, code, issuer, document, issued_at"
    for handle in (net.hub, net.village(0)):
        rows = handle.query(f"SELECT {columns} FROM documents WHERE case_id = ?", (decided["case_id"],))
        assert rows
        for row in rows:
            signed = envelope.from_bytes(row["document"])
            body, doc_id = documents.checked_for_case(signed, handle.node.trust(handle.conn), decided["case_id"],
                                                      envelope.peek(signed)["office"])
            assert doc_id == row["doc_id"] == envelope.document_id(signed) and body == envelope.peek(signed)
            assert row["code"] == documents.verification_code(signed)
            handle.conn.execute("SAVEPOINT again")
            try:
                handle.conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                documents.store(handle.conn, signed, known=(body, doc_id))
                again = handle.conn.execute(f"SELECT {columns} FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            finally:
                handle.conn.execute("ROLLBACK TO again")
                handle.conn.execute("RELEASE again")
            assert tuple(again) == tuple(row)
