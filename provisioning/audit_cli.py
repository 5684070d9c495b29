"""``liandong audit``: check a node's audit log (append-only, hash-chained: shared/core/audit.py)."""

from __future__ import annotations

from pathlib import Path

import click

from provisioning import nodes
from provisioning.cli_errors import CliError
from shared.core.audit import verify_chain


@click.group("audit")
def audit() -> None:
    """The audit log of a node."""


@audit.command("verify")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The node's data folder (the node may keep running: read-only).")
def verify(data_dir: Path) -> None:
    """Check the audit log's hash chain; report the first broken row (exit status 1).

    On success it prints the number of rows and the head hash: note the head somewhere else
    (a ticket, a paper log) to detect later that rows were cut off the end.
    """
    conn, _, _ = nodes.open_db_read_only(data_dir)
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(audit_log)")}
        if "row_hash" not in columns:
            raise CliError("该节点的数据库版本早于审计日志哈希链：请先运行 liandong node migrate", "schema_too_old")
        report = verify_chain(conn)
    finally:
        conn.close()
    if not report.ok:
        raise CliError(f"审计日志第 {report.broken_id} 行起哈希链断裂：{report.problem}；"
                       f"此前 {report.rows - 1} 行完好", "audit_chain_broken")
    unchained = f", {report.unchained} rows from before the chain" if report.unchained else ""
    click.echo(f"audit log ok: {report.rows} rows{unchained}; head {report.head}")
