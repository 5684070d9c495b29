"""Where material files live (issue 12, "scans travel as fast as the case"): small ones as rows.

A blob up to ``BLOB_INLINE_MAX_BYTES`` is a row of ``blob_bytes`` in the node's own SQLite file
(migration 26), so a batch of scans is one transaction; a larger one is a file as before; a
file stored before the table existed is read as it is. Every guard of the files holds for the
rows: the hash is checked before a row is written, a batch is durable (``synchronous=FULL``)
before it is registered or answered, a killed batch leaves all of its rows or none, a full
database refuses like a full disk, quotas count parked rows, a damaged row is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from faults import WireSession, city_item, client_with, material_files, outbox_states
from network import create_case

from shared.core import storage
from shared.core.clock import iso
from sync import blobs
from sync.blobs import CHUNK_BYTES, BlobStore
from sync.schema import BLOB_BYTES
from village_node.db import MIGRATIONS as VILLAGE_MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent
SMALL = 64 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_of(store: BlobStore) -> list[str]:
    """The complete blobs kept as files (partial uploads left out)."""
    return sorted(p.name for p in store.root.rglob("*") if p.is_file() and p.parent.name != "partial")


def rows_of(database: Path) -> dict[str, int]:
    conn = sqlite3.connect(database)
    try:
        return dict(conn.execute("SELECT sha256, size FROM blob_bytes").fetchall())
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path) -> BlobStore:
    """A blob store beside a real SQLite file with the blob_bytes table (migration 26)."""
    database = tmp_path / "node.sqlite3"
    conn = storage.connect(database)
    conn.executescript(BLOB_BYTES)
    conn.close()
    made = BlobStore(tmp_path / "blobs", database, SMALL)
    yield made
    made.close()


# ------------------------------------------------------------------ where each blob lands


def test_small_blobs_are_rows_large_ones_files_and_both_read_the_same(store):
    small, large = os.urandom(20_000), os.urandom(SMALL + 1)
    batch = store.write_batch([(sha(small), len(small), 0, small), (sha(large), len(large), 0, large)], 10 ** 6)
    assert batch.complete == {sha(small): len(small), sha(large): len(large)} and not batch.rejected
    assert rows_of(store.database) == {sha(small): len(small)}  # the small one: a row, no file
    assert files_of(store) == [sha(large)]  # the large one: a file, no row
    assert list((store.root / "partial").iterdir()) == []
    for data in (small, large):
        assert store.has(sha(data)) and store.read(sha(data)) == data
        assert store.size(sha(data)) == store.received(sha(data)) == len(data)
        assert b"".join(store.chunks(sha(data), 4096)) == data
    assert store.held([sha(small), sha(large), "0" * 64]) == {sha(small), sha(large)}
    assert store.read_many([sha(small), sha(large), "0" * 64]) == {sha(small): small, sha(large): large}
    # put() (a case made here) sorts the same way.
    other_small, other_large = os.urandom(100), os.urandom(SMALL + 5)
    assert store.put(other_small) in rows_of(store.database)
    assert store.put(other_large) in files_of(store)


def test_a_batchs_commit_leaves_the_checkpoint_to_a_thread_that_does_it_soon_after(store, monkeypatch):
    """The commit that makes a batch durable is one WAL write and fsync; copying the WAL into the
    database file (several MB, and its fsync) runs behind it, and does happen."""
    from sync import blob_rows

    started = threading.Event()
    monkeypatch.setattr(blob_rows, "_checkpoint_behind", lambda rows: started.set())
    scans = [os.urandom(20_000) for _ in range(200)]  # 4 MB: past SQLite's own 1,000-page checkpoint
    store.write_batch([(sha(d), len(d), 0, d) for d in scans], 10 ** 6)
    assert started.is_set()
    assert os.path.getsize(store.database) < 1_000_000  # nothing copied in the commit
    monkeypatch.undo()
    blob_rows._checkpoint_behind(store.rows)
    for _ in range(200):
        if os.path.getsize(store.database) > 4_000_000:
            break
        threading.Event().wait(0.02)
    assert os.path.getsize(store.database) > 4_000_000  # the WAL was copied into the file
    assert rows_of(store.database) == {sha(d): len(d) for d in scans}


def test_the_threshold_is_a_setting_and_0_keeps_every_blob_a_file(tmp_path, store):
    from shared.core.settings import DEFAULTS

    assert DEFAULTS["BLOB_INLINE_MAX_BYTES"] == 256 * 1024 == CHUNK_BYTES  # a small scan travels in one frame
    files_only = BlobStore(tmp_path / "blobs", store.database, 0)
    data = os.urandom(1000)
    assert files_only.write_chunk(sha(data), len(data), 0, data, 10 ** 6)
    assert files_of(files_only) == [sha(data)] and rows_of(store.database) == {}
    assert store.read(sha(data)) == data  # the other store finds it all the same


def test_a_small_blob_resumed_over_several_frames_becomes_a_row(store):
    data = os.urandom(50_000)
    assert not store.write_chunk(sha(data), len(data), 0, data[:20_000], 10 ** 6)
    assert store.received(sha(data)) == 20_000 and rows_of(store.database) == {}  # a part file meanwhile
    assert store.holdings([sha(data), "0" * 64]) == {sha(data): (20_000, False), "0" * 64: (0, False)}
    batch = store.write_batch([(sha(data), len(data), 20_000, data[20_000:])], 10 ** 6)
    assert batch.complete == {sha(data): len(data)}
    assert rows_of(store.database) == {sha(data): len(data)} and files_of(store) == []
    assert list((store.root / "partial").iterdir()) == []  # the part file went once the row committed
    assert store.read(sha(data)) == data
    assert store.holdings([sha(data)]) == {sha(data): (50_000, True)}


def test_a_whole_blob_sent_again_from_0_while_part_of_it_is_here_is_told_where_to_resume(store):
    """Only a blob with nothing held before goes to its row from memory (§6.3): a frame from
    offset 0 for one with a part file is refused like any chunk not where that file ends, and
    the part file is kept for the resume."""
    data = os.urandom(30_000)
    assert not store.write_chunk(sha(data), len(data), 0, data[:10_000], 10 ** 6)
    batch = store.write_batch([(sha(data), len(data), 0, data)], 10 ** 6)
    assert sha(data) in batch.rejected and batch.complete == {}
    assert batch.partial == {sha(data): 10_000} and rows_of(store.database) == {}
    assert store.write_batch([(sha(data), len(data), 10_000, data[10_000:])], 10 ** 6).complete == {sha(data): 30_000}


# ------------------------------------------------------------------ dedup, hashes, removal


def test_the_same_bytes_are_kept_once_whichever_way_they_arrive(store):
    data = os.urandom(5000)
    assert store.put(data) == sha(data)
    assert store.put(data) == sha(data)
    batch = store.write_batch([(sha(data), len(data), 0, data), (sha(data), len(data), 0, data)], 10 ** 6)
    assert batch.complete == {sha(data): len(data)}
    assert rows_of(store.database) == {sha(data): len(data)} and files_of(store) == []
    # Bytes held as a file (stored before the table existed) are not stored again as a row.
    old = os.urandom(700)
    store.path(sha(old)).parent.mkdir(parents=True, exist_ok=True)
    store.path(sha(old)).write_bytes(old)
    assert store.put(old) == sha(old) and store.write_chunk(sha(old), len(old), 0, old, 10 ** 6)
    assert sha(old) not in rows_of(store.database)


def test_bytes_that_do_not_match_their_name_never_become_a_row(store):
    data, wrong = os.urandom(3000), os.urandom(3000)
    resumed = os.urandom(3000)
    store.write_chunk(sha(resumed), 3000, 0, resumed[:1000], 10 ** 6)
    batch = store.write_batch([(sha(data), 3000, 0, wrong), (sha(resumed), 3000, 1000, wrong[1000:])], 10 ** 6)
    assert set(batch.rejected) == {sha(data), sha(resumed)} and not batch.complete
    assert all(reason == "blob bytes do not match their sha256" for reason in batch.rejected.values())
    assert rows_of(store.database) == {} and not store.has(sha(data)) and not store.has(sha(resumed))
    assert store.received(sha(data)) == store.received(sha(resumed)) == 0  # the sender starts again
    with pytest.raises(blobs.BlobError):
        store.write_chunk(sha(data), 3000, 0, wrong, 10 ** 6)
    with pytest.raises(blobs.BlobError, match="exceeds the limit"):
        store.write_chunk(sha(data), 3000, 0, data, 2999)  # the size limit holds for rows too


def test_a_damaged_row_at_the_sender_is_refused_by_the_receiver(store, tmp_path):
    data = os.urandom(4000)
    store.put(data)
    conn = sqlite3.connect(store.database)
    conn.execute("UPDATE blob_bytes SET data = ? WHERE sha256 = ?", (data[:-1] + b"!", sha(data)))
    conn.commit()
    conn.close()
    receiver_db = tmp_path / "receiver.sqlite3"
    storage.connect(receiver_db).executescript(BLOB_BYTES)
    receiver = BlobStore(tmp_path / "receiver", receiver_db, SMALL)
    batch = receiver.write_batch([(sha(data), len(data), 0, store.read(sha(data)))], 10 ** 6)
    assert sha(data) in batch.rejected and not receiver.has(sha(data)) and rows_of(receiver_db) == {}
    receiver.close()


def test_remove_deletes_a_row_or_a_file_and_joins_a_callers_transaction(store):
    row, kept_file = os.urandom(100), os.urandom(SMALL + 1)
    store.put(row)
    store.put(kept_file)
    assert store.remove(sha(kept_file)) and not store.has(sha(kept_file))
    conn = storage.connect(store.database)
    with pytest.raises(RuntimeError), storage.write_transaction(conn):
        assert store.remove(sha(row), conn)  # inside the caller's transaction: no second writer waits
        raise RuntimeError("the caller's transaction fails")  # ... and the row comes back with it
    assert store.has(sha(row))
    assert store.remove(sha(row)) and not store.has(sha(row)) and not store.remove(sha(row))
    conn.close()


def test_a_blob_stored_inside_a_callers_write_transaction_is_a_file_not_a_wait(store):
    """A second connection's BEGIN IMMEDIATE would wait on this thread's own transaction for the
    busy timeout (30 s); the store keeps such a blob as a file instead."""
    conn = storage.connect(store.database)
    data = os.urandom(100)
    done = []
    thread = threading.Thread(target=lambda: done.append(_put_in_transaction(store, conn, data)), daemon=True)
    thread.start()
    thread.join(10)
    assert done == [sha(data)]
    assert files_of(store) == [sha(data)] and rows_of(store.database) == {}
    conn.close()


def _put_in_transaction(store: BlobStore, conn, data: bytes) -> str:
    with storage.write_transaction(conn):
        return store.put(data)


# ------------------------------------------------------------------ durability


def test_a_full_database_refuses_the_batch_and_keeps_nothing_of_it(store):
    whole, resumed = os.urandom(30_000), os.urandom(30_000)
    store.write_chunk(sha(resumed), 30_000, 0, resumed[:100], 10 ** 6)
    with store.rows.connection() as conn:  # the connection the store uses next
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL on the first page it needs
    with pytest.raises(storage.DiskFullError):
        store.write_batch([(sha(whole), 30_000, 0, whole), (sha(resumed), 30_000, 100, resumed[100:])], 10 ** 6)
    store.close()
    assert rows_of(store.database) == {} and not store.has(sha(whole))
    assert store.received(sha(whole)) == 0 and store.received(sha(resumed)) == 100  # where the sender resumes
    assert set(store.write_batch([(sha(whole), 30_000, 0, whole), (sha(resumed), 30_000, 100, resumed[100:])],
                                 10 ** 6).complete) == {sha(whole), sha(resumed)}


KILLED_BATCH = """
import os, signal, sys
from sync.blobs import BlobStore
import sync.blob_rows as blob_rows
import sync.blobs as blobs

