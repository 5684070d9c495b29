"""What the statistics (统计) are restricted to and grouped by: filters, dimensions, columns.

Parsed from the query string of the 统计 page, the CSV export and ``GET /api/v1/stats``; turned
into one SQL condition on ``cases c`` (:func:`where_clause`) that the per-case facts
(:mod:`city_hub.oversight.facts`) and the aggregate (:mod:`city_hub.oversight.statistics`) share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta

from shared.core.clock import CN_TZ, iso
from shared.core.errors import ValidationError
from shared.rules.catalog import DEPARTMENTS, LEVEL_LABELS
from shared.services.names import county_of

GROUPS = {"department": "部门", "office": "承办机构", "item": "事项", "level": "受理层级", "month": "月份",
          "township": "乡镇（含所属村）", "origin": "受理节点（村、乡镇、窗口）"}

#: Columns of the statistics table and CSV, in order: (key, Chinese header).
COLUMNS = (
    ("cases", "办件数"),
    ("village_accepted", "村级受理数"),
    ("village_share", "村级受理占比"),
    ("decided", "已作出审批决定数"),
    ("on_time", "按时办结数"),
    ("on_time_rate", "按时办结率"),
    ("avg_working_days", "平均办理工作日"),
    ("village_cases", "村级报件数"),
    ("transmitted", "一日内传送数"),
    ("transmission_rate", "传送率"),
    ("closable", "已作出决定数"),
    ("closed", "已送达(闭合)数"),
    ("closure_rate", "闭合度"),
    ("yellow_cards", "黄牌数"),
    ("red_cards", "红牌数"),
    ("ratings", "评价数"),
    ("bad_ratings", "差评数"),
    ("satisfaction", "好评率"),
)
RATE_KEYS = frozenset({"village_share", "on_time_rate", "transmission_rate", "closure_rate", "satisfaction"})


@dataclass(frozen=True)
class Filters:
    """What the statistics are restricted to; ``None`` means any."""

    date_from: date | None = None
    date_to: date | None = None
    level: str | None = None
    office: str | None = None
    department: str | None = None
    item: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filters as query-string parameters (for links and the CSV export)."""
        out = {}
        for key, value in asdict(self).items():
            if value:
                out[{"date_from": "from", "date_to": "to"}.get(key, key)] = str(value)
        return out


def _day(value: str, field: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"日期「{value}」格式应为 YYYY-MM-DD") from None


def parse_filters(args: Mapping[str, str]) -> Filters:
    """Filters from query parameters ``from``, ``to``, ``level``, ``office``, ``department``, ``item``.

    :raises ValidationError: with a Chinese message naming the parameter.
    """
    date_from, date_to = _day(args.get("from", ""), "from"), _day(args.get("to", ""), "to")
    if date_from and date_to and date_from > date_to:
        raise ValidationError("to", "结束日期不能早于开始日期")
    level = (args.get("level") or "").strip() or None
    if level is not None and level not in LEVEL_LABELS:
        raise ValidationError("level", f"受理层级应为 {'/'.join(LEVEL_LABELS)} 之一")
    department = (args.get("department") or "").strip() or None
    if department is not None and department not in DEPARTMENTS:
        raise ValidationError("department", f"未知的部门编码「{department}」")
    return Filters(date_from, date_to, level, (args.get("office") or "").strip() or None, department,
                   (args.get("item") or "").strip() or None)


def parse_group(value: str | None) -> str:
    """The grouping dimension (default ``department``)."""
    value = (value or "").strip() or "department"
    if value not in GROUPS:
        raise ValidationError("by", f"分组应为 {'/'.join(GROUPS)} 之一")
    return value


def _cn_midnight(d: date) -> str:
    return iso(datetime.combine(d, time(0), tzinfo=CN_TZ))


def where_clause(filters: Filters, item_depts: Mapping[str, str]) -> tuple[str, tuple]:
    """The SQL condition on cases ``c`` (and its parameters) that ``filters`` mean."""
    clauses, params = ["1 = 1"], []
    if filters.date_from:
        clauses.append("c.submitted_at >= ?")
        params.append(_cn_midnight(filters.date_from))
    if filters.date_to:
        clauses.append("c.submitted_at < ?")
        params.append(_cn_midnight(filters.date_to + timedelta(days=1)))
    if filters.level:
        clauses.append("length(c.origin) = ?")
        params.append({"village": 12, "township": 9, "city": 6}[filters.level])
    if filters.office:
        clauses.append("c.route_office = ?")
        params.append(filters.office)
    if filters.item:
        clauses.append("c.item_code = ?")
        params.append(filters.item)
    if filters.department:
        codes = [code for code, dept in item_depts.items() if dept == filters.department]
        clauses.append(f"((c.route_level = 'city' AND c.route_office LIKE ?) OR (c.route_level != 'city'"
                       f" AND c.item_code IN ({','.join('?' * len(codes)) or 'NULL'})))")
        params.extend(["%-" + filters.department, *codes])
    return " AND ".join(clauses), tuple(params)


def group_label(key: str, by: str, names: Mapping[str, str]) -> str:
    """Chinese label of a group key (``names``: node and item names)."""
    if by == "department":
        return DEPARTMENTS.get(key, key)
    if by == "level":
        return LEVEL_LABELS.get(key, key)
    if by == "office":
        # By name only: an office code means nothing to a reader (the CSV export keeps the name too).
        if "-" in key:
            hub, department = key.split("-", 1)
            return county_of(names.get(hub, "")) + DEPARTMENTS.get(department, "有关部门")
        return names.get(key) or "未登记的服务点"
    if by in ("item", "township", "origin"):
        return f"{names.get(key, key)}（{key}）"
    return key
