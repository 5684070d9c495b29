"""Need-to-know reads at a node: the facts :func:`shared.rules.access.case_access` decides on,
taken from this node's own tables, and the same rule as a SQL filter for lists and search.

:func:`readable_where` must say exactly what :func:`shared.rules.access.case_access` says
(tests/test_need_to_know.py checks the two against each other for every demo account).
"""

from __future__ import annotations

import sqlite3

from shared.core.errors import NotFound
from shared.rules import access
from shared.rules.access import Access, CaseParties, Here, Reader

#: What an unreadable case answers: the same as a case that does not exist (nothing leaks).
NOT_READABLE = "未找到该办件，或您无权查看该办件"


def here_of(node) -> Here:
    """The reading node (a :class:`sync.node.Node`) as the rule sees it."""
    scope = node.kind.deciding_scope(node) if node.kind.decides else None
    return Here(node.node_id, scope[0] if scope else None, node.kind.relays_villages)


def reader_of(account) -> Reader:
    """An account row as the rule sees it."""
    return Reader(account["username"], account["role"], account["office"])


def parties(conn: sqlite3.Connection, row) -> CaseParties:
    """Who has a part in the case ``row`` at this node (联办 departments, 审管 supervisor, project)."""
    case_id = row["case_id"]
    joint = frozenset(r[0] for r in conn.execute("SELECT office FROM joint_opinions WHERE case_id = ?", (case_id,)))
    pushed = conn.execute("SELECT office FROM regulator_pushes WHERE case_id = ?", (case_id,)).fetchone()
    project = conn.execute("SELECT p.agent FROM project_cases pc JOIN projects p ON p.project_id = pc.project_id"
                           " WHERE pc.case_id = ?", (case_id,)).fetchone()
    return CaseParties(row["route_level"], row["route_office"], row["origin"], joint,
                       pushed[0] if pushed else None, project[0] if project else None)


def check_read(conn: sqlite3.Connection, here: Here, reader: Reader, case_id: str) -> tuple[sqlite3.Row, Access]:
    """The case row and the reader's access to it.

    :raises NotFound: when the case is not here *or* the reader may not read it (one answer
        for both, so a refused reader learns nothing of the case).
    """
    row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise NotFound(NOT_READABLE)
    granted = access.case_access(reader, parties(conn, row), here)
    if not granted.read:
        raise NotFound(NOT_READABLE)
    return row, granted


def readable_where(reader: Reader, here: Here, alias: str = "c") -> tuple[str, tuple]:
    """A SQL condition on ``cases AS alias`` true exactly for the cases ``reader`` may read."""
    if reader.role in access.OVERSIGHT_ROLES:
        return "1", ()
    office, role = reader.office, reader.role
    clauses: list[str] = []
    params: list = []
    if role in access.HANDLING_ROLES and office and here.decides_level:
        clauses.append(f"({alias}.route_office = ? AND {alias}.route_level = ?)")
        params += [office, here.decides_level]
    if role in access.ORIGIN_ROLES and access.own_staff(reader, here):
        clauses.append(f"{alias}.origin = ?")
        params.append(here.node_id)
    if role == "clerk" and access.own_staff(reader, here) and here.relays_villages:
        # Village codes extend the township's: a range the (origin, submitted_at) index serves.
        clauses.append(f"({alias}.origin > ? AND {alias}.origin < ? AND length({alias}.origin) > ?)")
        params += [here.node_id, here.node_id + ":", len(here.node_id)]
    if role in access.DEPARTMENT_ROLES and office:
        clauses.append(f"{alias}.case_id IN (SELECT case_id FROM joint_opinions WHERE office = ?)")
        clauses.append(f"{alias}.case_id IN (SELECT case_id FROM regulator_pushes WHERE office = ?)")
        params += [office, office]
    if role == access.PROJECT_ROLE:
        clauses.append(f"({alias}.origin = ? AND {alias}.case_id IN (SELECT pc.case_id FROM project_cases pc"
                       " JOIN projects p ON p.project_id = pc.project_id WHERE p.agent = ?))")
        params += [here.node_id, reader.username]
    if not clauses:
        return "0", ()
    return "(" + " OR ".join(clauses) + ")", tuple(params)
