"""Operations: the hub's scheduled-rules process, backup and restore of any node."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import click

from provisioning import nodes
from shared.core import storage
from shared.web.jobs import run_rules


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
              help="The backup file to write (.tar.gz). It holds keys: keep it as safe as the node.")
def backup(data_dir: Path, out_path: Path) -> None:
    """Back up a node while it runs: SQLite's online backup plus keys, config and files."""
    config = nodes.read_config(data_dir)
    conn = nodes.open_db(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / config.get("DATABASE", "node.sqlite3")
        try:
            storage.backup(conn, snapshot)  # consistent while the node writes
        finally:
            conn.close()
        with tarfile.open(out_path, "w:gz") as tar:
            tar.add(snapshot, arcname=snapshot.name)
            for part in BACKUP_PARTS:
                if (Path(data_dir) / part).exists():
                    tar.add(Path(data_dir) / part, arcname=part)
    out_path.chmod(0o600)
    click.echo(f"{config['TIER']} {config['NODE_ID']} backed up to {out_path}")


@click.command("restore")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The (stopped) node's data folder to restore into; it must be empty.")
@click.option("--from", "in_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A backup written by `liandong backup`.")
def restore(data_dir: Path, in_path: Path) -> None:
    """Restore a node from a backup into an empty folder.

    A village or township restored from an older backup numbers its next envelopes again from
    where the backup stood; the hub then sees a fork and suspends the node until an admin
    reviews it (docs/operations.md: restore, then `provision reinstate` after the review).
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise click.ClickException(f"{data_dir} is not empty: restore into an empty folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(in_path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                raise click.ClickException(f"unsafe path in backup: {member.name}")
        tar.extractall(data_dir, filter="data")
    for key_file in (data_dir / "keys").glob("*"):
        key_file.chmod(0o600)
    (data_dir / "config.py").chmod(0o600)
    conn = nodes.open_db(data_dir)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if check != "ok":
        shutil.rmtree(data_dir)
        raise click.ClickException(f"the restored database failed its integrity check: {check}")
    config = nodes.read_config(data_dir)
    click.echo(f"{config['TIER']} {config['NODE_ID']} restored into {data_dir}")
