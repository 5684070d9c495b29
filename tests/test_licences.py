"""电子证照 (seed 004 §10 两个免于提交): issued with the decision, verified offline by its QR token,
cited instead of a copy, expiring and revoked — the rules and a real network."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from network import case_payload, catalog, create_case, form_for, valid_id_number

from shared.core.clock import Clock, FixedClock
from shared.core.errors import RuleError
from shared.rules import licences as rules
from shared.services import documents
from sync import envelope

# --- the pure rules --------------------------------------------------------------------------


def test_a_licence_is_bound_to_the_enterprise_when_the_form_has_its_credit_code():
    assert rules.holder_of({"credit_code": "91130926ma0c12345x"}, "x")["kind"] == "统一社会信用代码"
    assert rules.holder_of({}, "13092619800101123x") == {"kind": "身份证号", "id": "13092619800101123X"}


def test_validity_and_status():
    assert rules.valid_until(date(2026, 3, 1), 10) == "2036-02-29"
    assert rules.valid_until(date(2028, 2, 29), 1) == "2029-02-27"
    assert rules.valid_until(date(2026, 3, 1), None) is None
    assert rules.status("2026-12-31", None, date(2027, 1, 1)) == "expired"
    assert rules.status(None, "2026-05-01T00:00:00Z", date(2026, 1, 1)) == "revoked"
    assert rules.status(None, None, date(2099, 1, 1)) == "valid"


def _record(number="X证字〔2026〕第0001号", holder="13092619800101123X", until=None, item="130926-CL-0001"):
    return {"number": number, "item_code": item,
            "licence": {"holder_digest": rules.holder_digest(number, holder), "valid_until": until}}


@pytest.mark.parametrize("record, kwargs, code", [
    (_record(), {"revoked_at": "2026-05-01", "revoke_reason": "伪造材料"}, "licence_revoked"),
    (_record(until="2026-01-01"), {}, "licence_expired"),
    (_record(item="130926-LY-0001"), {}, "licence_wrong_kind"),
    (_record(holder="130926198001011230"), {}, "licence_holder_mismatch"),
])
def test_a_cited_licence_is_refused_when_revoked_expired_of_another_kind_or_holder(record, kwargs, code):
    with pytest.raises(RuleError) as refused:
        rules.check_usable(record, licence_of="130926-CL-0001", holder_id="13092619800101123X",
                           **{"revoked_at": None, "revoke_reason": None, **kwargs}, today=date(2026, 6, 1))
    assert refused.value.code == code


def test_only_a_material_that_names_a_licence_may_be_replaced_by_one():
    assert rules.check_citable({"name": "残疾人证", "licence_of": "130926-CL-0001"}, "disability_card") == "130926-CL-0001"
    with pytest.raises(RuleError) as refused:
        rules.check_citable({"name": "居民身份证"}, "id_card")
    assert refused.value.code == "licence_not_accepted"


# --- over a real network ---------------------------------------------------------------------


# The module's network and village agent are conftest's defaults (net, agent).


def _items(net, agent):
    return {i["code"]: i for i in catalog(net.village(), agent)}


def _hub(net, role, office="130926-cl"):
    return net.hub.account(f"{role}_{office}", role, office, f"{office}{role}")


@pytest.fixture(scope="module")
def licence(net, agent):
    """A 残疾人证 decided at the hub: its licence reaches the village with the decision."""
    item = _items(net, agent)["130926-CL-0001"]
    case_id = create_case(net.village(), agent, item)["case_id"]
    net.sync_all()
    for role, action in (("window", "accept"), ("chief", "approve")):
        r = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", _hub(net, role),
                        json={"action": action, "comment": "经评定为肢体残疾三级"})
        assert r.status_code == 200, r.text
    net.sync_all()
    held = {envelope.peek(d)["kind"]: d for d in documents.for_case(net.village().conn, case_id)}
    assert "licence" in held
    return {"case_id": case_id, "signed": held["licence"], "token": documents.qr_text(held["licence"])}


def test_the_decision_issues_a_signed_licence_bound_to_its_holder(net, licence):
    body = envelope.peek(licence["signed"])
    assert body["title"] == "中华人民共和国残疾人证" and body["item_code"] == "130926-CL-0001"
    lic = body["licence"]
    assert lic["holder_kind"] == "身份证号" and "*" in lic["holder_masked"]
    assert lic["holder_digest"] == rules.holder_digest(body["number"], valid_id_number())
    assert lic["valid_until"] and lic["scope"] == "经评定为肢体残疾三级"
    assert body["issuer"] == "130926" and body["office"] == "130926-cl"
    # The hub keeps the holder's licences.
    found = net.hub.api("GET", f"/api/v1/licences?holder={valid_id_number()}", _hub(net, "head")).json()["licences"]
    assert [f["number"] for f in found] == [body["number"]] and found[0]["status"] == "valid"
    # The printed licence verifies by its QR token at the village, offline.
    checked = net.village().api("POST", "/api/v1/documents/verify", net.village().tokens["agent"],
                                json={"token": licence["token"]})
    assert checked.status_code == 200 and checked.json()["token"]["kind"] == "licence"


def test_a_later_application_cites_the_licence_instead_of_a_copy(net, agent, licence):
    item = _items(net, agent)["130926-MZ-0005"]
    payload = case_payload(item, cited_licences=[{"material": "disability_card", "token": licence["token"]}])
    receipt = net.village().api("POST", "/api/v1/cases", agent, json=payload)
    assert receipt.status_code == 201, receipt.text
    assert "第二代中华人民共和国残疾人证" not in receipt.json()["missing_materials"]
    net.sync_all()
    seen = net.hub.api("GET", f"/api/v1/cases/{receipt.json()['case_id']}", _hub(net, "chief", "130926-mz")).json()
    [cited] = seen["cited_licences"]
    assert cited["state"] == "verified" and cited["material"] == "disability_card"
    page = net.hub.api("GET", f"/cases/{receipt.json()['case_id']}", _hub(net, "chief", "130926-mz")).text
    assert "免提交：电子证照" in page and "已核验" in page


def test_the_village_form_takes_the_licence_qr_instead_of_a_scan(net, agent, licence):
    item = _items(net, agent)["130926-MZ-0005"]
    form = {"applicant_name": "张三", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
            "entrust_consent": "yes", "licence_disability_card": licence["token"]}
    form.update({f"form_{k}": v for k, v in form_for(item).items()})
    response = net.village().api("POST", f"/cases/new/{item['code']}", agent, data=form,
                                 headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status_code == 302, response.text
    case_id = response.headers["Location"].split("/cases/")[1].split("/")[0]
    detail = net.village().scalar("SELECT detail FROM case_events WHERE case_id = ? AND action = 'submit'", (case_id,))
    assert '"cited_licences"' in detail and '"disability_card"' in detail


def test_a_citation_is_refused_for_another_holder_or_a_material_no_licence_replaces(net, agent, licence):
    item = _items(net, agent)["130926-MZ-0005"]
    other = case_payload(item, cited_licences=[{"material": "disability_card", "token": licence["token"]}])
    other["applicant"]["id_number"] = valid_id_number("13092619900202123")
    refused = net.village().api("POST", "/api/v1/cases", agent, json=other)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "licence_holder_mismatch"
    wrong = case_payload(item, cited_licences=[{"material": "id_card", "token": licence["token"]}])
    refused = net.village().api("POST", "/api/v1/cases", agent, json=wrong)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "licence_not_accepted"
    forged = case_payload(item, cited_licences=[{"material": "disability_card", "token": licence["token"][:-3] + "AAA"}])
    refused = net.village().api("POST", "/api/v1/cases", agent, json=forged)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "licence_invalid"


def test_an_expired_licence_cannot_be_cited(net, agent, licence):
    village = net.village().node
    village.clock = FixedClock(village.now() + timedelta(days=366 * 11))
    try:
        item = _items(net, agent)["130926-MZ-0005"]
        payload = case_payload(item, cited_licences=[{"material": "disability_card", "token": licence["token"]}])
        refused = net.village().api("POST", "/api/v1/cases", agent, json=payload)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "licence_expired"
    finally:
        village.clock = Clock()


def test_a_revoked_licence_no_longer_verifies_at_the_hub_nor_the_village(net, agent, licence):
    doc_id = envelope.document_id(licence["signed"])
    assert net.hub.api("POST", f"/api/v1/licences/{doc_id}/revoke", _hub(net, "chief"),
                       json={"reason": "x"}).status_code == 403  # the head revokes
    no_reason = net.hub.api("POST", f"/api/v1/licences/{doc_id}/revoke", _hub(net, "head"), json={"reason": " "})
    assert no_reason.status_code == 409 and no_reason.json()["error"]["code"] == "reason_required"
    done = net.hub.api("POST", f"/api/v1/licences/{doc_id}/revoke", _hub(net, "head"), json={"reason": "评定结论撤销"})
    assert done.status_code == 200, done.text
    at_hub = net.hub.api("POST", "/api/v1/documents/verify", _hub(net, "head"), json={"token": licence["token"]})
    assert at_hub.status_code == 409 and "吊销" in at_hub.json()["error"]["message"]
    net.sync_all()
    at_village = net.village().api("POST", "/api/v1/documents/verify", net.village().tokens["agent"],
                                   json={"token": licence["token"]})
    assert at_village.status_code == 409 and "吊销" in at_village.json()["error"]["message"]
    item = _items(net, agent)["130926-MZ-0005"]
    payload = case_payload(item, cited_licences=[{"material": "disability_card", "token": licence["token"]}])
    refused = net.village().api("POST", "/api/v1/cases", agent, json=payload)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "licence_invalid"
    found = net.hub.api("GET", f"/api/v1/licences?holder={valid_id_number()}", _hub(net, "head")).json()["licences"]
    assert found[0]["status"] == "revoked" and found[0]["revoke_reason"] == "评定结论撤销"
