import copy
import json
import re
from datetime import date
from pathlib import Path

import pytest

from shared.core.errors import RuleError, ValidationError
from shared.rules.catalog import (
    DEPARTMENTS,
    accepts_at,
    evaluate_instant_rule,
    load_seed,
    node_level,
    public_view,
    required_materials,
    route,
    search,
    validate_form,
    validate_item,
)
from shared.rules.idcard import id_check_char

SEED_PATH = Path(__file__).resolve().parents[1] / "shared" / "data" / "catalog_seed.json"
HUB = "130926"
TOWNSHIP = "130926100"
VILLAGE = "130926100201"


@pytest.fixture(scope="module")
def items():
    return load_seed()


@pytest.fixture(scope="module")
def by_name(items):
    return {item["name"]: item for item in items}


def valid_id(first17="13092619900307123"):
    return first17 + id_check_char(first17)


# ---------------------------------------------------------------- the seed


def test_seed_size_and_coverage(items):
    assert len(items) >= 22
    assert len({i["code"] for i in items}) == len(items)
    depts = {i["department_code"] for i in items} | {d for i in items for d in i["joint_departments"]}
    assert {"rs", "wj", "mz", "cl", "scjg", "ly", "zrzy", "nync", "fg"} <= depts
    village_city = [
        i
        for i in items
        if "village" in i["accept_levels"] and i["decide_level"] == "city" and not i["consultation_only"]
    ]
    assert len(village_city) >= 10
    assert len([i for i in items if i["decide_level"] == "township"]) >= 2


def test_seed_items_have_fields_materials_and_matching_initials(items):
    for item in items:
        assert item["fields"] and item["materials"], item["name"]
        assert re.fullmatch(r"[a-z]+", item["initials"]), item["name"]
        # One initial per Chinese character of the name.
        assert len(item["initials"]) == len(re.findall(r"[\u4e00-\u9fff]", item["name"])), item["name"]


def test_seed_encodes_the_specified_rows(by_name):
    pension = by_name["城乡居民养老保险参保登记"]
    assert pension["promise_limit_wd"] == 3
    assert "village" in pension["accept_levels"] and pension["decide_level"] == "city"
    assert by_name["生育登记"]["handling"] == "即办件"
    assert by_name["生育登记"]["initials"] == "sydj"
    business = by_name["个体工商户登记"]
    assert "township" in business["accept_levels"] and business["legal_limit_wd"] == 3
    homestead = by_name["农村宅基地申请"]
    assert homestead["decide_level"] == "township"
    assert set(homestead["joint_departments"]) == {"zrzy", "nync"}
    assert homestead["deemed_consent"] is True
    logging = by_name["林木采伐许可证核发"]
    assert logging["site_visit"] and logging["legal_limit_wd"] == 20
    assert by_name["零星林木采伐咨询"]["consultation_only"] is True
    assert "不需要申请采伐许可证" in by_name["零星林木采伐咨询"]["consultation_answer"]
    assert by_name["企业投资项目备案"]["instant_rule"] is not None
    assert "village" in by_name["高龄津贴申请"]["accept_levels"]
    assert "残疾人证新办" in by_name


def test_seed_file_is_what_load_seed_reads(items):
    raw = json.loads(SEED_PATH.read_text(encoding="utf-8"))
    assert [d["code"] for d in raw] == [i["code"] for i in items]


def test_load_seed_returns_independent_copies():
    first = load_seed()
    first[0]["name"] = "改动"
    assert load_seed()[0]["name"] != "改动"


# ---------------------------------------------------------------- validate_item


