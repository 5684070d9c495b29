"""``liandong``: the one command line, a group per concern."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

import click
from flask import Config

from provisioning import nodes
from provisioning.cli_errors import CliError, DeferredGroup, LiandongGroup
from provisioning.memory import limit_malloc_arenas, settle_collector, trim_free_memory, trim_when_idle
from provisioning.tiers import APP_FACTORIES, TIERS
from shared.core import storage
from shared.core.crypto import SignatureError
from shared.core.logs import configure_logging
from shared.core.version import __version__
from shared.services import accounts
from shared.web.factory import load_settings
from sync import bundle, node_sync, rotation
from sync.client import SyncUnavailable

# The hub's, the township's, the demo's and the simulator's code is imported inside the commands
# that use it ("# deferred" below), never at start: a village's `node serve` imports this module,
# and each of those modules is memory it would hold for nothing (docs/performance.md).

DATA = click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The node's data folder.")


@click.group(cls=LiandongGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="liandong")
def main() -> None:
    """Liandong 联动: county hub, township stations and village rooms with signed sync."""

    os.umask(0o077)  # data folders, databases, blobs and keys are the service account's alone


@main.group(cls=DeferredGroup)
def hub() -> None:
    """The county hub: initialise and serve."""


@hub.command("init")
@DATA
@click.option("--code", required=True, help="6-digit county 区划代码, e.g. 130926.")
@click.option("--name", required=True, help="Chinese name, e.g. 肃宁县政务服务中心.")
@click.option("--public-url", default=None, help="URL townships reach the hub at.")
def hub_init(data_dir: Path, code: str, name: str, public_url: str | None) -> None:
    """Create the hub's root and signing keys, database, registry and seed catalog."""
    nodes.init_hub(data_dir, code, name, public_url)
    click.echo(f"hub {code} initialised in {data_dir}")
    click.echo(f"the root key is {data_dir}/keys/root.pem: move it offline if you wish")


@main.group()
def node() -> None:
    """Any node: enrol, serve, inspect."""


@node.command("init")
@DATA
@click.option("--token", required=True, help="The single-use enrolment token from the hub admin.")
@click.option("--parent-url", required=True, help="URL of the parent (hub for a township, township for a village).")
@click.option("--name", required=True, help="Chinese name of this station or room.")
@click.option("--public-url", default=None, help="URL children reach this node at (townships).")
def node_init(data_dir: Path, token: str, parent_url: str, name: str, public_url: str | None) -> None:
    """Generate this node's key and enrol it at the hub (through the parent)."""
    info = nodes.enrol_node(data_dir, token, parent_url, name, public_url)
    click.echo(f"{info['tier']} {info['node_id']} enrolled under {info['parent']}, key {info['kid'][:16]}…")


def create_app_for(data_dir: Path):
    """The Flask app of the node in ``data_dir``."""

    tier = nodes.read_config(data_dir)["TIER"]
    os.environ["LIANDONG_DATA_DIR"] = str(Path(data_dir).resolve())
    return APP_FACTORIES[tier]()


@node.command("serve")
@DATA
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@click.option("--threads", default=4, show_default=True, help="waitress worker threads.")
def node_serve(data_dir: Path, host: str, port: int, threads: int) -> None:
    """Serve the node with waitress (runs on Windows too) and start its sync jobs."""
    import waitress  # optional: only `serve` needs the server

    nodes.read_config(data_dir)  # a clear error if the folder holds no node
    settings = load_settings(Config(str(Path(data_dir).resolve())))
    # Before the job and waitress threads exist (provisioning/memory.py).
    limit_malloc_arenas(int(settings["MALLOC_ARENAS"] or TIERS[settings["TIER"]].malloc_arenas))
    log_file = configure_logging(data_dir, settings)
    app = create_app_for(data_dir)  # migrates an older schema here, after a backup into <data>/backups
    click.echo(f"{app.config['TIER']} {app.config['NODE_ID']} on http://{host}:{port}/ (log: {log_file})")
    logging.getLogger("liandong").info("%s %s serving on http://%s:%s/", app.config["TIER"], app.config["NODE_ID"],
                                       host, port)
    young = settings["GC_YOUNG_THRESHOLD"]  # 0 is a value here: Python's own collector
    settle_collector(TIERS[settings["TIER"]].gc_young_threshold if young is None else int(young))
    served = app
    if app.config["MALLOC_TRIM_IDLE"]:
        trim_free_memory()  # what start-up freed (the database check read every page)
        served = trim_when_idle(app)  # no-op where there is no glibc (Windows, macOS)
    # waitress reads a whole body before the app sees it: cap it at the app's overall limit.
    # ident="": no ``Server`` header (it names the product to anyone who asks and costs ~18
    # bytes of every answer on a village's link; docs/sync-protocol.md §5.1.3).
    # recv_bytes: a file batch of 4 MiB arrives in 16 reads, not 512 through waitress's loop;
    # inbuf_overflow: at a township or hub such a body stays in memory (the app reads it whole
    # anyway) instead of going to a temporary file and back (docs/performance.md, thirteenth
    # round); a village keeps waitress's 512 KiB (sync/tier.py).
    waitress.serve(served, host=host, port=port, threads=threads, ident="",
                   max_request_body_size=int(app.config["MAX_CONTENT_LENGTH"]), recv_bytes=256 * 1024,
                   inbuf_overflow=TIERS[settings["TIER"]].request_body_in_memory_bytes)


