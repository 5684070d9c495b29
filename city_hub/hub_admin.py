"""The provisioning admin's operations at the hub, shared by the admin pages and the CLI.

Publishing a catalog (实施清单) or a holiday schedule signs a new metadata version at the hub;
every node receives it by ordinary sync and refuses older versions. Cases keep the catalog
version they were filed under (``cases.catalog_version``). Accounts of the hub are listed,
created and (de)activated here; every change goes to the append-only audit log.
"""

from __future__ import annotations

import json
import sqlite3

from city_hub import registry
from shared.core.crypto import write_private_file
from shared.core.errors import RuleError, ValidationError
from shared.rules import catalog
from shared.rules import things as things_rules
from shared.rules.workdays import parse_schedule
from shared.services import accounts
from shared.services.accounts import audit
from sync import envelope


def parse_catalog(text: str | bytes) -> list[dict]:
    """Validate a catalog file: a JSON list of items or ``{"items": [...]}``.

    :returns: the normalised items (``shared.rules.catalog.validate_item``).
    :raises ValidationError: in Chinese, naming the item (position, code, name) and the field.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("catalog", "目录文件必须是 UTF-8 编码的 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("catalog", f"目录不是有效的 JSON：第{exc.lineno}行第{exc.colno}列附近有误") from None
    if isinstance(data, dict):
        data = data.get("items")
    if not isinstance(data, list) or not data:
        raise ValidationError("catalog", "目录应为事项列表，或包含非空 items 列表的对象")
    items, seen = [], {}
    for i, raw in enumerate(data, start=1):
        name = raw.get("name") if isinstance(raw, dict) else None
        code = raw.get("code") if isinstance(raw, dict) else None
        label = f"第{i}项" + (f"（{code} {name}）" if code or name else "")
        try:
            item = catalog.validate_item(raw)
        except ValidationError as exc:
            raise ValidationError(f"items[{i - 1}].{exc.field}",
                                  f"{label}字段「{exc.field}」有误：{exc.message}", code="invalid_catalog_item") from None
        if item["code"] in seen:
            raise ValidationError(f"items[{i - 1}].code",
                                  f"{label}的实施编码与第{seen[item['code']]}项重复", code="invalid_catalog_item")
        seen[item["code"]] = i
        items.append(item)
    return items


def parse_things(text: str | bytes, items: list[dict]) -> list[dict] | None:
    """The 一件事 bundles of a catalog file ``{"items": [...], "things": [...]}``, checked against
    its ``items`` (``None``: the file has none, so the published ones are kept)."""
    data = json.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    if not isinstance(data, dict) or "things" not in data:
        return None
    return things_rules.validate_things(data["things"], {i["code"]: i for i in items})


def publish_catalog(conn: sqlite3.Connection, node, items: list[dict], actor: str,
                    things: list[dict] | None = None) -> int:
    """Sign and store the next catalog version; returns it. Call inside a write transaction.

    ``things`` (一件事) default to the published ones that still fit the new items; one that
    no longer does (an item removed or changed) is left out, and the audit log says so.
    """
    if things is None:
        index, things = {i["code"]: i for i in items}, []
        for thing in registry.current_things(conn).values():
            try:
                things.append(things_rules.validate_thing(thing, index))
            except ValidationError as exc:
                audit(conn, actor, "catalog.thing_dropped", thing["code"], exc.message, node.now())
    document = registry.publish(conn, node, "catalog", {"items": items, "things": things})
    version = envelope.peek(document)["version"]
    audit(conn, actor, "catalog.published", f"catalog v{version}", f"{len(items)} items, {len(things)} things",
          node.now())
    return version


def parse_calendar(text: str | bytes) -> dict:
    """Validate a holiday schedule file (``shared.rules.workdays`` format); errors in Chinese with the detail."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("schedule", "节假日安排文件必须是 UTF-8 编码的 JSON") from None
    try:
        return parse_schedule(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValidationError("schedule", f"节假日安排不是有效的 JSON：第{exc.lineno}行第{exc.colno}列附近有误") from None
    except ValueError as exc:
        raise ValidationError("schedule", f"节假日安排有误：{exc}") from None


def publish_calendar(conn: sqlite3.Connection, node, schedule: dict, actor: str) -> int:
    """Keep a year's schedule at the hub, use it now, and publish every loaded year (signed).

    Call inside a write transaction; returns the calendar version.
    """

    if node.tier != "hub":
        raise RuleError("not_hub", "节假日安排须在市(县)中心导入，再由同步分发到各节点")
    schedule = parse_schedule(schedule)
    folder = node.data_dir / "calendar"
    folder.mkdir(exist_ok=True)
    write_private_file(folder / f"{schedule['year']}.json", json.dumps(schedule, ensure_ascii=False).encode("utf-8"))
    node.calendar.add_schedule(schedule)
    document = registry.publish(conn, node, "calendar",
                                {"schedules": sorted(node.calendar.schedules.values(), key=lambda s: s["year"])})
    version = envelope.peek(document)["version"]
    audit(conn, actor, "calendar.published", f"calendar v{version}", f"{schedule['year']} {schedule['source']}",
          node.now())
    return version


def list_accounts(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every account of this node, active first."""
    return conn.execute("SELECT username, display_name, role, office, active, created_at FROM accounts"
                        " ORDER BY active DESC, role, username").fetchall()


def create_hub_account(conn: sqlite3.Connection, node, username: str, password: str, role: str, display_name: str,
                       office: str | None, actor: str) -> str:
    """A new account of the hub (never overwrites one); returns its API token (shown once).

    Call inside a write transaction.
    """
    if role not in accounts.ROLES_BY_TIER["hub"]:
        allowed = "、".join(accounts.ROLES[r] for r in accounts.ROLES_BY_TIER["hub"])
        raise ValidationError("role", f"市(县)中心的角色只能是：{allowed}")
    if conn.execute("SELECT 1 FROM accounts WHERE username = ?", (username,)).fetchone():
        raise ValidationError("username", f"用户名「{username}」已存在")
    if not display_name.strip():
        raise ValidationError("display_name", "请填写姓名")
    if role in accounts.DECIDING_ROLES:
        offices = hub_offices(node.node_id)
        if office not in offices:
            raise ValidationError("office", "审批人员必须选择所属部门窗口")
    token = accounts.create_account(conn, username, password, role, display_name.strip(), office or None, node.now())
    audit(conn, actor, "account.created", username, f"{role} {office or ''}".strip(), node.now())
    return token


def set_account_active(conn: sqlite3.Connection, node, username: str, active: bool, actor: str) -> None:
    """Deactivate (or re-activate) an account; nobody can deactivate themselves. In a write transaction."""
    if username == actor and not active:
        raise RuleError("self_deactivate", "不能停用自己的账号")
    cur = conn.execute("UPDATE accounts SET active = ? WHERE username = ?", (1 if active else 0, username))
    if cur.rowcount == 0:
        raise ValidationError("username", f"账号「{username}」不存在")
    if not active:
        accounts.end_sessions(conn, username)
    audit(conn, actor, "account.activated" if active else "account.deactivated", username, None, node.now())


def hub_offices(hub_id: str) -> dict[str, str]:
    """``{office: label}`` of the department windows at the hub (``<hub>-<dept>``)."""
    return {f"{hub_id}-{code}": name for code, name in catalog.DEPARTMENTS.items() if code != "xz"}
