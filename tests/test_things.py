"""一件事一次办 and 证照联办 (seed 004 §7, §11): the rules, and one thing's journey over a real
network — one merged form at the village, linked cases, a later step started by the earlier
one's result, a refused first step ending the rest, a step decided at the township, one
progress and one notice back at the village."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from network import REQUIRED_SCAN, login, valid_id_number

from shared.core.errors import ValidationError
from shared.core.storage import write_transaction
from shared.rules import things as rules
from shared.rules.catalog import load_seed, required_materials, route
from shared.services import casework, intake, submission
from sync import outbox

ITEMS = {i["code"]: i for i in load_seed()}
NEWBORN, DISABLED, JOBLESS, BUSINESS = "130926-YJS-0001", "130926-YJS-0002", "130926-YJS-0003", "130926-ZZLB-0001"
THINGS = {t["code"]: t for t in rules.load_seed(ITEMS)}


# --- the pure rules --------------------------------------------------------------------------


def _raw(code=NEWBORN):
    return copy.deepcopy(THINGS[code])


@pytest.mark.parametrize("change, message", [
    (lambda t: t["steps"][0].update(after=["130926-YB-0001"]), "只能接续排在它前面的事项"),
    (lambda t: t["steps"][1].update(item="130926-XX-9999"), "不在目录中"),
    (lambda t: t["steps"][1].update(item="130926-LY-0002"), "咨询事项"),
    (lambda t: t["steps"].append({"item": "130926-GA-0001", "after": []}), "重复"),
    (lambda t: t.update(steps=t["steps"][:1]), "2至10个事项"),
    (lambda t: t.update(kind="套餐"), "类型必须是"),
])
def test_a_thing_is_refused_when_its_order_or_items_do_not_hold(change, message):
    raw = _raw()
    change(raw)
    with pytest.raises(ValidationError) as refused:
        rules.validate_thing(raw, ITEMS)
    assert message in refused.value.message and refused.value.code == "invalid_thing"


def test_a_field_two_items_define_differently_cannot_be_merged():
    items = copy.deepcopy(ITEMS)
    items["130926-RS-0004"]["fields"][0] = {"name": "address", "label": "户籍地址", "type": "select",
                                            "required": True, "options": ["甲", "乙"]}
    with pytest.raises(ValidationError) as refused:
        rules.validate_thing(_raw(), items)
    assert "合并表单无法只填一次" in refused.value.message


def test_the_merged_form_asks_each_shared_field_and_material_once():
    thing = THINGS[NEWBORN]
    fields = rules.merged_fields(thing, ITEMS)
    assert [f["name"] for f in fields].count("address") == 1
    address = next(f for f in fields if f["name"] == "address")
    assert len(address["used_by"]) == 3
    materials = rules.merged_materials(thing, ITEMS, {"newborn": "是", "minor": "是"}, required_materials)
    codes = [m["code"] for m in materials]
    assert len(codes) == len(set(codes)) and codes.count("id_card") == 1
    id_card = next(m for m in materials if m["code"] == "id_card")
    assert id_card["required"] and len(id_card["used_by"]) == 3


def test_a_material_an_earlier_steps_licence_provides_is_not_asked():
    thing = THINGS[BUSINESS]
    licence = next(m for m in rules.merged_materials(thing, ITEMS, {}, required_materials)
                   if m["code"] == "business_license")
    assert licence["from_step"] == "个体工商户登记"
    assert rules.from_earlier_step(thing, ITEMS, "130926-SCJG-0002") == {"business_license": "130926-SCJG-0001"}
    # Outside the thing the same item still asks for it.
    assert rules.from_earlier_step(THINGS[NEWBORN], ITEMS, "130926-RS-0004") == {}


@pytest.mark.parametrize("results, state", [
    ([rules.APPROVED], rules.START),
    ([rules.APPROVED, rules.OPEN], rules.WAIT),
    ([rules.OPEN, rules.REFUSED], rules.END),
    ([], rules.START),
])
def test_a_later_step_starts_waits_or_ends_by_its_predecessors(results, state):
    assert rules.step_state(results) == state


def test_result_and_overall_progress():
    assert rules.result_of("CONCLUDED", approved=True) == rules.APPROVED
    assert rules.result_of("CONCLUDED", approved=False) == rules.REFUSED
    assert rules.result_of("DENIED", approved=False) == rules.REFUSED
    assert rules.result_of("IN_REVIEW", approved=False) == rules.OPEN
    steps = [{"status": "APPROVED", "approved": True}, {"status": "SUBMITTED", "approved": False}]
    assert rules.overall(steps)[0] == "in_progress"
    steps[1] = {"status": "TERMINATED", "approved": False}
    assert rules.overall(steps) == ("partly_refused", "已办结（部分事项未获准予）")
    steps[1] = {"status": "CONCLUDED", "approved": True}
    assert rules.overall(steps)[0] == "done"


def test_every_seed_thing_holds():
    assert set(THINGS) == {NEWBORN, DISABLED, JOBLESS, BUSINESS}
    assert THINGS[BUSINESS]["kind"] == "证照联办"


# --- over a real network ---------------------------------------------------------------------


def _scan(code):
    return {"code": code, "filename": f"{code}.png", "content_base64": base64.b64encode(REQUIRED_SCAN).decode()}


def _payload(code, form=None, situation=None, skip=()):
    """A merged application: every field once, every material that must be attached once."""
    thing = THINGS[code]
    fields = {f["name"]: (f["options"][0] if f["type"] == "select" else "2026-11-20" if f["type"] == "date"
                          else "1" if f["type"] == "number" else "李四") for f in rules.merged_fields(thing, ITEMS)}
    answers = {s["code"]: s["options"][-1]["value"] for s in rules.merged_situations(thing, ITEMS)}
    answers.update(situation or {})
    materials = [_scan(m["code"]) for m in rules.merged_materials(thing, ITEMS, answers, required_materials)
                 if m["required"] and not m["from_step"] and m["code"] not in skip]
    return {"thing_code": code, "applicant": {"name": "李四", "id_number": valid_id_number(), "phone": "13812345678"},
            "form": {**fields, **(form or {})}, "situation": answers, "materials": materials,
            "entrustment": {"consent": True}}


def _hub(net, role, department):
    office = f"130926-{department}"
    return net.hub.account(f"{role}_{office}", role, office, f"{office}{role}")


def _act(net, case_id, department, *steps):
    for role, action in steps:
        r = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", _hub(net, role, department),
                        json={"action": action, "comment": "经审核符合规定" if action != "deny" else "材料不实"})
        assert r.status_code == 200, r.text


def _status(handle, case_id):
    return handle.scalar("SELECT status FROM cases WHERE case_id = ?", (case_id,))


@pytest.fixture(scope="module")
def newborn(net, agent):
    """新生儿出生一件事 taken at the village, offline: one application, three linked cases."""
    made = net.village().api("POST", "/api/v1/things", agent, json=_payload(NEWBORN))
    assert made.status_code == 201, made.text
    return made.json()


def test_one_application_makes_linked_cases_with_each_shared_file_once(net, newborn):
    village = net.village()
    assert [c["item_code"] for c in newborn["cases"]] == ["130926-GA-0001", "130926-YB-0001", "130926-RS-0004"]
    assert len({c["receipt_no"] for c in newborn["cases"]}) == 3
    ids = [c["case_id"] for c in newborn["cases"]]
    # 身份证 attached once, recorded for all three cases, stored once (content-addressed).
    shas = village.query("SELECT DISTINCT sha256 FROM case_materials WHERE code = 'id_card' AND case_id IN (?,?,?)",
                         tuple(ids))
    assert len(shas) == 1
    assert village.scalar("SELECT COUNT(*) FROM case_materials WHERE code = 'id_card' AND case_id IN (?,?,?)",
                          tuple(ids)) == 3
    # Each case carries only its own item's fields.
    form = village.scalar("SELECT form FROM cases WHERE case_id = ?", (ids[2],))
    assert "address" in form and "child_name" not in form
    # Taken offline: queued in the outbox, nothing waits on the network.
    assert village.scalar("SELECT COUNT(*) FROM outbox WHERE case_id IN (?,?,?)", tuple(ids)) == 3


def test_a_later_step_starts_only_when_the_earlier_one_is_approved(net, newborn):
    hukou, medical, card = (c["case_id"] for c in newborn["cases"])
    net.sync_all()
    assert _status(net.hub, hukou) == "RECEIVED"
    assert _status(net.hub, medical) == "SUBMITTED" and _status(net.hub, card) == "SUBMITTED"
    # Out of order: the waiting step cannot be accepted.
    early = net.hub.api("POST", f"/api/v1/cases/{medical}/actions", _hub(net, "window", "yb"),
                        json={"action": "accept"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "invalid_transition"
    # The village's acknowledgement does not make the waiting steps 已接件 either.
    assert _status(net.village(), medical) == "SUBMITTED"
    _act(net, hukou, "ga", ("window", "accept"), ("chief", "approve"))
    assert _status(net.hub, medical) == "RECEIVED" and _status(net.hub, card) == "SUBMITTED"
    started = net.hub.scalar("SELECT detail FROM case_events WHERE case_id = ? AND action = 'receive'", (medical,))
    assert json.loads(started)["thing_started"] is True
    _act(net, medical, "yb", ("window", "accept"), ("chief", "approve"))
    assert _status(net.hub, card) == "RECEIVED"
    net.sync_all()
    assert _status(net.village(), medical) == "APPROVED" and _status(net.village(), card) == "RECEIVED"


def test_the_village_sees_one_progress_and_prints_one_receipt_and_one_notice(net, agent, newborn):
    village = net.village()
    card = newborn["cases"][2]["case_id"]
    progress = village.api("GET", f"/api/v1/things/{newborn['thing_id']}", agent).json()
    assert progress["name"] == "新生儿出生一件事" and progress["overall"] == "in_progress"
    assert [s["status"] for s in progress["steps"]] == ["APPROVED", "APPROVED", "RECEIVED"]
    session = login(village, "agent")
    page = session.get(f"{village.url}/things/{newborn['thing_id']}", timeout=10).text
    assert "新生儿出生一件事 收件回执" in page and all(c["receipt_no"] in page for c in newborn["cases"])
    early = village.api("GET", f"/things/{newborn['thing_id']}/notice", agent, headers={"Accept": "text/html"})
    assert early.status_code == 400 and "尚有事项未办结" in early.text
    _act(net, card, "rs", ("window", "accept"), ("chief", "approve"))
    net.sync_all()
    assert village.api("GET", f"/api/v1/things/{newborn['thing_id']}", agent).json()["overall"] == "done"
    notice = session.get(f"{village.url}/things/{newborn['thing_id']}/notice", timeout=10)
    assert notice.status_code == 200 and "办结通知书" in notice.text and "核验码" in notice.text
    assert notice.text.count("准予") >= 3
    # The case page names its thing and the other steps.
    detail = session.get(f"{village.url}/cases/{card}", timeout=10).text
    assert "一件事：新生儿出生一件事" in detail


def test_a_refused_first_step_ends_the_steps_that_wait_for_it(net, agent):
    made = net.village().api("POST", "/api/v1/things", agent, json=_payload(DISABLED))
    assert made.status_code == 201, made.text
    first, subsidy, jobs = (c["case_id"] for c in made.json()["cases"])
    # 残疾人证 is provided by the first step: nobody uploads it, nothing is missing for it.
    assert all("残疾人证" not in m for c in made.json()["cases"][1:] for m in c["missing_materials"])
    net.sync_all()
    _act(net, first, "cl", ("window", "accept"), ("chief", "deny"))
    for case_id in (subsidy, jobs):
        assert _status(net.hub, case_id) == "TERMINATED"
        reason = net.hub.scalar("SELECT comment FROM case_events WHERE case_id = ? AND action = 'terminate'",
                                (case_id,))
        assert "「残疾人证新办」未获准予" in reason
    net.sync_all()
    progress = net.village().api("GET", f"/api/v1/things/{made.json()['thing_id']}", agent).json()
    assert progress["overall"] == "partly_refused"
    assert [s["status"] for s in progress["steps"]] == ["DENIED", "TERMINATED", "TERMINATED"]


def test_a_step_the_township_decides_starts_the_hubs_step(net, agent):
    made = net.village().api("POST", "/api/v1/things", agent, json=_payload(JOBLESS))
    assert made.status_code == 201, made.text
    registration, difficulty = (c["case_id"] for c in made.json()["cases"])
    net.sync_all()
    township = net.township
    assert _status(township, registration) == "RECEIVED"
    assert _status(net.hub, difficulty) == "SUBMITTED"
    clerk = township.account("clerk", "clerk", township.node_id)
    for action in ("accept", "approve"):
        r = township.api("POST", f"/api/v1/cases/{registration}/actions", clerk,
                         json={"action": action, "comment": "符合失业登记条件"})
        assert r.status_code == 200, r.text
    net.sync_all()
    assert _status(net.hub, difficulty) == "RECEIVED"


def test_a_village_cannot_skip_the_wait_by_filing_a_later_step_alone(net, agent):
    """The order comes from the hub's catalog: a later step sent with a thing link but without
    its earlier step waits at the hub, whatever the village put in its payload."""
    village = net.village()
    node, conn = village.node, village.conn
    lone = _payload(NEWBORN)
    app = intake.prepare(conn, node, {"item_code": "130926-RS-0004", "applicant": lone["applicant"],
                                      "form": {"address": "李家庄"}, "situation": {"minor": "否"}}, [], "agent")
    with write_transaction(conn):
        body = intake.record(conn, node, app, "agent", {"id": "ab" * 16, "code": NEWBORN})
    net.sync_all()
    assert _status(net.hub, body["case_id"]) == "SUBMITTED"


def test_a_malformed_thing_link_is_refused_by_the_hub(net, agent):
    """Refused at the origin already; a PC that signs one anyway gets it quarantined."""
    village = net.village()
    node, conn = village.node, village.conn
    app = intake.prepare(conn, node, {"item_code": "130926-RS-0004", "applicant": _payload(NEWBORN)["applicant"],
                                      "form": {"address": "李家庄"}, "situation": {"minor": "否"}}, [], "agent")
    with write_transaction(conn):  # a hostile PC signs what the intake service would refuse
        body, _ = casework.capture(conn, node_id=node.node_id, item=app.item, catalog_version=app.catalog_version,
                                   route=route(app.item, node.node_id, node.hub_id), applicant=app.applicant,
                                   form=app.form, materials=[], agent="agent", now=node.now())
        body["thing"] = {"id": "not-a-thing-id", "code": NEWBORN}
        # As a v2 envelope (what the hub derives left out), so the link is what it refuses.
        outbox.append(conn, node.key, node.node_id, "case.submit", submission.compact(body, node.node_id),
                      str(node.hlc.now()), node.now(), case_id=body["case_id"], version=2)
    net.sync_all()
    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (body["case_id"],)) == 0
    assert net.hub.scalar("SELECT COUNT(*) FROM quarantine WHERE reason = 'invalid_content'"
                          " AND detail LIKE '%一件事%'") >= 1


def test_the_merged_form_page_asks_each_shared_field_once_and_files_the_thing(net, agent):
    village = net.village()
    session = login(village, "agent")
    page = session.get(f"{village.url}/things/new/{NEWBORN}", timeout=10).text
    assert page.count('name="form_address"') == 1 and page.count('name="material_id_card"') == 1
    catalog = session.get(f"{village.url}/catalog", timeout=10).text
    assert "新生儿出生一件事" in catalog and "证照联办" not in catalog  # 个体工商户 is not taken at a village
    data = {"csrf_token": page.split('name="csrf_token" value="')[1].split('"')[0], "go": "submit",
            "applicant_name": "王五", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678",
            "entrust_consent": "yes", "situation_newborn": "是", "situation_subsidized": "否", "situation_minor": "是",
            "form_child_name": "王小五", "form_child_gender": "男", "form_birth_date": "2026-11-20",
            "form_address": "李家庄村"}
    files = [(f"material_{code}", (f"{code}.png", REQUIRED_SCAN, "image/png"))
             for code in ("birth_cert", "hukou", "id_card", "medical_form", "photo", "card_form", "guardian_id")]
    done = session.post(f"{village.url}/things/new/{NEWBORN}", data=data, files=files, timeout=30,
                        allow_redirects=False)
    assert done.status_code == 302, done.text
    thing_id = done.headers["Location"].split("/things/")[1].split("?")[0]
    progress = village.api("GET", f"/api/v1/things/{thing_id}", agent).json()
    assert len(progress["steps"]) == 3 and progress["applicant_name"] == "王五"


def test_a_thing_not_taken_here_or_bad_input_gets_a_clear_error(net, agent):
    village = net.village()
    refused = village.api("POST", "/api/v1/things", agent, json=_payload(BUSINESS))
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_accepted_here"
    unknown = village.api("POST", "/api/v1/things", agent, json={**_payload(NEWBORN), "thing_code": "X-0000"})
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "thing_code"
    bad_id = _payload(NEWBORN)
    bad_id["applicant"]["id_number"] = "130926198001011230"
    before = village.scalar("SELECT COUNT(*) FROM cases")
    refused = village.api("POST", "/api/v1/things", agent, json=bad_id)
    assert refused.status_code == 400 and village.scalar("SELECT COUNT(*) FROM cases") == before  # nothing half-filed
    missing = village.api("GET", "/api/v1/things/" + "cd" * 16, agent)
    assert missing.status_code == 404


def test_zhengzhao_lianban_at_the_township_window_uses_the_new_licence_without_a_copy(net):
    """证照联办: 营业执照 then 食品经营备案 — the 备案 starts when the licence is issued and is
    accepted without a copy of it (the licence the first step issued stands for it)."""
    township = net.township
    clerk = township.account("window_clerk", "clerk", township.node_id)
    made = township.api("POST", "/api/v1/things", clerk, json=_payload(BUSINESS))
    assert made.status_code == 201, made.text
    licence_case, filing = (c["case_id"] for c in made.json()["cases"])
    assert made.json()["cases"][1]["missing_materials"] == []  # 营业执照: 免提交, from step 1
    assert township.scalar("SELECT COUNT(*) FROM case_materials WHERE case_id = ? AND code = 'business_license'",
                           (filing,)) == 0
    net.sync_all()
    assert _status(net.hub, filing) == "SUBMITTED"
    _act(net, licence_case, "scjg", ("window", "accept"), ("chief", "approve"))
    assert net.hub.scalar("SELECT COUNT(*) FROM licences WHERE case_id = ?", (licence_case,)) == 1
    assert _status(net.hub, filing) == "RECEIVED"
    _act(net, filing, "scjg", ("window", "accept"), ("chief", "approve"))
    net.sync_all()
    progress = township.api("GET", f"/api/v1/things/{made.json()['thing_id']}", clerk).json()
    assert progress["overall"] == "done" and progress["kind"] == "证照联办"


def test_another_nodes_cases_never_count_as_a_steps_predecessors(net, newborn):
    """A case that names another origin's thing id waits: the earlier steps must come from the
    same origin (here the township window borrows the village's approved thing)."""
    township = net.township
    node, conn = township.node, township.conn
    app = intake.prepare(conn, node, {"item_code": "130926-RS-0004", "applicant": _payload(NEWBORN)["applicant"],
                                      "form": {"address": "李家庄"}, "situation": {"minor": "否"}}, [], "clerk")
    with write_transaction(conn):
        body = intake.record(conn, node, app, "clerk", {"id": newborn["thing_id"], "code": NEWBORN})
    net.sync_all()
    assert _status(net.hub, newborn["cases"][1]["case_id"]) in ("APPROVED", "CONCLUDED")
    assert _status(net.hub, body["case_id"]) == "SUBMITTED"


def test_a_hub_decision_the_township_follows_starts_the_townships_step(build_network):
    """The other direction: step 1 decided at the hub, step 2 delegated to the township. The
    township starts its step when it follows the hub's 准予 down to its village. (No seed thing
    has this order, so the hub publishes one: a catalog's own ``things``.)"""
    from city_hub import hub_admin  # noqa: PLC0415 - a test of the hub's publishing path

    net = build_network(villages=1)
    hub, township, village = net.hub, net.township, net.village()
    items = load_seed()
    raw = {"code": "130926-YJS-0099", "name": "高龄困难老人救助一件事", "kind": "一件事",
           "steps": [{"item": "130926-MZ-0004", "after": []}, {"item": "130926-MZ-0003", "after": ["130926-MZ-0004"]}]}
    things = rules.validate_things([raw], {i["code"]: i for i in items})
    with write_transaction(hub.conn):
        hub_admin.publish_catalog(hub.conn, hub.node, items, "test", [*THINGS.values(), *things])
    net.sync_all()
    agent = village.account("agent", "agent", village.node_id)
    made = village.api("POST", "/api/v1/things", agent, json={
        **_payload(NEWBORN), "thing_code": "130926-YJS-0099",
        "form": {"address": "李家庄", "age": 85, "local_hukou": "是", "hardship": "因病", "amount_requested": 2000},
        "situation": {"cause": "其他"},
        "materials": [_scan(c) for c in ("id_card", "hukou", "bank_card", "relief_application")]})
    assert made.status_code == 201, made.text
    allowance, relief = (c["case_id"] for c in made.json()["cases"])
    net.sync_all()
    # 高龄津贴 at 85 with local 户籍 is 秒批: approved the moment the hub holds it; the township
    # follows that decision down to its village and starts 临时救助 at once.
    assert _status(net.hub, allowance) == "APPROVED"
    net.sync_all()
    assert _status(township, relief) == "RECEIVED"
    assert json.loads(township.scalar(
        "SELECT detail FROM case_events WHERE case_id = ? AND action = 'receive'", (relief,)))["thing_started"] is True
    # The hub did not take the waiting step as 接件 when the township forwarded it (a later step
    # is no 接件 at custody, authority.received_at_custody): its 接件 is the township's own.
    net.sync_all()
    assert json.loads(hub.scalar(
        "SELECT detail FROM case_events WHERE case_id = ? AND action = 'receive'", (relief,))) == {"thing_started": True}