@pytest.fixture
def raw_item():
    raw = json.loads(SEED_PATH.read_text(encoding="utf-8"))
    return next(d for d in raw if d["name"] == "城乡居民养老保险参保登记")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(basic_code="123"), "basic_code"),
        (lambda d: d.update(item_type="处罚"), "item_type"),
        (lambda d: d.update(department_code="xx"), "department_code"),
        (lambda d: d.update(department="民政局"), "department"),
        (lambda d: d.update(promise_limit_wd=30), "promise_limit_wd"),
        (lambda d: d.update(legal_limit_wd=-1), "legal_limit_wd"),
        (lambda d: d.update(handling="即办件"), "handling"),
        (lambda d: d.update(accept_levels=["county"]), "accept_levels"),
        (lambda d: d.update(accept_levels=[]), "accept_levels"),
        (lambda d: d.update(decide_level="village"), "decide_level"),
        (lambda d: d.update(chief_authority="sign"), "chief_authority"),
        (lambda d: d.update(joint_departments=["rs"]), "joint_departments"),
        (lambda d: d.update(deemed_consent=True), "deemed_consent"),
        (lambda d: d.update(fee={"charged": True, "basis": ""}), "fee.basis"),
        (lambda d: d.update(fields=[]), "fields"),
        (lambda d: d.update(materials=[]), "materials"),
        (lambda d: d["fields"][0].update(type="file"), "fields[0].type"),
        (lambda d: d["fields"][0].update(name="申请人"), "fields[0].name"),
        (lambda d: d["fields"].append(dict(d["fields"][0])), "fields"),
        (lambda d: d["materials"][0].update(kind="扫描件"), "materials[0].kind"),
        (lambda d: d["materials"][0].update(copies=0), "materials[0].copies"),
        (lambda d: d["materials"][0].update(source="网上下载"), "materials[0].source"),
        (
            lambda d: d["situations"][0]["options"][0].update(add_materials=["nope"]),
            "situations[0].options[0].add_materials",
        ),
        (
            lambda d: d.update(instant_rule={"all": [{"field": "ghost", "op": "eq", "value": 1}]}),
            "instant_rule.all[0].field",
        ),
        (
            lambda d: d.update(instant_rule={"all": [{"field": "phone", "op": "like", "value": 1}]}),
            "instant_rule.all[0]",
        ),
        (lambda d: d.update(initials="CXJM"), "initials"),
        (lambda d: d.update(consultation_only=True), "consultation_answer"),
    ],
)
def test_validate_item_names_the_bad_field(raw_item, mutate, field):
    d = copy.deepcopy(raw_item)
    mutate(d)
    with pytest.raises(ValidationError) as exc:
        validate_item(d)
    assert exc.value.field == field
    assert exc.value.status == 400


def test_validate_item_fills_defaults(raw_item):
    d = copy.deepcopy(raw_item)
    for key in ("joint_departments", "deemed_consent", "instant_rule", "situations", "fee", "site_visit"):
        d.pop(key, None)
    d["materials"] = [m for m in d["materials"] if m["required"]]
    item = validate_item(d)
    assert item["joint_departments"] == [] and item["situations"] == []
    assert item["deemed_consent"] is False and item["instant_rule"] is None
    assert item["fee"] == {"charged": False, "basis": ""}


def test_departments_have_the_specified_names():
    assert DEPARTMENTS["rs"] == "人力资源和社会保障局"
    assert DEPARTMENTS["cl"] == "残疾人联合会"
    assert DEPARTMENTS["zrzy"] == "自然资源和规划局"
    assert DEPARTMENTS["fg"] == "发展和改革局"


# ---------------------------------------------------------------- public view


def test_public_view_shape_hides_internal_workflow(by_name):
    view = public_view(by_name["企业投资项目备案"])
    for key in ("code", "name", "decide_level", "accept_levels", "department", "fields", "materials"):
        assert key in view
    assert "instant_rule" not in view and "chief_authority" not in view and "deemed_consent" not in view
    assert view["instant_approval"] is True
    assert public_view(by_name["城乡居民养老保险参保登记"])["instant_approval"] is False
    assert "consultation_answer" in public_view(by_name["零星林木采伐咨询"])
    view["fields"].clear()
    assert by_name["企业投资项目备案"]["fields"], "public_view must not share lists with the item"


# ---------------------------------------------------------------- materials by situation


