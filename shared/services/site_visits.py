"""现场核查 records at the township. No Flask here.

行政许可法 Art. 34 (3): where the substance of the materials must be verified, the agency sends
two or more staff to verify on site. The township station records such a visit for a case in
its area: a case it decides (delegated to it), or a city item whose catalog entry has
``site_visit`` (e.g. 林木采伐许可证核发: 乡镇初审 and a two-person site visit before the 林业局
decides) taken at one of its villages or at its own window. The record (inspectors, date,
findings, result 符合/不符合/需整改, optional photos) is a case event ``site_visit`` that does not
change the status (:mod:`shared.rules.states`). It travels:

- up to the hub as a ``case.event`` envelope of the township, with the photos as attachments
  (the hub accepts it from the township above the case's origin: ``casework.check_event``);
- down to the village that took the application as a ``case.site_visit`` downlink message,
  recorded there without touching the status (the village may already know a newer status
  from the hub than the township does).

Every node shows it in the case's history (the comment summarises the record).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date

from shared.core.audit import audit
from shared.core.errors import Forbidden, RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import states
from shared.rules.deadlines import cn_day
from shared.services import casework
from sync import blobs, downlink, outbox

#: Who records site visits at the township.
RECORDING_ROLES = ("clerk",)
MAX_PHOTOS = 10
MAX_INSPECTORS = 10
#: Photos are images: PNG or JPEG, recognised by their first bytes.
PHOTO_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
DOWNLINK_KIND = "case.site_visit"


def photo_type(data: bytes) -> str | None:
    """The image type of a photo's bytes, or None."""
    return next((mime for magic, mime in PHOTO_TYPES if data.startswith(magic)), None)


def in_area(row, item: dict | None, township_id: str) -> bool:
    """Whether the township may record a site visit for the case ``row``."""
    if row["route_level"] == "township" and row["route_office"] == township_id:
        return True
    return bool(item and item.get("site_visit")) and row["origin"].startswith(township_id)


