"""好差评, 回访 and 投诉 (国办发〔2019〕51号): ratings, follow-ups of bad ratings, complaints.

No Flask here. The rules:

* **One rating per case** (51号: 一次办事一次评价), five levels 非常满意 … 非常不满意 (codes 5..1),
  optional text. It is given for a decided or concluded case at the node that took the
  application (the village agent records the villager's rating, a township clerk a window
  case), enforced by the primary key of ``case_ratings``. Origin nodes send it up as a
  ``case.rating`` envelope; the hub stores it once per case whatever arrives twice.
* **回访**: a bad rating (不满意 / 非常不满意) opens one follow-up at the hub, assigned to the case's
  deciding office, due ``FOLLOWUP_WD`` working days after the rating (51号: 差评整改 within 15
  working days), counted with the node calendar. A supervisor or an account of that office
  records the outcome (整改情况).
* **投诉**: a complaint about a case or an office can be taken at any node. Villages and townships
  send it up (``complaint``); at the hub it is in the supervisor's queue, due ``COMPLAINT_WD``
  working days after it was taken; the supervisor's answer goes back down to the node that took
  it (``complaint.answer``).
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import date

from shared.core.clock import iso, parse_iso
from shared.core.errors import Forbidden, NotFound, RuleError, ValidationError
from shared.rules import states
from shared.rules.deadlines import cn_day
from shared.rules.idcard import validate_phone
from shared.rules.text import refuse_hidden_characters
from shared.services import casework
from sync import downlink, outbox

#: The five levels of 国办发〔2019〕51号, code -> label.
LEVELS: dict[int, str] = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
#: 差评: they open a 回访.
BAD_LEVELS = frozenset({1, 2})
#: 差评 回访 and 整改 limit (51号: 原则上不超过15个工作日).
FOLLOWUP_WD = 15
#: Answer limit of a complaint; a local rule, see docs/domain-rules.md (投诉).
COMPLAINT_WD = 10
#: Statuses of a case that can be rated: decided (result known) or concluded (served).
RATEABLE_STATES = frozenset(states.DECIDED_STATES | {"CONCLUDED"})
#: Roles that record a rating at the node that took the application.
RATING_ROLES = ("agent", "clerk", "window")
#: Roles that may take a complaint (every front-line and supervising role).
COMPLAINT_ROLES = ("agent", "clerk", "window", "chief", "head", "supervisor")
#: Roles that, for their own office, may record a follow-up's outcome (besides supervisors).
OFFICE_ROLES = ("window", "chief", "head", "clerk")
CHANNELS = {"village": "村便民服务室（代办）", "township": "乡镇便民服务站窗口", "hub": "政务服务中心窗口"}
COMPLAINT_STATUS = {"sent": "已转报", "open": "待答复", "answered": "已答复"}
MAX_COMMENT = 500
MAX_CONTENT = 2000
MAX_ANSWER = 2000


# ----------------------------------------------------------------------------- helpers


def _text(payload: dict, name: str, *, required: bool, limit: int, label: str, field: str | None = None,
          multiline: bool = False) -> str:
    value = payload.get(name)
    field = field or name
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(field, f"{label}必须是文本")
    value = value.strip()
    if required and not value:
        raise ValidationError(field, f"请填写{label}", code="required")
    if len(value) > limit:
        raise ValidationError(field, f"{label}不能超过{limit}个字")
    return refuse_hidden_characters(value, field, label, multiline)


def _due(calendar, taken_at: str, now, working_days: int) -> str:
    """The date ``working_days`` after the China day of ``taken_at`` (never later than now)."""
    start = min(parse_iso(taken_at), now)
    return calendar.add_working_days(cn_day(iso(start)), working_days).isoformat()


def _clock(calendar, today: date, deadline: str | None, is_open: bool) -> dict:
    if not deadline or not is_open:
        return {"remaining_working_days": None, "overdue": False}
    remaining = calendar.working_days_between(today, date.fromisoformat(deadline))
    return {"remaining_working_days": remaining, "overdue": today > date.fromisoformat(deadline)}


# ----------------------------------------------------------------------------- 好差评


def validate_rating(payload) -> tuple[int, str]:
    """``(level, comment)`` from a request body; errors name the field."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    level = payload.get("level")
    if isinstance(level, str) and level.strip().isascii() and level.strip().isdigit():
        level = int(level.strip())
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        choices = "、".join(f"{k}={v}" for k, v in LEVELS.items())
        raise ValidationError("level", f"评价等级必须是 1 到 5 的整数（{choices}）")
    comment = _text(payload, "comment", required=False, limit=MAX_COMMENT, label="评价意见", multiline=True)
    return level, comment


