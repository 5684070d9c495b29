"""规范收费: what a service item may charge, and the checks on what a window records.

Source: seed 002 §二(四)8 规范收费制 ("除法律、行政法规规定外，各部门实施行政许可不得收取任何
费用。依照法律、行政法规收取的行政事业性收费，应当按照公布的法定项目和标准，使用规范票据"),
and 行政许可法 Art. 58-59. The catalog item's ``fee`` holds the legal basis and the standard
(the most one case may be charged, in 分); most items are free. There is no payment gateway:
the window records what was paid (amount, 票据号, payer), an exemption with its reason, or a
refund with its reason. Money is whole 分 (integers) everywhere.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from shared.core.errors import RuleError, ValidationError
from shared.rules.text import clean_text

#: 行政许可法 Art. 58: what a free 许可 item's page cites.
FREE_LICENCE_BASIS = "《中华人民共和国行政许可法》第五十八条：行政机关实施行政许可，不得收取任何费用（法律、行政法规另有规定的除外）"
KIND_LABELS = {"payment": "收费", "exemption": "减免", "refund": "退费"}
_RECEIPT_NO = re.compile(r"[0-9A-Za-z-]{1,40}")
_AMOUNT = re.compile(r"\d{1,7}(\.\d{1,2})?")


def fee_terms(item: dict) -> dict:
    """What the 办事指南 and the window say about an item's fee: charged or not, the legal basis,
    the standard (in 分 and as text), and one line to show."""
    fee = item.get("fee") or {"charged": False, "basis": ""}
    if not fee.get("charged"):
        basis = fee.get("basis") or (FREE_LICENCE_BASIS if item.get("item_type") == "许可" else "")
        return {"charged": False, "basis": basis, "standard_fen": 0, "standard": "",
                "label": "不收费" + (f"（依据：{basis}）" if basis else "")}
    standard = fee.get("standard") or f"每件{yuan(fee['standard_fen'])}元"
    return {"charged": True, "basis": fee["basis"], "standard_fen": fee["standard_fen"], "standard": standard,
            "label": f"收费：{standard}（依据：{fee['basis']}）"}


def yuan(fen: int) -> str:
    """分 as 元 text with two decimals (1250 → 12.50)."""
    return f"{fen // 100}.{fen % 100:02d}"


def parse_yuan(text, field: str = "amount") -> int:
    """An amount typed in 元 ("12.5", "12.50", "12") as 分; refuses anything else."""
    value = (text if isinstance(text, str) else "").strip()
    if not _AMOUNT.fullmatch(value):
        raise ValidationError(field, "金额请填写元，如 10 或 12.50（最多两位小数）")
    try:
        return int(Decimal(value) * 100)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValidationError(field, "金额格式不正确") from None


def summary(records: list[dict]) -> dict:
    """Totals of a case's fee records: paid, refunded, net, and whether an exemption stands."""
    paid = sum(r["amount_fen"] for r in records if r["kind"] == "payment")
    refunded = sum(r["amount_fen"] for r in records if r["kind"] == "refund")
    return {"paid_fen": paid, "refunded_fen": refunded, "net_fen": paid - refunded,
            "exempted": any(r["kind"] == "exemption" for r in records)}


def check_payment(terms: dict, records: list[dict], amount_fen, receipt_no, payer) -> dict:
    """A payment the window may record: the item charges, the amount is positive and with what was
    already paid (net of refunds) stays within the catalog's standard, the 票据号 and payer are given.

    :raises RuleError: ``fee_not_charged``, ``fee_exempted``, ``amount_above_standard``.
    :raises ValidationError: naming the field.
    """
    if not terms["charged"]:
        raise RuleError("fee_not_charged", f"本事项依法不收费，不能登记收费。{terms['label']}")
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise ValidationError("amount_fen", "收费金额必须是大于0的整数（单位：分）")
    totals = summary(records)
    if totals["exempted"]:
        raise RuleError("fee_exempted", "本办件已登记减免，不能再收费")
    if totals["net_fen"] + amount_fen > terms["standard_fen"]:
        raise RuleError("amount_above_standard",
                        f"收费金额超过目录公布的收费标准：标准为{yuan(terms['standard_fen'])}元，"
                        f"已收{yuan(totals['net_fen'])}元，本次最多可收{yuan(max(terms['standard_fen'] - totals['net_fen'], 0))}元")
    number = clean_text(receipt_no, "receipt_no", "票据号", 40)
    if not _RECEIPT_NO.fullmatch(number):
        raise ValidationError("receipt_no", "票据号只能包含字母、数字和连字符")
    return {"kind": "payment", "amount_fen": amount_fen, "receipt_no": number,
            "payer": clean_text(payer, "payer", "缴款人", 50), "reason": ""}


def check_exemption(terms: dict, records: list[dict], reason) -> dict:
    """An exemption (减免) of a charged item's fee, with its reason; nothing may be paid (net) then.

    :raises RuleError: ``fee_not_charged``, ``fee_exempted``, ``fee_paid``.
    """
    if not terms["charged"]:
        raise RuleError("fee_not_charged", f"本事项依法不收费，无需登记减免。{terms['label']}")
    totals = summary(records)
    if totals["exempted"]:
        raise RuleError("fee_exempted", "本办件已登记减免")
    if totals["net_fen"] > 0:
        raise RuleError("fee_paid", "本办件已收费，请先退费再登记减免")
    return {"kind": "exemption", "amount_fen": 0, "receipt_no": None, "payer": "",
            "reason": clean_text(reason, "reason", "减免原因（如政策依据）", 200)}


def check_refund(payment: dict | None, refunded: bool, reason) -> dict:
    """A refund of one recorded payment, in full, with its reason; a payment is refunded once.

    :raises RuleError: ``not_a_payment``, ``already_refunded``.
    """
    if payment is None or payment["kind"] != "payment":
        raise RuleError("not_a_payment", "只能对收费记录办理退费")
    if refunded:
        raise RuleError("already_refunded", "该笔收费已经退费")
    return {"kind": "refund", "amount_fen": payment["amount_fen"], "receipt_no": None, "payer": payment["payer"],
            "reason": clean_text(reason, "reason", "退费原因", 200)}


def daily_report_rows(records: list[dict]) -> list[list]:
    """The rows of an office's daily fee report (header, one row per record, totals)."""
    rows = [["时间", "收件编号", "事项", "类别", "金额(元)", "票据号", "缴款人", "原因", "经办人"]]
    for r in records:
        rows.append([r["recorded_at"], r["case_receipt_no"], r["item_name"], KIND_LABELS[r["kind"]],
                     yuan(r["amount_fen"]), r["receipt_no"] or "", r["payer"],
                     r["reason"], r["recorded_by"]])
    totals = summary(records)
    rows.append(["合计", "", "", f"收费{sum(r['kind'] == 'payment' for r in records)}笔", yuan(totals["paid_fen"]),
                 "", "", f"退费{yuan(totals['refunded_fen'])}元，净收{yuan(totals['net_fen'])}元",
                 f"减免{sum(r['kind'] == 'exemption' for r in records)}笔"])
    return rows
