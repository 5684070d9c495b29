"""首问负责 and 咨询登记: the checks on an inquiry recorded at any node, and what it counts as.

Sources: seed 000 (城陵矶新港区 方案 §四(三): 实行首问负责、服务承诺、一次性告知、限时办结), seed 003
(黄骅市 方案 §四 五: 实行首问负责、一次告知 … 预约服务、全程代办), and the product brief §5 (零星林木 on
自留地/房前屋后 needs no permit: a consultation answer, not a case). The person first asked (首问负责人)
records the question and sees it through: answers it, or refers it to the office that can, and
closes it. An answer that is not a case (a ``consultation_only`` catalog item) counts as a
咨询 in the statistics; an inquiry about an item that can be applied for may become a case, its
answers carried into the intake wizard.
"""

from __future__ import annotations

from shared.core.errors import RuleError, ValidationError
from shared.rules.idcard import validate_phone
from shared.rules.text import clean_text

OUTCOMES = {"answered": "已答复", "referred": "已转办", "case": "转为办件"}
STATUS_LABELS = {"open": "待答复", "closed": "已办结"}


def clean_inquiry(body: dict, items: dict[str, dict]) -> dict:
    """A new inquiry: who asks (name; phone optional), the question, optionally the catalog item."""
    if not isinstance(body, dict):
        raise ValidationError("body", "请求体必须是 JSON 对象")
    code = body.get("item_code") or None
    if code is not None and (not isinstance(code, str) or code not in items):
        raise ValidationError("item_code", "事项不存在或目录尚未同步")
    phone = body.get("asker_phone") or ""
    return {
        "asker_name": clean_text(body.get("asker_name"), "asker_name", "咨询人姓名", 50),
        "asker_phone": validate_phone(phone, field="asker_phone") if phone else "",
        "question": clean_text(body.get("question"), "question", "咨询内容", 1000, multiline=True),
        "item_code": code,
        "item_name": items[code]["name"] if code else "",
    }


def suggested_answer(item: dict | None) -> str:
    """The catalog's own answer for a consultation-only item (e.g. 零星林木采伐咨询), else nothing."""
    return (item or {}).get("consultation_answer", "") if (item or {}).get("consultation_only") else ""


def check_close(inquiry: dict, outcome, answer, referred_to, item: dict | None) -> dict:
    """Closing an open inquiry: ``answered`` with the answer, or ``referred`` to an office (with
    what the asker was told). Returns the columns to store, ``consultation`` set when the answer
    is one that no case follows (the item is consultation-only, or no item was named).

    :raises RuleError: ``inquiry_closed``. :raises ValidationError: naming the field.
    """
    if inquiry["status"] != "open":
        raise RuleError("inquiry_closed", "该咨询已办结")
    if outcome == "answered":
        text = clean_text(answer or suggested_answer(item), "answer", "答复内容", 2000, multiline=True)
        return {"outcome": "answered", "answer": text, "referred_to": "",
                "consultation": 1 if item is None or item.get("consultation_only") else 0}
    if outcome == "referred":
        return {"outcome": "referred", "answer": clean_text(answer, "answer", "告知内容", 2000, required=False, multiline=True),
                "referred_to": clean_text(referred_to, "referred_to", "转办机构", 100), "consultation": 0}
    raise ValidationError("outcome", "outcome 必须是 answered（答复）或 referred（转办）")


def check_becomes_case(inquiry: dict, item: dict | None, accepts_here: bool) -> None:
    """An inquiry may become a case when it names an item that is applied for and taken here.

    :raises RuleError: ``inquiry_closed``, ``no_item``, ``consultation_only``, ``not_accepted_here``.
    """
    if inquiry["status"] != "open":
        raise RuleError("inquiry_closed", "该咨询已办结")
    if item is None:
        raise RuleError("no_item", "请先在咨询中选定要办理的事项")
    if item.get("consultation_only"):
        raise RuleError("consultation_only", f"「{item['name']}」无需办理审批，请直接答复：{item.get('consultation_answer', '')}")
    if not accepts_here:
        raise RuleError("not_accepted_here", f"「{item['name']}」不能在本级受理，请转办")


def wizard_values(inquiry: dict) -> dict:
    """The intake wizard's inputs the inquiry already answers (no retyping)."""
    values = {"applicant_name": inquiry["asker_name"]}
    if inquiry["asker_phone"]:
        values["applicant_phone"] = inquiry["asker_phone"]
    return values


def statistics(rows: list[dict]) -> dict:
    """Counts of inquiries: by outcome, consultations (answers that are not cases) by item, open."""
    closed = [r for r in rows if r["status"] == "closed"]
    by_item: dict[str, int] = {}
    for r in closed:
        if r["consultation"]:
            name = r["item_name"] or "其他咨询"
            by_item[name] = by_item.get(name, 0) + 1
    return {
        "total": len(rows),
        "open": len(rows) - len(closed),
        "answered": sum(r["outcome"] == "answered" for r in closed),
        "referred": sum(r["outcome"] == "referred" for r in closed),
        "became_cases": sum(r["outcome"] == "case" for r in closed),
        "consultations": sum(bool(r["consultation"]) for r in closed),
        "consultations_by_item": dict(sorted(by_item.items(), key=lambda kv: -kv[1])),
    }
