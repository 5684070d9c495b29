"""The case (办件) as every node stores it: capture, projection, actions and its JSON view.

No Flask here. Capture happens at the node that takes the application (village or township
window); the deciding node (hub department or township) applies actions through the state
machine of :mod:`shared.rules.states`; every change is an event with a globally unique id, so a node
can receive the same event twice (relay retries, USB bundles) and record it once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from shared.core import canonical
from shared.core.clock import CN_TZ, iso
from shared.core.errors import NotFound
from shared.core.ids import time_ordered_id
from shared.rules import authority, states
from shared.rules.catalog import evaluate_instant_rule
from shared.services import documents
from sync import envelope, outbox


def _next_receipt_no(conn: sqlite3.Connection, node_id: str, now) -> str:
    """收件回执 number: ``<node>-<yyyymmdd>-<nnnn>``, unique without asking anyone (offline)."""
    day = now.astimezone(CN_TZ).strftime("%Y%m%d")
    key = f"receipt_counter:{day}"
    row = conn.execute(
        "INSERT INTO node_meta(key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(value AS INTEGER) + 1 RETURNING value",
        (key,),
    ).fetchone()
    return f"{node_id}-{day}-{int(row['value']):04d}"


RESTORE_RECEIPT_JUMP = 5000


def skip_receipt_numbers(conn: sqlite3.Connection, now) -> int:
    """After a restore from a backup: today's 收件回执 numbers continue past any this node may have
    issued after the backup was taken (the hub holds those cases). Returns the next number."""
    day = now.astimezone(CN_TZ).strftime("%Y%m%d")
    row = conn.execute(
        "INSERT INTO node_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(value AS INTEGER) + ? RETURNING value",
        (f"receipt_counter:{day}", str(RESTORE_RECEIPT_JUMP), RESTORE_RECEIPT_JUMP),
    ).fetchone()
    return int(row["value"]) + 1


def submit_event_id(case_id: str) -> str:
    """The id of a case's submit event: one per case, derived from the case, so a receiver of a
    compact ``case.submit`` (envelope ``v=2``, which omits the event) rebuilds the same event."""
    return hashlib.sha256(b"submit:" + case_id.encode("ascii")).hexdigest()[:32]


def receive_event_id(case_id: str) -> str:
    """The id of a case's 接件 event: one per case, so the deciding node's record and the
    provisional one an origin makes from the hub's acknowledgement are the same event."""
    return hashlib.sha256(b"receive:" + case_id.encode("ascii")).hexdigest()[:32]


def new_id(now) -> str:
    """A fresh globally unique case or event id that sorts by ``now`` (shared/core/ids.py: the
    register's indexes grow at their right edge instead of at a random page per case)."""
    return time_ordered_id(int(now.timestamp() * 1000))


def new_event(node: str, actor: str, action: str, from_status: str | None, to_status: str, now,
              comment: str = "", detail: dict | None = None) -> dict:
    """An event record with a fresh globally unique id (time-ordered, as a case's)."""
    return {
        "event_id": new_id(now),
        "at": iso(now),
        "node": node,
        "actor": actor,
        "action": action,
        "from_status": from_status,
        "to_status": to_status,
        "comment": comment,
        "detail": detail or {},
    }


