"""绩效考核 at the hub: the month's scores from the statistics, the admin's weights, publishing.

No Flask here; the rules are :mod:`shared.rules.performance`, the figures
:func:`city_hub.oversight.statistics.statistics` over the cases submitted in the month (China
time). A published month is stored as it was shown (rows, weights, formula) and never changes
(the primary key of ``performance_months``); what changes later (late decisions, corrections)
is shown beside it as a correction.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date, datetime, time, timedelta

from city_hub.oversight import statistics
from city_hub.oversight.filters import Filters
from shared.core.audit import audit
from shared.core.clock import CN_TZ, iso
from shared.core.errors import RuleError, ValidationError
from shared.core.storage import write_transaction
from shared.rules import performance as rules

_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


def month_days(month: str) -> tuple[date, date]:
    """First and last day of a month ``YYYY-MM``."""
    found = _MONTH.fullmatch(month or "")
    if not found:
        raise ValidationError("month", "月份格式应为 YYYY-MM")
    first = date(int(found[1]), int(found[2]), 1)
    last = date(first.year + (first.month == 12), first.month % 12 + 1, 1) - timedelta(days=1)
    return first, last


def check_dimension(by: str | None) -> str:
    """The ranking's dimension (default: window/office)."""
    by = by or "office"
    if by not in rules.DIMENSIONS:
        raise ValidationError("by", f"考核对象应为 {'/'.join(rules.DIMENSIONS)} 之一")
    return by


def current_weights(conn: sqlite3.Connection) -> dict:
    """The weights in force: the admin's latest, else the defaults."""
    row = conn.execute("SELECT weights FROM performance_weights ORDER BY version DESC LIMIT 1").fetchone()
    return {**rules.DEFAULT_WEIGHTS, **json.loads(row["weights"])} if row else dict(rules.DEFAULT_WEIGHTS)


def set_weights(conn: sqlite3.Connection, node, body, actor: str) -> dict:
    """An admin sets the weights (a new version; published months keep theirs)."""
    weights = rules.clean_weights(body)
    now = node.now()
    with write_transaction(conn):
        conn.execute("INSERT INTO performance_weights(weights, set_by, set_at) VALUES (?,?,?)",
                     (json.dumps(weights), actor, iso(now)))
        audit(conn, actor, "performance.weights", None, json.dumps(weights), now)
    return {"weights": weights, "formula": rules.formula(weights)}


def upheld_complaints(conn: sqlite3.Connection, first: date, last: date, by: str) -> dict[str, int]:
    """Complaints taken in the period and found 属实, per group of ``by``."""
    counts: dict[str, int] = {}
    bounds = tuple(iso(datetime.combine(d, time(0), tzinfo=CN_TZ)) for d in (first, last + timedelta(days=1)))
    for (office,) in conn.execute("SELECT office FROM complaints WHERE upheld = 1 AND taken_at >= ? AND taken_at < ?",
                                  bounds):
        key = rules.complaint_key(office, by)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def staff_groups(conn: sqlite3.Connection, first: date, last: date) -> list[dict]:
    """Per staff member: the cases of the month they decided (准予/不予许可/不予受理, the last such
    event's actor; the system's 秒批 left out), from the stored per-case facts: 按时办结率, 好评率,
    黄牌/红牌 of those cases and complaints about them found 属实. The rates no staff member answers
    for alone (传送率, 闭合度, 村级受理占比) are not part of their score."""
    bounds = tuple(iso(datetime.combine(d, time(0), tzinfo=CN_TZ)) for d in (first, last + timedelta(days=1)))
    rows = conn.execute(
        "SELECT d.actor, COUNT(*) AS cases, TOTAL(f.counted) AS decided, TOTAL(f.on_time) AS on_time,"
        " TOTAL(r.case_id IS NOT NULL) AS ratings, TOTAL(r.level >= 3) AS good,"
        " TOTAL(EXISTS (SELECT 1 FROM supervision_alerts a WHERE a.case_id = c.case_id AND a.level IN ('yellow', 'red'))) AS yellow,"
        " TOTAL(EXISTS (SELECT 1 FROM supervision_alerts a WHERE a.case_id = c.case_id AND a.level = 'red')) AS red,"
        " TOTAL((SELECT COUNT(*) FROM complaints k WHERE k.case_id = c.case_id AND k.upheld = 1)) AS upheld"
        " FROM cases c JOIN case_facts f ON f.case_id = c.case_id"
        " JOIN (SELECT case_id, actor, MAX(at) FROM case_events WHERE action IN ('approve', 'deny', 'reject')"
        "       GROUP BY case_id) d ON d.case_id = c.case_id"
        " LEFT JOIN case_ratings r ON r.case_id = c.case_id"
        " WHERE c.submitted_at >= ? AND c.submitted_at < ? AND d.actor != 'system' GROUP BY d.actor", bounds)
    names = {r["username"]: r["display_name"] for r in conn.execute("SELECT username, display_name FROM accounts")}
    return [{"key": r["actor"], "label": f"{names.get(r['actor'], r['actor'])}（{r['actor']}）", "cases": r["cases"],
             "on_time_rate": round(r["on_time"] / r["decided"], 4) if r["decided"] else None,
             "satisfaction": round(r["good"] / r["ratings"], 4) if r["ratings"] else None,
             "transmission_rate": None, "closure_rate": None, "village_share": None,
             "yellow_cards": int(r["yellow"]), "red_cards": int(r["red"]), "complaints_upheld": int(r["upheld"])}
            for r in rows]


