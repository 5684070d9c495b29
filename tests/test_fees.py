"""规范收费 (seed 002 §8): fees per catalog item with legal basis and standard, payments with 票据号,
exemptions and refunds with reasons, nothing above the standard, the daily report per office."""

from __future__ import annotations

import pytest
from network import catalog, create_case, csrf_token, login

from city_hub import hub_admin
from shared.core.errors import RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import fees as rules
from shared.rules.catalog import load_seed, validate_item

CHARGED = {"charged": True, "basis": "《测试收费依据》第一条", "standard_fen": 2000, "standard": "每卡20元"}


# ----------------------------------------------------------------------------- the rules


def test_free_items_say_so_with_their_basis():
    items = {i["code"]: i for i in load_seed()}
    licence = next(i for i in items.values() if i["item_type"] == "许可")
    terms = rules.fee_terms(licence)
    assert not terms["charged"] and "第五十八条" in terms["basis"] and terms["label"].startswith("不收费")
    assert rules.fee_terms(items["130926-RS-0001"])["label"] == "不收费"
    charged = rules.fee_terms({**licence, "fee": CHARGED})
    assert charged["standard_fen"] == 2000 and charged["label"] == "收费：每卡20元（依据：《测试收费依据》第一条）"


def test_a_charged_item_must_publish_its_standard():
    item = load_seed()[0]
    with pytest.raises(ValidationError) as err:
        validate_item({**item, "fee": {"charged": True, "basis": "某法"}})
    assert err.value.field == "fee.standard_fen"
    assert validate_item({**item, "fee": CHARGED})["fee"]["standard_fen"] == 2000
    assert "standard_fen" not in validate_item(item)["fee"]  # free items normalise as before


def test_amounts_in_yuan():
    assert rules.parse_yuan("12.5") == 1250 and rules.parse_yuan(" 20 ") == 2000 and rules.parse_yuan("0.01") == 1
    for bad in ("-1", "1.234", "abc", "", "1e3", None):
        with pytest.raises(ValidationError):
            rules.parse_yuan(bad)
    assert rules.yuan(1205) == "12.05"


def test_payments_stay_within_the_standard_and_refunds_need_a_reason():
    terms = rules.fee_terms({"fee": CHARGED})
    paid = [{"kind": "payment", "amount_fen": 1500, "record_id": "a", "payer": "张三"}]
    rules.check_payment(terms, paid, 500, "PJ-1", "张三")
    with pytest.raises(RuleError) as err:
        rules.check_payment(terms, paid, 501, "PJ-1", "张三")
    assert err.value.code == "amount_above_standard" and "5.00" in err.value.message
    with pytest.raises(RuleError):
        rules.check_payment(rules.fee_terms({"fee": {"charged": False, "basis": ""}}), [], 100, "PJ-1", "张三")
    with pytest.raises(ValidationError):
        rules.check_payment(terms, [], 100, "", "张三")  # no 票据号
    with pytest.raises(RuleError) as err:
        rules.check_exemption(terms, paid, "低保对象")
    assert err.value.code == "fee_paid"
    with pytest.raises(ValidationError):
        rules.check_refund(paid[0], False, "  ")
    with pytest.raises(RuleError):
        rules.check_refund(paid[0], True, "多收")
    refunded = paid + [rules.check_refund(paid[0], False, "多收")]
    assert rules.summary(refunded)["net_fen"] == 0


# ----------------------------------------------------------------------------- at the hub window (service tier)


def _publish_charged(hub) -> None:
    """Publish the seed catalog with 130926-RS-0004 charged at the standard of ``CHARGED``."""
    items = load_seed()
    for item in items:
        if item["code"] == "130926-RS-0004":
            item["fee"] = CHARGED
    with write_transaction(hub.conn):
        hub_admin.publish_catalog(hub.conn, hub.node, items, "test")


@pytest.fixture(scope="module")
def hub(service):
    """The in-process hub with the charged catalog published."""
    _publish_charged(service)
    return service


@pytest.fixture(scope="module")
def staff(hub):
    assert rules.fee_terms(hub.item("130926-RS-0004"))["charged"]
    return {"charged": "130926-RS-0004", "free": "130926-RS-0001",
            "window": hub.account("window", "window", "130926-rs"),
            "other": hub.account("other", "window", "130926-mz"),
            "supervisor": hub.account("supervisor", "supervisor", None, "电子监察员")}


def _received(hub, code: str) -> str:
    return hub.received_case(code)