root, database, point = sys.argv[1], sys.argv[2], sys.argv[3]
store = BlobStore(root, database, 64 * 1024)
frames = [(bytes.fromhex(line.split()[0]).hex(), int(line.split()[1]), 0, bytes.fromhex(line.split()[2]))
          for line in sys.stdin.read().splitlines()]
if point == "before-commit":
    real = blob_rows.write_transaction

    class Dies:
        def __init__(self, conn):
            self.inner = real(conn)

        def __enter__(self):
            return self.inner.__enter__()

        def __exit__(self, *exc):  # every row written, the COMMIT not yet
            os.kill(os.getpid(), signal.SIGKILL)

    blob_rows.write_transaction = Dies
else:
    real_undo = blobs._together

    def dies(call, items):  # the rows committed; the folders (of the large file) not yet synced
        if call is blobs.fsync_dir:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_undo(call, items)

    blobs._together = dies
store.write_batch(frames, 10 ** 6)
"""


@pytest.mark.parametrize("point", ["before-commit", "after-commit"])
def test_a_batch_killed_with_sigkill_leaves_all_of_its_rows_or_none(store, point):
    scans = [os.urandom(20_000) for _ in range(20)]
    large = os.urandom(SMALL + 1)
    lines = "\n".join(f"{sha(d)} {len(d)} {d.hex()}" for d in [*scans, large])
    store.close()
    killed = subprocess.run([sys.executable, "-c", KILLED_BATCH, str(store.root), str(store.database), point],
                            input=lines, text=True, capture_output=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    conn = sqlite3.connect(store.database)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    rows = rows_of(store.database)
    if point == "before-commit":
        assert rows == {}  # not one scan of the batch counts ...
        assert not any(store.has(sha(d)) for d in scans) and all(store.received(sha(d)) == 0 for d in scans)
    else:
        assert rows == {sha(d): len(d) for d in scans}  # ... or every one, whole
        assert all(store.read(sha(d)) == d for d in scans)
    # Either way the sender's next batch completes it.
    again = store.write_batch([(sha(d), len(d), 0, d) for d in [*scans, large]], 10 ** 6)
    assert set(again.complete) == {sha(d) for d in [*scans, large]} and not again.rejected


def test_a_batch_of_small_scans_is_one_durable_transaction_before_it_is_registered(net, monkeypatch):
    """The receiving node's system calls and SQL in one list: no file created, renamed or fsynced
    for the scans, their rows committed (synchronous=FULL) before the registration's transaction."""
    from faults import sha256

    village, township = net.village(), net.township
    root = os.path.realpath(township.node.blobs.root)
    agent = village.account("rows_agent", "agent")
    item = city_item(village, agent)
    files = [data for _, _, data in material_files(item, "rows")] + [os.urandom(300) for _ in range(5)]
    events: list[tuple] = []
    real_fsync, real_replace, real_connect, real_open = os.fsync, os.replace, storage.connect, os.open

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(root):
            events.append(("fsync", path))
        return real_fsync(fd)

    def replace(src, dst):
        if os.path.realpath(os.path.dirname(dst)).startswith(root):
            events.append(("rename", src, dst))
        return real_replace(src, dst)

    def opened(path, flags, *args, **kwargs):
        if str(path).startswith(root) and flags & os.O_CREAT:
            events.append(("create", str(path)))
        return real_open(path, flags, *args, **kwargs)

    def connect(path, *args, **kwargs):
        conn = real_connect(path, *args, **kwargs)
        if os.path.realpath(path).startswith(os.path.realpath(township.data_dir)):
            events.append(("sync", conn.execute("PRAGMA synchronous").fetchone()[0]))
            conn.set_trace_callback(lambda statement: events.append(("sql", statement)))
        return conn

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "open", opened)
    monkeypatch.setattr(storage, "connect", connect)
    township.node.blobs.close()  # its kept connections: traced ones from now on
    township.app.extensions["liandong_db"].renew_connections()
    (answer,) = client_with(village, WireSession()).send_blob_batch([(sha256(d), d, 0) for d in files])
    monkeypatch.undo()
    assert sorted(answer["complete"]) == sorted(sha256(d) for d in files)
    assert [e for e in events if e[0] in ("fsync", "rename", "create")] == []  # no file, no fsync
    assert {e[1] for e in events if e[0] == "sync"} == {2}  # FULL: the commit is on disk when it returns
    sql = [e[1].strip() for e in events if e[0] == "sql"]
    inserted = next(i for i, s in enumerate(sql) if s.startswith("INSERT INTO blob_bytes"))
    committed = next(i for i, s in enumerate(sql) if i > inserted and s.upper() == "COMMIT")
    registered = next(i for i, s in enumerate(sql) if re.match(r"INSERT INTO blobs\b", s))
    assert inserted < committed < registered
    # Every row of the batch in that one transaction (an executemany: one statement per row traced).
    rows = [i for i, s in enumerate(sql) if s.startswith("INSERT INTO blob_bytes")]
    begun = max(i for i, s in enumerate(sql) if i < inserted and s.upper().startswith("BEGIN"))
    assert len(rows) == len(files) and begun < rows[0] and rows[-1] < committed
    assert not [s for s in sql[begun + 1:committed] if s.upper() in ("COMMIT", "ROLLBACK")]
    for data in files:
        assert township.scalar("SELECT size FROM blob_bytes WHERE sha256 = ?", (sha256(data),)) == len(data)