def test_required_materials_base_and_situations(by_name):
    item = by_name["城乡居民养老保险参保登记"]
    base = [m["code"] for m in required_materials(item, {})]
    assert base == ["id_card", "hukou", "enroll_form"]
    with_proof = required_materials(item, {"paid_by_government": "是"})
    assert [m["code"] for m in with_proof] == ["id_card", "hukou", "enroll_form", "hardship_proof"]
    assert all(m["required"] for m in with_proof)
    assert [m["code"] for m in required_materials(item, {"paid_by_government": "否"})] == base


def test_required_materials_for_logging_permit(by_name):
    item = by_name["林木采伐许可证核发"]
    small = {m["code"] for m in required_materials(item, {"small_volume": "是", "proxy": "否"})}
    large = {m["code"] for m in required_materials(item, {"small_volume": "否", "proxy": "是"})}
    assert "commitment" in small and "harvest_design" not in small
    assert {"harvest_design", "proxy_letter"} <= large and "commitment" not in large


def test_required_materials_rejects_bad_answers(by_name):
    item = by_name["城乡居民养老保险参保登记"]
    with pytest.raises(ValidationError) as exc:
        required_materials(item, {"paid_by_government": "也许"})
    assert exc.value.field == "situations.paid_by_government"
    with pytest.raises(ValidationError) as exc:
        required_materials(item, {"ghost": "是"})
    assert exc.value.field == "situations.ghost"
    with pytest.raises(ValidationError) as exc:
        required_materials(item, {}, strict=True)
    assert exc.value.code == "required"


# ---------------------------------------------------------------- forms


# A small synthetic item (not the seed): text with a length limit, the id_number and phone
# formats and a select, so the form rules are proven whatever the seed's forms look like.
SYNTHETIC_ITEM = {
    "code": "130926-TEST-0001",
    "basic_code": "000000000001",
    "name": "测试登记",
    "initials": "csdj",
    "item_type": "公共服务",
    "legal_basis": "测试依据",
    "department_code": "rs",
    "department": "人力资源和社会保障局",
    "implementing_body": "肃宁县人力资源和社会保障局",
    "legal_limit_wd": 3,
    "promise_limit_wd": 3,
    "handling": "承诺件",
    "accept_levels": ["village", "township", "city"],
    "decide_level": "city",
    "chief_authority": "decide",
    "visits": 1,
    "accept_conditions": "测试条件",
    "process": ["收件", "审核"],
    "result_name": "测试结果",
    "fields": [
        {"name": "applicant_name", "label": "申请人姓名", "type": "text", "required": True, "max": 20},
        {"name": "id_number", "label": "身份证号", "type": "text", "required": True, "format": "id_number"},
        {"name": "phone", "label": "联系电话", "type": "text", "required": True, "format": "phone"},
        {"name": "address", "label": "户籍地址", "type": "text", "required": True, "max": 100},
        {"name": "contribution_grade", "label": "缴费档次", "type": "select", "required": True,
         "options": ["200元", "300元", "500元"]},
    ],
    "materials": [
        {"code": "id_card", "name": "居民身份证", "kind": "复印件", "form": "纸质", "required": True,
         "deficiency_allowed": False, "source": "政府部门核发", "copies": 1},
    ],
}


@pytest.fixture(scope="module")
def form_item():
    return validate_item(copy.deepcopy(SYNTHETIC_ITEM))


@pytest.fixture
def applicant_form():
    return {
        "applicant_name": " 张三 ",
        "id_number": valid_id().lower(),
        "phone": "13812345678",
        "address": "肃宁县某村",
        "contribution_grade": "300元",
        "csrf_token": "ignored",
    }