def test_the_window_records_payments_refunds_and_the_daily_report(hub, staff):
    case_id = _received(hub, staff["charged"])
    url = f"/api/v1/cases/{case_id}/fees"
    terms = hub.api("GET", url, staff["window"]).json["terms"]
    assert terms["standard_fen"] == 2000 and terms["basis"] == CHARGED["basis"]

    paid = hub.api("POST", url, staff["window"],
                   json={"kind": "payment", "amount_fen": 2000, "receipt_no": "HB-0001", "payer": "张三"})
    assert paid.status_code == 201, paid.text
    above = hub.api("POST", url, staff["window"],
                    json={"kind": "payment", "amount_fen": 1, "receipt_no": "HB-0002", "payer": "张三"})
    assert above.status_code == 409 and above.json["error"]["code"] == "amount_above_standard"
    other = hub.api("POST", url, staff["other"],
                    json={"kind": "payment", "amount_fen": 1, "receipt_no": "HB-0003", "payer": "张三"})
    assert other.status_code == 403

    # A 票据号 is used once per office, also on another case.
    second = _received(hub, staff["charged"])
    reused = hub.api("POST", f"/api/v1/cases/{second}/fees", staff["window"],
                     json={"kind": "payment", "amount_fen": 100, "receipt_no": "HB-0001", "payer": "李四"})
    assert reused.status_code == 409 and reused.json["error"]["code"] == "receipt_no_used"

    record_id = paid.json["record_id"]
    no_reason = hub.api("POST", f"{url}/{record_id}/refund", staff["window"], json={"reason": ""})
    assert no_reason.status_code == 400
    refund = hub.api("POST", f"{url}/{record_id}/refund", staff["window"], json={"reason": "申请人撤回申请"})
    assert refund.status_code == 201 and refund.json["amount_fen"] == 2000
    again = hub.api("POST", f"{url}/{record_id}/refund", staff["window"], json={"reason": "重复"})
    assert again.status_code == 409 and again.json["error"]["code"] == "already_refunded"

    exempt = hub.api("POST", f"/api/v1/cases/{second}/fees", staff["window"],
                     json={"kind": "exemption", "reason": "低保对象，按规定免收"})
    assert exempt.status_code == 201, exempt.text
    case = hub.api("GET", f"/api/v1/cases/{case_id}", staff["window"]).json
    assert case["fees"]["paid_fen"] == 2000 and case["fees"]["net_fen"] == 0

    day = paid.json["day"]
    report = hub.api("GET", f"/api/v1/fees/daily?day={day}", staff["window"]).json
    assert report["office"] == "130926-rs" and report["summary"] == {
        "paid_fen": 2000, "refunded_fen": 2000, "net_fen": 0, "exempted": True}
    assert [r["kind"] for r in report["records"]] == ["payment", "refund", "exemption"]
    csv = hub.api("GET", f"/fees/daily.csv?day={day}", staff["window"])
    text = csv.data.decode("utf-8-sig")
    assert csv.headers["Content-Type"].startswith("text/csv") and "HB-0001" in text and "退费" in text
    assert hub.api("GET", f"/api/v1/fees/daily?day={day}", staff["supervisor"]).status_code == 400  # which office?
    assert hub.api("GET", f"/api/v1/fees/daily?day={day}&office=130926-rs", staff["supervisor"]).json["records"]
    assert hub.scalar("SELECT COUNT(*) FROM audit_log WHERE action LIKE 'fee.%' AND target = ?", (case_id,)) == 2


def test_a_free_item_cannot_be_charged(hub, staff):
    case_id = _received(hub, staff["free"])
    r = hub.api("POST", f"/api/v1/cases/{case_id}/fees", staff["window"],
                    json={"kind": "payment", "amount_fen": 100, "receipt_no": "HB-9", "payer": "张三"})
    assert r.status_code == 409 and r.json["error"]["code"] == "fee_not_charged" and "不收费" in r.json["error"]["message"]


# ----------------------------------------------------------------------------- pages, and the village's guide


@pytest.fixture(scope="module")
def net(build_network):
    net = build_network(villages=1)
    _publish_charged(net.hub)
    net.sync_all()
    return net


@pytest.fixture(scope="module")
def people(net):
    village, hub = net.village(), net.hub
    agent = village.account("agent", "agent", village.node_id)
    items = {i["code"]: i for i in catalog(village, agent)}
    assert items["130926-RS-0004"]["fee_terms"]["charged"]
    return {"agent": agent, "charged": items["130926-RS-0004"], "free": items["130926-RS-0001"],
            "window": hub.account("window", "window", "130926-rs")}


def _case(net, people, item) -> str:
    case_id = create_case(net.village(), people["agent"], item)["case_id"]
    net.sync_all()
    return case_id


def test_the_pages_show_terms_take_a_payment_and_refuse_an_amount_above_the_standard(net, people):
    hub = net.hub
    case_id = _case(net, people, people["charged"])
    s = login(hub, "window")
    page = s.get(f"{hub.url}/cases/{case_id}/fees", timeout=10)
    assert page.status_code == 200 and "每卡20元" in page.text and "登记收费" in page.text
    token = csrf_token(page.text)
    above = s.post(f"{hub.url}/cases/{case_id}/fees", timeout=10, data={
        "csrf_token": token, "kind": "payment", "amount": "20.01", "receipt_no": "PG-1", "payer": "王五"})
    assert "未能登记：收费金额超过目录公布的收费标准" in above.text
    done = s.post(f"{hub.url}/cases/{case_id}/fees", timeout=10, data={
        "csrf_token": token, "kind": "payment", "amount": "20", "receipt_no": "PG-1", "payer": "王五"})
    assert "已登记收费 20.00 元" in done.text
    assert "净收 20.00 元" in s.get(f"{hub.url}/cases/{case_id}", timeout=10).text
    assert "PG-1" in s.get(f"{hub.url}/fees/daily", timeout=10).text
    # The village's 办事指南 says whether an item is free.
    guide = net.village().api("GET", "/catalog/130926-RS-0001", people["agent"])
    assert guide.status_code == 200 and "不收费" in guide.text