# ------------------------------------------------------------------ files from before, quotas, backups


def test_file_blobs_of_an_older_schema_keep_working_after_the_migration(tmp_path):
    """A store on a database of schema 25 keeps every blob a file; once migration 26 ran, new small
    blobs are rows and the old files are read, offered and removed where they are (no rewrite)."""
    database = tmp_path / "node.sqlite3"
    conn = storage.connect(database)
    storage.migrate(conn, VILLAGE_MIGRATIONS[:25])
    store = BlobStore(tmp_path / "blobs", database, SMALL)
    old = os.urandom(20_000)
    assert store.write_chunk(sha(old), len(old), 0, old, 10 ** 6)
    assert files_of(store) == [sha(old)]  # no table yet: a file, as before
    assert storage.migrate(conn, VILLAGE_MIGRATIONS) == len(VILLAGE_MIGRATIONS) >= 26
    new = os.urandom(20_000)
    assert store.write_chunk(sha(new), len(new), 0, new, 10 ** 6)
    assert rows_of(database) == {sha(new): len(new)} and files_of(store) == [sha(old)]
    assert store.held([sha(old), sha(new)]) == {sha(old), sha(new)}
    assert store.read(sha(old)) == old and b"".join(store.chunks(sha(old))) == old
    assert store.remove(sha(old)) and files_of(store) == [] and store.has(sha(new))
    store.close()
    conn.close()


