"""项目代办 at the hub (the service tier, ``tests/service.py``): a county project agent files and links
an enterprise's cases, and the project page shows each case's deadline and what blocks it, with
the overall state; only the hub has projects (a real network shows the village has none)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from network import valid_id_number

from city_hub.projects import credit_check_char, validate_credit_code
from shared.core.clock import Clock, FixedClock
from shared.core.errors import ValidationError

# Published codes of real enterprises (check characters computed by their registries).
REAL_CODES = ("91350100M000100Y43", "911100001000079554", "91110000802100433B")


def credit_code(first17: str = "91130926MA0C12345") -> str:
    return first17 + credit_check_char(first17)


def test_credit_codes_of_real_enterprises_validate():
    for code in REAL_CODES:
        assert validate_credit_code(code) == code
        assert credit_check_char(code[:17]) == code[17]
    assert validate_credit_code(" 91350100m000100y43 ") == "91350100M000100Y43"


@pytest.mark.parametrize("value, message", [
    ("91350100M000100Y44", "校验位"),  # wrong check character
    ("91350100M000100Y4", "18位"),
    ("91350100M00010OY43", "不允许的字符"),  # O is not used
    ("9135010AM000100Y43", "不允许的字符"),  # the 行政区划 part is digits
    ("", "请填写"),
    (None, "请填写"),
])
def test_invalid_credit_codes_are_refused_naming_the_field(value, message):
    with pytest.raises(ValidationError) as exc:
        validate_credit_code(value)
    assert exc.value.field == "credit_code" and message in exc.value.message


# ----------------------------------------------------------------------------- at the hub (service tier)


@pytest.fixture(scope="module")
def agent(service):
    return service.account("xmdb", "project_agent", None, "项目代办员甲")


def _project(hub, agent, **overrides) -> dict:
    body = {"enterprise_name": "肃宁县绿源农产品加工有限公司", "credit_code": credit_code(),
            "project_name": "年产5000吨果蔬深加工项目", "location": "肃宁县城关镇工业园区", "contact": "赵经理"}
    body.update(overrides)
    response = hub.api("POST", "/api/v1/projects", agent, json=body)
    assert response.status_code == 201, response.text
    return response.json


def _village_case(service, code: str, **form) -> str:
    """A case the village took, in the hub's register (received)."""
    return service.received_case(code, **form)


def _act(service, case_id: str, office: str, **body) -> dict:
    token = service.account(f"w_{office}", "chief", office)
    response = service.act(token, case_id, **body)
    assert response.status_code == 200, response.text
    return response.json["case"]


def _get(service, agent, project_id) -> dict:
    response = service.api("GET", f"/api/v1/projects/{project_id}", agent)
    assert response.status_code == 200, response.text
    return response.json


def _codes(case: dict) -> list[str]:
    return [b["code"] for b in case["blockers"]]


def test_invalid_credit_code_is_refused_with_the_field_named(service, agent):
    bad = credit_code()[:-1] + ("0" if credit_code()[-1] != "0" else "1")
    response = service.api("POST", "/api/v1/projects", agent, json={
        "enterprise_name": "某公司", "credit_code": bad, "project_name": "某项目", "location": "某地"})
    assert response.status_code == 400
    error = response.json["error"]
    assert error["field"] == "credit_code" and "校验位" in error["message"]
    assert service.scalar("SELECT COUNT(*) FROM projects WHERE credit_code = ?", (bad,)) == 0
    # The form names the field too.
    s = service.login("xmdb")
    page = s.get("/projects/new").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = s.post("/projects/new", data={"csrf_token": token, "enterprise_name": "某公司", "credit_code": bad,
                                      "project_name": "某项目", "location": "某地"})
    assert r.status_code == 400 and "校验位" in r.text and "（统一社会信用代码）" in r.text


