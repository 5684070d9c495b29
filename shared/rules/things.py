"""一件事一次办 and 证照联办 (seed 004 §7, §11): several catalog items taken as one thing.

A *thing* bundles items in an order (``after``: the steps whose result a step waits for —
流程接续 — or none: 并联). The agent fills one merged form: a field that several items use
(same ``name``) is asked once, a material that several items need (same ``code``) is attached
once, and a material that a later step takes from an earlier step's 电子证照 (``licence_of``
naming that step's item) is not asked at all. The cases it makes are ordinary cases linked by
a thing id; the deciding node starts a later step (接件) when every step it waits for has its
result, and ends it when one of them was refused.

Pure functions: no SQL, no Flask. A thing is a plain dict, validated by :func:`validate_thing`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources

from shared.core.errors import ValidationError

KINDS = ("一件事", "证照联办")

_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{2,39}")

#: A step's predecessor: its result exists (准予, or deemed done), it was refused or ended, or not yet.
APPROVED, REFUSED, OPEN = "approved", "refused", "open"
#: What a deciding node does with a step: start it (接件), let it wait, or end it (终止).
START, WAIT, END = "start", "wait", "end"

#: Statuses in which a case has ended without a result the next step could build on.
_ENDED_WITHOUT_RESULT = frozenset({"NOT_ACCEPTED", "DENIED", "WITHDRAWN", "TERMINATED"})


def _fail(field: str, message: str) -> None:
    raise ValidationError(field, message, code="invalid_thing")


def _text(d: Mapping, key: str, where: str, label: str, required: bool = True) -> str:
    value = d.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > 500:
        _fail(f"{where}.{key}", f"「{label}」必须是非空文本（500字以内）")
    return value.strip()


def validate_thing(raw: object, items: Mapping[str, dict], where: str = "thing") -> dict:
    """A normalised thing, checked against the catalog ``items`` it bundles.

    :raises ValidationError: ``invalid_thing``, naming the field: an unknown or repeated item, a
        step waiting for a later or unknown step, a 咨询 item, or a shared field or situation
        defined differently by two of its items (the merged form would ask it twice).
    """
    if not isinstance(raw, dict):
        _fail(where, "一件事的定义必须是对象")
    code = raw.get("code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        _fail(f"{where}.code", "一件事编码须为3至40位字母、数字或连字符")
    thing = {
        "code": code,
        "name": _text(raw, "name", where, "名称"),
        "kind": raw.get("kind", "一件事"),
        "description": _text(raw, "description", where, "说明", required=False),
        "source": _text(raw, "source", where, "政策依据", required=False),
    }
    if thing["kind"] not in KINDS:
        _fail(f"{where}.kind", f"类型必须是{'或'.join(KINDS)}")
    steps = raw.get("steps")
    if not isinstance(steps, list) or len(steps) < 2 or len(steps) > 10:
        _fail(f"{where}.steps", "一件事须包含2至10个事项")
    seen: list[str] = []
    thing["steps"] = []
    for i, step in enumerate(steps):
        at = f"{where}.steps[{i}]"
        if not isinstance(step, dict) or not isinstance(step.get("item"), str):
            _fail(at, "每一步须写明事项实施编码 item")
        item = items.get(step["item"])
        if item is None:
            _fail(f"{at}.item", f"事项「{step['item']}」不在目录中")
        if item.get("consultation_only"):
            _fail(f"{at}.item", f"「{item['name']}」是咨询事项，不能编入一件事")
        if step["item"] in seen:
            _fail(f"{at}.item", f"「{item['name']}」重复")
        after = step.get("after", [])
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            _fail(f"{at}.after", "after 必须是事项编码列表")
        for earlier in after:
            if earlier not in seen:
                # Only earlier steps: the order is then acyclic by construction.
                _fail(f"{at}.after", f"「{item['name']}」只能接续排在它前面的事项（{earlier} 不在前面）")
        seen.append(step["item"])
        thing["steps"].append({"item": step["item"], "after": list(dict.fromkeys(after))})
    _check_shared(thing, items, where)
    return thing


def _check_shared(thing: dict, items: Mapping[str, dict], where: str) -> None:
    """A field or situation asked once for several items must mean the same in each."""
    fields: dict[str, tuple] = {}
    situations: dict[str, tuple] = {}
    for step in thing["steps"]:
        item = items[step["item"]]
        for f in item["fields"]:
            shape = (f["type"], tuple(f.get("options", ())), f.get("format"))
            if fields.setdefault(f["name"], shape) != shape:
                _fail(f"{where}.steps", f"字段「{f['label']}」（{f['name']}）在各事项中的类型或选项不一致，合并表单无法只填一次")
        for s in item.get("situations", []):
            shape = tuple(o["value"] for o in s["options"])
            if situations.setdefault(s["code"], shape) != shape:
                _fail(f"{where}.steps", f"情形「{s['question']}」在各事项中的选项不一致")


def validate_things(raw: object, items: Mapping[str, dict]) -> list[dict]:
    """The catalog's list of things (codes unique)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        _fail("things", "things 必须是列表")
    out, seen = [], set()
    for i, r in enumerate(raw):
        thing = validate_thing(r, items, f"things[{i}]")
        if thing["code"] in seen:
            _fail(f"things[{i}].code", f"一件事编码「{thing['code']}」重复")
        seen.add(thing["code"])
        out.append(thing)
    return out


