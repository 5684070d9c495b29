"""Missing pinyin initials of catalog items are filled from the name (pypinyin, in context)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.rules.catalog import search, validate_item
from shared.rules.pinyin import initials

SEED_PATH = Path(__file__).resolve().parents[1] / "shared" / "data" / "catalog_seed.json"


@pytest.fixture(scope="module")
def raw_seed() -> list[dict]:
    return json.loads(SEED_PATH.read_text(encoding="utf-8"))


def test_pypinyin_reproduces_every_hand_typed_initials_of_the_seed(raw_seed):
    # 24 items typed by hand, polyphones included (参保, 重度, 补贴, 采伐…): all agree.
    assert len(raw_seed) >= 24
    assert {d["name"]: initials(d["name"]) for d in raw_seed} == {d["name"]: d["initials"] for d in raw_seed}


@pytest.mark.parametrize("name, expected", [
    ("重度残疾人护理补贴", "zdcjrhlbt"),      # 重 zhòng, not chóng
    ("重新申领社会保障卡", "cxslshbzk"),      # 重 chóng
    ("银行账户变更", "yhzhbg"),              # 行 háng
    ("行政许可", "xzxk"),                    # 行 xíng
    ("单位参保登记", "dwcbdj"),              # 单 dān, 参 cān
    ("长期护理保险待遇申请", "cqhlbxdysq"),   # 长 cháng
    ("会计从业人员信息采集", "kjcyryxxcj"),    # 会 kuài
    ("B超检查（孕期）", "bcjcyq"),            # letters kept, punctuation dropped
])
def test_polyphones_take_their_reading_from_the_phrase(name, expected):
    assert initials(name) == expected


def test_an_item_without_initials_gets_them_and_is_found_by_pinyin(raw_seed):
    raw = copy.deepcopy(next(d for d in raw_seed if d["name"] == "城乡居民养老保险参保登记"))
    raw.pop("initials")
    blank = dict(copy.deepcopy(raw), code="130926-RS-0099", name="城乡居民养老保险关系转移接续", initials="")
    items = [validate_item(raw), validate_item(blank)]
    assert [i["initials"] for i in items] == ["cxjmylbxcbdj", "cxjmylbxgxzyjx"]
    assert [i["name"] for i in search(items, "gxzy")] == ["城乡居民养老保险关系转移接续"]


def test_hand_typed_initials_are_kept(raw_seed):
    raw = copy.deepcopy(next(d for d in raw_seed if d["name"] == "生育登记"))
    raw["initials"] = "sydjsy"  # e.g. an admin adds 生育 twice for a common mistyping
    assert validate_item(raw)["initials"] == "sydjsy"


def test_a_village_app_does_not_load_pypinyin():
    # ~55 MB of dictionaries: only the hub fills initials (villages get them in the signed catalog).
    code = ("import sys, village_node, township_node, shared.rules.catalog, shared.web.intake; "
            "sys.exit(1 if 'pypinyin' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