def clean(payload: dict, today: date, submitted_day: date) -> dict:
    """Check a site visit record; returns ``{inspectors, visit_date, findings, result}``.

    :raises ValidationError: naming the field.
    """
    if not isinstance(payload, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    inspectors = payload.get("inspectors")
    if isinstance(inspectors, str):  # a form field: one name per line, or separated by 、，,
        for sep in ("、", "，", ","):
            inspectors = inspectors.replace(sep, "\n")
        inspectors = inspectors.splitlines()
    if not isinstance(inspectors, list) or not all(isinstance(n, str) for n in inspectors):
        raise ValidationError("inspectors", "请填写核查人员姓名")
    names: list[str] = []
    for name in (n.strip() for n in inspectors):
        if name and name not in names:
            if len(name) > 20:
                raise ValidationError("inspectors", f"核查人员姓名过长：{name[:20]}…")
            names.append(name)
    if len(names) < 2:
        raise ValidationError("inspectors", "现场核查须由两名以上工作人员进行（行政许可法第三十四条），请填写全部核查人员")
    if len(names) > MAX_INSPECTORS:
        raise ValidationError("inspectors", f"核查人员最多{MAX_INSPECTORS}名")
    raw_date = payload.get("visit_date")
    try:
        visit_date = date.fromisoformat(raw_date.strip()) if isinstance(raw_date, str) else None
    except ValueError:
        visit_date = None
    if visit_date is None:
        raise ValidationError("visit_date", "请填写核查日期（年-月-日）")
    if visit_date > today:
        raise ValidationError("visit_date", "核查日期不能晚于今天")
    if visit_date < submitted_day:
        raise ValidationError("visit_date", "核查日期不能早于申请日期")
    findings = payload.get("findings")
    if not isinstance(findings, str) or not findings.strip():
        raise ValidationError("findings", "请填写核查情况")
    if len(findings.strip()) > 2000:
        raise ValidationError("findings", "核查情况不能超过2000字")
    result = payload.get("result")
    if result not in states.SITE_VISIT_RESULTS:
        raise ValidationError("result", "核查结果须为" + "、".join(states.SITE_VISIT_RESULTS) + "之一")
    return {"inspectors": names, "visit_date": visit_date.isoformat(), "findings": findings.strip(),
            "result": result}


def check_photos(photos: list[tuple[str, bytes]], max_file: int) -> None:
    """Photos are PNG/JPEG images within the size limit, at most :data:`MAX_PHOTOS`."""
    if len(photos) > MAX_PHOTOS:
        raise ValidationError("photos", f"照片最多{MAX_PHOTOS}张")
    for i, (filename, data) in enumerate(photos):
        if not data or photo_type(data) is None:
            raise ValidationError(f"photos[{i}]", f"「{filename}」不是 JPG 或 PNG 照片")
        if len(data) > max_file:
            raise ValidationError(f"photos[{i}]", f"单张照片不能超过 {max_file // (1024 * 1024)} MB")


def summary(record: dict) -> str:
    """The record in one line, as the case history shows it at every node."""
    return (f"核查结果：{record['result']}；核查人员：{'、'.join(record['inspectors'])}；"
            f"核查日期：{record['visit_date']}；核查情况：{record['findings']}")


def record(conn: sqlite3.Connection, node, case_id: str, payload: dict, photos: list[tuple[str, bytes]],
           actor: str, items: dict) -> dict:
    """Record a site visit at the township and send it on (hub, and the village that took it).

    Call outside a transaction (photos are stored first; an orphan file is harmless).
    :returns: the event.
    """

    if not node.kind.records_site_visits:
        raise Forbidden("现场核查由乡镇便民服务站登记")
    row = casework.get_row(conn, case_id)
    if not in_area(row, items.get(row["item_code"]), node.node_id):
        raise Forbidden("该办件不在本乡镇现场核查范围内")
    checked = clean(payload, node.clock.today_cn(), cn_day(row["submitted_at"]))
    check_photos(photos, int(node.config["MAX_ATTACHMENT_BYTES"]))
    stored = [{"sha256": node.blobs.put(data), "size": len(data), "filename": (filename or "照片")[:200]}
              for filename, data in photos]
    now = node.now()
    detail = {**checked, "photos": stored}
    with write_transaction(conn):
        row = casework.get_row(conn, case_id)  # the status as it is now, inside the transaction
        states.apply_action(row["status"], "site_visit", "", **checked)
        event = casework.new_event(node.node_id, actor, "site_visit", row["status"], row["status"], now,
                                   summary(checked), detail)
        casework.record_event(conn, case_id, event, move=False)
        for photo in stored:
            blobs.register(conn, photo["sha256"], photo["size"], now)
        outbox.append(conn, node.key, node.node_id, "case.event", casework.update_message(row, event, None),
                      str(node.hlc.now()), now, case_id=case_id,
                      attachments=[{"sha256": p["sha256"], "size": p["size"]} for p in stored])
        if row["origin"] != node.node_id:
            downlink.issue(conn, node.key, node.node_id, row["origin"], DOWNLINK_KIND,
                           {"case_id": case_id, "event": event}, now)
        audit(conn, actor, "case.site_visit", case_id, checked["result"], now)
    return event


def apply_downlink(conn: sqlite3.Connection, body: dict) -> bool:
    """A site visit the township sent down: recorded in the case's history, status untouched."""
    if conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone() is None:
        return False
    event = body["event"]
    if event.get("action") != "site_visit":
        raise RuleError("invalid_content", "现场核查消息中的事件类型不符")
    return casework.record_event(conn, body["case_id"], event, move=False)


def visits_of(conn: sqlite3.Connection, case_id: str) -> list[dict]:
    """The site visits recorded for a case at this node, oldest first."""
    return [{**e["detail"], "at": e["at"], "node": e["node"], "actor": e["actor"], "status": e["from_status"]}
            for e in casework.events_of(conn, case_id, ("site_visit",))]


def recent(conn: sqlite3.Connection, limit: int = 100) -> list[dict]:
    """The latest site visits held at this node, newest first, with their case."""

    rows = conn.execute(
        "SELECT e.case_id, e.at, e.node, e.actor, e.detail, c.receipt_no, c.item_name, c.origin FROM case_events e"
        " JOIN cases c ON c.case_id = e.case_id WHERE e.action = 'site_visit' ORDER BY e.at DESC LIMIT ?",
        (limit,)).fetchall()
    return [{**{k: r[k] for k in ("case_id", "at", "node", "actor", "receipt_no", "item_name", "origin")},
             **json.loads(r["detail"] or "{}")} for r in rows]


def photo_of(conn: sqlite3.Connection, case_id: str, sha256: str) -> dict | None:
    """A photo of one of the case's site visits (its record), or None."""
    for visit in visits_of(conn, case_id):
        for photo in visit.get("photos") or []:
            if photo.get("sha256") == sha256:
                return photo
    return None


def candidates(conn: sqlite3.Connection, township_id: str, items: dict,
               readable: tuple[str, tuple] = ("1", ())) -> list[sqlite3.Row]:
    """Cases in the township's area that may get a site visit now, oldest first (only those
    matching the ``readable`` SQL condition: :func:`shared.services.case_access.readable_where`)."""
    allowed = states.TRANSITIONS["site_visit"][0]
    marks = ",".join("?" * len(allowed))
    rows = conn.execute(
        f"SELECT * FROM cases WHERE status IN ({marks}) AND (route_office = ? OR origin LIKE ?) AND {readable[0]}"
        " ORDER BY submitted_at LIMIT 500", (*sorted(allowed), township_id, township_id + "%", *readable[1])).fetchall()
    return [r for r in rows if in_area(r, items.get(r["item_code"]), township_id)]
