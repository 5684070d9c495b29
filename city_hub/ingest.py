"""What the hub does with each kind of envelope once it is verified and in order."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from city_hub import lifecycle, registry, regulation
from shared.core import canonical
from shared.core.audit import audit
from shared.core.clock import iso, parse_iso
from shared.core.errors import RuleError
from shared.rules import authority
from shared.services import (
    appointments,
    casework,
    documents,
    feedback,
    joint,
    submission,
    supplements,
    things,
)
from sync import apply, downlink
from sync.envelope import Opened


def make_appliers(node) -> dict:
    """Appliers by envelope kind, bound to the hub ``node``."""

    parsed: dict[str, tuple] = {}
    routes: dict[tuple, dict] = {}

    def received(opened: Opened) -> tuple:
        """(time, iso, latest submission time accepted) of the hub's acceptance of ``opened``:
        its 接件 time (parsed once per push)."""
        at = opened.received_at
        if at is None:
            now = node.now()
            return now, iso(now), now + timedelta(seconds=int(node.config["MAX_CLOCK_SKEW_SECONDS"]))
        hit = parsed.get(at)
        if hit is None:
            if len(parsed) > 256:
                parsed.clear()
            now = parse_iso(at)
            hit = parsed[at] = (now, at, now + timedelta(seconds=int(node.config["MAX_CLOCK_SKEW_SECONDS"])))
        return hit

    def route_of(conn: sqlite3.Connection, code: str, origin: str) -> tuple[dict | None, dict]:
        """(item, route) of a submission, from the catalog the hub goes by now. The route of an
        (item, origin) is the same for every case of one catalog version: derived once."""
        version, items = node.catalog(conn)
        key = (version, code, origin)
        hit = routes.get(key)
        if hit is None:
            item = items.get(code)
            if len(routes) > 4096:
                routes.clear()
            hit = routes[key] = (item, authority.route_of_submission(item, code, origin, node.hub_id))
        return hit

    def submit_plan(conn: sqlite3.Connection, opened: Opened) -> tuple[str, dict, dict, bool, bool]:
        """Checks of a ``case.submit`` before anything is written: (origin, body, item, city, instant)."""
        origin = opened.body["origin"]
        # A v2 body leaves out what the hub derives: from the catalog version the case was filed under.
        body = submission.received_body(opened.body, origin, lambda code, v: node.catalog_item(conn, code, v))
        item, route = route_of(conn, body["item_code"], origin)
        body = {**body, "route": dict(route)}
        now, now_iso, limit = received(opened)
        if parse_iso(body["submitted_at"]) > limit:
            # A PC clock in the future must not move deadlines: the hub's time stands in.
            body["submitted_at"] = now_iso
            body["event"] = {**body["event"], "at": now_iso, "detail": {**body["event"].get("detail", {}),
                                                                        "clock_ahead": opened.body["hlc"]}}
        city = route["level"] == "city"
        return origin, body, item, city, city and item.get("instant_rule") is not None

    def township_receiver(body: dict, opened: Opened, later_step: bool) -> str | None:
        """The township that 接件 this case as it took custody of it (its forward, or its own
        window: ``opened.via``), whose own record rides with the case's next step; ``None``."""
        route = body["route"]
        if authority.received_at_custody(route["level"], route["office"], opened.via or "", later_step):
            return route["office"]
        return None

    def receipt_time(body: dict, opened: Opened, receiver: str) -> tuple:
        """(time, iso) of a 接件 recorded at ingest: the hub's acceptance of a city case; for a
        township's, when it took the case into custody as its push said (``opened.held_at``),
        kept between the submission and the hub's acceptance, else the acceptance too."""
        now, now_iso, _ = received(opened)
        if receiver != node.node_id and opened.held_at:
            try:
                held, submitted = parse_iso(opened.held_at), parse_iso(body["submitted_at"])
            except ValueError:
                return now, now_iso
            if submitted <= held <= now:
                return held, iso(held)
        return now, now_iso

    def prepare_case_submit(conn: sqlite3.Connection, opened: Opened):
        """The common cases in two phases: every check runs and every row is built here, before
        anything is written, so a refused envelope needs no SAVEPOINT, and the rows are written
        with the chunk's other cases (:class:`sync.apply.Deferred`, one ``executemany`` per
        table). A city case is stored 接件 at once, a township case as submitted; a 秒批 item
        whose rule the form does not meet is 接件 like any other (the rule is pure: its
        outcome is known before anything is written). ``None`` (a 秒批 approval, a step of a
        一件事, a township decision waiting for its case): :func:`apply_case_submit` inside a
        savepoint."""
        origin, body, item, city, instant = submit_plan(conn, opened)
        if orphans_waiting(conn) or "thing" in body:
            return None
        if instant and casework.instant_approval(item, body["form"]):
            return None
        receiver = node.node_id if city else township_receiver(body, opened, later_step=False)
        if receiver is not None:
            rows = casework.received_rows(body, origin, receiver, *receipt_time(body, opened, receiver))
        else:
            rows = casework.case_rows(body, origin, "SUBMITTED", "hub")
        return apply.Deferred(casework.write_many_case_rows, rows)

    def apply_case_submit(conn: sqlite3.Connection, opened: Opened) -> None:
        origin, body, item, city, instant = submit_plan(conn, opened)
        linked = things.link_of(body) is not None  # a step of a 一件事 (RuleError: malformed link)
        receiver = node.node_id if city and not instant and not linked else None
        if not city:  # a township case: 接件 there as the township took it, unless a later step waits
            receiver = township_receiver(body, opened, linked and things.waits_for_steps(conn, node, body))
        if receiver is not None:
            # 接件 at once: the case is stored already received, with both events.
            if not casework.insert_received(conn, body, origin, receiver, receipt_time(body, opened, receiver)[0]):
                return
        elif not casework.insert_case(conn, body, origin=origin, status="SUBMITTED", sync_state="hub"):
            return
        if linked:
            things.record_link(conn, node, body)
        if orphans_waiting(conn):
            for orphan in conn.execute(
                "DELETE FROM orphan_events WHERE case_id = ? RETURNING body", (body["case_id"],)
            ).fetchall():
                waiting = canonical.loads(orphan["body"])
                row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
                try:
                    casework.apply_checked_update(conn, row, waiting, waiting.pop("sender"), node.trust(conn))
                except RuleError as exc:
                    audit(conn, "system", "event.refused", body["case_id"], exc.message, node.now())
                else:
                    things.on_status(conn, node, body["case_id"], waiting["event"]["action"], node.emit)
        # 秒批, or a step of a 一件事: a later step waits for the earlier ones' result (or ends).
        if city and (instant or linked) and things.settle(conn, node, body["case_id"], node.emit) is None:
            casework.receive(conn, body["case_id"], item, node.node_id, received(opened)[0], node.emit)

    apply_case_submit.prepare = prepare_case_submit

    def apply_case_event(conn: sqlite3.Connection, opened: Opened) -> None:
        body = opened.body["body"]
        row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (body["case_id"],)).fetchone()
        if row is not None:
            casework.apply_checked_update(conn, row, body, opened.body["origin"], node.trust(conn))
            things.on_status(conn, node, body["case_id"], body["event"]["action"], node.emit)  # 一件事
        else:
            # The township decided before the village's envelope reached the hub: keep it.
            conn.execute(
                "INSERT INTO orphan_events(event_id, case_id, body) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                (body["event"]["event_id"], body["case_id"], canonical.dumps({**body, "sender": opened.body["origin"]})),
            )
            memo = registry.BATCH_MEMO.get()
            if memo is not None:
                memo["orphans"] = True
        regulation.on_case_status(conn, node, body["case_id"], body.get("status"))  # 审管互动

    def apply_case_supplement(conn: sqlite3.Connection, opened: Opened) -> None:
        """补齐补正 / owed 容缺 materials from the case's origin: recorded; the rule runs on city cases."""
        supplements.apply_received(conn, node, opened.body["body"], opened.body["origin"], node.emit)

    def apply_rotate_key(conn: sqlite3.Connection, opened: Opened) -> None:
        lifecycle.apply_rotation(conn, node, opened.body["origin"], opened.body["body"])

    return {"case.submit": apply_case_submit, "case.event": apply_case_event, "node.rotate_key": apply_rotate_key,
            supplements.KIND: apply_case_supplement,
            **feedback.appliers(node), **appointments.appliers(node)}


