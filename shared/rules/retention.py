"""Personal data at the village PC: when a closed case's personal data is purged, and what stays.

Source: the product brief §4 (village PCs purge what the hub already holds after a retention
time) and PIPL (个人信息保护法) Art. 6 (最小必要) and Art. 19 (retention no longer than needed).
The village keeps a masked stub (name, 身份证号 masked, receipt number, state, history) so the
villager's case still shows its progress; the hub and the township keep the full record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.rules.idcard import mask_id_number
from shared.rules.states import FINAL_STATES

#: What a purged form field shows instead of its value.
PURGED_VALUE = "（已清除）"


def personal_field_names(item: dict | None) -> set[str]:
    """The form fields of a catalog item that hold personal data: those marked ``personal`` and
    every 身份证号 or phone field. Without the item (not in the catalog any more) every field is."""
    if item is None:
        return set()
    return {f["name"] for f in item.get("fields", []) if f.get("personal") or f.get("format") in ("id_number", "phone")}


def purge_due(status: str, closed_at: datetime, everything_acked: bool, now: datetime, retention_days: int) -> bool:
    """Whether a case's personal data may leave the village PC now: the case is closed for good
    (已办结, 撤回, 终止), the hub has acknowledged every message about it (nothing is lost if the
    PC forgets it), and ``retention_days`` have passed since it closed."""
    if status not in FINAL_STATES or not everything_acked:
        return False
    return now - closed_at >= timedelta(days=retention_days)


def purged_form(form: dict, personal: set[str], whole: bool = False) -> dict:
    """``form`` with the personal fields' values replaced (every field when ``whole``: an item the
    catalog no longer describes)."""
    return {k: (PURGED_VALUE if (whole or k in personal) and v not in (None, "") else v) for k, v in form.items()}


def mask_name(name: str) -> str:
    """A masked name for the stub: the family name's first character, the rest ``*`` (张三 → 张*)."""
    name = (name or "").strip()
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def masked_applicant(name: str, id_number: str) -> tuple[str, str]:
    """(masked name, masked 身份证号) of the stub a purged case keeps."""
    return mask_name(name), mask_id_number(id_number)
