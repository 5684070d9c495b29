"""Files and start-up (issue 10 point 7): owner-only data, a required SECRET_KEY, and a real ENOSPC.

The data folder holds full 身份证号, password hashes and ID-card scans: the folder and the blob
folders are 0700, the database and blob files 0600, whatever the umask the node was started
with. A node of any tier refuses to start without a real session secret. A write that hits a
full disk answers 507 ``disk_full`` (JSON for the API, a Chinese page for a form) and leaves no
partial file and no case behind.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from faults import city_item, material_files
from network import case_payload, form_for, valid_id_number

from shared.core import storage
from shared.web.db import get_db
from sync.blobs import BlobStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


# ------------------------------------------------------------------ permissions


def test_every_node_keeps_its_data_owner_only(net):
    village = net.village()
    agent = village.account("perm_agent", "agent")
    item = city_item(village, agent)
    assert village.api("POST", "/api/v1/cases", agent, json=case_payload(item, material_files(item, "perm"))).status_code == 201
    net.sync_all()
    for handle in net.all_nodes():
        data = handle.data_dir
        assert mode(data) == 0o700, f"{data}: {oct(mode(data))}"
        for name in ("node.sqlite3", "node.sqlite3-wal", "node.sqlite3-shm"):
            assert mode(data / name) == 0o600, f"{data / name}: {oct(mode(data / name))}"
        # The materials reached every tier: small ones as rows of the (0600) database, others as files.
        assert handle.scalar("SELECT COUNT(*) FROM blob_bytes") or [p for p in (data / "blobs").rglob("*")
                                                                    if p.is_file()], handle.tier
        for path in [data / "blobs", *(p for p in (data / "blobs").rglob("*"))]:
            expected = 0o700 if path.is_dir() else 0o600
            assert mode(path) == expected, f"{path}: {oct(mode(path))}"


def test_a_new_database_is_0600_even_under_a_permissive_umask(tmp_path):
    with umask(0o022):
        conn = storage.connect(tmp_path / "fresh.sqlite3")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        for name in ("fresh.sqlite3", "fresh.sqlite3-wal", "fresh.sqlite3-shm"):
            assert mode(tmp_path / name) == 0o600, name
        conn.close()
        # A database from before the fix, its -wal and -shm held open by another process.
        import sqlite3

        older = sqlite3.connect(tmp_path / "loose.sqlite3")
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE t (x)")
        assert mode(tmp_path / "loose.sqlite3-wal") == 0o644
        storage.connect(tmp_path / "loose.sqlite3").close()
        for name in ("loose.sqlite3", "loose.sqlite3-wal", "loose.sqlite3-shm"):
            assert mode(tmp_path / name) == 0o600, name
        older.close()


def test_blob_files_and_folders_are_private_even_under_a_permissive_umask(tmp_path):
    with umask(0o022):
        (tmp_path / "blobs" / "partial").mkdir(parents=True, mode=0o755)  # folders from before the fix
        loose = tmp_path / "blobs" / "partial" / ("ab" * 32)
        loose.write_bytes(b"x")
        loose.chmod(0o644)
        store = BlobStore(tmp_path / "blobs")
        store.write_chunk("ab" * 32, 3, 1, b"y", 1024)
        assert mode(loose) == 0o600
        whole = store.put(b"an ID-card scan")
        data = b"a scan that arrives in chunks"
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        assert not store.write_chunk(sha, len(data), 0, data[:5], 1024)
        assert mode(tmp_path / "blobs" / "partial" / sha) == 0o600
        assert store.write_chunk(sha, len(data), 5, data[5:], 1024)
    for path in (store.path(whole), store.path(sha)):
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert mode(tmp_path / "blobs") == 0o700 and mode(tmp_path / "blobs" / "partial") == 0o700


def test_the_app_factory_and_the_cli_set_an_owner_only_umask(net):
    from provisioning.cli import main as cli
    from village_node import create_app

    with umask(0o022):
        create_app({"DATA_DIR": str(net.village().data_dir), "SCHEDULER_ENABLED": False})
        assert os.umask(0o022) == 0o077
    with umask(0o022):
        result = CliRunner().invoke(cli, ["node", "status", "--data", str(net.village().data_dir)])
        assert result.exit_code == 0, result.output
        assert os.umask(0o022) == 0o077


# ------------------------------------------------------------------ SECRET_KEY


@pytest.mark.parametrize("tier,node_id", [("hub", "130926"), ("township", "130926100"), ("village", "130926100201")])
@pytest.mark.parametrize("secret", [None, "", "dev", "change-me", "short-secret"])
def test_no_tier_starts_without_a_real_secret_key(tmp_path, tier, node_id, secret):
    from provisioning.cli import create_app_for  # noqa: F401 - the factories the CLI uses

    factory = {"hub": "city_hub", "township": "township_node", "village": "village_node"}[tier]
    create_app = __import__(factory).create_app
    config = {"DATA_DIR": str(tmp_path), "TIER": tier, "NODE_ID": node_id, "HUB_ID": "130926",
              "SECRET_KEY": secret, "SCHEDULER_ENABLED": False}
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(config)
    assert create_app({**config, "SECRET_KEY": os.urandom(16).hex()}).config["TIER"] == tier


def test_a_data_folder_whose_config_lost_its_secret_does_not_start(net, tmp_path):
    from provisioning import nodes
    from provisioning.cli import create_app_for

    folder = tmp_path / "copy"
    folder.mkdir()
    values = nodes.read_config(net.village().data_dir)
    values.pop("SECRET_KEY")
    nodes.write_config(folder, values)
    with pytest.raises(RuntimeError, match="SECRET_KEY .* is missing"):
        create_app_for(folder)


# ------------------------------------------------------------------ a real ENOSPC


@contextmanager
def disk_full_under(monkeypatch, folder: Path, on: str = "write"):
    """Writes into files under ``folder`` fail as on a full disk.

    ``on="write"``: ``os.write`` puts a few bytes down, then raises ENOSPC (a torn write);
    ``on="open"``: creating a file there raises ENOSPC (no inode or block left).
    """
    real_write, real_open = os.write, os.open
    folder = str(folder.resolve())
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(folder):
            if len(data) > 4:
                real_write(fd, bytes(data[:4]))
            raise full
        return real_write(fd, data)

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.realpath(path).startswith(folder):
            raise full
        return real_open(path, flags, *args, **kwargs)

    if on == "write":
        monkeypatch.setattr(os, "write", write)
    else:
        monkeypatch.setattr(os, "open", open_)
    try:
        yield
    finally:
        monkeypatch.setattr(os, "write", real_write)
        monkeypatch.setattr(os, "open", real_open)


def footprint(handle) -> dict:
    return {
        "cases": handle.scalar("SELECT COUNT(*) FROM cases"),
        "outbox": handle.scalar("SELECT COUNT(*) FROM outbox"),
        "blobs": handle.scalar("SELECT COUNT(*) FROM blobs"),
        "files": sorted(str(p.relative_to(handle.data_dir)) for p in (handle.data_dir / "blobs").rglob("*")
                        if p.is_file()),
    }


@pytest.mark.parametrize("on", ["write", "open"])
def test_enospc_writing_a_scan_answers_507_json_and_leaves_nothing(net, monkeypatch, on):
    village = net.village()
    agent = village.account("full_agent", "agent")
    item = city_item(village, agent)
    payload = case_payload(item, material_files(item, f"enospc-api-{on}"))
    before = footprint(village)
    client = village.app.test_client()
    monkeypatch.setattr(village.node.blobs, "inline_max", 0)  # scans as files (rows: a full database, below)
    with disk_full_under(monkeypatch, village.data_dir / "blobs", on):
        response = client.post("/api/v1/cases", json=payload, headers={"Authorization": f"Bearer {agent}"})
    assert response.status_code == 507
    assert response.json == {"error": {"code": "disk_full", "message": response.json["error"]["message"]}}
    assert "磁盘空间不足" in response.json["error"]["message"]
    assert footprint(village) == before  # no case, no envelope, no .tmp
    assert not [p for p in (village.data_dir / "blobs").rglob("*.tmp")]
    assert client.post("/api/v1/cases", json=payload, headers={"Authorization": f"Bearer {agent}"}).status_code == 201


def test_enospc_on_the_form_shows_the_chinese_page(net, monkeypatch):
    village = net.village()
    agent = village.account("full_form_agent", "agent")
    item = city_item(village, agent)
    before = footprint(village)
    form = {"applicant_name": "张三", "applicant_id_number": valid_id_number(), "applicant_phone": "13812345678"}
    form.update({f"form_{k}": v for k, v in form_for(item).items()})
    for code, filename, data in material_files(item, "enospc-form"):
        form[f"material_{code}"] = (io.BytesIO(data), filename)
    client = village.app.test_client()
    monkeypatch.setattr(village.node.blobs, "inline_max", 0)  # scans as files
    with disk_full_under(monkeypatch, village.data_dir / "blobs"):
        response = client.post(f"/cases/new/{item['code']}", data=form, content_type="multipart/form-data",
                               headers={"Authorization": f"Bearer {agent}", "Accept": "text/html"})
    assert response.status_code == 507
    assert "磁盘空间不足" in response.get_data(as_text=True)
    assert footprint(village) == before


def test_enospc_in_a_received_chunk_keeps_only_what_arrived_before(tmp_path, monkeypatch):
    import hashlib

    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(64)
    sha = hashlib.sha256(data).hexdigest()
    store.write_chunk(sha, len(data), 0, data[:16], 1024)
    with disk_full_under(monkeypatch, tmp_path / "blobs"), pytest.raises(storage.DiskFullError):
        store.write_chunk(sha, len(data), 16, data[16:], 1024)
    assert store.received(sha) == 16  # the sender resumes at 16, not at a torn offset
    with disk_full_under(monkeypatch, tmp_path / "blobs"), pytest.raises(storage.DiskFullError):
        store.put(b"a whole scan")
    assert [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == [sha]
    assert store.write_chunk(sha, len(data), 16, data[16:], 1024)
    assert base64.b64encode(store.read(sha)) == base64.b64encode(data)


def test_sqlite_full_answers_507_and_commits_nothing(net, monkeypatch):
    village = net.village()
    agent = village.account("sqlite_full_agent", "agent")
    item = city_item(village, agent)
    payload = case_payload(item, [])  # no files: only the database grows
    before = {k: v for k, v in footprint(village).items() if k != "files"}
    with village.app.app_context():  # the connection this thread's next request of the app uses
        conn = get_db()
        limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL on the first page it needs
    client = village.app.test_client()
    try:
        response = client.post("/api/v1/cases", json=payload, headers={"Authorization": f"Bearer {agent}"})
    finally:
        conn.execute(f"PRAGMA max_page_count = {limit}")
    assert response.status_code == 507
    assert response.json["error"]["code"] == "disk_full"
    assert {k: v for k, v in footprint(village).items() if k != "files"} == before


def test_a_blob_folder_removed_while_the_node_runs_is_made_again(tmp_path):
    import hashlib

    store = BlobStore(tmp_path / "blobs")
    first = b"scan one"
    store.write_chunk(hashlib.sha256(first).hexdigest(), len(first), 0, first, 1024)
    folder = store.path(hashlib.sha256(first).hexdigest()).parent
    store.remove(hashlib.sha256(first).hexdigest())
    folder.rmdir()  # e.g. emptied by hand; the store remembers having made it
    assert store.write_chunk(hashlib.sha256(first).hexdigest(), len(first), 0, first, 1024)
    assert store.read(hashlib.sha256(first).hexdigest()) == first and oct(folder.stat().st_mode & 0o777) == "0o700"