def village_with_a_case(build_network, agent_name: str):
    """A network of one village whose agent took one case with its material files."""
    net = build_network(villages=1)
    village = net.village()
    agent = village.account(agent_name, "agent")
    item = city_item(village, agent)
    files = material_files(item, agent_name)
    create_case(village, agent, item, files)
    return net, village, files


def test_an_old_file_blob_at_the_village_reaches_the_hub(build_network):
    net, village, files = village_with_a_case(build_network, "old_files")
    moved = sha(files[0][2])
    # As if stored by a release before migration 26: the same bytes as a file, no row.
    village.node.blobs.path(moved).parent.mkdir(parents=True, exist_ok=True)
    village.node.blobs.path(moved).write_bytes(files[0][2])
    village.conn.execute("DELETE FROM blob_bytes WHERE sha256 = ?", (moved,))
    for _ in range(3):
        net.sync_all()
    assert outbox_states(village) == {1: "acked"}
    for _, _, data in files:
        assert net.hub.node.blobs.read(sha(data)) == data
        assert net.hub.scalar("SELECT size FROM blob_bytes WHERE sha256 = ?", (sha(data),)) == len(data)


def test_parked_rows_count_against_the_quota_and_are_swept(net):
    """Uploads no envelope names (parked) are counted at their size whether row or file, refused
    beyond the uploader's quota, and the sweep removes their rows with their registration."""
    from sync.client import ParentClient, SyncUnavailable

    village, township = net.village(), net.township
    sender = ParentClient(township.url, township.node_id, village.node_id, village.node.key, village.node.nonces)
    blobs.sweep_parked(township.conn, township.node.blobs, iso(township.node.now() + timedelta(seconds=1)))
    township.node.config["BLOB_PARK_QUOTA_BYTES"] = 3 * 50_000
    try:
        scans = [os.urandom(50_000) for _ in range(4)]
        (answer,) = sender.send_blob_batch([(sha(d), d, 0) for d in scans[:2]])
        assert sorted(answer["complete"]) == sorted(sha(d) for d in scans[:2])
        assert sender.send_blob(sha(scans[2]), scans[2], 0)["complete"]
        with pytest.raises(SyncUnavailable, match="blob_quota"):
            sender.send_blob(sha(scans[3]), scans[3], 0)
        assert township.scalar("SELECT SUM(size) FROM blob_parking WHERE node_id = ?", (village.node_id,)) == 150_000
        assert {sha(d) for d in scans[:3]} <= set(rows_of(township.data_dir / "node.sqlite3"))
        assert not township.node.blobs.has(sha(scans[3]))
        assert blobs.sweep_parked(township.conn, township.node.blobs,
                                  iso(township.node.now() + timedelta(seconds=1))) == 3
        assert not set(rows_of(township.data_dir / "node.sqlite3")) & {sha(d) for d in scans}
        assert township.scalar("SELECT COUNT(*) FROM blob_parking") == 0
    finally:
        township.node.config["BLOB_PARK_QUOTA_BYTES"] = 32 * 1024 * 1024


