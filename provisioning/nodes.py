"""Creating nodes on disk: a hub from nothing, a township or village through enrolment.

A node's data folder holds ``config.py`` (0600: it has the session secret), ``keys/`` (0600),
its SQLite file and its ``blobs/``. Nothing secret is ever written into the repository.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provisioning.keys import anchor_text, create_hub_keys
from provisioning.tiers import MIGRATIONS, TIERS
from shared.core import canonical, storage
from shared.core.clock import Clock
from shared.core.crypto import SigningKey, write_private_file
from shared.core.errors import LiandongError
from shared.core.settings import DEFAULTS
from shared.rules.catalog import load_seed
from shared.rules.things import load_seed as load_seed_things
from shared.services.accounts import audit, create_account
from sync import envelope, transport
from sync.node import NODE_KEY_FILE, Node
from sync.trust import TrustStore, accept_metadata, is_expired, open_metadata, verify_hub_key_cert

TIER_BY_LENGTH = {6: "hub", 9: "township", 12: "village"}


class ProvisioningError(LiandongError):
    """A node could not be created or opened (Chinese message for the operator, English code)."""

    def __init__(self, message: str, code: str = "provisioning") -> None:
        super().__init__(code, message)


def migrations_for(tier: str) -> list[str]:
    """The schema of a node of ``tier`` (each node package owns its own)."""
    return MIGRATIONS[tier]


def read_config(data_dir: Path) -> dict:
    """The settings in a node's ``config.py``."""
    values: dict = {}
    path = Path(data_dir) / "config.py"
    if not path.exists():
        raise ProvisioningError(f"{data_dir} 不是联动节点的数据文件夹（没有 config.py）", "not_a_node")
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), {}, values)  # our own file, 0600
    return {k: v for k, v in values.items() if k.isupper()}


def database_path(data_dir: Path) -> Path:
    """The node's SQLite file."""
    return Path(data_dir) / read_config(data_dir).get("DATABASE", "node.sqlite3")


def open_db(data_dir: Path, tier: str | None = None, cached_statements: int = 128) -> sqlite3.Connection:
    """A connection to a node's database, which must already have this release's schema.

    Nothing is migrated here: an older schema is refused with a hint to run
    ``liandong node migrate`` (``serve`` migrates too, after a backup); a newer one is refused.
    ``cached_statements``: see :func:`shared.core.storage.connect`.
    """
    tier = tier or read_config(data_dir)["TIER"]
    conn = storage.connect(database_path(data_dir), cached_statements=cached_statements,
                           temp_in_memory=TIERS[tier].sqlite_temp_in_memory)
    try:
        storage.check_schema(conn, migrations_for(tier))
    except storage.SchemaError:
        conn.close()
        raise
    return conn


def open_db_read_only(data_dir: Path) -> tuple[sqlite3.Connection, int, int]:
    """(read-only connection, its schema version, this release's version) of a node's database.

    For commands that must not change the database (``node status``, ``backup``): an older
    schema is accepted and reported, a newer one refused.
    """
    config = read_config(data_dir)
    conn = storage.connect_read_only(database_path(data_dir))
    migrations = migrations_for(config["TIER"])
    try:
        version = storage.check_schema(conn, migrations, allow_older=True)
    except storage.SchemaError:
        conn.close()
        raise
    return conn, version, len(migrations)


def upgrade_db(data_dir: Path) -> tuple[int, int, Path | None]:
    """Migrate a node's database to this release's schema after a backup into ``<data>/backups``."""
    conn = storage.connect(database_path(data_dir))
    try:
        return storage.upgrade(conn, migrations_for(read_config(data_dir)["TIER"]), Path(data_dir) / "backups")
    finally:
        conn.close()


def _create_db(data_dir: Path, tier: str) -> sqlite3.Connection:
    """The new database of a node being created (its schema from nothing)."""
    conn = storage.connect(database_path(data_dir))
    storage.migrate(conn, migrations_for(tier))
    return conn


def node_for(data_dir: Path) -> Node:
    """The runtime of the node in ``data_dir`` (for CLI commands)."""
    config = {**DEFAULTS, **read_config(data_dir)}
    return Node(config, data_dir, TIERS[config["TIER"]])


@contextmanager
def opened(data_dir: Path, tier: str | None = None) -> Iterator[tuple[Node, sqlite3.Connection]]:
    """The runtime and a migrated connection of the node in ``data_dir`` (CLI commands)."""
    conn = open_db(data_dir, tier)
    try:
        yield node_for(data_dir), conn
    finally:
        conn.close()


def write_config(data_dir: Path, values: dict) -> None:
    """Write ``config.py`` with mode 0600."""
    lines = ["# Written by `liandong`. Holds this node's secret: keep it 0600, never commit it."]
    lines += [f"{k} = {v!r}" for k, v in values.items()]
    write_private_file(Path(data_dir) / "config.py", ("\n".join(lines) + "\n").encode("utf-8"))


