"""docs/openapi.yaml is the API's contract, checked against real answers.

A real network (hub, township, village on loopback) runs through every documented operation:
intake with a material file, sync (push, pull, blob status and chunks), enrolment through the
township, decisions, 联办 opinions, 审管互动, ratings and 回访, complaints, 项目代办, 现场核查,
statistics. Every HTTP exchange made in this process (the test's calls, the nodes' sync
clients, the township's enrolment relay) is recorded at the ``requests`` transport and checked
with openapi-core: each answer from a documented path must match its documented status and
schema, and each request the server accepted (2xx) must match its documented parameters and
body. The test fails unless every documented operation answered 2xx at least once.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from datetime import timedelta
from pathlib import Path

import openapi_core
import pytest
import requests
import yaml
from faults import client_with
from network import case_payload, catalog, pick_item, valid_id_number
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_spec_validator import validate as validate_spec

from city_hub import hub_admin
from city_hub.projects import credit_check_char
from shared.core.storage import write_transaction
from shared.core.version import __version__
from shared.rules.catalog import load_seed
from shared.services import documents
from sync import envelope, wire
from sync.transport import Transport

SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch")
CHINESE = re.compile(r"[\u4e00-\u9fff]")

JOINT_CITY, JOINT_LEAD, JOINT_DEPT = "130926-MZ-0005", "130926-mz", "130926-cl"
SITE_VISIT_ITEM, SITE_VISIT_OFFICE = "130926-LY-0001", "130926-ly"


def load_spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def documented_operations(spec: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in spec["paths"].items() for method in ops if method in METHODS}


def path_template(spec: dict, url_path: str, method: str) -> str | None:
    """The documented path ``url_path`` is an instance of (literal paths win over templated ones)."""
    candidates = sorted((p for p, ops in spec["paths"].items() if method in ops), key=lambda p: p.count("{"))
    for template in candidates:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, url_path):
            return template
    return None


def test_the_spec_is_valid_openapi_and_carries_the_release_version():
    spec = load_spec()
    validate_spec(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["version"] == __version__


class Recorder:
    """Every HTTP exchange made in this process while installed: the tests' ``requests`` calls
    and the sync client's own transport (sync/transport.py), the latter as ``requests`` objects
    so that openapi-core reads both alike."""

    def __init__(self):
        self.exchanges: list[requests.Response] = []
        self._lock = threading.Lock()

    def install(self, monkeypatch) -> None:
        send = requests.adapters.HTTPAdapter.send
        recorder = self

        def recording_send(adapter, request, *args, **kwargs):
            response = send(adapter, request, *args, **kwargs)
            with recorder._lock:
                recorder.exchanges.append(response)
            return response

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", recording_send)

        def typed(headers) -> dict:
            # A body in the dictionary coding is JSON and says so by its coding alone (§5.1.1).
            headers = requests.structures.CaseInsensitiveDict(headers)
            if headers.get("Content-Encoding") == wire.DICT_CODING:
                headers.setdefault("Content-Type", "application/json")
            return headers

        def recording_exchanged(transport, method, url, headers, body, sent, response):
            answer = requests.Response()
            answer.status_code, answer.reason, answer._content, answer.url = (
                response.status_code, response.reason, response.content, url)
            answer.headers = typed(response.headers.items())
            answer.request = requests.Request(method, url, headers=typed(headers), data=body).prepare()
            with recorder._lock:
                recorder.exchanges.append(answer)

        monkeypatch.setattr(Transport, "exchanged", recording_exchanged)


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    with pytest.MonkeyPatch.context() as monkeypatch:
        rec.install(monkeypatch)
        yield rec


@pytest.fixture(scope="module")
def net(recorder, build_network):
    # Built with the recorder on: enrolment (village → township → hub) is recorded too.
    return build_network(villages=1)


def ok(response: requests.Response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text}"
    return response.json()


def credit_code(first17: str = "91130926MA0C54321") -> str:
    return first17 + credit_check_char(first17)


def drive_every_operation(net) -> None:
    """One pass through every documented operation, with the roles the docs name."""
    village, township, hub = net.village(), net.township, net.hub
    agent = village.account("agent", "agent", village.node_id)
    clerk = township.account("clerk", "clerk", township.node_id)
    supervisor = hub.account("supervisor", "supervisor", None, "电子监察员")
    for handle in (hub, township, village):
        ok(handle.api("GET", "/healthz"))

    items = catalog(village, agent)
    item = pick_item(items, "city")
    office = f"130926-{item['department_code']}"
    window = hub.account("window", "chief", office)

    # Intake with a scan of every required material: the blobs travel by /sync/v1/blobs/status
    # and POST /sync/v1/blobs/batch (a PNG by its first bytes: materials are checked by content).
    scan = b"\x89PNG\r\n\x1a\n" + ("contract-test scan " * 100).encode()
    payload = case_payload(item, [(m["code"], "扫描件.jpg", scan) for m in item["materials"] if m["required"]])
    case_id = ok(village.api("POST", "/api/v1/cases", agent, json=payload), 201)["case_id"]
    ok(village.api("GET", f"/api/v1/cases/{case_id}", agent))
    net.sync_all()
    # An older village sends the same file by the single-file route, which every node keeps serving.
    assert client_with(village, Transport()).send_blob(hashlib.sha256(scan).hexdigest(), scan, 0)["complete"]
    for action in ("accept", "approve"):
        ok(hub.api("POST", f"/api/v1/cases/{case_id}/actions", window, json={"action": action, "comment": "符合条件"}))
    ok(hub.api("GET", f"/api/v1/cases/{case_id}", window))
    # 补齐补正 answered from the village: the hub asks, the origin corrects a field and resends.
    corrected = ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(item)), 201)["case_id"]
    net.sync_all()
    ok(hub.api("POST", f"/api/v1/cases/{corrected}/actions", window,
               json={"action": "request_correction", "missing_items": ["请更正申请表"]}))
    net.sync_all()
    rescan = {"code": item["materials"][0]["code"], "filename": "重新扫描.jpg",
              "content_base64": base64.b64encode(scan).decode("ascii")}
    ok(village.api("POST", f"/api/v1/cases/{corrected}/supplement", agent,
                   json={"materials": [rescan], "comment": "申请人本人补交"}), 201)
    net.sync_all()
    code = village.scalar("SELECT code FROM documents WHERE case_id = ? AND kind = 'approve'", (case_id,))
    ok(village.api("POST", "/api/v1/documents/verify", agent, json={"code": code}))  # 文书核验 by 核验码
    # 取回文书: the village asks the township (POST /sync/v1/documents) for the case's documents.
    assert ok(village.api("POST", f"/api/v1/cases/{case_id}/documents/refetch", agent))["refetched"] >= 2

    # 好差评 at the village; a bad one opens a 回访 at the hub.
    ok(village.api("POST", f"/api/v1/cases/{case_id}/rating", agent, json={"level": 1, "comment": "等太久"}), 201)
    ok(village.api("GET", f"/api/v1/cases/{case_id}/rating", agent))
    net.sync_all()
    followups = ok(hub.api("GET", "/api/v1/followups", supervisor))["followups"]
    [followup] = [f for f in followups if f["case_id"] == case_id]
    ok(hub.api("POST", f"/api/v1/followups/{followup['followup_id']}/outcome", window,
               json={"outcome": "已电话回访申请人"}))

    # 投诉 taken at the village, answered at the hub.
    complaint = ok(village.api("POST", "/api/v1/complaints", agent, json={
        "case_id": case_id, "complainant": {"name": "张三", "phone": "13812345678"}, "content": "窗口态度差"}), 201)
    net.sync_all()
    ok(hub.api("GET", "/api/v1/complaints?open=1", supervisor))
    ok(hub.api("GET", f"/api/v1/complaints/{complaint['complaint_id']}", supervisor))
    ok(hub.api("POST", f"/api/v1/complaints/{complaint['complaint_id']}/answer", supervisor,
               json={"answer": "已约谈窗口人员"}))

    # 预约: the window publishes the next working day, the village books, the answer comes back.
    day = hub.node.clock.today_cn() + timedelta(days=1)
    while not hub.node.calendar.is_working_day(day):
        day += timedelta(days=1)
    ok(hub.api("POST", "/api/v1/appointment-slots", window, json={
        "first_day": day.isoformat(), "last_day": day.isoformat(), "times": ["09:00"], "capacity": 2}), 201)
    ok(hub.api("GET", f"/api/v1/appointment-slots?day={day.isoformat()}", window))
    booking = ok(village.api("POST", "/api/v1/appointment-requests", agent, json={
        "office": office, "day": day.isoformat(), "start": "09:00", "villager_name": "张三",
        "villager_phone": "13812345678"}), 201)
    net.sync_all()
    ok(village.api("GET", "/api/v1/appointment-requests", agent))
    ok(hub.api("GET", f"/api/v1/appointments?day={day.isoformat()}", window))
    ok(hub.api("POST", f"/api/v1/appointments/{booking['request_id']}/status", window, json={"action": "cancel"}))
    second = ok(village.api("POST", "/api/v1/appointment-requests", agent, json={
        "office": office, "day": day.isoformat(), "start": "09:00", "villager_name": "李四",
        "villager_phone": "13912345678"}), 201)
    ok(village.api("POST", f"/api/v1/appointment-requests/{second['request_id']}/cancel", agent))

    # 首问负责 and 咨询登记 at the village: one answered from the catalog, one turned into a case.
    trees = ok(village.api("POST", "/api/v1/inquiries", agent, json={
        "asker_name": "王五", "question": "房前屋后的杨树能砍吗？", "item_code": "130926-LY-0002"}), 201)
    ok(village.api("GET", f"/api/v1/inquiries/{trees['inquiry_id']}", agent))
    ok(village.api("POST", f"/api/v1/inquiries/{trees['inquiry_id']}/close", agent, json={"outcome": "answered"}))
    asked = ok(village.api("POST", "/api/v1/inquiries", agent, json={
        "asker_name": "李四", "question": "怎么办理？", "item_code": item["code"]}), 201)
    ok(village.api("POST", f"/api/v1/inquiries/{asked['inquiry_id']}/case", agent), 201)
    ok(village.api("GET", "/api/v1/inquiries?status=closed", agent))
    ok(village.api("GET", "/api/v1/inquiries/stats", agent))

    # 规范收费: the hub publishes a fee standard for one item; its window records, refunds, reports.
    charged_items = load_seed()
    for charged in charged_items:
        if charged["code"] == item["code"]:
            charged["fee"] = {"charged": True, "basis": "《测试收费依据》第一条", "standard_fen": 1000}
    with write_transaction(hub.conn):
        hub_admin.publish_catalog(hub.conn, hub.node, charged_items, "contract-test")
    net.sync_all()
    fee_case = ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(item)), 201)["case_id"]
    net.sync_all()
    ok(hub.api("GET", f"/api/v1/cases/{fee_case}/fees", window))
    paid = ok(hub.api("POST", f"/api/v1/cases/{fee_case}/fees", window, json={
        "kind": "payment", "amount_fen": 1000, "receipt_no": "CT-0001", "payer": "张三"}), 201)
    ok(hub.api("POST", f"/api/v1/cases/{fee_case}/fees/{paid['record_id']}/refund", window,
               json={"reason": "申请人撤回"}), 201)
    ok(hub.api("GET", f"/api/v1/fees/daily?day={paid['day']}", window))

    # 联办 with 超时默认, then 审管互动.
    lead = hub.account("window_mz", "chief", JOINT_LEAD)
    dept = hub.account("window_cl", "window", JOINT_DEPT)
    joint_item = next(i for i in items if i["code"] == JOINT_CITY)
    joint_case = ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(joint_item)), 201)["case_id"]
    net.sync_all()
    ok(hub.api("POST", f"/api/v1/cases/{joint_case}/actions", lead, json={"action": "accept", "comment": ""}))
    ok(hub.api("GET", "/api/v1/joint/opinions", dept))
    ok(hub.api("POST", f"/api/v1/cases/{joint_case}/opinions", dept, json={"opinion": "agree", "comment": "同意"}))
    ok(hub.api("GET", f"/api/v1/cases/{joint_case}/opinions", lead))
    ok(hub.api("POST", f"/api/v1/cases/{joint_case}/actions", lead, json={"action": "approve", "comment": ""}))
    head = hub.account("head_mz", "head", JOINT_LEAD)
    ok(hub.api("GET", "/api/v1/supervision/pushes", head))
    ok(hub.api("POST", f"/api/v1/cases/{joint_case}/claim", head, json={"feedback": "纳入抽查"}))

    ok(hub.api("GET", "/api/v1/stats?by=office", supervisor))
    # 绩效考核: the admin sets weights and publishes last month; the supervisor reads the ranking.
    admin = hub.account("admin", "admin")
    ok(hub.api("POST", "/api/v1/performance/weights", admin, json={"closure_rate": 20}))
    this_month = hub.node.clock.today_cn().replace(day=1)
    last_month = (this_month - timedelta(days=1)).strftime("%Y-%m")
    ok(hub.api("POST", "/api/v1/performance/publish", admin, json={"month": last_month, "by": "office"}), 201)
    ok(hub.api("GET", f"/api/v1/performance?month={this_month.strftime('%Y-%m')}&by=township", supervisor))
    assert hub.api("GET", "/metrics", supervisor).status_code == 200  # Prometheus text, checked against the spec

    # 项目代办 at the hub: create, link the village case, file a 秒批 item, read.
    project_agent = hub.account("xmdb", "project_agent", None, "项目代办员")
    project = ok(hub.api("POST", "/api/v1/projects", project_agent, json={
        "enterprise_name": "肃宁县绿源农产品加工有限公司", "credit_code": credit_code(),
        "project_name": "年产5000吨果蔬深加工项目", "location": "肃宁县城关镇工业园区", "contact": "赵经理"}), 201)
    pid = project["project_id"]
    ok(hub.api("POST", f"/api/v1/projects/{pid}/cases", project_agent, json={"case_id": joint_case}), 201)
    ok(hub.api("POST", f"/api/v1/projects/{pid}/cases", project_agent, json={"case_id": joint_case}))
    filed = ok(hub.api("POST", f"/api/v1/projects/{pid}/cases", project_agent, json={
        "item_code": "130926-FG-0001",
        "applicant": {"name": "赵经理", "id_number": valid_id_number(), "phone": "13812345678"},
        "form": {"scale_content": "新建厂房2万平方米", "total_investment": 8000,
                 "restricted_industry": "否", "needs_approval": "否"}, "materials": []}), 201)
    assert filed["receipt"]["status"] == "APPROVED"  # 秒批: approved on receipt
    ok(hub.api("GET", "/api/v1/projects", project_agent))
    ok(hub.api("GET", f"/api/v1/projects/{pid}", project_agent))
    admin = hub.account("admin", "admin", None, "管理员")
    ok(hub.api("POST", f"/api/v1/projects/{pid}/key", admin, json={"key_agent": "xmdb", "investment_wan": 20000}))

    # 电子证照: a 残疾人证 issued with its decision, cited instead of a copy, looked up and revoked.
    cl_item = next(i for i in items if i["code"] == "130926-CL-0001")
    cl_case = ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(cl_item)), 201)["case_id"]
    net.sync_all()
    cl_chief = hub.account("chief_cl", "chief", "130926-cl")
    for action in ("accept", "approve"):
        ok(hub.api("POST", f"/api/v1/cases/{cl_case}/actions", cl_chief, json={"action": action, "comment": "三级"}))
    net.sync_all()
    licence_token = village.scalar(
        "SELECT document FROM documents WHERE case_id = ? AND kind = 'licence'", (cl_case,))
    licence_token = documents.qr_text(envelope.from_bytes(licence_token))
    mz_item = next(i for i in items if i["code"] == "130926-MZ-0005")
    ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(
        mz_item, cited_licences=[{"material": "disability_card", "token": licence_token}])), 201)
    cl_head = hub.account("head_cl", "head", "130926-cl")
    [held] = ok(hub.api("GET", f"/api/v1/licences?holder={valid_id_number()}", cl_head))["licences"]
    ok(hub.api("POST", f"/api/v1/licences/{held['doc_id']}/revoke", cl_head, json={"reason": "评定结论撤销"}))

    # 现场核查 by the township clerk on a village case.
    ly_item = next(i for i in items if i["code"] == SITE_VISIT_ITEM)
    ly_case = ok(village.api("POST", "/api/v1/cases", agent, json=case_payload(ly_item)), 201)["case_id"]
    net.sync_all()
    ok(township.api("POST", f"/api/v1/cases/{ly_case}/site-visits", clerk, json={
        "inspectors": ["王林", "李森"], "visit_date": township.node.clock.today_cn().isoformat(),
        "findings": "权属清楚，四至与申请一致。", "result": "符合",
        "photos": [{"filename": "现场.png", "content_base64": base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()}]}), 201)
    ok(township.api("GET", f"/api/v1/cases/{ly_case}/site-visits", clerk))
    net.sync_all()

    # 一件事一次办: one merged application, its progress.
    thing = ok(village.api("POST", "/api/v1/things", agent, json={
        "thing_code": "130926-YJS-0003", "applicant": payload["applicant"], "entrustment": {"consent": True},
        "form": {"registration_type": "失业登记", "difficulty_type": "连续失业一年以上"},
        "situation": {"registration_kind": "失业登记", "difficulty": "其他"},
        "materials": [{"code": code, "filename": "扫描件.png", "content_base64": base64.b64encode(scan).decode()}
                      for code in ("id_card", "registration_form", "difficulty_form")]}), 201)
    ok(village.api("GET", f"/api/v1/things/{thing['thing_id']}", agent))
    assert village.api("GET", f"/api/v1/things/{'0' * 32}", agent).status_code == 404

    # Refusals are part of the contract too: documented statuses with the one error shape.
    assert hub.api("GET", f"/api/v1/cases/{'0' * 32}", window).status_code == 404
    assert village.api("POST", "/api/v1/cases", agent, json={**payload, "item_code": "130926-NOPE-0001"}).status_code == 400
    assert hub.api("GET", "/api/v1/stats", window).status_code == 403
    assert village.api("GET", "/api/v1/catalog").status_code == 401

    # A second village enrols through the township while recorded (POST /enrol/v1 twice over).
    net.add_village(f"{township.node_id}202")


def causes(errors: list[Exception]) -> str:
    """openapi-core's errors with the schema errors under them, short enough to read."""
    return "; ".join(f"{e!r}: {getattr(e.__cause__, 'schema_errors', e.__cause__)!s:.600}" for e in errors)


