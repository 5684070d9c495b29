"""项目代办: a county project agent carries an enterprise's investment project through its items.

No Flask here. A project (enterprise, 统一社会信用代码, project name, location) is kept at the
hub by an account of role ``project_agent`` (项目代办员). The agent links the project's cases
to it: cases the agent files at the hub on the enterprise's behalf (:func:`file_case`, for items
the county may accept, e.g. 企业投资项目备案, a 秒批 item), or cases filed elsewhere that the hub
holds (by case id or 收件回执 number). The project page shows each linked case with its status,
deadline and remaining working days, and what blocks it (:func:`blockers`): not yet accepted,
补齐补正 requested, 容缺 materials owed, the clock stopped, 联办 opinions still open or
refused, overdue, refused or ended. The project's overall state follows from its cases.

绿色通道 (seed 002 §6): an admin marks a project 重点项目 and names its 项目代办员; its cases are
marked green (first in every queue, the item's shorter limit where given). 超时默认 (seed 004
§8): for a project of 亿元以上 investment the hub's scheduled rule (:func:`run_deemed_done`)
records every case past its committed limit as deemed done, the late office as responsible.

统一社会信用代码 (GB 32100-2015): 18 characters from ``0-9`` and ``ABCDEFGHJKLMNPQRTUWXY``
(no I, O, S, V, Z): registration authority (1), organisation type (1), 行政区划 (6 digits),
organisation code (9), check character. The check character is ``31 - (Σ value×weight mod 31)``
with weights ``3**i mod 31`` (31 is written 0).
"""

from __future__ import annotations

import re
import sqlite3
import uuid

from shared.core.clock import iso
from shared.core.errors import NotFound, RuleError, ValidationError
from shared.core.storage import ensure_disk_space, write_transaction
from shared.rules import green_channel as green_rules
from shared.rules import states
from shared.rules.catalog import required_materials, route, validate_form
from shared.rules.deadlines import case_clock
from shared.rules.materials import check_files
from shared.rules.text import refuse_hidden_characters
from shared.services import case_view, casework, documents, green_channel
from shared.services.intake import acceptable_item, clean_applicant
from sync import blobs

#: Who carries projects (creates them, files and links their cases).
AGENT_ROLES = ("project_agent",)
#: Who marks a project 重点项目 (绿色通道).
KEY_ROLES = ("admin",)
#: Who may look at projects: every hub account (windows and heads see where a project stands).
VIEW_ROLES = ("project_agent", "window", "chief", "head", "supervisor", "admin")

CREDIT_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_CREDIT_SHAPE = re.compile(r"[1-9ANY][0-9A-HJ-NP-RTUW-Y]\d{6}[0-9A-HJ-NP-RTUW-Y]{10}")

OVERALL_LABELS = {
    "empty": "尚未关联办件",
    "in_progress": "办理中",
    "blocked": "受阻",
    "completed": "全部办结",
}
CASE_STATE_LABELS = {"done": "已办结", "deemed_done": "超时默认办结", "in_progress": "办理中", "blocked": "受阻",
                     "failed": "未获准/已终止"}
DONE_STATES = frozenset({"APPROVED", "CONCLUDED"})
FAILED_STATES = frozenset({"NOT_ACCEPTED", "DENIED", "WITHDRAWN", "TERMINATED"})


# ----------------------------------------------------------------------------- 统一社会信用代码


def credit_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a 统一社会信用代码."""
    total = sum(CREDIT_CODE_CHARS.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARS[(31 - total % 31) % 31]


def validate_credit_code(value, field: str = "credit_code") -> str:
    """A well-formed 统一社会信用代码 (upper-cased, trimmed), or :class:`ValidationError` on ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "请填写统一社会信用代码")
    code = value.strip().upper()
    if len(code) != 18:
        raise ValidationError(field, "统一社会信用代码应为18位")
    if not _CREDIT_SHAPE.fullmatch(code):
        raise ValidationError(field, "统一社会信用代码含有不允许的字符或格式不符（不使用 I、O、S、V、Z）")
    if credit_check_char(code[:17]) != code[17]:
        raise ValidationError(field, "统一社会信用代码校验位不正确，请核对")
    return code