def test_project_with_two_cases_shows_what_blocks_it(service, agent):
    project = _project(service, agent)
    pid = project["project_id"]
    assert project["state"] == "empty" and project["cases"] == []

    # 1. 企业投资项目备案 filed at the hub by the agent: a 秒批 item, approved on receipt.
    fg = service.api("POST", f"/api/v1/projects/{pid}/cases", agent, json={
        "item_code": "130926-FG-0001",
        "applicant": {"name": "赵经理", "id_number": valid_id_number(), "phone": "13812345678"},
        "form": {"scale_content": "新建厂房2万平方米，果蔬深加工生产线两条", "total_investment": 8000,
                 "restricted_industry": "否", "needs_approval": "否"},
        "materials": []})
    assert fg.status_code == 201, fg.text
    receipt = fg.json["receipt"]
    assert receipt["status"] == "APPROVED" and receipt["route"] == {"level": "city", "office": "130926-fg"}
    at_hub = service.api("GET", f"/api/v1/cases/{receipt['case_id']}", agent).json
    assert at_hub["form"]["credit_code"] == project["credit_code"]  # taken from the project
    assert at_hub["form"]["enterprise_name"] == project["enterprise_name"]
    assert [h["action"] for h in at_hub["history"]] == ["submit", "receive", "accept", "approve"]
    assert at_hub["history"][0]["detail"]["entrustment"]["kind"] == "项目代办"
    state = _get(service, agent, pid)
    assert state["state"] == "completed" and state["cases"][0]["state"] == "done"

    # 2. A village case (城乡居民养老保险参保登记, county, 3 WD) linked by its receipt number.
    case_id = _village_case(service, "130926-RS-0001")
    village_receipt = {"case_id": case_id, "receipt_no": service.scalar("SELECT receipt_no FROM cases WHERE case_id = ?",
                                                                        (case_id,))}
    linked = service.api("POST", f"/api/v1/projects/{pid}/cases", agent, json={"case_id": village_receipt["receipt_no"]})
    assert linked.status_code == 201, linked.text
    state = linked.json["project"]
    rs = next(c for c in state["cases"] if c["case_id"] == case_id)
    assert rs["status"] == "RECEIVED" and _codes(rs) == ["not_accepted"] and rs["deadline"] is None
    assert state["state"] == "blocked" and state["counts"] == {"done": 1, "deemed_done": 0, "in_progress": 0,
                                                                "blocked": 1, "failed": 0}
    assert [b["case_id"] for b in state["blocking"]] == [case_id]

    # 补正 requested: the project names what is missing.
    _act(service, case_id, "130926-rs", action="request_correction", comment="", missing_items=["户口簿首页及本人页"])
    rs = next(c for c in _get(service, agent, pid)["cases"] if c["case_id"] == case_id)
    assert _codes(rs) == ["correction"] and "户口簿首页及本人页" in rs["blockers"][0]["label"]

    # Accepted: on its way, with a deadline in working days.
    accepted = _act(service, case_id, "130926-rs", action="accept")
    state = _get(service, agent, pid)
    rs = next(c for c in state["cases"] if c["case_id"] == case_id)
    assert rs["blockers"] == [] and rs["state"] == "in_progress" and state["state"] == "in_progress"
    assert rs["deadline"] == accepted["deadline"] and rs["remaining_working_days"] == accepted["remaining_working_days"]
    assert rs["remaining_working_days"] > 0

    # Three weeks later it is overdue: blocked again, with how late it is.
    node = service.node
    node.clock = FixedClock(node.now() + timedelta(days=21))
    try:
        state = _get(service, agent, pid)
    finally:
        node.clock = Clock()
    rs = next(c for c in state["cases"] if c["case_id"] == case_id)
    assert _codes(rs) == ["overdue"] and rs["remaining_working_days"] < 0
    assert f"已超期{-rs['remaining_working_days']}个工作日" in rs["blockers"][0]["label"]
    assert state["state"] == "blocked"

    # Approved: the whole project is done.
    _act(service, case_id, "130926-rs", action="approve", comment="符合参保条件")
    state = _get(service, agent, pid)
    assert state["state"] == "completed" and state["blocking"] == []

    # The project page shows the same, in Chinese.
    page = service.login("xmdb").get(f"/projects/{pid}")
    assert page.status_code == 200
    assert "全部办结" in page.text and village_receipt["receipt_no"] in page.text and "企业投资项目备案" in page.text


def test_open_joint_opinions_and_refusals_block_the_project(service, agent):
    pid = _project(service, agent, project_name="冷链仓储项目", credit_code=REAL_CODES[0])["project_id"]
    # 困难残疾人生活补贴: 民政 leads, 残联 gives a joint opinion after 受理.
    joint_case = _village_case(service, "130926-MZ-0005")
    refused = _village_case(service, "130926-RS-0001")
    for case_id in (joint_case, refused):
        assert service.api("POST", f"/api/v1/projects/{pid}/cases", agent, json={"case_id": case_id}).status_code == 201
    _act(service, joint_case, "130926-mz", action="accept")
    _act(service, refused, "130926-rs", action="reject", comment="申请人已在职工养老保险参保")
    state = _get(service, agent, pid)
    by_id = {c["case_id"]: c for c in state["cases"]}
    assert _codes(by_id[joint_case]) == ["joint_pending"] and "残疾人联合会" in by_id[joint_case]["blockers"][0]["label"]
    assert by_id[refused]["state"] == "failed" and _codes(by_id[refused]) == ["refused"]
    assert "职工养老保险" in by_id[refused]["blockers"][0]["label"]
    assert state["state"] == "blocked"


