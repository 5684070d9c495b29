"""电子监察 board, statistics with filters, CSV export and ``GET /api/v1/stats`` (supervisor, admin).

The figures come from :mod:`city_hub.oversight.statistics` and :mod:`city_hub.oversight.board`;
this module only reads the request, renders the page and draws the charts as inline SVG (no script, no external asset: it prints and works
offline).
"""

from __future__ import annotations

import json
from html import escape

from flask import Blueprint, Response, jsonify, render_template, request
from markupsafe import Markup

from city_hub.db import get_db
from city_hub.oversight import board as supervision_board
from city_hub.oversight import statistics
from city_hub.oversight.filters import GROUPS, RATE_KEYS, Filters, parse_filters, parse_group
from shared.core.errors import NotFound, ValidationError
from shared.rules.catalog import DEPARTMENTS, LEVEL_LABELS
from shared.rules.workdays import fallback_warning
from shared.web.auth import roles_required
from shared.web.context import current_node

bp = Blueprint("oversight", __name__)  # templates in city_hub/templates/oversight/

ROLES = ("supervisor", "admin")
#: The page's compact table (the CSV has every column): (header, figure, numerator, denominator).
PAGE_COLUMNS = (
    ("办件数", "cases", None, None),
    ("村级受理占比", "village_share", "village_accepted", "cases"),
    ("按时办结率", "on_time_rate", "on_time", "decided"),
    ("平均办理工作日", "avg_working_days", None, None),
    ("传送率", "transmission_rate", "transmitted", "village_cases"),
    ("闭合度", "closure_rate", "closed", "closable"),
    ("黄牌", "yellow_cards", None, None),
    ("红牌", "red_cards", None, None),
    ("评价数", "ratings", None, None),
    ("好评率", "satisfaction", None, None),
)
LEVEL_COLOURS = (("warning", "预警", "#e0a800"), ("yellow", "黄牌", "#f0c419"), ("red", "红牌", "#b3261e"))


def bar_chart(title: str, rows: list[tuple[str, dict[str, float]]], series: tuple[tuple[str, str, str], ...],
              unit: str = "件") -> Markup:
    """A horizontal stacked bar chart as inline SVG: one bar per row, one colour per series."""
    bar, gap, left, width = 20, 8, 230, 420
    height = 34 + len(rows) * (bar + gap) + 26
    top = max([sum(values.get(key, 0) or 0 for key, _, _ in series) for _, values in rows] or [0]) or 1
    parts = [f'<svg role="img" class="chart" width="{left + width + 70}"'
             f' height="{height}" viewBox="0 0 {left + width + 70} {height}" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="0" y="16" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (label, values) in enumerate(rows):
        y = 30 + i * (bar + gap)
        short = label if len(label) <= 16 else label[:15] + "…"
        parts.append(f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">{escape(short)}</text>')
        x, total = left, 0
        for key, name, colour in series:
            value = values.get(key, 0) or 0
            if value <= 0:
                continue
            w = max(1.0, value / top * width)
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}">'
                         f'<title>{escape(label)} {escape(name)}：{value:g}{unit}</title></rect>')
            x += w
            total += value
        parts.append(f'<text x="{x + 5:.1f}" y="{y + 15}" font-size="12">{total:g}</text>')
    y = 30 + len(rows) * (bar + gap) + 8
    x = left
    for _, name, colour in series if rows else ():
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="{y + 11}" font-size="12">{escape(name)}</text>')
        x += 24 + 14 * len(name)
    if not rows:
        parts.append(f'<text x="{left}" y="44" font-size="12" fill="#666">暂无数据</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _today():
    return current_node().clock.today_cn()


@bp.get("/admin/supervision")
@roles_required(*ROLES)
def board():
    """电子监察: open cases at 预警/黄牌/红牌 by department and office; refusals with their reasons."""
    node = current_node()
    data = supervision_board.board(get_db(), node.hub_id, node.calendar, _today())
    by_department: dict[str, dict] = {}
    for group in data["groups"]:
        row = by_department.setdefault(group["department_label"], {"warning": 0, "yellow": 0, "red": 0})
        for level in row:
            row[level] += group[level]
    chart = bar_chart("各部门预警与红黄牌", sorted(by_department.items()), LEVEL_COLOURS)
    return render_template("oversight/board.html", data=data, chart=chart, warning=_calendar_warning())


def _calendar_warning() -> str:
    return fallback_warning(sorted(current_node().calendar.used_fallback))


def _stats():
    node = current_node()
    filters = parse_filters(request.args)
    by = parse_group(request.args.get("by"))
    return statistics.statistics(get_db(), node.hub_id, node.calendar, _today(), filters, by), filters


@bp.get("/admin/stats")
@roles_required(*ROLES)
def stats():
    """Statistics with filters, a table per group, charts and the CSV link."""
    error = None
    try:
        data, filters = _stats()
    except ValidationError as exc:
        error, filters = exc.message, Filters()
        data = statistics.statistics(get_db(), current_node().hub_id, current_node().calendar, _today())
    rows = [(g["label"], {"cases": g["cases"]}) for g in data["groups"]]
    cases_chart = bar_chart(f"办件数（按{GROUPS[data['by']]}）", rows, (("cases", "办件", "#2e4a2e"),))
    rate_rows = [(g["label"], {"rate": round((g["on_time_rate"] or 0) * 100, 1)}) for g in data["groups"]
                 if g["on_time_rate"] is not None]
    rate_chart = bar_chart("按时办结率（%）", rate_rows, (("rate", "按时办结率", "#1f5fa8"),), unit="%")
    items = sorted({(r["item_code"], r["item_name"]) for r in get_db().execute(
        "SELECT DISTINCT item_code, item_name FROM cases")})
    offices = [r[0] for r in get_db().execute("SELECT DISTINCT route_office FROM cases ORDER BY route_office")]
    return render_template("oversight/stats.html", data=data, filters=filters, error=error, columns=PAGE_COLUMNS,
                           rates=RATE_KEYS, groups=GROUPS, levels=LEVEL_LABELS,
                           departments=DEPARTMENTS, items=items, offices=offices, query=request.args.to_dict(),
                           cases_chart=cases_chart, rate_chart=rate_chart, warning=_calendar_warning())


@bp.get("/admin/stats.<fmt>")
@roles_required(*ROLES)
def stats_export(fmt: str):
    """The statistics as a file: CSV (UTF-8 with BOM, Chinese headers, for Excel) or JSON."""
    if fmt not in ("csv", "json"):
        raise NotFound("导出格式只能是 csv 或 json")
    data, _ = _stats()
    name = f"liandong-stats-{data['today']}.{fmt}"
    if fmt == "csv":
        body, content_type = statistics.to_csv(data), "text/csv; charset=utf-8"
    else:
        body, content_type = json.dumps(data, ensure_ascii=False, indent=1), "application/json; charset=utf-8"
    return Response(body, content_type=content_type, headers={"Content-Disposition": f"attachment; filename={name}"})


@bp.get("/api/v1/stats")
@roles_required(*ROLES)
def api_stats():
    """``GET /api/v1/stats?from=&to=&level=&office=&department=&item=&by=``: totals and groups as JSON."""
    data, _ = _stats()
    return jsonify(data)