def capture(conn: sqlite3.Connection, *, node_id: str, item: dict, catalog_version: int, route: dict,
            applicant: dict, form: dict, materials: list[dict], agent: str, now,
            entrustment: dict | None = None, cited_licences: list | None = None,
            agent_name: str = "") -> tuple[dict, dict]:
    """Record a validated application taken at this node. Call inside a write transaction.

    :returns: ``(case_body, event)``: the body of the ``case.submit`` envelope and its event.
    """
    case_id = new_id(now)
    receipt_no = _next_receipt_no(conn, node_id, now)
    detail = {"receipt_no": receipt_no}
    if entrustment:
        detail["entrustment"] = entrustment  # 为民代办: the 委托 travels with the case
    if cited_licences:
        detail["cited_licences"] = cited_licences  # 免提交: licences cited instead of copies
    if agent_name:
        detail["actor_name"] = agent_name  # other nodes know the agent only by username
    event = {**new_event(node_id, agent, "submit", None, "SUBMITTED", now, detail=detail),
             "event_id": submit_event_id(case_id)}
    body = {
        "case_id": case_id,
        "receipt_no": receipt_no,
        "item_code": item["code"],
        "item_name": item["name"],
        "catalog_version": catalog_version,
        "limit_wd": item.get("promise_limit_wd", 0),
        "route": route,
        "applicant": applicant,
        "form": form,
        "materials": materials,
        "agent": agent,
        "submitted_at": iso(now),
        "event": event,
    }
    insert_case(conn, body, origin=node_id, status="SUBMITTED", sync_state="pending")
    return body, event


