"""绩效考核: a month's score per window, office, township and village from the statistics' figures.

Sources: seed 002 §二(四)10 绩效考核制 ("运用行政效能监察信息系统对各进驻部门的服务窗口及其工作人员进行
服务绩效综合评价"), seed 000 §四(一) (派驻人员 "日常管理和绩效考核由政务服务中心负责") and seed 003
(第四步: 检验服务体系的闭合度、操控性、传送率; 考核奖惩机制). The figures are those of the 统计
page (``city_hub.oversight.statistics``): 按时办结率, 好评率, 传送率, 闭合度, 村级受理占比, 黄牌, 红牌.

Score (the formula the page shows, from the admin's weights):

    得分 = 100 × Σ(权重ᵢ × 指标ᵢ) / Σ权重ᵢ − 黄牌扣分 × 黄牌数 − 红牌扣分 × 红牌数 − 投诉扣分 × 投诉属实数,
    floored at 0

over the rate figures a group has (a rate with no cases behind it, e.g. 传送率 of a window that
takes no village cases, is left out of both sums, so no group is punished for what it never had
to do). A group with no rate at all has no score.
"""

from __future__ import annotations

from shared.core.errors import ValidationError

#: The rate figures a score weighs: (key of the statistics, Chinese name), in the formula's order.
RATES = (
    ("on_time_rate", "按时办结率"),
    ("satisfaction", "好评率"),
    ("transmission_rate", "传送率"),
    ("closure_rate", "闭合度"),
    ("village_share", "村级受理占比"),
)
#: Deductions per card, in points.
PENALTIES = (("yellow_cards", "黄牌"), ("red_cards", "红牌"), ("complaints_upheld", "投诉属实"))
DEFAULT_WEIGHTS = {"on_time_rate": 40, "satisfaction": 25, "transmission_rate": 15, "closure_rate": 15,
                   "village_share": 5, "yellow_cards": 2, "red_cards": 5, "complaints_upheld": 3}
DIMENSIONS = {"office": "窗口（承办机构）", "department": "部门", "staff": "工作人员（作出决定的人员）",
              "township": "乡镇（含所属村）", "origin": "受理节点（村、乡镇、窗口）"}


def clean_weights(body) -> dict:
    """Weights from an admin: each rate 0 … 100 (at least one above 0), each card 0 … 20 points."""
    if not isinstance(body, dict):
        raise ValidationError("weights", "权重必须是对象")
    out = {}
    for key, name in RATES + PENALTIES:
        value = body.get(key, DEFAULT_WEIGHTS[key])
        top = 20 if key in dict(PENALTIES) else 100
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= top:
            raise ValidationError(key, f"「{name}」的权重应为0到{top}之间的数")
        out[key] = value
    if not any(out[key] for key, _ in RATES):
        raise ValidationError("weights", "至少有一项指标的权重大于0")
    return out


def complaint_key(office: str | None, by: str) -> str | None:
    """The group a complaint upheld against ``office`` counts in (None: not in this dimension)."""
    if not office:
        return None
    if by == "office":
        return office
    if by == "department":
        return office.rsplit("-", 1)[1] if "-" in office else None
    if by == "township":
        return office[:9] if office.isdigit() and len(office) >= 9 else None
    return office if office.isdigit() else None  # origin: a township or village named as the office


def formula(weights: dict) -> str:
    """The score's formula in words, with these weights."""
    terms = " + ".join(f"{name}×{weights[key]:g}" for key, name in RATES if weights[key])
    total = sum(weights[key] for key, _ in RATES)
    cards = "".join(f" − {name}数×{weights[key]:g}" for key, name in PENALTIES if weights[key])
    return (f"得分 = 100 × ({terms}) ÷ {total:g}{cards}（最低0分；某项指标没有可计算的办件时，"
            f"该项及其权重不计入）")


def score(figures: dict, weights: dict) -> float | None:
    """One group's score from its figures (rates 0…1, card counts); None without any rate."""
    weighed = [(weights[key], figures.get(key)) for key, _ in RATES if weights[key] and figures.get(key) is not None]
    total = sum(w for w, _ in weighed)
    if not total:
        return None
    points = 100 * sum(w * value for w, value in weighed) / total
    points -= sum(weights[key] * (figures.get(key) or 0) for key, _ in PENALTIES)
    return round(max(points, 0.0), 2)


def ranking(groups: list[dict], weights: dict) -> list[dict]:
    """Groups with their score, best first, ranked (equal scores share a rank; no score comes last)."""
    scored = [{**g, "score": score(g, weights)} for g in groups]
    scored.sort(key=lambda g: (g["score"] is None, -(g["score"] or 0), g["key"]))
    rank, previous = 0, object()
    for position, g in enumerate(scored, start=1):
        if g["score"] != previous:
            rank, previous = position, g["score"]
        g["rank"] = rank if g["score"] is not None else None
    return scored


def corrections(frozen: list[dict], live: list[dict]) -> list[dict]:
    """Groups whose score changed since the month was published (a later 更正: late cases, a
    decision corrected), as (key, label, published score, current score)."""
    now = {g["key"]: g for g in live}
    out = []
    for g in frozen:
        current = now.get(g["key"], {}).get("score")
        if current != g["score"]:
            out.append({"key": g["key"], "label": g["label"], "published": g["score"], "current": current})
    known = {g["key"] for g in frozen}
    out += [{"key": g["key"], "label": g["label"], "published": None, "current": g["score"]}
            for g in live if g["key"] not in known and g["score"] is not None]
    return out


def csv_rows(rows: list[dict]) -> list[list]:
    """The ranking as CSV rows (header first)."""
    header = ["名次", "对象", "得分", *[name for _, name in RATES], *[f"{name}数" for _, name in PENALTIES], "办件数"]
    out = [header]
    for g in rows:
        out.append([g["rank"] or "", g["label"], "" if g["score"] is None else f"{g['score']:.2f}",
                    *["" if g.get(k) is None else f"{g[k] * 100:.1f}%" for k, _ in RATES],
                    *[g.get(k) or 0 for k, _ in PENALTIES], g.get("cases", 0)])
    return out