# --------------------------------------------------------------------------
# the merged form


def offered_at(thing: dict, items: Mapping[str, dict], accepts) -> bool:
    """Whether a node may take the thing: every item is in its catalog and accepted there
    (``accepts(item)``: :func:`shared.rules.catalog.accepts_at` bound to the node)."""
    return all(s["item"] in items and accepts(items[s["item"]]) for s in thing["steps"])


def step_items(thing: dict, items: Mapping[str, dict]) -> list[dict]:
    """The items of the thing's steps, in order."""
    return [items[s["item"]] for s in thing["steps"]]


def predecessors(thing: dict, item_code: str) -> list[str]:
    """The item codes whose result the step of ``item_code`` waits for."""
    step = next((s for s in thing["steps"] if s["item"] == item_code), None)
    return list(step["after"]) if step else []


def _earlier_items(thing: dict, item_code: str) -> set[str]:
    """Every step ``item_code`` comes after, directly or through another step."""
    found: set[str] = set()
    todo = predecessors(thing, item_code)
    while todo:
        code = todo.pop()
        if code not in found:
            found.add(code)
            todo.extend(predecessors(thing, code))
    return found


def from_earlier_step(thing: dict, items: Mapping[str, dict], item_code: str) -> dict[str, str]:
    """``{material code: earlier item code}``: materials of a step that an earlier step's
    electronic licence provides (免提交 within the thing: the agent attaches nothing)."""
    earlier = _earlier_items(thing, item_code)
    out = {}
    for m in items[item_code]["materials"]:
        source = m.get("licence_of")
        if source in earlier and items.get(source, {}).get("licence") is not None:
            out[m["code"]] = source
    return out


def merged_fields(thing: dict, items: Mapping[str, dict]) -> list[dict]:
    """Each form field once (first definition; required if any item requires it), with
    ``used_by``: the names of the items that use it."""
    merged: dict[str, dict] = {}
    for item in step_items(thing, items):
        for f in item["fields"]:
            if f["name"] not in merged:
                merged[f["name"]] = {**copy.deepcopy(f), "used_by": []}
            entry = merged[f["name"]]
            entry["required"] = entry["required"] or f["required"]
            entry["used_by"].append(item["name"])
    return list(merged.values())


def merged_situations(thing: dict, items: Mapping[str, dict]) -> list[dict]:
    """Each 情形 question once, with ``used_by``."""
    merged: dict[str, dict] = {}
    for item in step_items(thing, items):
        for s in item.get("situations", []):
            merged.setdefault(s["code"], {**copy.deepcopy(s), "used_by": []})["used_by"].append(item["name"])
    return list(merged.values())