def test_a_backup_holds_the_scans_kept_as_rows(build_network, tmp_path):
    """The database is backed up with SQLite's online backup, so the rows come with it, consistent
    with the cases that name them; a restored node reads them."""
    from click.testing import CliRunner

    from provisioning import nodes
    from provisioning.cli import main

    net, village, files = village_with_a_case(build_network, "backup_rows")
    archive = tmp_path / "village.zip"
    assert CliRunner().invoke(main, ["backup", "--data", str(village.data_dir), "--out", str(archive)]).exit_code == 0
    restored = tmp_path / "restored"
    result = CliRunner().invoke(main, ["restore", "--data", str(restored), "--from", str(archive)])
    assert result.exit_code == 0, result.output
    node = nodes.node_for(restored)
    for _, _, data in files:
        assert node.blobs.read(sha(data)) == data
    node.blobs.close()


def test_a_batch_frame_whose_name_is_not_a_digest_is_refused_and_nothing_written(store, tmp_path):
    """Frames read from HTTP carry binary digests; any other caller's names are checked too: a
    name is a path below the store, so "../x" must never reach a file."""
    data = os.urandom(1000)
    outside = tmp_path / "evil"
    names = ["../../evil", "x" * 64, sha(data).upper()]
    batch = store.write_batch([(name, len(data), 0, data) for name in names], 10 ** 6)
    assert set(batch.rejected) == set(names) and not batch.complete
    assert all(reason == "not a sha256 hex digest" for reason in batch.rejected.values())
    assert not outside.exists() and rows_of(store.database) == {} and files_of(store) == []