def test_validate_form_cleans_values(form_item, applicant_form):
    cleaned = validate_form(form_item, applicant_form)
    assert cleaned["applicant_name"] == "张三"
    assert cleaned["id_number"] == valid_id()  # normalised: the check letter upper-case
    assert cleaned["phone"] == "13812345678"
    assert "csrf_token" not in cleaned


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("applicant_name", "", "请填写「申请人姓名」"),
        ("applicant_name", None, "请填写「申请人姓名」"),
        ("contribution_grade", "250元", "「缴费档次」只能选择"),
        ("id_number", "13092619900307123", "身份证号应为18位"),
        ("phone", "12345", "联系电话格式不正确"),
        ("applicant_name", "张" * 21, "不能超过20个字"),
        ("applicant_name", 42, "必须是文本"),
    ],
)
def test_validate_form_reports_field(form_item, applicant_form, key, value, message):
    applicant_form[key] = value
    with pytest.raises(ValidationError) as exc:
        validate_form(form_item, applicant_form)
    assert exc.value.field == f"form.{key}"
    assert message in exc.value.message


def test_validate_form_numbers_and_dates(by_name):
    item = by_name["生育登记"]
    form = {
        "mother_name": "李四",
        "mother_id_number": valid_id("13092619950101002"),
        "father_name": "王五",
        "father_id_number": valid_id("13092619930505001"),
        "phone": "0317-5012345",
        "child_order": "第二个子女",
        "expected_date": date(2026, 8, 1),
    }
    assert validate_form(item, form)["expected_date"] == "2026-08-01"
    form["expected_date"] = "2026-13-01"
    with pytest.raises(ValidationError) as exc:
        validate_form(item, form)
    assert exc.value.field == "form.expected_date"
    form["expected_date"] = ""
    assert "expected_date" not in validate_form(item, form)  # optional and empty

    homestead = by_name["农村宅基地申请"]
    hform = {
        "applicant_name": "赵六",
        "id_number": valid_id(),
        "phone": "13912345678",
        "village_group": "第三村民小组",
        "build_reason": "分户新建",
        "household_size": "4",
        "area_m2": "150.5",
    }
    cleaned = validate_form(homestead, hform)
    assert cleaned["household_size"] == 4 and isinstance(cleaned["household_size"], int)
    assert cleaned["area_m2"] == 150.5
    for bad, message in (
        ("abc", "必须是数字"),
        ("0", "不能小于1"),
        (True, "必须是数字"),
        ("nan", "必须是数字"),
    ):
        hform["household_size"] = bad
        with pytest.raises(ValidationError) as exc:
            validate_form(homestead, hform)
        assert exc.value.field == "form.household_size" and message in exc.value.message


# ---------------------------------------------------------------- 秒批


def test_instant_rule_for_project_filing(by_name):
    item = by_name["企业投资项目备案"]
    form = {
        "restricted_industry": "否",
        "needs_approval": "否",
        "credit_code": "91130926MA0000000X",
        "total_investment": 5000,
    }
    assert evaluate_instant_rule(item["instant_rule"], form) is True
    for key, value in (
        ("restricted_industry", "是"),
        ("needs_approval", "是"),
        ("credit_code", ""),
        ("total_investment", 100001),
        ("total_investment", "很多"),
    ):
        assert evaluate_instant_rule(item["instant_rule"], dict(form, **{key: value})) is False, key
    assert (
        evaluate_instant_rule(item["instant_rule"], {k: v for k, v in form.items() if k != "needs_approval"})
        is False
    )


def test_instant_rule_ops_and_nesting():
    rule = {
        "any": [
            {
                "all": [
                    {"field": "age", "op": "gte", "value": 80},
                    {"field": "hukou", "op": "in", "value": ["本县"]},
                ]
            },
            {"field": "veteran", "op": "eq", "value": "是"},
        ]
    }
    assert evaluate_instant_rule(rule, {"age": 80, "hukou": "本县"})
    assert evaluate_instant_rule(rule, {"age": "85", "hukou": "本县"})
    assert not evaluate_instant_rule(rule, {"age": 79, "hukou": "本县"})
    assert not evaluate_instant_rule(rule, {"age": 90, "hukou": "外县"})
    assert evaluate_instant_rule(rule, {"veteran": "是"})
    assert evaluate_instant_rule({"all": [{"field": "n", "op": "lte", "value": 3}]}, {"n": 3})
    assert not evaluate_instant_rule({"all": [{"field": "n", "op": "lte", "value": 3}]}, {"n": 4})