def live_ranking(conn: sqlite3.Connection, node, month: str, by: str, weights: dict) -> list[dict]:
    """The month's groups scored now (complaints upheld against a group without cases count too)."""
    first, last = month_days(month)
    data = statistics.statistics(conn, node.hub_id, node.calendar, node.clock.today_cn(), Filters(first, last),
                                 "office" if by == "staff" else by)  # also brings the per-case facts up to date
    if by == "staff":
        return rules.ranking(staff_groups(conn, first, last), weights)
    upheld = upheld_complaints(conn, first, last, by)
    groups = [{**g, "complaints_upheld": upheld.pop(g["key"], 0)} for g in data["groups"]]
    groups += [{"key": key, "label": key, "cases": 0, "complaints_upheld": n} for key, n in upheld.items()]
    return rules.ranking(groups, weights)


def report(conn: sqlite3.Connection, node, month: str, by: str) -> dict:
    """The month's ranking: frozen as published (with later corrections beside it), or live."""
    frozen = conn.execute("SELECT * FROM performance_months WHERE month = ? AND dimension = ?", (month, by)).fetchone()
    if frozen is not None:
        weights, rows = json.loads(frozen["weights"]), json.loads(frozen["rows"])
        return {"month": month, "by": by, "published": True, "published_at": frozen["published_at"],
                "published_by": frozen["published_by"], "weights": weights, "formula": frozen["formula"],
                "rows": rows, "corrections": rules.corrections(rows, live_ranking(conn, node, month, by, weights))}
    weights = current_weights(conn)
    return {"month": month, "by": by, "published": False, "published_at": None, "published_by": None,
            "weights": weights, "formula": rules.formula(weights),
            "rows": live_ranking(conn, node, month, by, weights), "corrections": []}


def publish(conn: sqlite3.Connection, node, month: str, by: str, actor: str) -> dict:
    """Freeze a finished month's ranking as it stands now.

    :raises RuleError: ``month_not_over``, ``already_published``.
    """
    _, last = month_days(month)
    if last >= node.clock.today_cn():
        raise RuleError("month_not_over", f"{month} 尚未结束，月度考核结果要到下月才能发布")
    weights = current_weights(conn)
    rows = live_ranking(conn, node, month, by, weights)
    now = node.now()
    with write_transaction(conn):
        try:
            conn.execute("INSERT INTO performance_months(month, dimension, weights, formula, rows, published_by,"
                         " published_at) VALUES (?,?,?,?,?,?,?)",
                         (month, by, json.dumps(weights), rules.formula(weights), json.dumps(rows, ensure_ascii=False),
                          actor, iso(now)))
        except sqlite3.IntegrityError:
            raise RuleError("already_published", f"{month} 的考核结果已发布，不能再修改；之后的变化作为更正列出") from None
        audit(conn, actor, "performance.publish", f"{month}:{by}", str(len(rows)), now)
    return report(conn, node, month, by)
