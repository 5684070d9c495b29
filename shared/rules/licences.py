"""电子证照: the electronic licence a decision issues, and citing it instead of a paper copy.

Source: seed 004 (泰州 流程优化再造) §10 实行无纸化免证办 — 扫码亮证、数据核验、电子证照调用 so that
"两个免于提交" holds: what the government issued (a licence, a certificate) is not asked for
again. Here an item whose catalog entry has ``licence`` yields, with its 准予 decision, a signed
licence record bound to its holder; a later application cites it (its QR token) for a material
whose catalog entry names that item in ``licence_of``, instead of uploading a copy.

Pure functions: no Flask, no SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date

from shared.core.errors import RuleError

HOLDER_KINDS = ("身份证号", "统一社会信用代码")
STATUS_LABELS = {"valid": "有效", "expired": "已过有效期", "revoked": "已吊销"}


def holder_of(form: Mapping, applicant_id: str) -> dict:
    """Who a licence is bound to: the enterprise (统一社会信用代码 in the form) or the applicant."""
    credit = form.get("credit_code") if isinstance(form, Mapping) else None
    if isinstance(credit, str) and credit.strip():
        return {"kind": "统一社会信用代码", "id": credit.strip().upper()}
    return {"kind": "身份证号", "id": (applicant_id or "").strip().upper()}


def holder_digest(number: str, holder_id: str) -> str:
    """What the signed record states about its holder: a digest of number and identifier (the
    printed record shows the identifier masked; a node holding the case compares the digest)."""
    return hashlib.sha256(f"{number}|{holder_id.strip().upper()}".encode()).hexdigest()[:32]


def valid_until(issued_on: date, valid_years: int | None) -> str | None:
    """The last day of validity (ISO), None for 长期有效."""
    if not valid_years:
        return None
    try:
        end = issued_on.replace(year=issued_on.year + valid_years)
    except ValueError:  # 29 February
        end = issued_on.replace(year=issued_on.year + valid_years, day=28)
    return date.fromordinal(end.toordinal() - 1).isoformat()


def status(until: str | None, revoked_at: str | None, today: date) -> str:
    """``valid``, ``expired`` or ``revoked``."""
    if revoked_at:
        return "revoked"
    if until and date.fromisoformat(until) < today:
        return "expired"
    return "valid"


def check_revocation_reason(reason: object) -> str:
    """A revocation must say why.

    :raises RuleError: ``reason_required``.
    """
    if not isinstance(reason, str) or not reason.strip():
        raise RuleError("reason_required", "吊销电子证照必须说明理由")
    return reason.strip()


def check_citable(material: Mapping | None, material_code: str) -> str:
    """The item code whose licence may stand for ``material`` (its ``licence_of``).

    :raises RuleError: ``licence_not_accepted`` when the material cannot be replaced by a licence.
    """
    if material is None:
        raise RuleError("licence_not_accepted", f"事项没有材料「{material_code}」")
    if not material.get("licence_of"):
        raise RuleError("licence_not_accepted", f"材料「{material['name']}」不能以电子证照代替")
    return material["licence_of"]


def check_token_fits(kind: str, office: str, licence_of: str, hub_id: str) -> None:
    """A cited token must be a licence of the department of ``licence_of`` (checked offline).

    :raises RuleError: ``licence_wrong_kind``.
    """
    department = licence_of.rsplit("-", 2)[-2].lower() if licence_of.count("-") >= 2 else ""
    if kind != "licence" or (office != f"{hub_id}-{department}" and len(office) != 9):
        raise RuleError("licence_wrong_kind", "所扫描的不是该材料所需的电子证照")


def check_usable(record: Mapping, *, licence_of: str, holder_id: str, revoked_at: str | None,
                 revoke_reason: str | None, today: date) -> None:
    """A licence record (verified) may stand for the material of this application.

    ``record`` is the licence document body; ``holder_id`` the identifier of this application's
    holder (:func:`holder_of`).

    :raises RuleError: ``licence_revoked``, ``licence_expired``, ``licence_wrong_kind`` or
        ``licence_holder_mismatch``.
    """
    licence = record.get("licence") or {}
    if revoked_at:
        raise RuleError("licence_revoked", f"电子证照 {record.get('number')} 已被吊销：{revoke_reason or ''}")
    if status(licence.get("valid_until"), None, today) == "expired":
        raise RuleError("licence_expired", f"电子证照 {record.get('number')} 已过有效期（{licence.get('valid_until')}）")
    if record.get("item_code") != licence_of:
        raise RuleError("licence_wrong_kind", "所引用的电子证照不是该材料所需的证照")
    if licence.get("holder_digest") != holder_digest(record.get("number", ""), holder_id):
        raise RuleError("licence_holder_mismatch", "电子证照的持证人与本次申请人不符")