# ----------------------------------------------------------------------------- projects


def _text(payload: dict, name: str, label: str, limit: int, required: bool = True) -> str:
    value = payload.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(name, f"{label}必须是文本")
    value = value.strip()
    if required and not value:
        raise ValidationError(name, f"请填写{label}")
    if len(value) > limit:
        raise ValidationError(name, f"{label}不能超过{limit}个字")
    return refuse_hidden_characters(value, name, label)


def create(conn: sqlite3.Connection, payload: dict, agent: str, now) -> dict:
    """Create a project. Call inside a write transaction."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    project = {
        "project_id": uuid.uuid4().hex,
        "enterprise_name": _text(payload, "enterprise_name", "企业名称", 100),
        "credit_code": validate_credit_code(payload.get("credit_code")),
        "project_name": _text(payload, "project_name", "项目名称", 100),
        "location": _text(payload, "location", "建设地点", 100),
        "contact": _text(payload, "contact", "企业联系人", 50, required=False),
        "investment_wan": green_rules.check_investment(payload.get("investment_wan")),
        "agent": agent,
        "created_at": iso(now),
    }
    conn.execute(
        "INSERT INTO projects(project_id, enterprise_name, credit_code, project_name, location, contact, agent,"
        " created_at, investment_wan) VALUES (:project_id, :enterprise_name, :credit_code, :project_name, :location,"
        " :contact, :agent, :created_at, :investment_wan)", project)
    return project


def mark_key(conn: sqlite3.Connection, node, project_id: str, payload: dict, admin: str, now) -> int:
    """Mark a project 重点项目 with its named 项目代办员 (and its investment, 万元, when given);
    every case linked to it goes 绿色通道. Call inside a write transaction.

    :returns: how many cases were newly marked.
    :raises ValidationError: ``key_agent`` not a 项目代办员 account of this hub, bad ``investment_wan``.
    """
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    project = get(conn, project_id)
    key_agent = payload.get("key_agent")
    if not isinstance(key_agent, str) or not key_agent.strip():
        raise ValidationError("key_agent", "请指定重点项目的项目代办员")
    found = conn.execute("SELECT role FROM accounts WHERE username = ? AND active = 1", (key_agent.strip(),)).fetchone()
    if found is None or found["role"] not in AGENT_ROLES:
        raise ValidationError("key_agent", f"「{key_agent.strip()}」不是本中心的项目代办员账号")
    investment = green_rules.check_investment(payload.get("investment_wan"))
    if investment is None:
        investment = project["investment_wan"]
    conn.execute("UPDATE projects SET key_project = 1, key_agent = ?, investment_wan = ?, key_marked_by = ?,"
                 " key_marked_at = ? WHERE project_id = ?", (key_agent.strip(), investment, admin, iso(now), project_id))
    return sum(green_channel.mark_case(conn, node, r["case_id"]) for r in conn.execute(
        "SELECT case_id FROM project_cases WHERE project_id = ?", (project_id,)).fetchall())


def _after_link(conn: sqlite3.Connection, node, project, case_id: str) -> None:
    if project["key_project"]:
        green_channel.mark_case(conn, node, case_id)


def get(conn: sqlite3.Connection, project_id: str) -> sqlite3.Row:
    """The project row, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM projects WHERE project_id = ?", (project_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该项目")
    return row


def list_projects(conn: sqlite3.Connection, agent: str | None = None) -> list[sqlite3.Row]:
    """Projects, key projects (重点项目) first, then newest (only those ``agent`` carries — created
    or named for — when given), with their number of cases."""
    sql = ("SELECT p.*, (SELECT COUNT(*) FROM project_cases c WHERE c.project_id = p.project_id) AS cases"
           " FROM projects p")
    args: tuple = ()
    if agent is not None:
        sql += " WHERE p.agent = ? OR p.key_agent = ?"
        args = (agent, agent)
    return conn.execute(sql + " ORDER BY p.key_project DESC, p.created_at DESC LIMIT 500", args).fetchall()