@pytest.mark.parametrize(
    "rule", [None, {}, {"all": []}, {"xor": [{"field": "a", "op": "present"}]}, {"all": ["a"]}]
)
def test_malformed_rules_never_approve(rule):
    assert evaluate_instant_rule(rule, {"a": 1}) is False


# ---------------------------------------------------------------- routing


def test_city_items_route_to_department_office(by_name):
    item = by_name["城乡居民养老保险参保登记"]
    for origin in (VILLAGE, TOWNSHIP, HUB):
        assert route(item, origin, HUB) == {"level": "city", "office": "130926-rs"}


def test_township_items_route_to_the_origins_township(by_name):
    item = by_name["农村宅基地申请"]
    assert route(item, VILLAGE, HUB) == {"level": "township", "office": TOWNSHIP}
    assert route(item, "130926101205", HUB) == {"level": "township", "office": "130926101"}
    assert route(item, TOWNSHIP, HUB) == {"level": "township", "office": TOWNSHIP}


def test_routing_refuses_foreign_or_unplaceable_origins(by_name):
    with pytest.raises(RuleError) as exc:
        route(by_name["农村宅基地申请"], HUB, HUB)
    assert exc.value.code == "township_unknown"
    with pytest.raises(RuleError) as exc:
        route(by_name["生育登记"], "130927100201", HUB)
    assert exc.value.code == "foreign_node"
    with pytest.raises(ValidationError):
        route(by_name["生育登记"], "1309261002", HUB)


def test_levels_and_acceptance(by_name):
    assert [node_level(x) for x in (HUB, TOWNSHIP, VILLAGE)] == ["city", "township", "village"]
    assert accepts_at(by_name["高龄津贴申请"], VILLAGE)
    assert not accepts_at(by_name["个体工商户登记"], VILLAGE)
    assert accepts_at(by_name["个体工商户登记"], TOWNSHIP)


# ---------------------------------------------------------------- search


def names(results):
    return [i["name"] for i in results]


def test_search_by_pinyin_initials(items):
    assert names(search(items, "sydj"))[0] == "生育登记"
    assert "生育登记" in names(search(items, "SYDJ"))
    assert names(search(items, "zjd")) == ["农村宅基地申请"]
    # The permit starts with "lmcf"; the 零星 consultation only contains it.
    assert names(search(items, "lmcf")) == ["林木采伐许可证核发", "零星林木采伐咨询"]


def test_search_by_chinese_name_alias_and_department(items):
    assert names(search(items, "宅基地")) == ["农村宅基地申请"]
    assert names(search(items, "低保")) == ["最低生活保障申请"]
    assert set(names(search(items, "林业局"))) == {"林木采伐许可证核发", "零星林木采伐咨询"}
    assert set(names(search(items, "采伐 许可"))) == {"林木采伐许可证核发"}


def test_search_prefix_matches_rank_first(items):
    results = names(search(items, "sy"))
    assert results[0] == "生育登记"
    assert "再生育审批" in results


def test_search_edge_cases(items):
    assert search(items, "") == items
    assert search(items, "xyzxyz") == []
    assert names(search(items, "130926-fg")) == ["企业投资项目备案"]


def test_a_bad_catalog_file_is_explained_in_the_catalogs_own_words(raw_item):
    """The admin reads 「承诺办结时限」, not the file's key; the error's field still names the key."""
    d = copy.deepcopy(raw_item)
    d["promise_limit_wd"] = "三天"
    with pytest.raises(ValidationError) as exc:
        validate_item(d)
    assert exc.value.field == "promise_limit_wd"
    assert "承诺办结时限" in exc.value.message and not re.search(r"[A-Za-z_]{3,}", exc.value.message)