def rate(conn: sqlite3.Connection, node, case_id: str, level: int, comment: str, account) -> dict:
    """Record the applicant's rating at the node that took the application. Call inside a write
    transaction. Villages and townships send it up; at the hub a bad rating opens its 回访."""

    row = casework.get_row(conn, case_id)
    if row["origin"] != node.node_id:
        raise Forbidden("评价由受理申请的节点（收件地）登记", code="not_origin")
    if account["role"] not in RATING_ROLES:
        raise Forbidden("只有代办员或窗口人员可以登记评价")
    if row["status"] not in RATEABLE_STATES:
        raise RuleError("not_decided", f"办件尚未办结（{states.status_label(row['status'])}），办结后才能评价")
    now = node.now()
    rating = {
        "case_id": case_id, "level": level, "comment": comment, "channel": node.tier, "node": node.node_id,
        "recorded_by": account["username"], "rated_at": iso(now),
    }
    try:
        _insert_rating(conn, rating, row["route_office"], iso(now), on_conflict="")
    except sqlite3.IntegrityError as exc:
        raise RuleError("already_rated", "该办件已评价，每件只能评价一次") from exc
    if node.kind.supervises:
        open_followup(conn, node, row, rating)
    else:
        outbox.append(conn, node.key, node.node_id, "case.rating", rating, str(node.hlc.now()), now, case_id=case_id)
    return rating_of(conn, case_id)


def _insert_rating(conn: sqlite3.Connection, rating: dict, office: str, received_at: str, on_conflict: str) -> bool:
    cur = conn.execute(
        "INSERT INTO case_ratings(case_id, level, comment, channel, node, recorded_by, office, rated_at, received_at)"
        f" VALUES (?,?,?,?,?,?,?,?,?) {on_conflict}",
        (rating["case_id"], rating["level"], rating.get("comment", ""), rating["channel"], rating["node"],
         rating["recorded_by"], office, rating["rated_at"], received_at),
    )
    return cur.rowcount > 0


def apply_rating(conn: sqlite3.Connection, node, origin: str, body: dict) -> bool:
    """The hub stores a ``case.rating`` once per case; a bad one opens the 回访. False if known."""

    row = casework.get_row(conn, body["case_id"])
    if row["origin"] != origin or body.get("node") != origin:
        raise RuleError("not_origin", "评价只能来自受理该办件的节点")
    level = body["level"]
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"rating level {level!r}")
    if not _insert_rating(conn, body, row["route_office"], iso(node.now()), on_conflict="ON CONFLICT DO NOTHING"):
        return False
    open_followup(conn, node, row, body)
    return True