def decoded(prepared: requests.PreparedRequest) -> requests.PreparedRequest:
    """The request with its body as the spec describes it: a compressed sync body (``Content-
    Encoding``, docs/sync-protocol.md §5.1.1) decoded, as the server decodes it."""
    coding = prepared.headers.get("Content-Encoding")
    if not coding:
        return prepared
    plain = prepared.copy()
    plain.body = wire.decode(prepared.body, coding, 1 << 26)
    del plain.headers["Content-Encoding"]
    return plain


def test_every_documented_operation_answers_as_documented(net, recorder):
    spec = load_spec()
    spec["servers"] = [{"url": handle.url} for handle in net.all_nodes()]
    api = openapi_core.OpenAPI.from_dict(spec)
    drive_every_operation(net)

    answered: set[tuple[str, str]] = set()
    problems: list[str] = []
    for response in list(recorder.exchanges):
        method = response.request.method.lower()
        url_path = requests.utils.urlparse(response.request.url).path
        template = path_template(spec, url_path, method)
        if template is None:
            continue  # a page or a route the spec does not claim (test_docs checks the route list)
        where = f"{method.upper()} {url_path} → {response.status_code}"
        request = RequestsOpenAPIRequest(decoded(response.request))
        result = api.unmarshal_response(request, RequestsOpenAPIResponse(response))
        if result.errors:
            problems.append(f"{where}: answer does not match the spec: {causes(result.errors)}")
        if 200 <= response.status_code < 300:
            answered.add((template, method))
            request_result = api.unmarshal_request(request)
            if request_result.errors:
                problems.append(f"{where}: accepted request does not match the spec: {causes(request_result.errors)}")
    assert not problems, "\n".join(problems)
    missing = sorted(documented_operations(spec) - answered)
    assert not missing, f"documented operations never answered 2xx in the run: {missing}"


def test_json_answers_carry_chinese_unescaped(net):
    response = net.village().api("GET", "/api/v1/catalog")
    assert response.status_code == 401
    assert CHINESE.search(response.content.decode("utf-8")) and b"\\u" not in response.content
    assert response.headers["Content-Type"].startswith("application/json")
