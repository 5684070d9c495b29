"""Names instead of codes: the Chinese name of an office, a node, a person and a material.

A villager needs the authority's name to apply for 行政复议, and nobody reads ``130926-rs`` or
``130926100201``. Every page and paper asks here. The names come from what the node already
trusts: the registry (``trust.nodes[...].name``), the signed catalog (``implementing_body``,
material names) and the local accounts table; an unknown code falls back to a plain Chinese
description, never to the code itself.
"""

from __future__ import annotations

import json
import sqlite3

from shared.rules.catalog import DEPARTMENTS
from shared.services import accounts

HUB_SUFFIX = "政务服务中心"
TOWNSHIP_STATION_SUFFIXES = ("便民服务站", "便民服务中心")
#: Who signs for a tier when an event names only a username the node does not hold.
ROLE_BY_TIER = {"village": "村代办员", "township": "乡镇站员", "hub": "审批人员"}
#: 送达方式 (民事诉讼法 Ch. 7, applied to administrative documents): what the 送达回证 states.
DELIVERY_MANNERS = ("直接送达", "委托送达", "邮寄送达", "留置送达", "电子送达")
SEAL = "行政审批专用章"


def county_of(hub_name: str) -> str:
    """The county's name from the hub's (``肃宁县政务服务中心`` → ``肃宁县``)."""
    return (hub_name or "").replace(HUB_SUFFIX, "").replace("（", "").replace("）", "")


def township_government(station_name: str) -> str:
    """The administrative organ of a township (``肃宁镇便民服务站`` → ``肃宁镇人民政府``).

    A 便民服务站 is a service point, not an administrative organ: township decisions are issued
    in the name of the 乡镇人民政府.
    """
    for suffix in TOWNSHIP_STATION_SUFFIXES:
        if station_name.endswith(suffix):
            return station_name[: -len(suffix)] + "人民政府"
    return station_name if station_name.endswith("人民政府") else (station_name + "人民政府" if station_name else "乡镇人民政府")


def node_name(trust, node_id: str | None, fallback: str = "") -> str:
    """A node's registered name (``东关村便民服务室``), or a plain description when unknown."""
    entry = trust.nodes.get(node_id) if trust is not None and node_id else None
    if entry is not None and entry.name:
        return entry.name
    if fallback:
        return fallback
    return {6: "政务服务中心", 9: "乡镇便民服务站", 12: "村便民服务室"}.get(len(node_id or ""), "未登记的服务点")


def hub_name(trust) -> str:
    """The county hub's registered name (``肃宁县政务服务中心``)."""
    return node_name(trust, trust.hub_id if trust is not None else None, "县（市）政务服务中心")


def office_name(trust, office: str | None, item: dict | None = None, hub: str = "") -> str:
    """The full Chinese name of a deciding office.

    * a township (its node id) → its 乡镇人民政府;
    * a hub department (``130926-rs``) → the catalog's 实施主体 when the item belongs to that
      department (e.g. 肃宁县人力资源和社会保障局, or the 行政审批局 where an item is
      concentrated), else the county's name plus the department's (肃宁县 + 民政局).
    """
    if not office:
        return "—"
    if "-" not in office:
        if trust is not None and trust.hub_id == office:
            return hub or node_name(trust, office)
        return township_government(node_name(trust, office, ""))
    department = office.rsplit("-", 1)[-1]
    body = (item or {}).get("implementing_body") or ""
    if item and item.get("department_code") == department and body and body != DEPARTMENTS.get("xz"):
        return body
    county = county_of(hub or hub_name(trust))
    return county + DEPARTMENTS.get(department, "有关部门")


def reconsideration_body(county: str, configured: str = "") -> str:
    """The 行政复议机关 (the county's 人民政府 under 行政复议法 Art. 24, unless configured)."""
    return configured or f"{county}人民政府"


def court(county: str, configured: str = "") -> str:
    """The competent basic 人民法院 for an action against a county or township organ."""
    return configured or f"{county}人民法院"


def with_full_stop(text: str) -> str:
    """A reason as a sentence: ends with 。 (or its own ！？；…) whatever was typed."""
    text = (text or "").strip()
    if not text:
        return ""
    return text if text[-1] in "。！？!?…；;" else text + "。"


def person(conn: sqlite3.Connection | None, username: str | None, node_tier: str = "",
           detail: dict | str | None = None) -> str:
    """Who did a step, by display name: the local account's, the one carried in the event
    (``actor_name``), ``系统`` for automatic steps, else the role of the node's tier."""
    if not username:
        return "—"
    if username == "system":
        return "系统自动"
    if isinstance(detail, str):
        detail = json.loads(detail or "{}")
    carried = (detail or {}).get("actor_name")
    if isinstance(carried, str) and carried:
        return carried
    if conn is not None:
        row = conn.execute("SELECT display_name, role FROM accounts WHERE username = ?", (username,)).fetchone()
        if row is not None:
            return row["display_name"] or accounts.ROLES.get(row["role"], "工作人员")
    return ROLE_BY_TIER.get(node_tier, "工作人员")


def tier_of(node_id: str | None) -> str:
    """The tier a 区划代码 names by its length (6 hub, 9 township, 12 village)."""
    return {6: "hub", 9: "township", 12: "village"}.get(len(node_id or ""), "")


def material_name(item: dict | None, code: str) -> str:
    """A material by the catalog's name (``居民身份证``), never its code."""
    for m in (item or {}).get("materials", []):
        if m.get("code") == code:
            return m["name"]
    return "其他材料"


def for_case(conn: sqlite3.Connection, trust, case: dict, item: dict | None, hub: str,
             own_id: str = "", own_name: str = "") -> dict:
    """The names a case's pages and papers show instead of its codes.

    ``office`` (the deciding organ), ``origin`` (where it was filed), ``township`` (the station
    between that village and the hub), ``hub``, ``receiver`` (who took it), and each history
    row's ``actor_name`` and ``node_name`` (added to ``case["history"]`` in place).
    """

    def place(node_id: str | None) -> str:
        if own_id and node_id == own_id and own_name:
            return own_name
        return node_name(trust, node_id)

    origin = case.get("origin")
    entry = trust.nodes.get(origin) if trust is not None and origin else None
    parent = entry.parent if entry is not None else (origin[:9] if origin and len(origin) == 12 else None)
    office = case.get("route", {}).get("office")
    if office == own_id and tier_of(own_id) == "township":
        office_text = township_government(own_name)
    else:
        office_text = office_name(trust, office, item, hub)
    for h in case.get("history", []):
        h["actor_name"] = person(conn, h.get("actor"), tier_of(h.get("node")), h.get("detail"))
        h["node_name"] = place(h.get("node"))
    submit = next((h for h in case.get("history", []) if h.get("action") == "submit"), None)
    decision = case.get("decision") or {}
    return {
        "office": office_text,
        "decision_office": office_name(trust, decision.get("office"), item, hub) if decision.get("office") else office_text,
        "origin": place(origin),
        "township": place(parent) if parent and tier_of(origin) == "village" else "",
        "hub": hub,
        "receiver": submit["actor_name"] if submit else "—",
    }
