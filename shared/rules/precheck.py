"""预审 with field-level marks: one 一次性告知 listing every problem at once. No Flask here.

The deciding office (in practice the township clerk pre-checking a village's submission of an
item the township decides) marks individual form fields and materials as missing or wrong,
each with a note. The marks become the ``missing_items`` of ONE ``request_correction`` (or
``precheck_return``) event, so the notice, its signed 制式文书 and the village's case page list
them all together (行政许可法 Art. 32: 一次性告知). Each item is a plain sentence that names what
it is about (``申请表「家庭住址」：…`` / ``材料「户口簿」：…``), so it reads well on paper and
needs no schema change anywhere it travels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from shared.core.errors import ValidationError

MARK_ACTIONS = ("request_correction", "precheck_return")
MAX_NOTE = 200
_ITEM = re.compile(r"^(申请表|材料)「(.+?)」：(.*)$", re.S)


def build_missing_items(item: Mapping, fields: Mapping[str, str], materials: Mapping[str, str],
                        other: str = "") -> list[str]:
    """The notice's items from the marks.

    :param fields: ``{field name: note}`` of the marked form fields (an empty note: 填写有误).
    :param materials: ``{material code: note}`` of the marked materials (empty: 缺少或不符合要求).
    :param other: further lines, one problem per line.
    :raises ValidationError: an unknown field or material, a note too long, or no mark at all.
    """
    labels = {f["name"]: f["label"] for f in item.get("fields", [])}
    labels.update({"applicant_name": "申请人姓名", "applicant_id_number": "身份证号", "applicant_phone": "联系电话"})
    names = {m["code"]: m["name"] for m in item.get("materials", [])}
    out = []
    for name, note in fields.items():
        if name not in labels:
            raise ValidationError(f"field_{name}", "标注的表单项不属于该事项")
        out.append(f"申请表「{labels[name]}」：{_note(note, '填写有误，请核实更正')}")
    for code, note in materials.items():
        if code not in names:
            raise ValidationError(f"material_{code}", "标注的材料不属于该事项")
        out.append(f"材料「{names[code]}」：{_note(note, '缺少或不符合要求，请补齐')}")
    out += [line.strip() for line in other.splitlines() if line.strip()]
    if not out:
        raise ValidationError("marks", "请至少标注一项需要补齐补正的内容")
    return out


def _note(note: str, default: str) -> str:
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise ValidationError("note", f"每项说明不超过 {MAX_NOTE} 个字")
    return note or default


def parse_item(text: str) -> dict:
    """``{"kind": "field"|"material"|"other", "name", "note"}`` of one notice item."""
    match = _ITEM.match(text)
    if not match:
        return {"kind": "other", "name": "", "note": text}
    return {"kind": "field" if match.group(1) == "申请表" else "material", "name": match.group(2),
            "note": match.group(3)}


def latest_notice(history: Iterable[Mapping]) -> dict | None:
    """The newest 一次性告知 of a case history (``to_json``'s), with its items parsed; None if none."""
    notice = None
    for h in history:
        if h["action"] in MARK_ACTIONS:
            notice = h
    if notice is None:
        return None
    items = (notice.get("detail") or {}).get("missing_items") or ([notice["comment"]] if notice.get("comment") else [])
    return {"at": notice["at"], "node": notice["node"], "action_label": notice["action_label"],
            "comment": notice.get("comment", ""), "marks": [parse_item(i) for i in items]}
