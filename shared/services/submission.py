"""The ``case.submit`` body in the two envelope versions (docs/sync-protocol.md §5.2.2).

Version 1 carries the case as the origin recorded it, including what every receiver can derive
from its own signed catalog and from the case itself: the item's name and time limit, the submit
event, the missing materials. Version 2 leaves those out; the receiver derives them
(:func:`expand`) and stores exactly what a version 1 body of the same case gives. The route was
never taken from the body: every receiver derives it from its own catalog
(``authority.route_of_submission``), in either version.
"""

from __future__ import annotations

from shared.core.errors import RuleError
from shared.services import casework

#: What a version 2 body leaves out (a receiver derives it); a body that carries any is refused.
DERIVED = ("item_name", "limit_wd", "route", "event", "missing_materials")
#: Submit-event details that a version 2 body carries as members of its own (event detail → body).
_CARRIED = {"entrustment": "entrustment", "cited_licences": "cited_licences", "actor_name": "agent_name"}


def for_version(body: dict, origin: str, version: int) -> tuple[dict, int]:
    """``(body, version)`` of the ``case.submit`` envelope for a case captured here: the compact
    body when the parent takes ``version`` 2, unless its submit event is not the derivable one
    (nothing may be lost: such a case goes as version 1, which every receiver takes)."""
    if version >= 2:
        try:
            return compact(body, origin), 2
        except ValueError:
            pass
    return body, 1


def compact(body: dict, origin: str) -> dict:
    """The version 2 body of a case captured at ``origin`` (``casework.capture``'s body).

    :raises ValueError: the submit event is not the one a receiver derives (nothing may be lost).
    """
    event = body["event"]
    detail = dict(event.get("detail") or {})
    expected = {"event_id": casework.submit_event_id(body["case_id"]), "at": body["submitted_at"], "node": origin,
                "actor": body.get("agent"), "action": "submit", "from_status": None, "to_status": "SUBMITTED",
                "comment": ""}
    if any(event.get(k) != v for k, v in expected.items()) or detail.pop("receipt_no", None) != body["receipt_no"] \
            or set(detail) - set(_CARRIED):
        raise ValueError("the submit event is not derivable from the case: sign it as version 1")
    out = {k: v for k, v in body.items() if k not in DERIVED}
    out.update({_CARRIED[k]: v for k, v in detail.items()})
    return out


def expand(body: dict, origin: str, item: dict | None) -> dict:
    """The version 1 body of a version 2 ``case.submit`` from ``origin``, with what the receiver
    derives: the name and time limit of ``item`` (the catalog item of the body's
    ``catalog_version`` where the receiver holds it) and the submit event. The route is left to
    the receiver, as for version 1.

    :raises RuleError: ``invalid_submission`` for a body that carries what it must leave out (it
        could disagree with what is derived), ``unknown_item`` when the catalog lacks the item.
    """
    carried = [k for k in DERIVED if k in body]
    if carried:
        raise RuleError("invalid_submission", f"第 2 版报送不应包含由目录推导的字段：{'、'.join(carried)}")
    if item is None:
        raise RuleError("unknown_item", f"事项 {body.get('item_code')} 不在目录中")
    detail = {"receipt_no": body["receipt_no"], **{k: body[v] for k, v in _CARRIED.items() if v in body}}
    event = {"event_id": casework.submit_event_id(body["case_id"]), "at": body["submitted_at"], "node": origin,
             "actor": body.get("agent"), "action": "submit", "from_status": None, "to_status": "SUBMITTED",
             "comment": "", "detail": dict(sorted(detail.items()))}  # as a parsed canonical payload orders it
    rest = {k: v for k, v in body.items() if k not in _CARRIED.values()}
    return {**rest, "item_name": item["name"], "limit_wd": item.get("promise_limit_wd", 0), "event": event}


def received_body(message: dict, origin: str, item_of) -> dict:
    """The ``case.submit`` body of a verified envelope ``message`` in the version 1 form.

    ``item_of(code, catalog_version)`` gives the receiver's catalog item (only called for v2).
    """
    body = message["body"]
    if message.get("v") != 2:
        return body
    return expand(body, origin, item_of(body.get("item_code"), body.get("catalog_version")))