hub.add_command(node_serve, "serve")


@hub.group("quarantine")
def hub_quarantine() -> None:
    """Quarantined envelopes: list, release after review, discard with a reason (audited)."""


@hub_quarantine.command("list")
@DATA
def quarantine_list(data_dir: Path) -> None:
    """Print the unresolved quarantined envelopes, one JSON object a line."""
    from city_hub import quarantine as quarantined  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (_node_rt, conn):
        for row in quarantined.open_rows(conn, limit=10_000):
            click.echo(json.dumps({k: row[k] for k in row.keys()}, ensure_ascii=False))


@hub_quarantine.command("release")
@DATA
@click.option("--id", "quarantine_id", required=True, type=int, help="The quarantine row (see list).")
def quarantine_release(data_dir: Path, quarantine_id: int) -> None:
    """Ingest a quarantined envelope again after review."""
    from city_hub import quarantine as quarantined  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (node_rt, conn), storage.write_transaction(conn):
        result = quarantined.release(conn, node_rt, quarantine_id, "cli")
    click.echo(json.dumps(result, ensure_ascii=False))


@hub_quarantine.command("discard")
@DATA
@click.option("--id", "quarantine_id", required=True, type=int, help="The quarantine row (see list).")
@click.option("--reason", required=True, help="Why it is discarded (kept in the audit log).")
def quarantine_discard(data_dir: Path, quarantine_id: int, reason: str) -> None:
    """Close a quarantined envelope without ingesting it."""
    from city_hub import quarantine as quarantined  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (node_rt, conn), storage.write_transaction(conn):
        result = quarantined.discard(conn, node_rt, quarantine_id, reason, "cli")
    click.echo(json.dumps(result, ensure_ascii=False))


@node.command("resume")
@DATA
def node_resume(data_dir: Path) -> None:
    """After `liandong restore` of an old backup: continue this node's envelopes after the hub's
    acknowledged head (the node stopped, and reinstated at the hub after the fork was reviewed)."""
    with nodes.opened(data_dir) as (node_rt, conn):
        try:
            result = node_sync.resume_from_hub(conn, node_rt)
        except SyncUnavailable as exc:
            raise CliError(f"无法从上级节点取得中心的确认（节点是否已在中心恢复？）：{exc}", "resume_failed") from exc
    click.echo(json.dumps(result))


@node.command("status")
@DATA
def node_status(data_dir: Path) -> None:
    """Print the node's queues and schema version as JSON (read-only: never migrates)."""
    config = nodes.read_config(data_dir)
    conn, version, current = nodes.open_db_read_only(data_dir)
    try:
        result = {"node_id": config["NODE_ID"], "tier": config["TIER"],
                  "schema": {"version": version, "current": current, "migrate_needed": version < current},
                  **TIERS[config["TIER"]].queue_counts(conn)}
        result["cases"] = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    finally:
        conn.close()
    click.echo(json.dumps(result, ensure_ascii=False))


