"""USB bundles, version 2 (issue 12 item 6): a zip whose members are stored raw and streamed,
a signed manifest with every member's sha256, volumes for small sticks, honest progress, and
version 1 bundles still imported."""

from __future__ import annotations

import base64
import zipfile

import pytest
from faults import cli, outbox_states, read_signed, sha256
from test_bundle import custody_rows, export, import_at_township, offline  # noqa: F401 - fixture

from shared.core import canonical
from shared.core.clock import iso
from sync import bundle, envelope, node_sync, outbox


def test_members_are_stored_raw_and_named_by_the_signed_manifest(offline):  # noqa: F811
    net, village, _, files, usb = offline
    exported = export(village, usb / "out.ldbundle")
    with zipfile.ZipFile(usb / "out.ldbundle") as zf:
        names = set(zf.namelist())
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        for _, _, data in files:
            assert zf.read(f"blobs/{sha256(data)}") == data  # the scan byte for byte, no base64
    manifest = envelope.peek(read_signed(usb / "out.ldbundle"))
    assert manifest["format"] == 2 and {m["name"] for m in manifest["members"]} | {"manifest.json"} == names
    scans = sum(len(data) for _, _, data in files)
    assert exported["bytes"] < scans + 16 * 1024  # the envelope, manifest and zip headers only


def _rebuild(src, dst, change: dict[str, bytes]) -> None:
    """Copy a bundle, replacing or adding members (valid zip CRCs: only the manifest can tell)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change.pop(info.filename, zin.read(info)))
        for name, data in change.items():  # members added
            zout.writestr(name, data)


def test_a_changed_scan_is_refused_by_its_manifest_hash_and_nothing_is_imported(offline):  # noqa: F811
    net, village, _, files, usb = offline
    export(village, usb / "out.ldbundle")
    name = f"blobs/{sha256(files[0][2])}"
    with zipfile.ZipFile(usb / "out.ldbundle") as zf:
        forged = bytearray(zf.read(name))
    forged[-1] ^= 1
    _rebuild(usb / "out.ldbundle", usb / "forged.ldbundle", {name: bytes(forged)})
    result = import_at_township(net.township, usb / "forged.ldbundle", usb / "answer.ldbundle")
    assert result.exit_code != 0 and "does not match its sha256" in result.output
    assert custody_rows(net.township) == [] and not (usb / "answer.ldbundle").exists()
    assert net.township.scalar("SELECT COUNT(*) FROM blobs") == 0

    _rebuild(usb / "out.ldbundle", usb / "extra.ldbundle", {"blobs/" + "0" * 64: b"smuggled"})
    result = import_at_township(net.township, usb / "extra.ldbundle", usb / "answer.ldbundle")
    assert result.exit_code != 0 and "differ from its manifest" in result.output
    assert custody_rows(net.township) == []


def test_a_split_bundle_imports_from_its_volumes_and_a_missing_volume_is_named(offline):  # noqa: F811
    net, village, _, files, usb = offline
    exported = bundle.export_outbox(village.conn, village.node, usb / "split.ldbundle", split_bytes=700)
    count = len(exported["files"])
    parts = [usb / f"split.{i:03d}-of-{count:03d}.ldbundle" for i in range(1, count + 1)]
    assert [str(p) for p in parts] == exported["files"] and count >= 3
    assert all(p.stat().st_size <= 700 for p in parts) and not (usb / "split.ldbundle").exists()
    assert bundle.volumes(parts[1]) == parts  # any volume leads to all of them

    hidden = parts[1].rename(usb / "elsewhere")
    result = import_at_township(net.township, parts[0], usb / "answer.ldbundle")
    assert result.exit_code != 0 and f"volume 2 of {count} is missing" in result.output
    hidden.rename(parts[1])
    assert custody_rows(net.township) == []

    result = import_at_township(net.township, parts[-1], usb / "answer.ldbundle")
    assert result.exit_code == 0, result.output
    assert len(custody_rows(net.township)) == 1
    for _, _, data in files:
        assert net.township.node.blobs.read(sha256(data)) == data
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "answer.ldbundle")
    assert outbox_states(village) == {1: "custody"}


def test_progress_reaches_the_end_only_once_the_bundle_is_written(offline):  # noqa: F811
    net, village, _, _, usb = offline
    path = usb / "out.ldbundle"
    seen = []
    bundle.export_outbox(village.conn, village.node, path,
                         lambda stage, done, total: seen.append((done, total, path.exists())))
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1]
    assert seen[-1][2] and not any(exists for d, t, exists in seen if d < t)  # 100 % only after fsync and rename


def _version_1_bundle(village, path) -> None:
    """A bundle as releases before format 2 wrote it: one signed JSON document, files in base64."""
    node, conn = village.node, village.conn
    documents = [envelope.from_bytes(r["document"]) for r in outbox.unacked(conn)]
    hashes = {a["sha256"] for d in documents for a in envelope.peek(d).get("attachments", [])}
    cursors, have = node_sync.pull_request(conn, node)
    body = {"kind": "outbox", "from": node.node_id, "to": node.config["PARENT_ID"], "created_at": iso(node.now()),
            "envelopes": documents, "cursors": cursors, "metadata": have,
            "blobs": [{"sha256": h, "data": base64.b64encode(node.blobs.read(h)).decode()} for h in sorted(hashes)]}
    path.write_bytes(canonical.dumps(envelope.sign(node.key, envelope.BUNDLE, body)))


def test_a_version_1_bundle_still_imports(offline):  # noqa: F811
    net, village, _, files, usb = offline
    _version_1_bundle(village, usb / "old.bundle")
    for answer in ("a.ldbundle", "b.ldbundle"):  # twice: idempotent as before
        result = import_at_township(net.township, usb / "old.bundle", usb / answer)
        assert result.exit_code == 0, result.output
    assert len(custody_rows(net.township)) == 1
    assert net.township.scalar("SELECT COUNT(*) FROM blobs") == len(files)
    cli("node", "import-bundle", "--data", village.data_dir, "--in", usb / "a.ldbundle")
    assert outbox_states(village) == {1: "custody"}


@pytest.mark.parametrize("kept_as", ["row", "file"])
def test_a_damaged_file_on_the_village_disk_stops_the_export_with_a_clear_message(offline, kept_as):  # noqa: F811
    net, village, _, files, usb = offline
    sha = sha256(files[0][2])
    damaged = files[0][2][:-1] + b"!"  # same size, other bytes
    if kept_as == "row":  # a small scan is a row of the database (sync/blobs.py)
        village.conn.execute("UPDATE blob_bytes SET data = ? WHERE sha256 = ?", (damaged, sha))
    else:  # a file stored before the table existed, or a large one
        village.node.blobs.path(sha).parent.mkdir(parents=True, exist_ok=True)
        village.node.blobs.path(sha).write_bytes(damaged)
        village.conn.execute("DELETE FROM blob_bytes WHERE sha256 = ?", (sha,))
    result = cli("node", "export-bundle", "--data", village.data_dir, "--out", usb / "out.ldbundle", ok=False)
    assert result.exit_code != 0 and "已损坏" in result.output and "damaged_file" in result.output
    assert list(usb.iterdir()) == []  # no half-written bundle, no leftover volume