def test_a_case_belongs_to_one_project_and_must_be_known(service, agent):
    first = _project(service, agent, project_name="项目一")["project_id"]
    second = _project(service, agent, project_name="项目二")["project_id"]
    case_id = _village_case(service, "130926-RS-0001")
    assert service.api("POST", f"/api/v1/projects/{first}/cases", agent, json={"case_id": case_id}).status_code == 201
    again = service.api("POST", f"/api/v1/projects/{first}/cases", agent, json={"case_id": case_id})
    assert again.status_code == 200 and again.json["linked"] is False
    other = service.api("POST", f"/api/v1/projects/{second}/cases", agent, json={"case_id": case_id})
    assert other.status_code == 409 and other.json["error"]["code"] == "already_linked"
    unknown = service.api("POST", f"/api/v1/projects/{second}/cases", agent, json={"case_id": "0" * 32})
    assert unknown.status_code == 400 and unknown.json["error"]["field"] == "case_id"
    # A township-only item cannot be filed at the hub: file it at the township, then link it.
    xz = service.api("POST", f"/api/v1/projects/{second}/cases", agent, json={
        "item_code": "130926-XZ-0001", "applicant": {"name": "赵经理", "id_number": valid_id_number(),
                                                     "phone": "13812345678"}, "form": {}})
    assert xz.status_code == 409 and xz.json["error"]["code"] == "not_accepted_here"
    assert service.api("GET", f"/api/v1/projects/{'f' * 32}", agent).status_code == 404


def test_the_agent_files_from_the_project_page(service, agent):
    pid = _project(service, agent, project_name="光伏屋顶项目", credit_code=REAL_CODES[2])["project_id"]
    s = service.login("xmdb")
    assert "光伏屋顶项目" in s.get("/projects").text
    page = s.get(f"/projects/{pid}").text
    assert "尚未关联办件" in page and "企业投资项目备案" in page
    form_page = s.get(f"/projects/{pid}/file/130926-FG-0001")
    assert form_page.status_code == 200 and REAL_CODES[2] in form_page.text  # prefilled from the project
    token = form_page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    data = {"csrf_token": token, "applicant_name": "钱经理", "applicant_id_number": valid_id_number(),
            "applicant_phone": "13812345678", "form_enterprise_name": "肃宁县阳光能源有限公司",
            "form_credit_code": REAL_CODES[2], "form_contact_name": "钱经理", "form_project_name": "光伏屋顶项目",
            "form_site": "肃宁县", "form_scale_content": "屋顶分布式光伏2兆瓦", "form_total_investment": "900",
            "form_restricted_industry": "否", "form_needs_approval": "否"}
    wrong = s.post(f"/projects/{pid}/file/130926-FG-0001", data={**data, "form_credit_code": REAL_CODES[2][:-1] + "C"})
    assert wrong.status_code == 400 and "统一社会信用代码" in wrong.text
    r = s.post(f"/projects/{pid}/file/130926-FG-0001", follow_redirects=True,
               data={**data, "material_filing_info": (io.BytesIO(b"%PDF-1.4 test"), "备案信息表.pdf", "application/pdf")})
    assert r.status_code == 200 and "全部办结" in r.text and "准予" in r.text
    case = _get(service, agent, pid)["cases"][0]
    assert case["status"] == "APPROVED"
    assert service.scalar("SELECT COUNT(*) FROM case_materials WHERE case_id = ?", (case["case_id"],)) == 1


# ----------------------------------------------------------------------------- over a real network
# (conftest's default network: hub, township, one village)


@pytest.fixture(scope="module")
def villager(village):
    return village.account("agent", "agent", village.node_id)


def test_only_project_agents_create_projects(net, villager):
    window = net.hub.account("w_fg", "window", "130926-fg")
    body = {"enterprise_name": "某公司", "credit_code": credit_code(), "project_name": "某项目", "location": "某地"}
    assert net.hub.api("POST", "/api/v1/projects", window, json=body).status_code == 403
    # Villages and townships have no projects at all.
    assert net.village().api("POST", "/api/v1/projects", villager, json=body).status_code == 404