def find_case(conn: sqlite3.Connection, reference) -> str:
    """The case id for a case id or a 收件回执 number this node holds."""
    if not isinstance(reference, str) or not reference.strip():
        raise ValidationError("case_id", "请填写办件标识或收件回执编号")
    reference = reference.strip()
    row = conn.execute("SELECT case_id FROM cases WHERE case_id = ? OR receipt_no = ?",
                       (reference, reference)).fetchone()
    if row is None:
        raise ValidationError("case_id", "本中心没有该办件（办件报送到市中心后才能关联）")
    return row["case_id"]


def link_case(conn: sqlite3.Connection, project_id: str, case_id: str, agent: str, now, node=None) -> bool:
    """Link a case to a project (False if already linked to it); a key project's case goes
    绿色通道 (``node``: the hub, which sends the mark down). Call inside a write transaction."""
    project = get(conn, project_id)
    case_id = find_case(conn, case_id)
    current = conn.execute("SELECT project_id FROM project_cases WHERE case_id = ?", (case_id,)).fetchone()
    if current is not None:
        if current["project_id"] == project_id:
            return False
        raise RuleError("already_linked", "该办件已关联到另一个项目")
    conn.execute("INSERT INTO project_cases(case_id, project_id, linked_by, linked_at) VALUES (?,?,?,?)",
                 (case_id, project_id, agent, iso(now)))
    if node is not None:
        _after_link(conn, node, project, case_id)
    return True


def prefill_form(item: dict, project, form: dict) -> dict:
    """The item's form with the enterprise's fields taken from the project where left empty."""
    known = {"enterprise_name": project["enterprise_name"], "credit_code": project["credit_code"],
             "project_name": project["project_name"], "site": project["location"],
             "contact_name": project["contact"]}
    filled = dict(form)
    for f in item.get("fields", []):
        if f["name"] in known and known[f["name"]] and not filled.get(f["name"]):
            filled[f["name"]] = known[f["name"]]
    return filled


def file_case(conn: sqlite3.Connection, node, project_id: str, items: dict, version: int, payload: dict,
              files: list[tuple[str, str, bytes]], agent: str) -> dict:
    """File an application at the hub for the project's enterprise and link it (代办 at the county).

    ``payload`` is shaped like ``POST /api/v1/cases`` (item_code, applicant = the enterprise's
    经办人, form, situation); enterprise fields the item asks for are taken from the project. The
    case is received at once, and a 秒批 item whose rule holds is approved at once.
    """

    ensure_disk_space(node.data_dir, int(node.config["DISK_RESERVE_BYTES"]))
    project = get(conn, project_id)
    item = acceptable_item(items, payload.get("item_code"), node.node_id,
                           "不能在市（县）中心受理，请到乡镇或村申请后关联到项目")
    check_files(files, item)  # by content: no executable or other type stored as a material
    applicant = clean_applicant(payload.get("applicant"), who="经办人")
    form = validate_form(item, prefill_form(item, project, payload.get("form") or {}))
    if "credit_code" in form:
        form["credit_code"] = validate_credit_code(form["credit_code"], field="form.credit_code")
    form = {k: (repr(v) if isinstance(v, float) else v) for k, v in form.items()}
    situation = payload.get("situation") or {}
    needed = required_materials(item, situation if isinstance(situation, dict) else {})
    now = node.now()
    materials = [{"code": code, "filename": filename, "sha256": node.blobs.put(data), "size": len(data)}
                 for code, filename, data in files]
    missing = [m["name"] for m in needed if m["code"] not in {x["code"] for x in materials}]
    entrustment = {"principal": project["enterprise_name"], "agent": agent, "scope": item["name"],
                   "consent": True, "kind": "项目代办", "project_id": project_id}
    with write_transaction(conn):
        for m in materials:
            blobs.register(conn, m["sha256"], m["size"], now)
        body, _ = casework.capture(
            conn, node_id=node.node_id, item=item, catalog_version=version,
            route=route(item, node.node_id, node.hub_id), applicant=applicant, form=form,
            materials=materials, agent=agent, now=now, entrustment=entrustment)
        case_id = body["case_id"]
        conn.execute("UPDATE cases SET sync_state = 'hub' WHERE case_id = ?", (case_id,))  # it is at the hub
        documents.issue(conn, node, casework.get_row(conn, case_id), "receipt", body["event"],
                        node.config.get("NODE_NAME") or node.node_id)
        casework.receive(conn, case_id, item, node.node_id, now, node.emit)
        conn.execute("INSERT INTO project_cases(case_id, project_id, linked_by, linked_at) VALUES (?,?,?,?)",
                     (case_id, project_id, agent, iso(now)))
        _after_link(conn, node, project, case_id)
    status = casework.get_row(conn, case_id)["status"]
    return {"case_id": case_id, "receipt_no": body["receipt_no"], "status": status,
            "status_label": states.status_label(status), "route": body["route"], "missing_materials": missing}