def orphans_waiting(conn: sqlite3.Connection) -> bool:
    """Whether any township decision is waiting for its case (rare; once per batch)."""
    memo = registry.BATCH_MEMO.get()
    if memo is not None and "orphans" in memo:
        return memo["orphans"]
    waiting = conn.execute("SELECT EXISTS (SELECT 1 FROM orphan_events)").fetchone()[0] == 1
    if memo is not None:
        memo["orphans"] = waiting
    return waiting


def notify_origin(conn: sqlite3.Connection, node, row: sqlite3.Row, event: dict, decision: dict | None) -> None:
    """Send a case's new status down to the node that took the application.

    The automatic 接件 is not sent on its own (the origin already sees 已到市中心 from the
    hub's acknowledgement), nor a 秒批's 受理: they ride along with the next step
    (``authority.rides_with_next_step``), which saves a signature per case on the ingest path
    and two per 秒批 case.
    """
    joint.on_event(conn, node, row, event)  # 联办 opinion requests on 受理
    regulation.on_case_status(conn, node, row["case_id"], event["to_status"])  # 审管互动
    if row["origin"] != node.node_id:
        issued = documents.for_event(conn, node, row, event)
        if not authority.rides_with_next_step(event):
            earlier, carried = casework.riding_with(conn, row["case_id"], event)
            downlink.issue(conn, node.key, node.node_id, row["origin"], "case.update",
                           casework.update_message(row, event, decision, [*carried, *issued], earlier), node.now())
    things.on_status(conn, node, row["case_id"], event["action"], node.emit)  # 一件事: the next step


def apply_queued(conn: sqlite3.Connection, node, appliers: dict, limit: int = 200) -> int:
    """Apply up to ``limit`` accepted envelopes from the apply queue now; returns how many."""
    memo = registry.BATCH_MEMO.set({})  # one transaction: the catalog is looked up once
    try:
        return apply.apply_pending(conn, appliers, node.now(), limit)
    finally:
        registry.BATCH_MEMO.reset(memo)


def apply_all_queued(conn: sqlite3.Connection, node, appliers: dict) -> int:
    """Apply everything queued (the scheduled rule, the CLI and tests); returns how many."""
    total = 0
    while done := apply_queued(conn, node, appliers):
        total += done
    return total