def rating_of(conn: sqlite3.Connection, case_id: str) -> dict | None:
    """The case's rating as JSON (with its 回访 where this node holds one), or None."""
    row = conn.execute("SELECT * FROM case_ratings WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        return None
    result = {
        "level": row["level"], "label": LEVELS[row["level"]], "bad": row["level"] in BAD_LEVELS,
        "comment": row["comment"], "channel": row["channel"], "channel_label": CHANNELS.get(row["channel"], ""),
        "node": row["node"], "recorded_by": row["recorded_by"], "office": row["office"],
        "rated_at": row["rated_at"],
    }
    followup = conn.execute("SELECT followup_id, status, deadline, outcome FROM followups WHERE case_id = ?",
                            (case_id,)).fetchone()
    if followup is not None:
        result["followup"] = dict(followup)
    return result


# ----------------------------------------------------------------------------- 回访


def open_followup(conn: sqlite3.Connection, node, case_row, rating: dict) -> dict | None:
    """Open the 回访 of a bad rating (idempotent; None for a good rating)."""
    if rating["level"] not in BAD_LEVELS:
        return None
    now = node.now()
    deadline = _due(node.calendar, rating["rated_at"], now, FOLLOWUP_WD)
    conn.execute(
        "INSERT INTO followups(followup_id, case_id, level, office, opened_at, deadline) VALUES (?,?,?,?,?,?)"
        " ON CONFLICT(case_id) DO NOTHING",
        (uuid.uuid4().hex, case_row["case_id"], rating["level"], case_row["route_office"], iso(now), deadline),
    )
    return get_followup(conn, node, followup_id=None, case_id=case_row["case_id"])


def _followup_json(row, calendar, today: date) -> dict:
    result = dict(row)
    result["level_label"] = LEVELS[row["level"]]
    result.update(_clock(calendar, today, row["deadline"], row["status"] == "open"))
    return result


_FOLLOWUP_SELECT = (
    "SELECT f.*, c.receipt_no, c.item_name, c.applicant_name, c.phone, r.comment AS rating_comment,"
    " r.rated_at FROM followups f JOIN cases c ON c.case_id = f.case_id"
    " LEFT JOIN case_ratings r ON r.case_id = f.case_id"
)


def get_followup(conn: sqlite3.Connection, node, followup_id: str | None, case_id: str | None = None) -> dict:
    """One follow-up with its clock, or :class:`NotFound`."""
    if followup_id is not None:
        row = conn.execute(f"{_FOLLOWUP_SELECT} WHERE f.followup_id = ?", (followup_id,)).fetchone()
    else:
        row = conn.execute(f"{_FOLLOWUP_SELECT} WHERE f.case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该回访记录")
    return _followup_json(row, node.calendar, node.clock.today_cn())


def followups(conn: sqlite3.Connection, node, office: str | None = None, open_only: bool = True) -> list[dict]:
    """Follow-ups (of ``office``, or all), overdue first, then nearest deadline."""
    sql, params = _FOLLOWUP_SELECT + " WHERE 1 = 1", []
    if open_only:
        sql += " AND f.status = 'open'"
    if office is not None:
        sql += " AND f.office = ?"
        params.append(office)
    rows = conn.execute(sql + " ORDER BY f.status DESC, f.deadline LIMIT 1000", params).fetchall()
    today = node.clock.today_cn()
    return [_followup_json(r, node.calendar, today) for r in rows]


def may_handle_followup(account, office: str) -> bool:
    """Supervisors, or an account of the follow-up's office."""
    return account["role"] == "supervisor" or (account["role"] in OFFICE_ROLES and account["office"] == office)


def record_outcome(conn: sqlite3.Connection, node, followup_id: str, payload, account) -> dict:
    """Close a 回访 with its 整改情况. Call inside a write transaction."""
    if not node.kind.supervises:
        raise RuleError("hub_only", "回访在市（县）政务服务中心办理")
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    followup = get_followup(conn, node, followup_id)
    if not may_handle_followup(account, followup["office"]):
        raise Forbidden(f"只有监察员或被评价机构（{followup['office']}）的人员可以登记回访结果")
    outcome = _text(payload, "outcome", required=True, limit=MAX_ANSWER, label="回访及整改情况", multiline=True)
    if followup["status"] != "open":
        raise RuleError("already_closed", "该回访已办结")
    conn.execute(
        "UPDATE followups SET status = 'closed', outcome = ?, closed_by = ?, closed_at = ? WHERE followup_id = ?",
        (outcome, account["username"], iso(node.now()), followup_id),
    )
    return get_followup(conn, node, followup_id)


# ----------------------------------------------------------------------------- 投诉


def validate_complaint(conn: sqlite3.Connection, payload) -> dict:
    """The cleaned complaint from a request body; errors name the field (``complainant.phone`` …)."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    case_id = _text(payload, "case_id", required=False, limit=64, label="办件标识") or None
    office = _text(payload, "office", required=False, limit=64, label="被投诉部门") or None
    receipt_no = _text(payload, "receipt_no", required=False, limit=64, label="收件编号") or None
    if case_id is None and receipt_no is not None:
        # The villager holds the 收件回执: its number names the case.
        found = conn.execute("SELECT case_id FROM cases WHERE receipt_no = ?", (receipt_no,)).fetchone()
        if found is None:
            raise ValidationError("receipt_no", f"本节点没有收件编号为 {receipt_no} 的办件，请核对收件回执上的编号",
                                  code="unknown_case")
        case_id = found["case_id"]
    if case_id is not None:
        row = conn.execute("SELECT route_office FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            raise ValidationError("case_id", "本节点没有该办件，请核对办件标识", code="unknown_case")
        office = office or row["route_office"]
    if case_id is None and office is None:
        raise ValidationError("office", "请填写投诉办件的收件编号，或选择被投诉的部门", code="required")
    complainant = payload.get("complainant")
    if not isinstance(complainant, dict):
        raise ValidationError("complainant", "请填写投诉人（姓名和联系电话）", code="required")
    name = _text(complainant, "name", required=True, limit=50, label="投诉人姓名", field="complainant.name")
    phone = validate_phone(complainant.get("phone"), field="complainant.phone")
    content = _text(payload, "content", required=True, limit=MAX_CONTENT, label="投诉内容", multiline=True)
    return {"case_id": case_id, "office": office, "complainant": {"name": name, "phone": phone}, "content": content}


def take_complaint(conn: sqlite3.Connection, node, payload, account) -> dict:
    """Record a complaint here; send it up (village, township) or queue it (hub). Call inside a
    write transaction."""

    if account["role"] not in COMPLAINT_ROLES:
        raise Forbidden("该账户不能登记投诉")
    clean = validate_complaint(conn, payload)
    now = node.now()
    body = {"complaint_id": uuid.uuid4().hex, **clean, "taken_by": account["username"], "taken_at": iso(now)}
    if node.kind.supervises:
        _store_at_hub(conn, node, node.node_id, body)
    else:
        _insert_complaint(conn, node.node_id, body, status="sent")
        outbox.append(conn, node.key, node.node_id, "complaint", body, str(node.hlc.now()), now,
                      case_id=clean["case_id"])
    return get_complaint(conn, node, body["complaint_id"])


def _insert_complaint(conn: sqlite3.Connection, origin: str, body: dict, status: str,
                      received_at: str | None = None, deadline: str | None = None) -> bool:
    cur = conn.execute(
        "INSERT INTO complaints(complaint_id, origin, case_id, office, complainant_name, complainant_phone, content,"
        " taken_by, taken_at, received_at, deadline, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(complaint_id) DO NOTHING",
        (body["complaint_id"], origin, body.get("case_id"), body.get("office"), body["complainant"]["name"],
         body["complainant"]["phone"], body["content"], body["taken_by"], body["taken_at"], received_at, deadline,
         status),
    )
    return cur.rowcount > 0


def _store_at_hub(conn: sqlite3.Connection, node, origin: str, body: dict) -> bool:
    now = node.now()
    deadline = _due(node.calendar, body["taken_at"], now, COMPLAINT_WD)
    return _insert_complaint(conn, origin, body, "open", iso(now), deadline)


def apply_complaint(conn: sqlite3.Connection, node, origin: str, body: dict) -> bool:
    """The hub puts a ``complaint`` envelope into the supervisor's queue (once)."""
    for key in ("complaint_id", "content", "taken_by", "taken_at"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ValueError(f"complaint without {key}")
    if not isinstance(body.get("complainant"), dict):
        raise ValueError("complaint without complainant")
    parse_iso(body["taken_at"])
    return _store_at_hub(conn, node, origin, body)


def answer_complaint(conn: sqlite3.Connection, node, complaint_id: str, payload, account) -> dict:
    """The supervisor answers; the answer goes down to the node that took the complaint. Call
    inside a write transaction."""

    if not node.kind.supervises:
        raise RuleError("hub_only", "投诉由市（县）政务服务中心监察员答复")
    if account["role"] != "supervisor":
        raise Forbidden("只有监察员可以答复投诉")
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    complaint = get_complaint(conn, node, complaint_id)
    answer = _text(payload, "answer", required=True, limit=MAX_ANSWER, label="答复意见", multiline=True)
    if complaint["status"] == "answered":
        raise RuleError("already_answered", "该投诉已答复")
    upheld = payload.get("upheld")
    if upheld is not None and not isinstance(upheld, bool):
        raise ValidationError("upheld", "upheld（投诉是否属实）必须是布尔值")
    message = {"complaint_id": complaint_id, "answer": answer, "answered_by": account["username"],
               "answered_at": iso(node.now())}
    apply_answer(conn, message)
    if upheld is not None:  # 属实: counted against the office in 绩效考核
        conn.execute("UPDATE complaints SET upheld = ? WHERE complaint_id = ?", (int(upheld), complaint_id))
    if complaint["origin"] != node.node_id:
        downlink.issue(conn, node.key, node.node_id, complaint["origin"], "complaint.answer", message, node.now())
    return get_complaint(conn, node, complaint_id)


def apply_answer(conn: sqlite3.Connection, body: dict) -> bool:
    """Record a complaint's answer (``complaint.answer`` at the origin; idempotent)."""
    cur = conn.execute(
        "UPDATE complaints SET status = 'answered', answer = ?, answered_by = ?, answered_at = ?"
        " WHERE complaint_id = ? AND status != 'answered'",
        (body.get("answer", ""), body.get("answered_by", ""), body.get("answered_at", ""), body.get("complaint_id")),
    )
    return cur.rowcount > 0


def _complaint_json(row, calendar, today: date) -> dict:
    result = {
        "complaint_id": row["complaint_id"], "origin": row["origin"], "case_id": row["case_id"],
        "office": row["office"],
        "complainant": {"name": row["complainant_name"], "phone": row["complainant_phone"]},
        "content": row["content"], "taken_by": row["taken_by"], "taken_at": row["taken_at"],
        "received_at": row["received_at"], "deadline": row["deadline"], "status": row["status"],
        "status_label": COMPLAINT_STATUS[row["status"]], "answer": row["answer"],
        "answered_by": row["answered_by"], "answered_at": row["answered_at"],
    }
    result.update(_clock(calendar, today, row["deadline"], row["status"] == "open"))
    return result


def get_complaint(conn: sqlite3.Connection, node, complaint_id: str) -> dict:
    """One complaint as JSON, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM complaints WHERE complaint_id = ?", (complaint_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该投诉")
    return _complaint_json(row, node.calendar, node.clock.today_cn())


def complaints(conn: sqlite3.Connection, node, office: str | None = None, open_only: bool = False) -> list[dict]:
    """Complaints held here (of ``office``, or all): open ones by deadline, then the rest, newest first."""
    sql, params = "SELECT * FROM complaints WHERE 1 = 1", []
    if open_only:
        sql += " AND status = 'open'"
    if office is not None:
        sql += " AND office = ?"
        params.append(office)
    sql += " ORDER BY status = 'answered', deadline IS NULL, deadline, taken_at DESC LIMIT 1000"
    today = node.clock.today_cn()
    return [_complaint_json(r, node.calendar, today) for r in conn.execute(sql, params)]


def may_see_complaint(account, complaint: dict, supervising: bool) -> bool:
    """At the node that took it, every account; at the hub, supervisors and admins, the office
    complained about, and whoever took it."""
    return (not supervising or account["role"] in ("supervisor", "admin") or complaint["office"] == account["office"]
            or complaint["taken_by"] == account["username"])


# ----------------------------------------------------------------------------- hub ingest


def appliers(node) -> dict:
    """The hub's appliers of this module's envelope kinds (``city_hub.ingest.make_appliers``)."""

    def apply_case_rating(conn: sqlite3.Connection, opened) -> None:
        apply_rating(conn, node, opened.body["origin"], opened.body["body"])

    def apply_complaint_envelope(conn: sqlite3.Connection, opened) -> None:
        apply_complaint(conn, node, opened.body["origin"], opened.body["body"])

    return {"case.rating": apply_case_rating, "complaint": apply_complaint_envelope}
