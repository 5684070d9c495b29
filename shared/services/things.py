"""一件事一次办 on a node's database: the cases of one thing, and starting a later step.

A thing's cases travel as ordinary signed cases; each ``case.submit`` body carries only
``"thing": {"id", "code"}``. Which step waits for which comes from the receiving node's own
signed catalog (:mod:`shared.rules.things`), never from the payload, and a predecessor counts
only if it is a case of the same thing id from the same origin: a village cannot tie its
case to another village's, nor choose its own order.

Every node that decides cases (the hub, a township) calls :func:`on_status` when one of its
cases changes status — its own decisions through its emitter, the other tier's decisions as it
applies them — and :func:`arrival` when a case reaches it, so a later step is 接件 as soon as
the earlier ones have their result, wherever each is decided.
"""

from __future__ import annotations

import json
import re
import sqlite3

from shared.core.errors import NotFound, RuleError
from shared.rules import states
from shared.rules import things as rules
from shared.services import casework

_THING_ID = re.compile(r"[0-9a-f]{32}")

#: Actions after which a later step may start or end.
RESULT_ACTIONS = frozenset({"approve", "deny", "reject", "terminate", "withdraw", "deemed_done", "deliver"})


def link_of(body: dict) -> dict | None:
    """The ``thing`` link of a ``case.submit`` body, checked for shape (``None``: none).

    :raises RuleError: ``invalid_thing`` for a malformed link (a content fault of the sender).
    """
    link = body.get("thing")
    if link is None:
        return None
    if (not isinstance(link, dict) or not isinstance(link.get("id"), str) or not _THING_ID.fullmatch(link["id"])
            or not isinstance(link.get("code"), str) or len(link["code"]) > 40):
        raise RuleError("invalid_thing", "一件事关联信息格式有误")
    return link


def _steps_before(conn: sqlite3.Connection, node, body: dict, link: dict) -> tuple[dict | None, int]:
    """(the thing in this node's catalog, how many steps the case waits for)."""
    thing = node.things(conn).get(link["code"])
    return thing, len(rules.predecessors(thing, body["item_code"])) if thing else 0


def waits_for_steps(conn: sqlite3.Connection, node, body: dict) -> bool:
    """Whether the case of a ``case.submit`` ``body`` is a later step of a 一件事 (by this node's
    catalog): it is 接件 only once the earlier steps have their result."""
    link = link_of(body)
    return link is not None and _steps_before(conn, node, body, link)[1] > 0


def record_link(conn: sqlite3.Connection, node, body: dict) -> None:
    """Note the case's thing (if any), with how many steps this node's catalog has it wait for."""
    link = link_of(body)
    if link is None:
        return
    thing, after = _steps_before(conn, node, body, link)
    conn.execute(
        "INSERT INTO case_things(case_id, thing_id, thing_code, thing_name, after_steps) VALUES (?,?,?,?,?)"
        " ON CONFLICT(case_id) DO NOTHING",
        (body["case_id"], link["id"], link["code"], thing["name"] if thing else link["code"], after))


def _predecessor_results(conn: sqlite3.Connection, node, case_row) -> tuple[list[str], list[str]] | None:
    """(results, names) of the steps a case waits for, from this node's catalog (``None``: not a
    later step here). A predecessor not yet held here counts as open."""
    link = conn.execute("SELECT thing_id, thing_code FROM case_things WHERE case_id = ?",
                        (case_row["case_id"],)).fetchone()
    thing = node.things(conn).get(link["thing_code"]) if link else None
    wanted = rules.predecessors(thing, case_row["item_code"]) if thing else []
    if not wanted:
        return None
    rows = {r["item_code"]: r for r in conn.execute(
        "SELECT c.case_id, c.item_code, c.item_name, c.status FROM case_things t JOIN cases c USING (case_id)"
        " WHERE t.thing_id = ? AND c.origin = ?", (link["thing_id"], case_row["origin"]))}
    results, names = [], []
    for code in wanted:
        row = rows.get(code)
        if row is None:
            results.append(rules.OPEN)
            names.append(code)
            continue
        results.append(rules.result_of(row["status"], _approved(conn, row["case_id"])))
        names.append(row["item_name"])
    return results, names


def _approved(conn: sqlite3.Connection, case_id: str) -> bool:
    """Whether the case has its result: 准予, or deemed done (seed 004 §8)."""
    return conn.execute("SELECT 1 FROM case_events WHERE case_id = ? AND action IN ('approve', 'deemed_done')"
                        " LIMIT 1", (case_id,)).fetchone() is not None


def _decides(node, row) -> bool:
    scope = node.kind.deciding_scope(node)
    if scope is None or row["route_level"] != scope[0]:
        return False
    return scope[1] == "%" or row["route_office"] == scope[1]


def arrival(conn: sqlite3.Connection, node, case_id: str) -> str | None:
    """For a case just stored as 已提交 at the node that decides it: :data:`~shared.rules.things.START`,
    ``WAIT`` or ``END`` if it is a later step of a thing, ``None`` if it is not (接件 as usual)."""
    found = _predecessor_results(conn, node, casework.get_row(conn, case_id))
    return None if found is None else rules.step_state(found[0])