def merged_materials(thing: dict, items: Mapping[str, dict], answers: Mapping[str, str] | None = None,
                     required_materials=None) -> list[dict]:
    """Each material once: ``{**material, "used_by": [item names], "required": bool,
    "from_step": item name | None}``. ``from_step`` names the earlier step whose licence provides
    it for every item that needs it (then nothing is attached). ``required_materials`` is
    :func:`shared.rules.catalog.required_materials` (passed in: one rule, one place)."""
    merged: dict[str, dict] = {}
    for item in step_items(thing, items):
        own = {s["code"] for s in item.get("situations", [])}
        mine = {k: v for k, v in (answers or {}).items() if k in own}
        needed = {m["code"] for m in required_materials(item, mine)} if required_materials else set()
        provided = from_earlier_step(thing, items, item["code"])
        for m in item["materials"]:
            entry = merged.setdefault(m["code"], {**copy.deepcopy(m), "used_by": [], "required": False,
                                                  "from_step": None, "_attach": False})
            entry["used_by"].append(item["name"])
            if m["code"] in provided:
                entry["from_step"] = entry["from_step"] or items[provided[m["code"]]]["name"]
            else:
                entry["_attach"] = True
                entry["required"] = entry["required"] or m["code"] in needed
    out = []
    for entry in merged.values():
        if entry.pop("_attach"):
            entry["from_step"] = None  # some item needs the file itself: attach it once for all
        out.append(entry)
    return out


def split_answers(item: dict, values: Mapping[str, object], key: str) -> dict:
    """The part of merged ``values`` that ``item`` asks (``key``: ``fields`` by ``name`` or
    ``situations`` by ``code``)."""
    names = {f["name"] for f in item["fields"]} if key == "fields" else {s["code"] for s in item.get("situations", [])}
    return {k: v for k, v in values.items() if k in names}


# --------------------------------------------------------------------------
# starting a later step


def result_of(status: str, approved: bool) -> str:
    """A predecessor case's state for the next step: :data:`APPROVED` once it was approved (or
    deemed done: seed 004 §8), :data:`REFUSED` if it ended without that, else :data:`OPEN`."""
    if approved:
        return APPROVED
    if status in _ENDED_WITHOUT_RESULT or status == "CONCLUDED":
        return REFUSED
    return OPEN


def step_state(results: Iterable[str]) -> str:
    """What the deciding node does with a step whose predecessors are in ``results``."""
    results = list(results)
    if any(r == REFUSED for r in results):
        return END
    if all(r == APPROVED for r in results):
        return START
    return WAIT


#: The overall progress of a thing as the villager is told it.
OVERALL_LABELS = {
    "done": "全部办结",
    "partly_refused": "已办结（部分事项未获准予）",
    "in_progress": "办理中",
}


def overall(steps: Iterable[Mapping]) -> tuple[str, str]:
    """(code, label) of the thing's overall progress from its steps' ``status`` and ``approved``."""
    steps = list(steps)
    finished = [s for s in steps if s["status"] in ("APPROVED", "CONCLUDED") or s["status"] in _ENDED_WITHOUT_RESULT]
    if len(finished) < len(steps):
        code = "in_progress"
    elif all(s["approved"] for s in steps):
        code = "done"
    else:
        code = "partly_refused"
    return code, OVERALL_LABELS[code]


def public_view(thing: dict, items: Mapping[str, dict]) -> dict:
    """The thing as the API's catalog serves it: its steps with item names."""
    view = copy.deepcopy(thing)
    for step in view["steps"]:
        step["item_name"] = items[step["item"]]["name"] if step["item"] in items else step["item"]
    return view


def load_seed(items: Mapping[str, dict]) -> list[dict]:
    """The demo county's things (``shared/data/things_seed.json``), checked against ``items``."""
    text = resources.files("shared").joinpath("data/things_seed.json").read_text(encoding="utf-8")
    return validate_things(json.loads(text), items)
