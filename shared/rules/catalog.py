"""The 实施清单 (catalog of service items) and the rules that read it.

An item is a plain dict with English keys and Chinese values, validated by
:func:`validate_item`; the field list is documented in ``docs/domain-rules.md``.
The packaged seed (``shared/data/catalog_seed.json``) is demo data for
肃宁县 (130926); its ``basic_code`` values are illustrative.

Node identity follows the 统计用区划代码: the hub is a 6-digit county code,
a township 9 digits and a village 12 digits, so a village's township is its
9-digit prefix. This is what :func:`route` relies on.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from importlib import resources

from shared.core.errors import RuleError, ValidationError
from shared.rules import pinyin
from shared.rules.fees import fee_terms
from shared.rules.idcard import validate_id_number, validate_phone
from shared.rules.materials import FORMATS
from shared.rules.text import refuse_hidden_characters

DEPARTMENTS: dict[str, str] = {
    "rs": "人力资源和社会保障局",
    "wj": "卫生健康局",
    "yb": "医疗保障局",
    "mz": "民政局",
    "cl": "残疾人联合会",
    "scjg": "市场监督管理局",
    "ly": "林业局",
    "zrzy": "自然资源和规划局",
    "nync": "农业农村局",
    "fg": "发展和改革局",
    "xz": "乡镇人民政府",
    "ga": "公安局",
}

ITEM_TYPES = ("许可", "给付", "公共服务", "其他行政权力")
LEVELS = ("village", "township", "city")
LEVEL_LABELS = {"village": "村", "township": "乡镇", "city": "市(县)"}
FIELD_TYPES = ("text", "number", "date", "select", "textarea")
FIELD_FORMATS = ("id_number", "phone")
RULE_OPS = ("eq", "lte", "gte", "in", "present")

_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]*")
_BASIC_CODE = re.compile(r"[0-9A-Za-z]{12}")
_IDENT = re.compile(r"[a-z][a-z0-9_]*")
_INITIALS = re.compile(r"[a-z0-9]*")
_CJK = re.compile(r"[\u3400-\u9fff]")


# --------------------------------------------------------------------------
# validation of catalog items


def _fail(field: str, message: str) -> None:
    raise ValidationError(field, message, code="invalid_catalog_item")


#: The catalog file's keys in the words of the 实施清单 (what an admin reads in an error; the
#: ``field`` of the error still names the key, to find it in the file).
KEY_LABELS = {
    "accept_conditions": "受理条件", "accept_levels": "受理层级", "add_materials": "情形增加的材料",
    "aliases": "常用简称", "basic_code": "基本编码", "code": "编码", "consultation_answer": "咨询答复",
    "consultation_only": "仅咨询", "copies": "份数", "deemed_consent": "超时默认", "deficiency_allowed": "容缺可",
    "department": "部门名称", "fields": "表单字段", "formats": "文件格式", "green_channel_limit_wd": "绿色通道承诺时限",
    "help": "填写说明", "implementing_body": "实施主体", "joint_departments": "联办部门", "label": "字段名称",
    "legal_basis": "设定依据", "legal_limit_wd": "法定办结时限", "licence_of": "可引用的电子证照",
    "materials": "申请材料", "name": "名称", "note": "说明", "options": "选项", "personal": "属个人信息",
    "process": "办理流程", "promise_limit_wd": "承诺办结时限", "question": "情形问题", "required": "必要",
    "result_name": "结果名称", "site_visit": "现场核查", "situations": "情形", "value": "取值", "visits": "到现场次数",
    "min": "最小值", "max": "最大值",
}


def _label(key: str) -> str:
    return KEY_LABELS.get(key, "该项")


def _str(d: dict, key: str, where: str, *, required: bool = True) -> str:
    value = d.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        _fail(f"{where}{key}", f"「{_label(key)}」必须是非空文本")
    return value.strip()


def _bool(d: dict, key: str, where: str, default: bool | None = None) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        _fail(f"{where}{key}", f"「{_label(key)}」必须是“是”或“否”（true/false）")
    return value


def _int(d: dict, key: str, where: str, *, minimum: int = 0) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(f"{where}{key}", f"「{_label(key)}」必须是不小于{minimum}的整数")
    return value


def _list(d: dict, key: str, where: str, *, non_empty: bool = False) -> list:
    value = d.get(key, [])
    if not isinstance(value, list) or (non_empty and not value):
        _fail(f"{where}{key}", f"「{_label(key)}」必须是{'非空' if non_empty else ''}列表")
    return value


def _validate_field(f: object, where: str) -> dict:
    if not isinstance(f, dict):
        _fail(where, "表单字段定义必须是对象")
    name = _str(f, "name", f"{where}.")
    if not _IDENT.fullmatch(name):
        _fail(f"{where}.name", f"字段名「{name}」只能包含小写字母、数字和下划线")
    out = {
        "name": name,
        "label": _str(f, "label", f"{where}."),
        "type": f.get("type"),
        "required": _bool(f, "required", f"{where}.", default=False),
    }
    if out["type"] not in FIELD_TYPES:
        _fail(f"{where}.type", f"字段类型必须是{'/'.join(FIELD_TYPES)}之一")
    if out["type"] == "select":
        options = _list(f, "options", f"{where}.", non_empty=True)
        if not all(isinstance(o, str) and o for o in options):
            _fail(f"{where}.options", "选项必须是非空文本")
        out["options"] = list(options)
    for bound in ("min", "max"):
        if bound in f:
            value = f[bound]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                _fail(f"{where}.{bound}", f"「{_label(bound)}」必须是数字")
            out[bound] = value
    if "format" in f:
        if f["format"] not in FIELD_FORMATS:
            _fail(f"{where}.format", f"字段格式必须是{'/'.join(FIELD_FORMATS)}之一")
        out["format"] = f["format"]
    if "help" in f:
        out["help"] = _str(f, "help", f"{where}.")
    # Personal data (PIPL): purged from the village PC after the retention time. Kept only when
    # true, so the items of catalogs published before the flag existed normalise unchanged.
    if _bool(f, "personal", f"{where}.", default=False):
        out["personal"] = True
    return out


def _validate_material(m: object, where: str) -> dict:
    if not isinstance(m, dict):
        _fail(where, "材料定义必须是对象")
    code = _str(m, "code", f"{where}.")
    if not _IDENT.fullmatch(code):
        _fail(f"{where}.code", f"材料编码「{code}」只能包含小写字母、数字和下划线")
    out = {
        "code": code,
        "name": _str(m, "name", f"{where}."),
        "kind": m.get("kind"),
        "form": m.get("form"),
        "required": _bool(m, "required", f"{where}."),
        "deficiency_allowed": _bool(m, "deficiency_allowed", f"{where}.", default=False),
        "source": m.get("source"),
        "copies": _int(m, "copies", f"{where}.", minimum=1),
    }
    if out["kind"] not in ("原件", "复印件"):
        _fail(f"{where}.kind", "材料类型必须是「原件」或「复印件」")
    if out["form"] not in ("纸质", "电子"):
        _fail(f"{where}.form", "材料形式必须是「纸质」或「电子」")
    if out["source"] not in ("申请人自备", "政府部门核发"):
        _fail(f"{where}.source", "来源渠道必须是「申请人自备」或「政府部门核发」")
    if "note" in m:
        out["note"] = _str(m, "note", f"{where}.")
    if "licence_of" in m:
        # 免提交 (seed 004 §10): the item whose electronic licence may be cited instead of a copy.
        out["licence_of"] = _str(m, "licence_of", f"{where}.")
        if not _CODE.fullmatch(out["licence_of"]):
            _fail(f"{where}.licence_of", "licence_of 必须是事项实施编码")
    if "formats" in m:
        # The file formats this material accepts, by content (shared/rules/materials.py; default JPEG, PNG, PDF).

        formats = _list(m, "formats", f"{where}.", non_empty=True)
        if not all(isinstance(f, str) and f in FORMATS for f in formats) or len(set(formats)) != len(formats):
            _fail(f"{where}.formats", f"材料格式只能是 {'、'.join(FORMATS)} 中的若干种（不重复）")
        out["formats"] = list(formats)
    return out


def _validate_rule(rule: object, where: str, field_names: set[str]) -> None:
    if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in ("all", "any"):
        _fail(where, '秒批规则必须是 {"all": [...]} 或 {"any": [...]}')
    key = next(iter(rule))
    conditions = rule[key]
    if not isinstance(conditions, list) or not conditions:
        _fail(f"{where}.{key}", "秒批规则的条件列表不能为空")
    for i, cond in enumerate(conditions):
        cw = f"{where}.{key}[{i}]"
        if isinstance(cond, dict) and ("all" in cond or "any" in cond):
            _validate_rule(cond, cw, field_names)
            continue
        if not isinstance(cond, dict) or cond.get("op") not in RULE_OPS:
            _fail(cw, f"条件的 op 必须是{'/'.join(RULE_OPS)}之一")
        if cond.get("field") not in field_names:
            _fail(f"{cw}.field", f"条件引用了未定义的字段「{cond.get('field')}」")
        if cond["op"] != "present" and "value" not in cond:
            _fail(f"{cw}.value", "条件缺少 value")
        if cond["op"] == "in" and not isinstance(cond.get("value"), list):
            _fail(f"{cw}.value", "in 条件的 value 必须是列表")


def validate_item(d: object) -> dict:
    """Validate one catalog item and return a normalised deep copy.

    Optional keys get their defaults (``joint_departments=[]``,
    ``deemed_consent=False``, ``instant_rule=None``, ``situations=[]``,
    ``site_visit=False``, ``consultation_only=False``, ``aliases=[]``,
    ``fee`` not charged).

    :raises ValidationError: naming the offending field (e.g. ``materials[2].kind``).
    """
    if not isinstance(d, dict):
        _fail("item", "事项必须是对象")
    item: dict = {}
    item["code"] = _str(d, "code", "")
    if not _CODE.fullmatch(item["code"]):
        _fail("code", "实施编码只能包含字母、数字和连字符")
    item["basic_code"] = _str(d, "basic_code", "")
    if not _BASIC_CODE.fullmatch(item["basic_code"]):
        _fail("basic_code", "基本编码必须是12位字母或数字")
    item["name"] = _str(d, "name", "")
    item["item_type"] = d.get("item_type")
    if item["item_type"] not in ITEM_TYPES:
        _fail("item_type", f"事项类型必须是{'/'.join(ITEM_TYPES)}之一")
    item["legal_basis"] = _str(d, "legal_basis", "")
    item["department_code"] = d.get("department_code")
    if item["department_code"] not in DEPARTMENTS:
        _fail("department_code", f"未知的部门编码「{item['department_code']}」")
    item["department"] = _str(d, "department", "")
    if item["department"] != DEPARTMENTS[item["department_code"]]:
        _fail("department", f"部门名称应为「{DEPARTMENTS[item['department_code']]}」")
    item["implementing_body"] = _str(d, "implementing_body", "")

    item["legal_limit_wd"] = _int(d, "legal_limit_wd", "")
    item["promise_limit_wd"] = _int(d, "promise_limit_wd", "")
    if item["promise_limit_wd"] > item["legal_limit_wd"]:
        _fail("promise_limit_wd", "承诺办结时限不得超过法定办结时限")
    green = d.get("green_channel_limit_wd")
    if green is not None:
        green = _int(d, "green_channel_limit_wd", "")
        if green >= item["promise_limit_wd"]:
            _fail("green_channel_limit_wd", "绿色通道承诺时限须短于一般承诺时限")
    item["green_channel_limit_wd"] = green
    item["handling"] = d.get("handling")
    if item["handling"] not in ("即办件", "承诺件"):
        _fail("handling", "办件类型必须是「即办件」或「承诺件」")
    if (item["handling"] == "即办件") != (item["promise_limit_wd"] == 0):
        _fail("handling", "承诺时限为0的事项是即办件，其余为承诺件")

    levels = _list(d, "accept_levels", "", non_empty=True)
    if not set(levels) <= set(LEVELS) or len(set(levels)) != len(levels):
        _fail("accept_levels", "受理层级必须是 village/township/city 中不重复的值")
    item["accept_levels"] = [lv for lv in LEVELS if lv in levels]
    item["decide_level"] = d.get("decide_level")
    if item["decide_level"] not in ("township", "city"):
        _fail("decide_level", "审批层级必须是 township 或 city")
    item["chief_authority"] = d.get("chief_authority")
    if item["chief_authority"] not in ("decide", "pre_review"):
        _fail("chief_authority", "首席审批员授权必须是 decide 或 pre_review")

    joint = _list(d, "joint_departments", "")
    for code in joint:
        if code not in DEPARTMENTS or code == item["department_code"]:
            _fail("joint_departments", f"联办部门「{code}」无效或与主办部门相同")
    item["joint_departments"] = list(dict.fromkeys(joint))
    item["deemed_consent"] = _bool(d, "deemed_consent", "", default=False)
    if item["deemed_consent"] and not item["joint_departments"]:
        _fail("deemed_consent", "超时默认只适用于有联办部门的事项")

    fee = d.get("fee", {"charged": False, "basis": ""})
    if not isinstance(fee, dict) or not isinstance(fee.get("charged"), bool):
        _fail("fee", "收费信息必须包含布尔值 charged")
    basis = fee.get("basis", "")
    if not isinstance(basis, str) or (fee["charged"] and not basis.strip()):
        _fail("fee.basis", "收费事项必须写明收费依据")
    item["fee"] = {"charged": fee["charged"], "basis": basis.strip()}
    if fee["charged"]:
        # 规范收费 (seed 002 §8): a charged item publishes its standard, the most one case may pay, in 分.
        standard = fee.get("standard_fen")
        if not isinstance(standard, int) or isinstance(standard, bool) or not 0 < standard <= 10_000_000:
            _fail("fee.standard_fen", "收费事项必须写明收费标准（单位：分，大于0且不超过1000万分）")
        item["fee"]["standard_fen"] = standard
        text = fee.get("standard", "")
        if not isinstance(text, str):
            _fail("fee.standard", "收费标准说明必须是文本")
        if text.strip():
            item["fee"]["standard"] = text.strip()
    item["visits"] = _int(d, "visits", "")
    item["accept_conditions"] = _str(d, "accept_conditions", "")
    process = _list(d, "process", "", non_empty=True)
    if not all(isinstance(s, str) and s.strip() for s in process):
        _fail("process", "办理流程的每一步必须是非空文本")
    item["process"] = [s.strip() for s in process]
    item["result_name"] = _str(d, "result_name", "")
    licence = d.get("licence")
    if licence is not None:
        # The 准予 decision also issues an electronic licence (电子证照) named result_name.
        if not isinstance(licence, dict) or set(licence) - {"valid_years"}:
            _fail("licence", "licence 必须是对象，只含 valid_years")
        years = licence.get("valid_years")
        if years is not None and (not isinstance(years, int) or isinstance(years, bool) or not 1 <= years <= 100):
            _fail("licence.valid_years", "证照有效期须为1至100年的整数，长期有效不填")
        licence = {"valid_years": years}
    item["licence"] = licence
    item["site_visit"] = _bool(d, "site_visit", "", default=False)
    item["consultation_only"] = _bool(d, "consultation_only", "", default=False)
    if item["consultation_only"]:
        item["consultation_answer"] = _str(d, "consultation_answer", "")

    fields = [
        _validate_field(f, f"fields[{i}]") for i, f in enumerate(_list(d, "fields", "", non_empty=True))
    ]
    names = [f["name"] for f in fields]
    if len(set(names)) != len(names):
        _fail("fields", "表单字段名不能重复")
    item["fields"] = fields

    materials = [
        _validate_material(m, f"materials[{i}]")
        for i, m in enumerate(_list(d, "materials", "", non_empty=True))
    ]
    codes = [m["code"] for m in materials]
    if len(set(codes)) != len(codes):
        _fail("materials", "材料编码不能重复")
    item["materials"] = materials

    situations = []
    for i, s in enumerate(_list(d, "situations", "")):
        where = f"situations[{i}]"
        if not isinstance(s, dict):
            _fail(where, "情形定义必须是对象")
        sit = {
            "code": _str(s, "code", f"{where}."),
            "question": _str(s, "question", f"{where}."),
            "options": [],
        }
        for j, o in enumerate(_list(s, "options", f"{where}.", non_empty=True)):
            ow = f"{where}.options[{j}]"
            if not isinstance(o, dict):
                _fail(ow, "情形选项必须是对象")
            adds = _list(o, "add_materials", f"{ow}.")
            for code in adds:
                if code not in codes:
                    _fail(f"{ow}.add_materials", f"情形引用了未定义的材料「{code}」")
            sit["options"].append(
                {
                    "value": _str(o, "value", f"{ow}."),
                    "label": _str(o, "label", f"{ow}."),
                    "add_materials": list(adds),
                }
            )
        situations.append(sit)
    if len({s["code"] for s in situations}) != len(situations):
        _fail("situations", "情形编码不能重复")
    item["situations"] = situations

    rule = d.get("instant_rule")
    if rule is not None:
        _validate_rule(rule, "instant_rule", set(names))
    item["instant_rule"] = copy.deepcopy(rule)

    aliases = _list(d, "aliases", "")
    if not all(isinstance(a, str) and a.strip() for a in aliases):
        _fail("aliases", "常用简称必须是非空文本")
    item["aliases"] = [a.strip() for a in aliases]

    initials = d.get("initials") or ""
    if not isinstance(initials, str) or not _INITIALS.fullmatch(initials):
        _fail("initials", "拼音首字母必须是小写字母")
    # Hand-typed initials stay (an admin may prefer a reading); missing ones come from the name.
    item["initials"] = initials or pinyin.initials(item["name"])
    return item


def load_seed() -> list[dict]:
    """Return the validated demo catalog packaged in ``shared/data/catalog_seed.json``.

    :raises ValidationError: if an item is invalid or two items share a code.
    """
    text = resources.files("shared").joinpath("data/catalog_seed.json").read_text(encoding="utf-8")
    items = [validate_item(d) for d in json.loads(text)]
    seen: set[str] = set()
    for item in items:
        if item["code"] in seen:
            _fail("code", f"实施编码「{item['code']}」重复")
        seen.add(item["code"])
    return items


_PUBLIC_KEYS = (
    "code", "basic_code", "name", "item_type", "legal_basis", "department_code",
    "department", "implementing_body", "legal_limit_wd", "promise_limit_wd",
    "handling", "accept_levels", "decide_level", "joint_departments", "fee",
    "visits", "accept_conditions", "process", "result_name", "site_visit",
    "consultation_only", "fields", "materials", "situations", "initials", "aliases", "green_channel_limit_wd",
    "licence",
)  # fmt: skip


def public_view(item: dict) -> dict:
    """The item as the API serves it (the 办事指南).

    Internal workflow settings (``chief_authority``, ``deemed_consent`` and
    the ``instant_rule`` itself) are left out; ``instant_approval`` says
    whether the item can be approved by the system at once (秒批).
    """
    view = {k: copy.deepcopy(item[k]) for k in _PUBLIC_KEYS if k in item}
    if item.get("consultation_only"):
        view["consultation_answer"] = item.get("consultation_answer", "")
    view["instant_approval"] = item.get("instant_rule") is not None
    view["fee_terms"] = fee_terms(item)  # 规范收费: charged or not, basis, standard, one line to show
    return view


# --------------------------------------------------------------------------
# applying an item to an application


def required_materials(
    item: dict, situation_answers: dict | None = None, *, strict: bool = False
) -> list[dict]:
    """Materials the applicant must bring, given their answers to the 情形 questions.

    The base list is every ``required`` material; each chosen option adds
    its ``add_materials`` (marked required). Item order is kept and nothing
    is listed twice.

    :param situation_answers: ``{situation_code: option_value}``.
    :param strict: if true, every situation must be answered (use when
        taking an application; leave false to show the guide before answers).
    :raises ValidationError: for an unknown situation or option, or (strict)
        an unanswered situation; ``field`` is ``situations.<code>``.
    """
    answers = situation_answers or {}
    by_code = {s["code"]: s for s in item.get("situations", [])}
    for code in answers:
        if code not in by_code:
            raise ValidationError(f"situations.{code}", f"未定义的情形「{code}」")
    wanted = {m["code"] for m in item["materials"] if m["required"]}
    for code, situation in by_code.items():
        if code not in answers:
            if strict:
                raise ValidationError(
                    f"situations.{code}", f"请回答：{situation['question']}", code="required"
                )
            continue
        option = next((o for o in situation["options"] if o["value"] == answers[code]), None)
        if option is None:
            raise ValidationError(f"situations.{code}", f"「{situation['question']}」的选项无效")
        wanted.update(option["add_materials"])
    return [dict(copy.deepcopy(m), required=True) for m in item["materials"] if m["code"] in wanted]


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _clean_value(field: dict, value: object) -> object:
    key = f"form.{field['name']}"
    label = field["label"]
    kind = field["type"]
    if kind in ("text", "textarea", "select"):
        if not isinstance(value, str):
            raise ValidationError(key, f"「{label}」必须是文本")
        value = value.strip()
        if kind == "select" and value not in field["options"]:
            raise ValidationError(key, f"「{label}」只能选择：{'、'.join(field['options'])}")
        if "max" in field and len(value) > field["max"]:
            raise ValidationError(key, f"「{label}」不能超过{field['max']}个字")
        refuse_hidden_characters(value, key, label, multiline=kind == "textarea")
        fmt = field.get("format")
        if fmt == "id_number":
            value = validate_id_number(value, field=key)
        elif fmt == "phone":
            value = validate_phone(value, field=key)
        return value
    if kind == "number":
        number: float | int
        if isinstance(value, bool):
            raise ValidationError(key, f"「{label}」必须是数字")
        if isinstance(value, (int, float)):
            number = value
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                raise ValidationError(key, f"「{label}」必须是数字") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValidationError(key, f"「{label}」必须是数字")
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if "min" in field and number < field["min"]:
            raise ValidationError(key, f"「{label}」不能小于{field['min']}")
        if "max" in field and number > field["max"]:
            raise ValidationError(key, f"「{label}」不能大于{field['max']}")
        return number
    # date
    if isinstance(value, date):
        return value.isoformat()
    text = value.strip() if isinstance(value, str) else ""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValidationError(key, f"「{label}」必须是有效日期（如2026-03-02）") from None


def validate_form(item: dict, form: dict) -> dict:
    """Check an application form against the item's fields; return the cleaned values.

    Text is stripped, numbers are converted (integers stay ``int``), dates
    become ISO strings, fields with ``format`` ``id_number``/``phone`` are
    validated and normalised. Optional empty fields are omitted; keys that
    are not fields of the item are dropped.

    :raises ValidationError: with ``field="form.<name>"`` for the first bad field.
    """
    if not isinstance(form, dict):
        raise ValidationError("form", "表单数据格式不正确")
    cleaned = {}
    for field in item["fields"]:
        value = form.get(field["name"])
        if _empty(value):
            if field["required"]:
                raise ValidationError(f"form.{field['name']}", f"请填写「{field['label']}」", code="required")
            continue
        cleaned[field["name"]] = _clean_value(field, value)
    return cleaned


def form_errors(item: dict, form: dict) -> list[ValidationError]:
    """Every field error of an application form at once, in field order (the same checks and
    words as :func:`validate_form`, which stops at the first)."""
    found = []
    for field in item["fields"]:
        try:
            validate_form({**item, "fields": [field]}, {field["name"]: form.get(field["name"])})
        except ValidationError as exc:
            found.append(exc)
    return found


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _condition_holds(cond: dict, form: dict) -> bool:
    op = cond["op"]
    present = cond["field"] in form and not _empty(form[cond["field"]])
    if op == "present":
        return present
    if not present:
        return False
    actual, expected = form[cond["field"]], cond["value"]
    if op == "eq":
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            return _number(actual) == expected
        return actual == expected
    if op == "in":
        return actual in expected
    a, b = _number(actual), _number(expected)
    if a is None or b is None:
        return False
    return a <= b if op == "lte" else a >= b


def evaluate_instant_rule(rule: dict | None, form: dict) -> bool:
    """True if a 秒批 rule is satisfied by the (cleaned) form.

    ``{"all": [...]}`` needs every condition, ``{"any": [...]}`` one; groups
    may nest. Conditions are ``{"field", "op", "value"}`` with ops ``eq``,
    ``lte``, ``gte``, ``in`` and ``present``. Anything missing, malformed or
    not comparable counts as not satisfied: the system never approves on doubt.
    """
    if not isinstance(rule, dict) or len(rule) != 1:
        return False
    key, conditions = next(iter(rule.items()))
    if key not in ("all", "any") or not isinstance(conditions, list) or not conditions:
        return False
    results = []
    for cond in conditions:
        if not isinstance(cond, dict):
            return False
        if "all" in cond or "any" in cond:
            results.append(evaluate_instant_rule(cond, form))
        elif cond.get("op") in RULE_OPS and "field" in cond:
            try:
                results.append(_condition_holds(cond, form))
            except (KeyError, TypeError):
                results.append(False)
        else:
            return False
    return all(results) if key == "all" else any(results)


# --------------------------------------------------------------------------
# levels and routing


def node_level(node_id: str) -> str:
    """Level of a node from its 区划代码 length: 6 → city, 9 → township, 12 → village.

    :raises ValidationError: for anything else.
    """
    if isinstance(node_id, str) and node_id.isdigit():
        level = {6: "city", 9: "township", 12: "village"}.get(len(node_id))
        if level:
            return level
    raise ValidationError("node_id", f"节点编码「{node_id}」应为6、9或12位数字")


def accepts_at(item: dict, node_id: str) -> bool:
    """True if a node at ``node_id``'s level may accept applications for ``item``."""
    return node_level(node_id) in item["accept_levels"]


