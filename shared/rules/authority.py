"""Who may send what: one authority rule per message kind, applied by every tier that applies it.

The hub and the township both apply messages that other nodes signed (a village's new case,
a township's decision, a village's 送达). Each of them calls the functions here, with facts
taken from its *own* records — the case row it holds and the item in its *own* signed
catalog — never from the payload, so the two tiers cannot drift apart and a hostile sender
cannot choose its own route or rights.

Pure functions: no Flask, no SQL. Node levels follow the 统计用区划代码 (6-digit county hub,
9-digit township, 12-digit village), so a node's level is read off its code.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.core.errors import RuleError
from shared.rules import states
from shared.rules.catalog import route as catalog_route

LEVEL_BY_LENGTH = {6: "hub", 9: "township", 12: "village"}
# Documents a node below the hub may sign: a village only its 收件回执 and 送达回证; a
# township those and the decisions on items delegated to its own office.
ORIGIN_DOCUMENTS = frozenset({"receipt", "deliver"})
# Details an approver may give with an action (others are ignored, never stored).
ACTION_DETAILS = ("missing_items", "owed_materials", "due_date", "promise_end_date", "reason", "approved_by",
                  "inspectors", "result", "visit_date", "opinion")


def level_of(node_id: str) -> str | None:
    """``hub``, ``township`` or ``village`` by the length of the node's 区划代码."""
    return LEVEL_BY_LENGTH.get(len(node_id or ""))


def route_of_submission(item: Mapping | None, item_code: str, origin: str, hub_id: str) -> dict:
    """The route of a ``case.submit``: always derived from the receiver's own catalog.

    :raises RuleError: ``unknown_item`` when the receiver's catalog does not hold the item.
    """
    if item is None:
        raise RuleError("unknown_item", f"事项 {item_code} 不在目录中")
    return catalog_route(item, origin, hub_id)


def check_submit_sender(sender: str, origin: str) -> None:
    """A ``case.submit`` is valid only from the node that took the application (its origin)."""
    if sender != origin:
        raise RuleError("not_entitled", f"节点 {sender} 不能以节点 {origin} 的名义报送办件")


def check_supplement_sender(case: Mapping, sender: str) -> None:
    """A ``case.supplement`` (补齐补正, owed 容缺 materials) is valid only from the case's origin:
    the node that took the application, where the applicant comes back with the corrections.

    :raises RuleError: ``not_entitled``.
    """
    if case["origin"] != sender:
        raise RuleError("not_entitled", f"只有收件的节点（{case['origin']}）可以为该办件补齐补正，{sender} 不能")


def event_sender_entitled(case: Mapping, action: str, sender: str) -> bool:
    """Whether ``sender`` may send a case event with ``action`` for ``case``.

    ``case`` needs ``route_level``, ``route_office`` and ``origin`` as the receiver holds them:
    the township that decides a delegated item; the node that took the application for its
    送达; the township above the origin (or the township itself) for 现场核查.
    """
    deciding_township = case["route_level"] == "township" and case["route_office"] == sender
    delivering_origin = action == "deliver" and case["origin"] == sender
    area_township = action == "site_visit" and level_of(sender) == "township" and case["origin"].startswith(sender)
    return deciding_township or delivering_origin or area_township


def received_at_custody(route_level: str | None, route_office: str | None, custodian: str,
                        later_step: bool) -> bool:
    """Whether a case is 接件 at its township the moment ``custodian`` holds it.

    A township receives every case it decides as soon as it holds it (from its village's push,
    or at its own window), except a later step of a 一件事, which waits for the earlier steps'
    result. That automatic 接件 is not signed and sent on its own, upwards or downwards: it rides
    with the case's next step (``earlier``), and the village and the hub record it from custody
    (the village from the township's custody receipt, the hub from the township's forward)
    under the same event id, until the township's own record replaces its time
    (docs/sync-protocol.md §7.2).
    """
    return route_level == "township" and route_office == custodian and not later_step


def rides_with_next_step(event: Mapping) -> bool:
    """Whether a deciding node's step is not signed and sent on its own but rides (``earlier``)
    with the case's next message, both up and down:

    * its automatic 接件 (``actor`` "system"), which every receiver records from custody or
      the ack (:func:`received_at_custody`); a 接件 that starts a waiting later step of a
      一件事 (``thing_started``) or that an officer records goes on its own;
    * the 受理 of a 秒批 approval, taken in the same moment as its 准予 (``instant``): one
      message carries 接件, 受理 and 准予 with the 受理通知书 and the decision's documents.
    """
    detail = event.get("detail") or {}
    if event["action"] == "receive":
        return event.get("actor") == "system" and not detail.get("thing_started")
    return event["action"] == "accept" and bool(detail.get("instant"))


def check_case_event(case: Mapping, event: Mapping, sender: str, already_extended: bool = False) -> str:
    """Refuse an event ``sender`` may not send or the state machine does not allow.

    :returns: the status the case moves to (its current one for a history-only step).
    :raises RuleError: ``not_entitled`` or the state machine's code.
    """
    action = event["action"]
    if not event_sender_entitled(case, action, sender):
        raise RuleError("not_entitled", f"节点 {sender} 无权办理该办件（{action}）")
    details = {k: v for k, v in (event.get("detail") or {}).items() if k in ACTION_DETAILS}
    if action == "extend":
        details["already_extended"] = already_extended
    result = states.apply_action(case["status"], action, event.get("comment", ""), **details)
    # A history-only step (现场核查, 延期) was recorded with the status its sender knew, which may
    # be older than ours: it must be allowed here, but it does not move the case.
    if states.history_only(action):
        return case["status"]
    if result != event["to_status"]:
        raise RuleError("invalid_transition", "事件的结果状态与状态机不符")
    return result


def check_document_signer(signer_id: str | None, hub_id: str, issuer: str | None, kind: str | None,
                          office: str | None) -> None:
    """Whether a document signed by ``signer_id`` (``None``: a hub key) may name ``issuer``.

    :raises ValueError: with the Chinese reason, when the signer is not entitled to it.
    """
    if signer_id is None:
        if issuer != hub_id:
            raise ValueError("文书签发机构与签名不符")
        return
    if signer_id != issuer:
        raise ValueError("文书签发机构与签名不符")
    if kind in ORIGIN_DOCUMENTS:
        return
    level = level_of(signer_id)
    if level == "township" and office == issuer:
        return  # a decision on an item delegated to this township
    if level == "township":
        raise ValueError("乡镇便民服务站只能签发本乡镇审批事项的文书")
    raise ValueError("村便民服务室无权签发此类文书")
