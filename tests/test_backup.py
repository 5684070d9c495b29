"""Backup of a running node (SQLite online backup) and restore into an empty folder.

The archive is a zip: already-compressed scans are stored, not deflated again; long backups
report their progress on stderr.
"""

from __future__ import annotations

import io
import json
import sqlite3
import stat
import tarfile
import zipfile

import pytest
from click.testing import CliRunner
from network import catalog, create_case, pick_item

from provisioning.cli import main


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_backup_while_running_and_restore(build_network, tmp_path):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    receipts = [create_case(village, agent, pick_item(catalog(village, agent), "city")) for _ in range(3)]
    archive = tmp_path / "village.zip"
    result = _run("backup", "--data", village.data_dir, "--out", archive)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds the node's key

    target = tmp_path / "restored"
    result = _run("restore", "--data", target, "--from", archive)
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(target / "node.sqlite3")
    ids = {r[0] for r in conn.execute("SELECT case_id FROM cases")}
    assert {r["case_id"] for r in receipts} <= ids
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 3
    conn.close()
    assert (target / "keys" / "node.pem").read_bytes() == (village.data_dir / "keys" / "node.pem").read_bytes()
    assert stat.S_IMODE((target / "keys" / "node.pem").stat().st_mode) == 0o600
    # material files come along (content-addressed, immutable)
    assert sorted(p.name for p in (target / "blobs").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (village.data_dir / "blobs").rglob("*") if p.is_file())


def test_restore_refuses_a_folder_in_use(build_network, tmp_path):
    net = build_network(villages=1)
    archive = tmp_path / "hub.zip"
    assert _run("backup", "--data", net.hub.data_dir, "--out", archive).exit_code == 0
    result = CliRunner().invoke(main, ["restore", "--data", str(net.hub.data_dir), "--from", str(archive)])
    assert result.exit_code == 1 and "（folder_not_empty）" in result.output
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("restore_logging")  # the jobs process configures the node's logging
def test_hub_jobs_runs_the_rules_once(build_network):
    net = build_network(villages=0, township=False)
    result = _run("hub", "jobs", "--data", net.hub.data_dir, "--once")
    assert result.exit_code == 0, result.output
    done = json.loads(result.output.strip().splitlines()[-1])
    assert done["supervision"] == {"deemed_accepted": 0, "terminated": 0, "alerts": 0}
    # The same rules as the web process's scheduler, the apply queue first (city_hub/tier.py).
    assert list(done)[0] == "apply_queue" and {"metadata", "joint", "regulation", "case_facts"} <= set(done)


def _png_bytes(size: int) -> bytes:
    """A PNG-signed file of ``size`` bytes of incompressible content (like a real scan)."""
    import os

    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


def test_scans_are_stored_without_recompression_and_progress_is_shown(build_network, tmp_path):
    net = build_network(villages=1)
    village = net.village()
    agent = village.account("agent", "agent", village.node_id)
    item = pick_item(catalog(village, agent), "city")
    material = item["materials"][0]["code"]
    scan = _png_bytes(300_000)  # above BLOB_INLINE_MAX_BYTES: a file (smaller ones are rows of the database)
    create_case(village, agent, item, [(material, "scan.png", scan)])
    archive = tmp_path / "village.zip"
    result = _run("backup", "--data", village.data_dir, "--out", archive)
    assert result.exit_code == 0, result.output

    with zipfile.ZipFile(archive) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        blobs = [i for name, i in infos.items() if name.startswith("blobs/")]
        png = [i for i in blobs if zf.read(i.filename)[:8] == b"\x89PNG\r\n\x1a\n"]
        assert len(png) == 1 and png[0].compress_type == zipfile.ZIP_STORED  # stored as it is
        assert zf.read(png[0].filename) == scan
        assert infos["node.sqlite3"].compress_type == zipfile.ZIP_DEFLATED  # the database compresses
        assert infos["config.py"].compress_type == zipfile.ZIP_DEFLATED
    lines = [line for line in result.stderr.splitlines() if line.startswith("备份进度")]
    assert [line.split("%")[0].split()[-1] for line in lines] == [str(p) for p in range(10, 101, 10)]


def test_restore_reads_an_old_tar_gz_backup_and_refuses_unsafe_paths(build_network, tmp_path):
    net = build_network(villages=0, township=False)
    archive = tmp_path / "hub.zip"
    assert _run("backup", "--data", net.hub.data_dir, "--out", archive).exit_code == 0
    old = tmp_path / "hub-old.tar.gz"
    with zipfile.ZipFile(archive) as zf, tarfile.open(old, "w:gz") as tar:
        for info in zf.infolist():
            data = zf.read(info.filename)
            member = tarfile.TarInfo(info.filename)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    result = _run("restore", "--data", tmp_path / "from-tar", "--from", old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-tar" / "keys" / "root.pem").exists()

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    result = CliRunner().invoke(main, ["restore", "--data", str(tmp_path / "evil"), "--from", str(evil)])
    assert result.exit_code == 1 and "（unsafe_backup）" in result.output
    assert not (tmp_path / "outside.txt").exists()


def test_progress_follows_a_large_file_as_it_is_written(tmp_path):
    import os

    from provisioning import archive as backup_archive

    big = tmp_path / "node.sqlite3"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    lines: list[str] = []
    backup_archive.write_zip(tmp_path / "out.zip", [(big, big.name)],
                             backup_archive.Progress(big.stat().st_size, lines.append))
    assert [line.split("%")[0].split()[-1] for line in lines] == [str(p) for p in range(10, 101, 10)]
    done = [float(line.split("（")[1].split(" /")[0]) for line in lines]
    assert done == sorted(done) and done[0] < done[-1]  # reported while the file was written, not after