_CASE_INSERT = (
    "INSERT INTO cases(case_id, receipt_no, item_code, item_name, catalog_version, origin, agent,"
    " applicant_name, id_number, phone, form, status, route_level, route_office, limit_wd, submitted_at,"
    " updated_at, sync_state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(case_id) DO NOTHING"
)
_EVENT_INSERT = (
    "INSERT INTO case_events(event_id, case_id, at, node, actor, action, from_status, to_status, comment, detail)"
    " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(case_id, event_id) DO NOTHING"
)
_MATERIAL_INSERT = (
    "INSERT INTO case_materials(case_id, code, filename, sha256, size) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_BINDABLE = frozenset({str, int, bool, float, type(None)})
_to_json = canonical.dumps_own  # the ingest path encodes two or three values per case


def _bindable(row: tuple) -> tuple:
    """``row`` if SQLite can bind every value; TypeError (a refusable content fault) otherwise."""
    if not _BINDABLE.issuperset(map(type, row)):  # the common case checked in C, no loop here
        for value in row:
            if type(value) not in _BINDABLE:
                raise TypeError(f"{type(value).__name__} where a string or integer is expected")
    return row


def _detail_json(detail) -> str:
    return _to_json(detail) if detail else "{}"


def event_row(case_id: str, event: dict) -> tuple:
    """The ``case_events`` row of ``event`` (pure: KeyError/TypeError before anything is written)."""
    return _bindable((
        event["event_id"], case_id, event["at"], event["node"], event["actor"], event["action"],
        event.get("from_status"), event["to_status"], event.get("comment", ""), _detail_json(event.get("detail")),
    ))


@dataclass
class CaseRows:
    """The rows of one incoming case, built before any of them is written."""

    case: tuple
    materials: list[tuple]
    events: list[tuple]


def case_rows(body: dict, origin: str, status: str, sync_state: str, extra_events: tuple = (),
              updated_at: str | None = None) -> CaseRows:
    """Rows for a case from a ``case.submit`` body, with its event and ``extra_events`` (pure).

    ``updated_at`` is the time of the last of ``extra_events`` (default: the submission's)."""
    applicant = body["applicant"]
    case_id = body["case_id"]
    case = _bindable((
        case_id, body["receipt_no"], body["item_code"], body["item_name"], body["catalog_version"],
        origin, body.get("agent"), applicant["name"], applicant["id_number"], applicant.get("phone", ""),
        _to_json(body["form"]), status, body["route"]["level"], body["route"]["office"],
        body.get("limit_wd", 0), body["submitted_at"], updated_at or body["submitted_at"], sync_state,
    ))
    materials = [_bindable((case_id, m["code"], m["filename"], m["sha256"], m["size"])) for m in body["materials"] or ()]
    events = [event_row(case_id, e) for e in ([body["event"]] if body.get("event") else []) + list(extra_events)]
    return CaseRows(case, materials, events)


def write_case_rows(conn: sqlite3.Connection, rows: CaseRows) -> bool:
    """Write rows built by :func:`case_rows` (idempotent: False, nothing written, if the case was here)."""
    if conn.execute(_CASE_INSERT, rows.case).rowcount == 0:
        return False
    if rows.materials:
        conn.executemany(_MATERIAL_INSERT, rows.materials)
    if len(rows.events) == 1:
        conn.execute(_EVENT_INSERT, rows.events[0])
    elif rows.events:
        conn.executemany(_EVENT_INSERT, rows.events)
    return True


def insert_case(conn: sqlite3.Connection, body: dict, origin: str, status: str, sync_state: str = "local") -> bool:
    """Insert a case from a ``case.submit`` body (idempotent: False if it was already here)."""
    return write_case_rows(conn, case_rows(body, origin, status, sync_state))


def write_many_case_rows(conn: sqlite3.Connection, batch: list[CaseRows]) -> None:
    """:func:`write_case_rows` for many cases, in one ``executemany`` per table.

    The same result as writing them one at a time in order: a case already stored here, or
    repeated in ``batch``, has nothing of it written but its first copy. The cases go first;
    only if some were skipped (rare: a replayed case id) are the new ones told apart by rowid.
    """
    last = conn.execute("SELECT MAX(rowid) FROM cases").fetchone()[0] or 0
    if conn.executemany(_CASE_INSERT, [r.case for r in batch]).rowcount != len(batch):
        new = {r[0] for r in conn.execute("SELECT case_id FROM cases WHERE rowid > ?", (last,))}
        kept = []
        for r in batch:
            if r.case[0] in new:
                new.discard(r.case[0])  # a second copy in the batch: skipped as the first was not
                kept.append(r)
        batch = kept
    materials = [m for r in batch for m in r.materials]
    if materials:
        conn.executemany(_MATERIAL_INSERT, materials)
    conn.executemany(_EVENT_INSERT, [e for r in batch for e in r.events])


def received_rows(body: dict, origin: str, node_id: str, now, at: str | None = None,
                  sync_state: str = "hub") -> CaseRows:
    """Rows of an incoming case stored already 接件 (RECEIVED) by ``node_id`` with its submit and
    receive events: the hub's city case, or the deciding township's own at custody.

    ``at`` is ``iso(now)`` when the caller has it already (one formatting per batch).
    """
    states.apply_action("SUBMITTED", "receive")
    at = at or iso(now)
    receive = {"event_id": receive_event_id(body["case_id"]), "at": at, "node": node_id, "actor": "system",
               "action": "receive", "from_status": "SUBMITTED", "to_status": "RECEIVED", "comment": "", "detail": {}}
    # updated_at: the 接件's time, as recording the event on the stored case would set it.
    return case_rows(body, origin, "RECEIVED", sync_state, (receive,), updated_at=at)


def insert_received(conn: sqlite3.Connection, body: dict, origin: str, node_id: str, now) -> bool:
    """Store an incoming case already 接件 (RECEIVED) with its submit and receive events."""
    return write_case_rows(conn, received_rows(body, origin, node_id, now))


def record_event(conn: sqlite3.Connection, case_id: str, event: dict, decision: dict | None = None,
                 move: bool = True) -> bool:
    """Record an event once and move the case to its status; False for a repeat.

    ``move=False`` only records it (the case was just inserted in that status).
    """
    cur = conn.execute(_EVENT_INSERT, event_row(case_id, event))
    if cur.rowcount == 0 or not move or states.history_only(event["action"]):
        return cur.rowcount > 0
    sets, params = ["status = ?", "updated_at = ?"], [event["to_status"], event["at"]]
    if event["action"] in ("accept", "accept_deficient"):
        sets.append("accepted_at = COALESCE(accepted_at, ?)")
        params.append(event["at"])
    if decision is not None:
        sets.append("decision = ?")
        params.append(_to_json(decision))
    conn.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id = ?", (*params, case_id))
    return True


def mark_in_custody(conn: sqlite3.Connection, envelope_ids: list[str], custodian: str) -> None:
    """The township ``custodian`` holds these envelopes of ours: their cases show 已到乡镇, and a
    case it decides is 接件 there.

    The township receives (接件) every case it decides the moment it holds it, except a later
    step of a 一件事 that waits for the earlier ones (:func:`authority.received_at_custody`);
    its own event is not sent on its own but rides with its next step (``earlier``). Recorded
    now, under the same event id, at the time the signed custody receipt arrived, by the state
    machine: the township's own record replaces its time and node when it comes
    (:func:`apply_update`).
    """
    conn.executemany(
        "UPDATE cases SET sync_state = 'custody' WHERE case_id = (SELECT case_id FROM outbox WHERE envelope_id = ?)"
        " AND sync_state NOT IN ('custody', 'acked')", [(eid,) for eid in envelope_ids])
    for start in range(0, len(envelope_ids), 500):
        part = envelope_ids[start:start + 500]
        for row in conn.execute(
            "SELECT c.case_id, c.route_level, c.route_office, o.custody_at, EXISTS (SELECT 1 FROM case_things t"
            " WHERE t.case_id = c.case_id AND t.after_steps > 0) AS later_step FROM outbox o JOIN cases c"
            f" ON c.case_id = o.case_id WHERE o.envelope_id IN ({','.join('?' * len(part))}) AND o.kind = 'case.submit'"
            " AND c.route_level = 'township' AND c.status = 'SUBMITTED'", part).fetchall():
            if not authority.received_at_custody(row["route_level"], row["route_office"], custodian,
                                                 bool(row["later_step"])):
                continue
            to_status = states.apply_action("SUBMITTED", "receive")
            record_event(conn, row["case_id"], {
                "event_id": receive_event_id(row["case_id"]), "at": row["custody_at"], "node": row["route_office"],
                "actor": "system", "action": "receive", "from_status": "SUBMITTED", "to_status": to_status,
                "comment": "", "detail": {}})


def mark_own_at_hub(conn: sqlite3.Connection, node, acked_seq: int, after_seq: int = 0) -> None:
    """The hub acknowledged our envelopes up to ``acked_seq``: their cases are at the hub.

    Only the envelopes the acknowledgement newly covers (``after_seq < seq <= acked_seq``) are
    looked at: acknowledgements are cumulative, so the earlier ones already marked the rest.
    """
    if acked_seq <= after_seq:
        return
    _mark_at_hub(conn, node, conn.execute(
        "SELECT case_id, status, route_level FROM cases WHERE sync_state IN ('pending', 'custody') AND case_id IN"
        " (SELECT case_id FROM outbox WHERE seq > ? AND seq <= ? AND case_id IS NOT NULL)",
        (after_seq, acked_seq)).fetchall())


def mark_origin_at_hub(conn: sqlite3.Connection, node, origin: str) -> None:
    """The hub acknowledged ``origin``'s envelopes (a village below this township): its cases
    whose envelopes left custody are at the hub. Reads only that origin's cases not yet at the
    hub (index ``cases_not_at_hub``), not every case it ever sent."""
    _mark_at_hub(conn, node, conn.execute(
        "SELECT case_id, status, route_level FROM cases WHERE origin = ? AND sync_state IN ('pending', 'custody')"
        " AND case_id NOT IN (SELECT case_id FROM custody WHERE origin = ? AND case_id IS NOT NULL)",
        (origin, origin)).fetchall())


def _mark_at_hub(conn: sqlite3.Connection, node, rows: list) -> None:
    """These cases are at the hub; a city case there is already 已接件.

    Batched (one statement per kind of change, not two per case): at a township draining a
    backlog this ran for every case of every acknowledgement."""
    if not rows:
        return
    arrived = {r["case_id"] for r in rows if r["status"] == "SUBMITTED" and r["route_level"] == "city"}
    if arrived:
        # A later step of a 一件事 is 接件 only when the earlier steps have their result.
        arrived -= {x[0] for x in conn.execute(
            "SELECT case_id FROM case_things JOIN cases USING (case_id) WHERE after_steps > 0 AND status = 'SUBMITTED'")}
    conn.executemany("UPDATE cases SET sync_state = 'acked' WHERE case_id = ?",
                     [(r["case_id"],) for r in rows if r["case_id"] not in arrived])
    if arrived:
        _note_received(conn, node, sorted(arrived))


def _note_received(conn: sqlite3.Connection, node, case_ids: list[str]) -> None:
    """The hub receives (接件) every city case it holds the moment it holds it; its own event
    follows with the next step. Record it now, under the same event id, by the state machine,
    and mark the case at the hub in the same row update."""
    at = iso(node.now())
    to_status = states.apply_action("SUBMITTED", "receive")
    conn.executemany(_EVENT_INSERT, [event_row(case_id, {
        "event_id": receive_event_id(case_id), "at": at, "node": node.hub_id, "actor": "system", "action": "receive",
        "from_status": "SUBMITTED", "to_status": to_status, "detail": {}}) for case_id in case_ids])
    # Read as SUBMITTED in this same write transaction, so each row moves.
    conn.executemany("UPDATE cases SET status = ?, updated_at = ?, sync_state = 'acked' WHERE case_id = ?",
                     [(to_status, at, case_id) for case_id in case_ids])


def get_row(conn: sqlite3.Connection, case_id: str) -> sqlite3.Row:
    """The case row, or :class:`NotFound`."""
    row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound("未找到该办件")
    return row


DECISION_ACTIONS = {"approve": "准予", "deny": "不予许可", "reject": "不予受理"}


ACTION_DETAILS = authority.ACTION_DETAILS


def perform_action(conn: sqlite3.Connection, case_id: str, action: str, comment: str, actor: str, node_id: str,
                   now, emit: Callable[[sqlite3.Connection, sqlite3.Row, dict, dict | None], None],
                   system: dict | None = None, **details) -> dict:
    """Apply an action at the deciding node; ``emit`` sends the event on (downlink/uplink).

    Call inside a write transaction. The state machine raises :class:`RuleError` for an action
    the case's status does not allow or a refusal without reasons. ``system`` carries facts only
    the node's own rules may record (e.g. ``effective_at`` of a deemed acceptance).
    """
    row = get_row(conn, case_id)
    details = {k: v for k, v in details.items() if k in ACTION_DETAILS and v not in (None, "", [])}
    if action == "extend":
        details["already_extended"] = conn.execute(
            "SELECT 1 FROM case_events WHERE case_id = ? AND action = 'extend'", (case_id,)).fetchone() is not None
    new_status = states.apply_action(row["status"], action, comment, **details)
    details.pop("already_extended", None)
    event = new_event(node_id, actor, action, row["status"], new_status, now, comment, {**details, **(system or {})})
    if action == "receive":
        event["event_id"] = receive_event_id(case_id)
    decision = None
    if action in DECISION_ACTIONS:
        decision = {"result": action, "result_label": DECISION_ACTIONS[action], "comment": comment,
                    "decided_at": iso(now), "decided_by": actor, "office": row["route_office"]}
        if system and "decided_under" in system:
            decision["decided_under"] = system["decided_under"]  # who decided under which grant, the seal
    record_event(conn, case_id, event, decision)
    # The row as record_event left it, without reading it back (ingest hot path).
    updated = {**dict(row), "status": new_status, "updated_at": event["at"]}
    if action in ("accept", "accept_deficient"):
        updated["accepted_at"] = row["accepted_at"] or event["at"]
    if decision is not None:
        updated["decision"] = _to_json(decision)
    emit(conn, updated, event, decision)
    return event


def recorded_actions(conn: sqlite3.Connection, case_id: str) -> list[str]:
    """The actions recorded on a case, oldest first (the facts of the decision-rights rule)."""
    return [r["action"] for r in conn.execute(
        "SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid", (case_id,))]


def check_event(conn: sqlite3.Connection, row, event: dict, sender: str) -> None:
    """Refuse an event that ``sender`` may not send, or that the state machine does not allow
    (the one rule of :func:`shared.rules.authority.check_case_event`, with this node's facts)."""
    already_extended = event["action"] == "extend" and conn.execute(
        "SELECT 1 FROM case_events WHERE case_id = ? AND action = 'extend'", (row["case_id"],)).fetchone() is not None
    authority.check_case_event(row, event, sender, already_extended)


def instant_approval(item: dict | None, form: dict) -> bool:
    """Whether a case of ``item`` with this ``form`` is approved at its 接件 (秒批: the item has a
    rule and the form meets it)."""
    return bool(item and item.get("instant_rule") and evaluate_instant_rule(item["instant_rule"], form))


def receive(conn: sqlite3.Connection, case_id: str, item: dict | None, node_id: str, now, emit,
            system: dict | None = None) -> str:
    """接件 at the deciding node; 秒批 items whose rule the form meets are approved at once.
    ``system`` marks a 接件 the node's own rules made (a later step of a 一件事 starting)."""
    event = perform_action(conn, case_id, "receive", "", "system", node_id, now, emit, system=system)
    if instant_approval(item, json.loads(get_row(conn, case_id)["form"])):
        marker = {"instant": True}
        perform_action(conn, case_id, "accept", "秒批：系统按事项规则自动核验通过", "system", node_id, now, emit, system=marker)
        event = perform_action(conn, case_id, "approve", "秒批：符合规定条件，系统自动准予", "system", node_id, now, emit,
                               system=marker)
    return event["to_status"]


def deliver(conn: sqlite3.Connection, node, case_id: str, actor: str, comment: str = "",
            manner: str = "直接送达", actor_name: str = "") -> dict:
    """送达 at the node that took the application: 送达回证, event up to the deciding node.

    The 送达回证 names the document served (the latest decision or notice held here), the
    manner of 送达 and the remark typed in. Call inside a write transaction. The state machine
    allows it only for decided cases.
    """
    row = get_row(conn, case_id)
    new_status = states.apply_action(row["status"], "deliver", comment)
    now = node.now()
    detail = {"manner": manner, "served": documents.served_document(conn, case_id)}
    if actor_name:
        detail["actor_name"] = actor_name  # other nodes know the agent only by username
    event = new_event(node.node_id, actor, "deliver", row["status"], new_status, now, comment, detail)
    record_event(conn, case_id, event)
    row = get_row(conn, case_id)
    signed = documents.issue(conn, node, row, "deliver", event, node.config.get("NODE_NAME") or node.node_id)
    outbox.append(conn, node.key, node.node_id, "case.event", update_message(row, event, None, [signed]),
                  str(node.hlc.now()), now, case_id=case_id)
    return event


def update_message(row: sqlite3.Row, event: dict, decision: dict | None, documents: list[dict] = (),
                   earlier: list[dict] = ()) -> dict:
    """The body of a ``case.update`` message for a case row after ``event``.

    ``earlier`` carries events not sent on their own (the hub's automatic 接件), so the
    receiver's history is complete without a signed message per step.
    """
    body = {"case_id": row["case_id"], "status": row["status"], "event": event, "decision": decision,
            "documents": list(documents)}
    if earlier:
        body["earlier"] = list(earlier)
    return body


def riding_with(conn: sqlite3.Connection, case_id: str, event: dict) -> tuple[list[dict], list[dict]]:
    """(earlier events, their signed documents) that ride with the message of ``event``, a step
    sent on its own (:func:`authority.rides_with_next_step`): the case's 接件, and with a 秒批
    准予 also its 受理 and the 受理通知书 issued for it."""
    if event["action"] == "receive":
        return [], []
    if not (event["action"] == "approve" and event["detail"].get("instant")):
        return events_of(conn, case_id, ("receive",)), []
    carried = [envelope.from_bytes(r["document"]) for r in conn.execute(
        "SELECT document FROM documents WHERE case_id = ? AND kind = 'accept' ORDER BY issued_at", (case_id,))]
    return events_of(conn, case_id, ("receive", "accept")), carried


def events_of(conn: sqlite3.Connection, case_id: str, actions: tuple[str, ...]) -> list[dict]:
    """Recorded events of a case with one of ``actions``, oldest first, as message dicts."""
    marks = ",".join("?" * len(actions))
    return [
        {**dict(r), "detail": json.loads(r["detail"] or "{}")}
        for r in conn.execute(
            f"SELECT event_id, at, node, actor, action, from_status, to_status, comment, detail FROM case_events"
            f" WHERE case_id = ? AND action IN ({marks}) ORDER BY at, rowid", (case_id, *actions))
    ]


def apply_update(conn: sqlite3.Connection, body: dict, trust) -> bool:
    """Apply a ``case.update`` from the deciding node (idempotent).

    Every document it carries is verified first against ``trust`` (signature, entitled signer,
    this case, its deciding office); one that fails refuses the whole update.
    :raises RuleError: ``forged_document``.
    """
    row = conn.execute("SELECT route_office FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
    if row is None:
        return False
    _store_documents(conn, body, trust, row["route_office"])
    for earlier in body.get("earlier", []):
        if not record_event(conn, body["case_id"], earlier):
            # Our provisional record of the hub's 接件 (made from its acknowledgement): the
            # deciding node's own time and name stand.
            conn.execute("UPDATE case_events SET at = ?, node = ? WHERE case_id = ? AND event_id = ?",
                         (earlier["at"], earlier["node"], body["case_id"], earlier["event_id"]))
    return record_event(conn, body["case_id"], body["event"], body.get("decision"))


def _store_documents(conn: sqlite3.Connection, body: dict, trust, route_office: str) -> None:
    """Verify every document of an update (:raises RuleError: ``forged_document``), then store
    each as verified (not parsed again)."""
    signed_documents = body.get("documents") or []
    checked = [documents.checked_for_case(signed, trust, body["case_id"], route_office) for signed in signed_documents]
    for signed, known in zip(signed_documents, checked, strict=True):
        documents.store(conn, signed, known=known)


def _restate_receipt(conn: sqlite3.Connection, row, event: dict, sender: str) -> None:
    """The deciding township's own record of a 接件 this node recorded from custody
    (:func:`shared.rules.authority.received_at_custody`): its time and node stand. Only the
    deciding office's, only for that case's one 接件 event."""
    if (event.get("action") == "receive" and event["event_id"] == receive_event_id(row["case_id"])
            and authority.event_sender_entitled(row, "receive", sender) and isinstance(event.get("at"), str)):
        conn.execute("UPDATE case_events SET at = ?, node = ? WHERE case_id = ? AND event_id = ?",
                     (event["at"], sender, row["case_id"], event["event_id"]))


def apply_checked_update(conn: sqlite3.Connection, row, body: dict, sender: str, trust) -> None:
    """Apply a ``case.update`` that ``sender`` signed (a township's decision, a village's 送达)
    at a node that holds the case ``row``: each event only if the sender was entitled to it and
    the transition holds (:func:`shared.rules.authority.check_case_event`). The hub and the
    township both apply what arrives through here.

    :raises RuleError: ``not_entitled``, ``invalid_transition``, ``forged_document``…
    """
    stored = False
    for event in [*body.get("earlier", []), body["event"]]:
        if conn.execute("SELECT 1 FROM case_events WHERE case_id = ? AND event_id = ?",
                        (row["case_id"], event["event_id"])).fetchone():
            _restate_receipt(conn, row, event, sender)
            continue  # a repeat: already applied
        check_event(conn, row, event, sender)
        if not stored:  # the documents of all its steps (a 秒批's 受理通知书 and 准予决定书), verified once
            _store_documents(conn, body, trust, row["route_office"])
            stored = True
        record_event(conn, body["case_id"], event, body.get("decision") if event is body["event"] else None)
        row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