# ----------------------------------------------------------------------------- what blocks it


def _last_event(case: dict, actions: tuple[str, ...]) -> dict | None:
    return next((h for h in reversed(case["history"]) if h["action"] in actions), None)


def blockers(case: dict) -> list[dict]:
    """What holds a case up, from its JSON view (``casework.to_json`` with the clock).

    Each entry is ``{"code", "label"}``; none for a case that is moving on time or finished.
    """
    status = case["status"]
    found: list[dict] = []

    def add(code: str, label: str) -> None:
        found.append({"code": code, "label": label})

    if status in ("DRAFT", "SUBMITTED", "RECEIVED"):
        add("not_accepted", "尚未受理")
    elif status in ("SUPPLEMENT", "PRECHECK_RETURNED"):
        notice = _last_event(case, ("request_correction", "precheck_return")) or {}
        missing = (notice.get("detail") or {}).get("missing_items") or [notice.get("comment") or ""]
        add("correction", "待补齐补正：" + "、".join(m for m in missing if m))
    elif status == "ACCEPTED_DEFICIENT":
        owed = (_last_event(case, ("accept_deficient",)) or {}).get("detail") or {}
        add("deficient", f"容缺材料待补齐：{'、'.join(owed.get('owed_materials') or [])}"
                         f"（{owed.get('due_date', '—')}前）")
    elif status == "SUSPENDED":
        paused = _last_event(case, ("suspend",)) or {}
        reason = (paused.get("detail") or {}).get("reason") or paused.get("comment") or ""
        add("suspended", f"特别程序（{reason}），暂停计时")
    elif status in FAILED_STATES:
        decision = case.get("decision") or {}
        ended = _last_event(case, ("reject", "deny", "withdraw", "terminate")) or {}
        reason = decision.get("comment") or ended.get("comment") or ""
        add("refused" if status in ("NOT_ACCEPTED", "DENIED") else "ended",
            f"{states.status_label(status)}{'：' + reason if reason else ''}，需重新申请")
    if status in states.OPEN_STATES:
        opinions = case.get("joint_opinions") or []
        waiting = [o for o in opinions if o["opinion"] is None]
        if waiting:
            late = [o for o in waiting if o.get("overdue")]
            add("joint_pending", "待联办意见：" + "、".join(o["department"] for o in waiting)
                + ("（已超期）" if late else ""))
        refused = [o for o in opinions if o["opinion"] == "disagree"]
        if refused:
            add("joint_disagree", "联办部门不同意：" + "、".join(o["department"] for o in refused))
        remaining = case.get("remaining_working_days")
        if remaining is not None and remaining < 0:
            add("overdue", f"已超期{-remaining}个工作日（{case.get('supervision_label') or ''}）")
    return found


def case_state(case: dict, found: list[dict]) -> str:
    """done / deemed_done / failed / blocked / in_progress for one linked case."""
    if case["status"] in DONE_STATES:
        return "done"
    if case["status"] in FAILED_STATES:
        return "failed"
    if any(h["action"] == "deemed_done" for h in case["history"]):
        return "deemed_done"  # 超时默认: the project goes on as if it were done
    return "blocked" if found else "in_progress"


def overall(case_states: list[str]) -> str:
    """The project's state from its cases' states (a case deemed done counts as done)."""
    if not case_states:
        return "empty"
    if all(s in ("done", "deemed_done") for s in case_states):
        return "completed"
    if any(s in ("blocked", "failed") for s in case_states):
        return "blocked"
    return "in_progress"


