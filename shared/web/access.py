"""Need-to-know at the web layer: every read of a case goes through :func:`require_read`.

A hook runs it for every GET of a route with ``<case_id>`` (the case page, its API, receipt,
notice, materials, documents, opinions, site visits, rating), so a new case route cannot
forget it; lists and search add :func:`list_filter` to their SQL and log what they showed
with :func:`audit_list`. The rule itself is :func:`shared.rules.access.case_access`.
"""

from __future__ import annotations

from flask import Flask, g, request

from shared.core.storage import write_transaction
from shared.rules.access import Access
from shared.services import accounts, case_access
from shared.web.context import current_node
from shared.web.db import get_db

#: The largest number of case ids written into one list-read audit row (the count is always there).
AUDITED_IDS = 100


def require_read(case_id: str) -> Access:
    """The current account's access to ``case_id``; raises NotFound when it may not read it.

    The first read of a case in a request is written to the audit log with why it was allowed.
    """
    reads = g.setdefault("case_reads", {})
    if case_id in reads:
        return reads[case_id]
    conn, node = get_db(), current_node()
    _, granted = case_access.check_read(conn, case_access.here_of(node), case_access.reader_of(g.account), case_id)
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "case.read", case_id, granted.reason, node.now())
    reads[case_id] = granted
    return granted


def list_filter(alias: str = "c") -> tuple[str, tuple]:
    """The SQL condition for the cases the current account may see in a list."""
    return case_access.readable_where(case_access.reader_of(g.account), case_access.here_of(current_node()), alias)


def audit_list(page: str, case_ids) -> None:
    """Log a list page that showed personal data of ``case_ids`` (one audit row per page)."""
    ids = list(case_ids)
    detail = f"{len(ids)} cases: {','.join(ids[:AUDITED_IDS])}" + (" …" if len(ids) > AUDITED_IDS else "")
    conn = get_db()
    with write_transaction(conn):
        accounts.audit(conn, g.account["username"], "case.list", page, detail, current_node().now())


def _guard_case_routes() -> None:
    view_args = request.view_args or {}
    if request.method in ("GET", "HEAD") and "case_id" in view_args and g.get("account") is not None:
        require_read(view_args["case_id"])


def init_app(app: Flask) -> None:
    """Guard every case route of ``app`` (registered after the login hook, so the account is known)."""
    app.before_request(_guard_case_routes)