def settle(conn: sqlite3.Connection, node, case_id: str, emit) -> str | None:
    """Start (接件) or end a waiting later step as its predecessors now stand; returns what was done."""
    row = casework.get_row(conn, case_id)
    if row["status"] != "SUBMITTED" or not _decides(node, row):
        return None
    found = _predecessor_results(conn, node, row)
    if found is None:
        return None
    state = rules.step_state(found[0])
    if state == rules.START:
        item = node.catalog_item(conn, row["item_code"], row["catalog_version"])
        casework.receive(conn, case_id, item, node.node_id, node.now(), emit, system={"thing_started": True})
    elif state == rules.END:
        refused = "、".join(f"「{n}」" for n, r in zip(found[1], found[0], strict=True) if r == rules.REFUSED)
        casework.perform_action(conn, case_id, "terminate", f"一件事中的前序事项{refused}未获准予，本事项终止办理",
                                "system", node.node_id, node.now(), emit, system={"thing_ended": True})
    return state


def on_status(conn: sqlite3.Connection, node, case_id: str, action: str, emit) -> None:
    """A case of this node changed status: settle the later steps of its thing that wait here."""
    if action not in RESULT_ACTIONS:
        return
    link = conn.execute("SELECT thing_id FROM case_things WHERE case_id = ?", (case_id,)).fetchone()
    if link is None:
        return
    for row in conn.execute(
        "SELECT t.case_id FROM case_things t JOIN cases c USING (case_id) WHERE t.thing_id = ? AND t.after_steps > 0"
        " AND c.status = 'SUBMITTED' AND c.origin = (SELECT origin FROM cases WHERE case_id = ?)",
        (link["thing_id"], case_id)).fetchall():
        settle(conn, node, row["case_id"], emit)


def provided_codes(conn: sqlite3.Connection, node, row) -> set[str]:
    """Material codes of a later step that an earlier step's electronic licence now provides
    (that step approved): the office accepts (受理) without a copy of them (seed 004 §10)."""
    link = conn.execute("SELECT thing_id, thing_code FROM case_things WHERE case_id = ?", (row["case_id"],)).fetchone()
    thing = node.things(conn).get(link["thing_code"]) if link else None
    if thing is None:
        return set()
    sources = rules.from_earlier_step(thing, node.catalog(conn)[1], row["item_code"])
    provided = set()
    for code, source_item in sources.items():
        source = conn.execute(
            "SELECT c.case_id FROM case_things t JOIN cases c USING (case_id) WHERE t.thing_id = ? AND c.origin = ?"
            " AND c.item_code = ?", (link["thing_id"], row["origin"], source_item)).fetchone()
        if source is not None and _approved(conn, source["case_id"]):
            provided.add(code)
    return provided


def progress(conn: sqlite3.Connection, node, thing_id: str, origin: str | None = None) -> dict:
    """One thing's overall progress: its steps in catalog order, each with its case and state.

    :raises RuleError: ``not_found`` (404) if no case of this node carries the id.
    """
    sql = ("SELECT t.thing_code, t.thing_name, t.after_steps, c.* FROM case_things t JOIN cases c USING (case_id)"
           " WHERE t.thing_id = ?")
    args: list = [thing_id]
    if origin is not None:
        sql += " AND c.origin = ?"
        args.append(origin)
    rows = conn.execute(sql, args).fetchall()
    if not rows:
        raise NotFound("未找到该一件事")
    thing = node.things(conn).get(rows[0]["thing_code"])
    order = [s["item"] for s in thing["steps"]] if thing else []
    rows.sort(key=lambda r: (order.index(r["item_code"]) if r["item_code"] in order else len(order), r["submitted_at"]))
    names = {r["item_code"]: r["item_name"] for r in rows}
    steps = []
    for r in rows:
        approved = _approved(conn, r["case_id"])
        waits_for = [names.get(code, code) for code in (rules.predecessors(thing, r["item_code"]) if thing else [])]
        waiting = r["status"] == "SUBMITTED" and r["after_steps"] > 0
        steps.append({
            "case_id": r["case_id"], "receipt_no": r["receipt_no"], "item_code": r["item_code"],
            "item_name": r["item_name"], "status": r["status"], "status_label": states.status_label(r["status"]),
            "approved": approved, "waits_for": waits_for, "waiting": waiting,
            "decision_comment": json.loads(r["decision"]).get("comment", "") if r["decision"] else "",
            "submitted_at": r["submitted_at"],
        })
    code, label = rules.overall(steps)
    first = rows[0]
    return {"thing_id": thing_id, "code": first["thing_code"], "name": first["thing_name"],
            "kind": thing["kind"] if thing else "一件事", "overall": code, "overall_label": label,
            "applicant_name": first["applicant_name"], "id_number": first["id_number"],
            "origin": first["origin"], "submitted_at": first["submitted_at"], "steps": steps}


def of_case(conn: sqlite3.Connection, node, case_id: str) -> dict | None:
    """The thing a case is a step of, for its case page: the steps (item, receipt number,
    status; no personal data) and the overall progress; ``None`` if it is not part of one."""
    row = conn.execute("SELECT c.origin, t.thing_id FROM case_things t JOIN cases c USING (case_id)"
                       " WHERE t.case_id = ?", (case_id,)).fetchone()
    if row is None:
        return None
    found = progress(conn, node, row["thing_id"], row["origin"])
    keep = ("case_id", "receipt_no", "item_code", "item_name", "status", "status_label", "waiting", "waits_for")
    return {"thing_id": found["thing_id"], "code": found["code"], "name": found["name"], "kind": found["kind"],
            "overall": found["overall"], "overall_label": found["overall_label"],
            "steps": [{k: s[k] for k in keep} for s in found["steps"]]}
