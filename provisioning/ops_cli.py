"""Operations: the hub's scheduled-rules process, backup and restore of any node."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import click

from provisioning import archive, nodes
from provisioning.cli_errors import CliError
from provisioning.tiers import TIERS
from shared.core import storage
from shared.core.logs import configure_logging
from shared.services import casework
from shared.web.jobs import run_rules
from sync import outbox


@click.command("jobs")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The hub's data folder.")
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron or a test).")
def hub_jobs(data_dir: Path, once: bool) -> None:
    """Run the hub's scheduled rules in one process (when gunicorn serves the web workers).

    The rules are the hub tier's ``scheduled_rules`` (city_hub/tier.py), the same list the web
    process's scheduler runs: the apply queue first, then 电子监察, metadata, 联办, 审管, statistics.
    """
    node = nodes.node_for(data_dir)
    configure_logging(data_dir, node.config)
    rules = node.kind.scheduled_rules(node)
    interval = float(node.config["SUPERVISION_INTERVAL_SECONDS"])
    while True:
        conn = nodes.open_db(data_dir, "hub")
        try:
            done = run_rules(conn, rules)
        finally:
            conn.close()
        click.echo(json.dumps(done, ensure_ascii=False, default=str))
        if once:
            return
        time.sleep(interval)


BACKUP_PARTS = ("config.py", "keys", "blobs", "calendar")


@click.command("backup")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The node's data folder (the node may keep running).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write (.zip). It holds keys: keep it as safe as the node.")
def backup(data_dir: Path, out_path: Path) -> None:
    """Back up a node while it runs: SQLite's online backup plus keys, config and files.

    Read-only towards the node: an older schema is backed up as it is (never migrated first),
    a database from a newer release is refused. Progress goes to stderr, a line per 10 %.
    """
    config = nodes.read_config(data_dir)
    conn, version, _ = nodes.open_db_read_only(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / config.get("DATABASE", "node.sqlite3")
        try:
            storage.backup(conn, snapshot)  # consistent while the node writes
        finally:
            conn.close()
        members = [(snapshot, snapshot.name)] + [
            (path, path.relative_to(data_dir).as_posix()) for part in BACKUP_PARTS
            for path in _files_under(Path(data_dir) / part)]
        progress = archive.Progress(sum(path.stat().st_size for path, _ in members),
                                    lambda line: click.echo(line, err=True))
        archive.write_zip(out_path, members, progress)
    click.echo(f"{config['TIER']} {config['NODE_ID']} backed up to {out_path} (schema {version})")


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


@click.command("restore")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The (stopped) node's data folder to restore into; it must be empty.")
@click.option("--from", "in_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A backup written by `liandong backup` (.zip, or an older .tar.gz).")
def restore(data_dir: Path, in_path: Path) -> None:
    """Restore a node from a backup into an empty folder.

    A village or township restored from an older backup numbers its next envelopes again from
    where the backup stood; the hub then sees a fork and suspends the node until an admin
    reviews it (docs/operations.md: restore, then `provision reinstate` after the review).
    The database is restored as it was: an older schema is upgraded by the next ``serve`` (or
    ``node migrate``); one from a newer release is refused.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise CliError(f"{data_dir} 不是空文件夹：请恢复到一个空文件夹", "folder_not_empty")
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        archive.extract(in_path, data_dir)
    except archive.UnsafeArchive as exc:
        shutil.rmtree(data_dir)
        raise CliError(f"备份中有不安全的路径：{exc}", "unsafe_backup") from exc
    for key_file in (data_dir / "keys").glob("*"):
        key_file.chmod(0o600)
    (data_dir / "config.py").chmod(0o600)
    try:
        conn, _, _ = nodes.open_db_read_only(data_dir)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except storage.SchemaError:
        shutil.rmtree(data_dir)
        raise
    if check != "ok":
        shutil.rmtree(data_dir)
        raise CliError(f"恢复的数据库未通过完整性检查：{check}", "integrity_check")
    config = nodes.read_config(data_dir)
    click.echo(f"{config['TIER']} {config['NODE_ID']} restored into {data_dir}")
    if not TIERS[config["TIER"]].ingests:  # a node with an outbox (the hub has none)
        with nodes.opened(data_dir) as (node_rt, conn), storage.write_transaction(conn):
            head = outbox.mark_restored(conn)
            receipt = casework.skip_receipt_numbers(conn, node_rt.now())
        click.echo(f"its outbox stood at envelope {head}; today's receipt numbers continue from {receipt}."
                   " Run `liandong node resume` once the hub admin has reviewed the fork (docs/operations.md)")