def route(item: dict, origin_node_id: str, hub_id: str) -> dict:
    """Where a case for ``item`` taken at ``origin_node_id`` is decided.

    City-decided items go to the department's office at the hub
    (``"<hub_id>-<department_code>"``); township-decided items go to the
    township the origin belongs to (a village's 9-digit prefix, or the
    township itself).

    :returns: ``{"level": "township"|"city", "office": str}``.
    :raises ValidationError: if a node code is malformed.
    :raises RuleError: ``foreign_node`` if the origin is not under the hub;
        ``township_unknown`` if a township item was taken at the hub.
    """
    if node_level(hub_id) != "city":
        raise ValidationError("hub_id", f"中心编码「{hub_id}」应为6位数字")
    level = node_level(origin_node_id)
    if not origin_node_id.startswith(hub_id):
        raise RuleError("foreign_node", f"节点「{origin_node_id}」不属于本中心（{hub_id}）")
    if item["decide_level"] == "city":
        return {"level": "city", "office": f"{hub_id}-{item['department_code']}"}
    if level == "city":
        raise RuleError("township_unknown", "乡镇审批的事项须由所属乡镇或村受理")
    return {"level": "township", "office": origin_node_id[:9]}


# --------------------------------------------------------------------------
# search


def search(items: list[dict], query: str) -> list[dict]:
    """Find items by Chinese text or pinyin initials.

    Every whitespace-separated term must match: a term with Chinese
    characters matches a substring of the name, an alias (常用简称 such as
    低保) or the department; an ASCII
    term matches a substring of the pinyin ``initials`` or the item code
    (case-insensitive), so ``sydj`` finds 生育登记. Results whose name or
    initials start with the first term come first; the rest keep catalog order.
    """
    terms = (query or "").split()
    if not terms:
        return list(items)

    def matches(item: dict, term: str) -> bool:
        if _CJK.search(term):
            texts = [item["name"], item.get("department", ""), *item.get("aliases", [])]
            return any(term in text for text in texts)
        t = term.lower()
        return t in item.get("initials", "") or t in item["code"].lower()

    hits = [it for it in items if all(matches(it, t) for t in terms)]
    first = terms[0].lower()

    def rank(item: dict) -> int:
        return 0 if item["name"].startswith(terms[0]) or item.get("initials", "").startswith(first) else 1

    return sorted(hits, key=rank)