@node.command("migrate")
@DATA
def node_migrate(data_dir: Path) -> None:
    """Upgrade the node's database to this release's schema, after a backup into <data>/backups."""
    old, new, snapshot = nodes.upgrade_db(data_dir)
    if snapshot is None:
        click.echo(f"数据库已是最新架构（版本 {new}），无需升级")
    else:
        click.echo(f"数据库已从架构版本 {old} 升级到 {new}；升级前的备份：{snapshot}")


@node.command("export-bundle")
@DATA
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle file to write (e.g. on a USB stick).")
@click.option("--split-mb", default=None, type=click.IntRange(min=1),
              help="Cut the bundle into volumes of at most this many MiB (one per stick): "
                   "NAME.001-of-003.ldbundle …; import any one of them with all beside it.")
def node_export_bundle(data_dir: Path, out_path: Path, split_mb: int | None) -> None:
    """Write this node's unsent envelopes and files into one signed bundle (no network needed)."""

    with nodes.opened(data_dir) as (node_rt, conn), click.progressbar(length=1, label="exporting") as bar:
        result = bundle.export_outbox(conn, node_rt, out_path, lambda *step: _progress(bar, *step),
                                      split_bytes=split_mb * 1024 * 1024 if split_mb else None)
    click.echo(json.dumps(result))


def _progress(bar, stage: str, done: int, total: int) -> None:
    """Bytes (or steps) of the current stage: verifying, storing, writing and fsyncing all count."""
    label = f"{bar.label.split(' (')[0]} ({stage})"
    if bar.label != label or bar.length != max(total, 1):
        bar.label, bar.length, bar.pos = label, max(total, 1), 0
    bar.update(done - bar.pos)


@node.command("import-bundle")
@DATA
@click.option("--in", "in_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bundle file to read (any volume of a split bundle, the others beside it).")
@click.option("--answer", "answer_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Township only: where to write the answer bundle for the village.")
def node_import_bundle(data_dir: Path, in_path: Path, answer_path: Path | None) -> None:
    """Township: take a village's bundle into custody and write the answer. Village: apply the answer."""

    with nodes.opened(data_dir) as (node_rt, conn), click.progressbar(length=1, label="importing") as bar:
        try:
            if node_rt.relay is not None:  # a township takes custody and answers
                from township_node.relay_service import TownshipSync  # deferred: township code

                if answer_path is None:
                    raise click.UsageError("--answer is required at a township")
                result = bundle.import_at_township(conn, node_rt, TownshipSync(node_rt), in_path, answer_path,
                                                   lambda *step: _progress(bar, *step))
            else:
                result = bundle.import_answer(conn, node_rt, in_path, lambda *step: _progress(bar, *step))
        except SignatureError as exc:
            raise CliError(f"U盘文件无法导入（签名或内容核验未通过）：{exc}", "bad_signature") from exc
    click.echo(json.dumps(result, ensure_ascii=False))


@node.command("rotate-key")
@DATA
def node_rotate_key(data_dir: Path) -> None:
    """Start a key rotation: a new key is announced through sync; the old one signs until it is registered."""

    with nodes.opened(data_dir) as (node_rt, conn):
        kid = rotation.start(conn, node_rt)
    click.echo(f"new key {kid[:16]}… queued; the node switches to it when the hub's registry lists it")


@main.group()
def provision() -> None:
    """Hub-side provisioning: enrolment tokens."""


@provision.command("token")
@DATA
@click.option("--node-code", required=True, help="9-digit township or 12-digit village 区划代码.")
@click.option("--name", required=True, help="Chinese name of the node.")
@click.option("--parent", default=None, help="Parent code (default: derived from the node code).")
@click.option("--ttl-hours", default=24, show_default=True, help="Hours before the token expires.")
def provision_token(data_dir: Path, node_code: str, name: str, parent: str | None, ttl_hours: int) -> None:
    """Create a single-use, expiring enrolment token (run on the hub)."""
    from city_hub.enrolment_service import create_token  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (node_rt, conn):
        with storage.write_transaction(conn):
            token = create_token(conn, node_code, name, parent, timedelta(hours=ttl_hours), node_rt.now(), "cli")
    click.echo(token)


@provision.command("revoke")
@DATA
@click.option("--node-code", required=True, help="The node to revoke (e.g. a lost village PC).")
@click.option("--after-seq", default=None, type=int,
              help="Refuse its envelopes numbered above this (default: what the hub holds now).")
