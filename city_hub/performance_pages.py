"""绩效考核 pages and API at the hub (supervisors read; admins set the weights and publish)."""

from __future__ import annotations

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for

from city_hub import performance
from city_hub.db import get_db
from city_hub.oversight.pages import bar_chart
from shared.core.csv_export import to_csv
from shared.core.errors import LiandongError, NotFound
from shared.rules import performance as rules
from shared.web.auth import roles_required
from shared.web.context import current_node
from shared.web.limits import json_object

bp = Blueprint("performance", __name__)  # templates in city_hub/templates/performance/

READERS = ("supervisor", "admin")


def _args() -> tuple[str, str]:
    default = current_node().clock.today_cn().replace(day=1)
    month = request.args.get("month") or f"{default.year:04d}-{default.month:02d}"
    performance.month_days(month)
    return month, performance.check_dimension(request.args.get("by"))


@bp.get("/api/v1/performance")
@roles_required(*READERS)
def api_report():
    """The month's ranking (``?month=YYYY-MM&by=office|department|township|origin``)."""
    month, by = _args()
    return jsonify(performance.report(get_db(), current_node(), month, by))


@bp.post("/api/v1/performance/weights")
@roles_required("admin")
def api_weights():
    """Set the weights (rates 0 … 100, cards 0 … 20 points)."""
    return jsonify(performance.set_weights(get_db(), current_node(), json_object(), g.account["username"]))


@bp.post("/api/v1/performance/publish")
@roles_required("admin")
def api_publish():
    """Publish (freeze) a finished month's ranking."""
    body = json_object()
    month = body.get("month") if isinstance(body.get("month"), str) else ""
    performance.month_days(month)
    by = performance.check_dimension(body.get("by"))
    return jsonify(performance.publish(get_db(), current_node(), month, by, g.account["username"])), 201


@bp.get("/admin/performance")
@roles_required(*READERS)
def page():
    """绩效考核: the ranking with its formula, a chart, corrections of a published month, CSV."""
    month, by = _args()
    data = performance.report(get_db(), current_node(), month, by)
    chart = bar_chart(f"{month} 绩效得分", [(r["label"], {"score": r["score"]}) for r in data["rows"]
                                          if r["score"] is not None], (("score", "得分", "#1f5fa8"),), unit="分")
    return render_template("performance/page.html", data=data, chart=chart, dimensions=rules.DIMENSIONS,
                           rates=rules.RATES, penalties=rules.PENALTIES)


@bp.get("/admin/performance.<fmt>")
@roles_required(*READERS)
def csv_export(fmt: str):
    """The ranking as CSV (Excel/WPS)."""
    if fmt != "csv":
        raise NotFound("导出格式只能是 csv")
    month, by = _args()
    data = performance.report(get_db(), current_node(), month, by)
    return Response(to_csv(rules.csv_rows(data["rows"])), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=performance-{month}-{by}.csv"})


@bp.post("/admin/performance/weights")
@roles_required("admin")
def weights_form():
    """The admin's weights form."""
    try:
        body = {key: float(request.form.get(key, "")) for key, _ in rules.RATES + rules.PENALTIES}
        performance.set_weights(get_db(), current_node(), body, g.account["username"])
    except ValueError:
        flash("未能保存：权重必须是数字")
    except LiandongError as exc:
        flash(f"未能保存：{exc.message}")
    else:
        flash("权重已保存（已发布的月份不受影响）")
    return redirect(url_for("performance.page", **request.args))


@bp.post("/admin/performance/publish")
@roles_required("admin")
def publish_form():
    """发布: freeze the month's ranking."""
    month, by = request.form.get("month", ""), request.form.get("by", "office")
    try:
        performance.month_days(month)
        performance.publish(get_db(), current_node(), month, performance.check_dimension(by), g.account["username"])
    except LiandongError as exc:
        flash(f"未能发布：{exc.message}")
    else:
        flash(f"{month} 考核结果已发布")
    return redirect(url_for("performance.page", month=month, by=by))