def init_hub(data_dir: Path, hub_id: str, name: str, public_url: str | None = None, clock: Clock | None = None) -> None:
    """Create a hub: keys, database, its own node entry, the first registry and catalog."""
    from city_hub import registry  # deferred: a village's `node serve` imports this module, not hub code
    if TIER_BY_LENGTH.get(len(hub_id)) != "hub" or not hub_id.isdigit():
        raise ProvisioningError("市(县)中心的代码应为 6 位县级区划代码", "bad_node_code")
    data_dir = Path(data_dir)
    if (data_dir / "config.py").exists():
        raise ProvisioningError(f"{data_dir} 中已有一个节点", "already_initialised")
    storage.private_dir(data_dir)  # 0700: keys, database, ID scans
    now = (clock or Clock()).now()
    anchor = create_hub_keys(data_dir, hub_id, now)
    write_config(data_dir, {"NODE_ID": hub_id, "TIER": "hub", "NODE_NAME": name, "HUB_ID": hub_id,
                            "SECRET_KEY": secrets.token_hex(32), "PUBLIC_URL": public_url})
    node = node_for(data_dir)

    conn = _create_db(data_dir, "hub")
    try:
        with storage.write_transaction(conn):
            conn.execute("INSERT INTO node_meta(key, value) VALUES ('root_anchor', ?)", (anchor_text(anchor),))
            conn.execute("INSERT INTO nodes(node_id, tier, parent, name, created_at) VALUES (?, 'hub', NULL, ?, ?)",
                         (hub_id, name, now.isoformat()))
            registry.publish_registry(conn, node)
            items = load_seed()
            registry.publish(conn, node, "catalog", {"items": items, "things": load_seed_things(
                {i["code"]: i for i in items})})
            audit(conn, "provisioning", "hub.init", hub_id, None, now)
    finally:
        conn.close()


def enrol_node(data_dir: Path, token: str, parent_url: str, name: str, public_url: str | None = None,
               enrol_url: str | None = None, clock: Clock | None = None) -> dict:
    """Create a township or village: its own key, enrolment at the hub, pinned trust.

    :param clock: the node's clock (a demo or sim may run simulated time; default: real time).
    """
    # deferred: a village's `node serve` imports this module, not hub code
    from city_hub.enrolment_service import anchor_matches_token, parse_token, proof_of_possession  # deferred

    node_id, _ = parse_token(token)
    tier = TIER_BY_LENGTH[len(node_id)]
    data_dir = Path(data_dir)
    if (data_dir / "config.py").exists():
        raise ProvisioningError(f"{data_dir} 中已有一个节点", "already_initialised")
    key = SigningKey.generate()
    link = transport.Transport()
    try:
        response = link.request("POST", (enrol_url or parent_url).rstrip("/") + "/enrol/v1",
                                data=canonical.dumps(proof_of_possession(key, node_id, token)),
                                headers={"Content-Type": "application/json"}, timeout=30)
    except OSError as exc:  # refused, timed out, not an http(s) URL, a garbled answer
        raise ProvisioningError(f"无法连接 {enrol_url or parent_url}：{exc}", "parent_unreachable") from exc
    finally:
        link.close()
    if response.status_code != 201:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise ProvisioningError(f"注册被拒绝（HTTP {response.status_code}）：{message}", "enrolment_refused")
    try:
        answer = response.json()
    except ValueError as exc:
        raise ProvisioningError(f"{enrol_url or parent_url} 的应答不是联动系统的应答", "enrolment_refused") from exc
    anchor = answer["anchor"]
    if not anchor_matches_token(anchor, token):
        raise ProvisioningError("市中心的根密钥与令牌不符，拒绝信任", "anchor_mismatch")
    hub_keys = {}
    for cert in anchor["hub_keys"]:
        body = verify_hub_key_cert(cert, anchor["public_key"], anchor["kid"], anchor["hub_id"])
        hub_keys[body["kid"]] = body["public_key"]
    trust = TrustStore(anchor["hub_id"], anchor["public_key"], hub_keys)
    now = (clock or Clock()).now()
    for document in answer["metadata"]:  # check everything before writing anything
        opened = open_metadata(document, envelope.peek(document)["role"], trust)
        if is_expired(opened.body["expires"], now):
            raise ProvisioningError(f"市中心发来的 {opened.body['role']} 元数据已过期：请检查市中心的时钟", "metadata_expired")
    storage.private_dir(data_dir)  # 0700: keys, database, ID scans
    key.save(data_dir / NODE_KEY_FILE)
    info = answer["node"]
    write_config(data_dir, {
        "NODE_ID": node_id, "TIER": tier, "NODE_NAME": name, "HUB_ID": anchor["hub_id"],
        "PARENT_ID": info["parent"], "PARENT_URL": parent_url.rstrip("/"),
        "SECRET_KEY": secrets.token_hex(32), "PUBLIC_URL": public_url,
    })
    conn = _create_db(data_dir, tier)
    try:
        with storage.write_transaction(conn):
            conn.execute("INSERT INTO trusted_metadata(role, version, expires, document, received_at)"
                         " VALUES ('root', 1, NULL, ?, ?)", (canonical.dumps(anchor), now.isoformat()))
            for document in answer["metadata"]:
                accept_metadata(conn, document, envelope.peek(document)["role"], trust, now)
            audit(conn, "provisioning", "node.enrolled", node_id, key.kid, now)
    finally:
        conn.close()
    return {"node_id": node_id, "tier": tier, "kid": key.kid, "parent": info["parent"]}


def add_account(data_dir: Path, username: str, password: str, role: str, display_name: str,
                office: str | None) -> str | None:
    """Create (or reset) an account on a node; returns its API token."""
    conn = open_db(data_dir)
    try:
        with storage.write_transaction(conn):
            token = create_account(conn, username, password, role, display_name, office, Clock().now())
            audit(conn, "provisioning", "account.create", username, role, Clock().now())
        return token
    finally:
        conn.close()