def provision_revoke(data_dir: Path, node_code: str, after_seq: int | None) -> None:
    """Revoke a node; the signed registry carries it to every tier."""
    from city_hub.lifecycle import revoke  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (node_rt, conn):
        with storage.write_transaction(conn):
            result = revoke(conn, node_rt, node_code, after_seq, "cli")
    click.echo(json.dumps(result))


@provision.command("reinstate")
@DATA
@click.option("--node-code", required=True, help="The suspended or revoked node.")
def provision_reinstate(data_dir: Path, node_code: str) -> None:
    """Lift a suspension (after a reviewed fork) or a revocation."""
    from city_hub.lifecycle import reinstate  # deferred: hub code, not loaded by a village

    with nodes.opened(data_dir, "hub") as (node_rt, conn), storage.write_transaction(conn):
        reinstate(conn, node_rt, node_code, "cli")
    click.echo(f"{node_code} reinstated")


@main.group()
def account() -> None:
    """Accounts and roles of one node."""


@account.command("create")
@DATA
@click.option("--username", required=True, help="Login name (letters, digits, _ and -).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input (for scripts) instead of a prompt.")
@click.option("--role", required=True, help="agent, clerk, window, chief, head, supervisor or admin.")
@click.option("--name", "display_name", required=True, help="Display name, e.g. 张代办.")
@click.option("--office", default=None, help="Office the account acts for (e.g. 130926-rs, or a township code).")
def account_create(data_dir: Path, username: str, password_stdin: bool, role: str, display_name: str,
                   office: str | None) -> None:
    """Create or reset an account; prints its API token once.

    The password is asked twice with hidden input (never on the command line, where the shell
    history and the process list would keep it); at least 10 characters of two kinds.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("密码", hide_input=True, confirmation_prompt="再次输入密码")
    token = nodes.add_account(data_dir, username, password, role, display_name, office)
    click.echo(token)


@account.command("unlock")
@DATA
@click.option("--username", default=None, help="The account whose login lock to lift.")
@click.option("--address", default=None, help="The client address whose login lock to lift.")
def account_unlock(data_dir: Path, username: str | None, address: str | None) -> None:
    """Lift the lock that repeated failed logins put on an account or a client address."""

    if not username and not address:
        raise click.UsageError("give --username or --address")
    with nodes.opened(data_dir) as (node_rt, conn), storage.write_transaction(conn):
        lifted = accounts.unlock(conn, username, address, "cli", node_rt.now())
    click.echo(f"{lifted} lock(s) lifted")


@main.command()
@click.option("--data", "data_dir", default=".demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the demo network's nodes (reused on the next run).")
@click.option("--base-port", default=8600, show_default=True, help="Hub port; the others follow it.")
@click.option("--headless", is_flag=True, help="Accepted for scripts; the demo never opens a browser.")
@click.option("--sync-interval", default=2.0, show_default=True, help="Seconds between sync rounds.")
@click.option("--clock-start", default=None, help="Start every node's clock at this ISO time (demo only).")
@click.option("--clock-speed", default=1.0, show_default=True, help="Run the clocks this many times faster (demo only).")
def demo(data_dir: Path, base_port: int, headless: bool, sync_interval: float, clock_start: str | None,
         clock_speed: float) -> None:
    """Bring up a hub, a township and two villages on loopback; Ctrl-C stops them."""
    from provisioning.demo import run_demo  # deferred: starts every tier, and uses requests

    sys.exit(run_demo(data_dir, base_port, sync_interval, clock_start, clock_speed))


# Imported only when run (or listed by --help): the hub's jobs process; an operator's backup,
# restore and audit; publishing through the hub's code (calendar, catalog); the simulator, which
# runs every tier; the installers' builder (packaging, wheels).
hub.defer("jobs", "provisioning.ops_cli:hub_jobs")
for _name, _where in (("backup", "provisioning.ops_cli:backup"), ("restore", "provisioning.ops_cli:restore"),
                      ("calendar", "provisioning.calendar_cli:calendar"),
                      ("catalog", "provisioning.catalog_cli:catalog"), ("sim", "provisioning.sim.cli:sim"),
                      ("audit", "provisioning.audit_cli:audit"), ("kit", "provisioning.kit_cli:kit")):
    main.defer(_name, _where)

if __name__ == "__main__":
    main()
