"""Need-to-know: who may read a case (its applicant, form, materials, documents and history).

One rule for every read path of every tier — the case page and API, lists and search, the
materials download, documents, history, exports and the township's 村级报件 — so that no page
can drift from the others. The caller gathers the facts from its *own* records
(:mod:`shared.services.case_access`); this module only decides.

A case may be read by:

* the office that handles it, at the node that decides it (a hub department window for its
  city items; the township's own staff for the items delegated to the township);
* at the node that took the application (its origin), that node's own agents and clerks;
* at a township, its own staff for the cases of the villages it relays (a township
  *department* account is not the township's staff: it reads only what it is asked about);
* the departments asked for a 联办 opinion on it;
* the supervising department once the case was pushed to it (审管互动);
* a 项目代办员 for the cases it filed for its own projects at this node (a case merely
  *linked* to a project shows on the project page without personal data: linking is open to
  any case number, so it must not open the case itself);
* supervisors and admins (oversight; every read is audited anyway).

The full 身份证号 is shown only to those who work with the applicant's identity: the handling
office and the origin's own staff. Everyone else sees it masked.

Pure functions: no Flask, no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Roles that oversee every case (electronic supervision, administration): read, masked, audited.
OVERSIGHT_ROLES = frozenset({"supervisor", "admin"})
#: Roles of a handling office (the accounts that may act on its cases).
HANDLING_ROLES = frozenset({"window", "chief", "head", "clerk"})
#: Roles of a department asked for an opinion or supervising after the 审管 push.
DEPARTMENT_ROLES = frozenset({"window", "chief", "head", "clerk", "supervisor"})
#: Roles of the staff of a node that takes applications (village agents, township clerks).
ORIGIN_ROLES = frozenset({"agent", "clerk"})
PROJECT_ROLE = "project_agent"


@dataclass(frozen=True)
class Reader:
    """The account that asks to read."""

    username: str
    role: str
    office: str | None


@dataclass(frozen=True)
class CaseParties:
    """Who has a part in a case, as the reading node holds it."""

    route_level: str  # "city" or "township"
    route_office: str
    origin: str
    joint_offices: frozenset[str] = frozenset()  # departments asked for a 联办 opinion
    supervising_office: str | None = None  # set once the case was pushed (审管互动)
    project_agent: str | None = None  # the 项目代办员 of the project the case belongs to


@dataclass(frozen=True)
class Here:
    """The reading node and its tier's capabilities."""

    node_id: str
    decides_level: str | None  # the route level decided here ("city", "township") or None
    relays_villages: bool = False  # a township: relays the cases of the villages below it


@dataclass(frozen=True)
class Access:
    """The answer: may the reader see the case, and the full 身份证号; ``reason`` goes to the audit log."""

    read: bool
    unmasked: bool = False
    reason: str = "none"


NO_ACCESS = Access(False)


def own_staff(reader: Reader, here: Here) -> bool:
    """Whether the reader is staff of this node itself: office the node's code, or no office at
    all (a village's agents need none). A township *department* account has its own office."""
    return reader.office is None or reader.office == here.node_id


def relayed_by(here: Here, origin: str) -> bool:
    """Whether ``origin`` is a village below this township (its code extends the township's)."""
    return here.relays_villages and len(origin) > len(here.node_id) and origin.startswith(here.node_id)


def case_access(reader: Reader, case: CaseParties, here: Here) -> Access:
    """May ``reader`` read ``case`` at ``here``, and see the applicant's full 身份证号?"""
    office = reader.office
    if reader.role in HANDLING_ROLES and office == case.route_office and here.decides_level == case.route_level:
        return Access(True, unmasked=True, reason="handling")
    if reader.role in ORIGIN_ROLES and own_staff(reader, here) and case.origin == here.node_id:
        return Access(True, unmasked=True, reason="origin")
    if reader.role in OVERSIGHT_ROLES:
        return Access(True, reason="oversight")
    if reader.role == "clerk" and own_staff(reader, here) and relayed_by(here, case.origin):
        return Access(True, reason="relay")
    if reader.role in DEPARTMENT_ROLES and office is not None and office in case.joint_offices:
        return Access(True, reason="joint")
    if reader.role in DEPARTMENT_ROLES and office is not None and office == case.supervising_office:
        return Access(True, reason="supervising")
    if (reader.role == PROJECT_ROLE and case.project_agent is not None and reader.username == case.project_agent
            and case.origin == here.node_id):
        return Access(True, reason="project")
    return NO_ACCESS
