"""补齐补正 and 容缺: what may be owed, when a case may be accepted, what a supplement changes.

行政许可法 Art. 32: an application whose materials are incomplete is either told, once and in
full, what to correct (一次性告知补齐补正, ``request_correction``) — and is received anew when
the applicant resubmits, so the five-day notice period (and, once accepted, the Art. 42 limit)
counts from the resubmission — or accepted when complete. 容缺受理 (the 容缺受理制度 of the
河北省 "放管服" reforms) lets an office accept an application while materials the catalog marks
容缺可 are still owed, on the applicant's written promise to supply them by a due date that
falls within the committed limit; supplied in time the case goes on as accepted, with its
deadline unchanged; not supplied, it is terminated.

Pure functions: no Flask, no SQL. Every tier that decides (the hub, a township) and every node
that takes applications (village, township window) calls these with its own catalog item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from shared.core.errors import RuleError

#: Status in which the origin answers a 一次性告知 (补正) and the action that receives it anew.
CORRECTION_STATES = frozenset({"SUPPLEMENT", "PRECHECK_RETURNED"})
#: Status in which the origin supplies owed 容缺 materials.
DEFICIENCY_STATE = "ACCEPTED_DEFICIENT"


def material_names(item: Mapping | None, codes: Iterable[str]) -> list[str]:
    """The catalog names of material ``codes`` (a code the item does not know stays as given)."""
    names = {m["code"]: m["name"] for m in (item or {}).get("materials", [])}
    return [names.get(code, code) for code in codes]


def owed_material_codes(item: Mapping, owed: object) -> list[str]:
    """The codes of the materials a 容缺受理 leaves owed, each given by code or by name.

    Only materials the catalog marks 容缺可 (``deficiency_allowed``) may be owed: an identity
    document or the application form itself cannot be promised for later.

    :raises RuleError: ``owed_materials_required`` (none given), ``unknown_material`` (not a
        material of this item) or ``not_deficiency_allowed`` (naming it).
    """
    if isinstance(owed, str) or not isinstance(owed, Iterable):
        owed = []
    wanted = [v.strip() for v in owed if isinstance(v, str) and v.strip()]
    if not wanted:
        raise RuleError("owed_materials_required", "容缺受理必须列明容缺的材料")
    by_key = {}
    for m in item.get("materials", []):
        by_key[m["code"]] = m
        by_key[m["name"]] = m
    codes: list[str] = []
    for value in wanted:
        material = by_key.get(value)
        if material is None:
            raise RuleError("unknown_material", f"「{value}」不是该事项的申请材料")
        if not material.get("deficiency_allowed"):
            raise RuleError("not_deficiency_allowed", f"「{material['name']}」不属于可容缺的材料，不能容缺受理")
        if material["code"] not in codes:
            codes.append(material["code"])
    return codes


def missing_required(item: Mapping, present_codes: Iterable[str]) -> list[dict]:
    """The item's required materials (its base list) of which the case holds no file."""
    present = set(present_codes)
    return [m for m in item.get("materials", []) if m.get("required") and m["code"] not in present]


def check_acceptance(item: Mapping | None, present_codes: Iterable[str], action: str,
                     owed_codes: Iterable[str] = ()) -> None:
    """受理 only with every required material: a 容缺 acceptance may owe the 容缺可 ones.

    ``accept`` with a required material missing is refused; ``accept_deficient`` is refused when
    a missing required material is not among the owed ones. Other actions pass.

    :raises RuleError: ``materials_missing``, naming the materials.
    """
    if action not in ("accept", "accept_deficient") or item is None:
        return
    owed = set(owed_codes) if action == "accept_deficient" else set()
    missing = [m["name"] for m in missing_required(item, present_codes) if m["code"] not in owed]
    if missing:
        hint = ("请一次性告知补齐补正" if action == "accept_deficient"
                else "请一次性告知补齐补正，或对可容缺的材料容缺受理")
        raise RuleError("materials_missing", f"尚缺必需的申请材料：{'、'.join(missing)}，不能受理；{hint}")


def field_changes(item: Mapping, before: Mapping, after: Mapping) -> list[dict]:
    """The form fields a supplement changes: ``[{"field", "label", "before", "after"}]`` in item order."""
    changes = []
    for field in item.get("fields", []):
        name = field["name"]
        if name in after and after[name] != before.get(name):
            changes.append({"field": name, "label": field.get("label", name),
                            "before": before.get(name), "after": after[name]})
    return changes


def supplement_outcome(status: str, owed_codes: Iterable[str], present_codes: Iterable[str],
                       due_date: str | date | None, supplied_on: date) -> str | None:
    """The action the deciding node takes when a supplement reaches it.

    - a 补正 (``SUPPLEMENT`` / ``PRECHECK_RETURNED``): ``resubmit`` — received anew, the Art. 32
      notice period (and the later Art. 42 limit) counts from now;
    - owed 容缺 materials (``ACCEPTED_DEFICIENT``): ``supplement_received`` once every owed
      material is held and it was supplied by the due date (the deadline is unchanged); a
      supplement after the due date: ``terminate``; some still owed: ``None`` (wait for more).
    """
    if status in CORRECTION_STATES:
        return "resubmit"
    if status != DEFICIENCY_STATE:
        return None
    due = due_date if isinstance(due_date, date) else (date.fromisoformat(due_date) if due_date else None)
    if due is not None and supplied_on > due:
        return "terminate"
    if set(owed_codes) - set(present_codes):
        return None
    return "supplement_received"