def to_json(conn: sqlite3.Connection, project_id: str, calendar, today) -> dict:
    """The project page's content: the project, each linked case and what blocks it, the overall state."""
    project = get(conn, project_id)
    cases = []
    for link in conn.execute("SELECT case_id, linked_by, linked_at FROM project_cases WHERE project_id = ?"
                             " ORDER BY linked_at, rowid", (project_id,)):
        case = case_view.to_json(conn, link["case_id"], calendar, today)
        found = blockers(case)
        state = case_state(case, found)
        cases.append({
            "case_id": case["case_id"], "receipt_no": case["receipt_no"], "item_code": case["item_code"],
            "item_name": case["item_name"], "status": case["status"], "status_label": case["status_label"],
            "route": case["route"], "accepted_at": case["accepted_at"], "deadline": case["deadline"],
            "remaining_working_days": case["remaining_working_days"], "supervision": case["supervision"],
            "state": state, "state_label": CASE_STATE_LABELS[state], "blockers": found,
            "linked_by": link["linked_by"], "linked_at": link["linked_at"],
            "calendar_warning": case.get("calendar_warning"), "green_channel": case["green_channel"],
            "deemed_done": next(({"at": h["at"], **h["detail"]} for h in case["history"]
                                 if h["action"] == "deemed_done"), None),
        })
    state = overall([c["state"] for c in cases])
    open_deadlines = [c["deadline"] for c in cases if c["deadline"] and c["status"] in states.OPEN_STATES]
    return {
        **{k: project[k] for k in ("project_id", "enterprise_name", "credit_code", "project_name", "location",
                                   "contact", "agent", "created_at", "investment_wan", "key_agent",
                                   "key_marked_by", "key_marked_at")},
        "key_project": bool(project["key_project"]),
        "deemed_done_applies": green_rules.deemed_done_applies(project["investment_wan"]),
        "state": state,
        "state_label": OVERALL_LABELS[state],
        "counts": {k: sum(1 for c in cases if c["state"] == k) for k in CASE_STATE_LABELS},
        "latest_deadline": max(open_deadlines) if open_deadlines else None,
        "blocking": [{"case_id": c["case_id"], "item_name": c["item_name"], **b} for c in cases for b in c["blockers"]],
        "cases": cases,
    }


# ----------------------------------------------------------------------------- 超时默认


def run_deemed_done(conn: sqlite3.Connection, node) -> int:
    """The hub's scheduled rule: each open case of a 亿元以上 project past its committed limit is
    deemed done (an event ``deemed_done`` naming the late office as responsible). Returns how many."""
    today = node.clock.today_cn()
    marks = ",".join("?" * len(green_rules.DEEMABLE_STATES))
    rows = conn.execute(
        "SELECT c.case_id, c.status, c.limit_wd, c.route_office, p.project_id, p.project_name FROM cases c"
        " JOIN project_cases pc ON pc.case_id = c.case_id JOIN projects p ON p.project_id = pc.project_id"
        f" WHERE p.investment_wan >= ? AND c.status IN ({marks})",
        (green_rules.HUNDRED_MILLION_WAN, *sorted(green_rules.DEEMABLE_STATES))).fetchall()
    done = 0
    for row in rows:
        events = conn.execute("SELECT at, action, detail FROM case_events WHERE case_id = ? ORDER BY at, rowid",
                              (row["case_id"],)).fetchall()
        clock = case_clock(events, row["limit_wd"], row["status"], node.calendar, today)
        if not green_rules.due_for_deemed_done(row["status"], clock["remaining_working_days"],
                                               [e["action"] for e in events]):
            continue
        comment = (f"超时默认：承诺时限（{clock['deadline']}）内未办结，对项目「{row['project_name']}」默认已办结，"
                   f"进入下一流程；责任由超时单位（{row['route_office']}）承担")
        system = {"responsible_office": row["route_office"], "deadline": clock["deadline"],
                  "project_id": row["project_id"]}
        with write_transaction(conn):
            casework.perform_action(conn, row["case_id"], "deemed_done", comment, "system", node.node_id, node.now(),
                                    node.emit, system=system)
        done += 1
    return done
