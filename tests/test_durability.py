"""Durability that kill -9 cannot show (issue 10 point 9), tested where it is decided.

* A case and its outbox envelope are committed in one transaction: SQLite's trace callback
  shows every statement of the intake request, and the ``INSERT``s of both must sit between
  one ``BEGIN`` and its ``COMMIT``. A crash can then never leave a case that is never sent, or
  an envelope without its case.
* Where a node tells a peer "received" (a township's custody receipt, the hub's ack), the
  connection that committed the batch runs with ``synchronous=FULL`` (2) in WAL mode, so
  what was acknowledged survives a power cut, not only a process crash.
* A batch of material files (docs/sync-protocol.md §6.3) is durable before it is registered:
  every file's fsync, then its rename, then one fsync per folder, then the transaction, seen
  in one list of system calls and SQL statements; a batch whose fsync fails keeps nothing.
"""

from __future__ import annotations

import re

import pytest
from faults import city_item, material_files
from network import case_payload

from shared.core import storage

FULL = 2


@pytest.fixture(scope="module")
def net(build_network):
    return build_network(villages=1)


def traced_connections(monkeypatch) -> list[list[str]]:
    """Every connection opened from now on records its statements (one list per connection)."""
    real_connect = storage.connect
    traces: list[list[str]] = []

    def connect(path, *args, **kwargs):
        conn = real_connect(path, *args, **kwargs)
        statements: list[str] = []
        traces.append(statements)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(storage, "connect", connect)
    return traces


def transactions(statements: list[str]) -> list[list[str]]:
    """The statements of each explicit transaction, and each autocommit statement on its own."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for statement in statements:
        word = statement.strip().split()[0].upper()
        if word == "BEGIN":
            current = [statement]
        elif current is not None:
            current.append(statement)
            if word in ("COMMIT", "END", "ROLLBACK"):
                groups.append(current)
                current = None
        else:
            groups.append([statement])
    return groups


def writes_to(group: list[str], table: str) -> bool:
    return any(re.match(rf"\s*INSERT\s+(OR\s+\w+\s+)?INTO\s+{table}\b", s, re.I) for s in group)


@pytest.mark.parametrize("tier", ["village", "township"])
def test_a_case_and_its_envelope_commit_in_one_transaction(net, monkeypatch, tier):
    handle = net.village() if tier == "village" else net.township
    agent = handle.account(f"durable_{tier}", "agent" if tier == "village" else "clerk", handle.node_id)
    item = city_item(handle, agent)
    payload = case_payload(item, material_files(item, f"durable-{tier}"))
    traces = traced_connections(monkeypatch)
    handle.app.extensions["liandong_db"].renew_connections()  # the request opens one, traced
    response = handle.app.test_client().post("/api/v1/cases", json=payload,
                                             headers={"Authorization": f"Bearer {agent}"})
    assert response.status_code == 201, response.get_data(as_text=True)
    groups = [g for statements in traces for g in transactions(statements)]
    with_case = [g for g in groups if writes_to(g, "cases")]
    with_envelope = [g for g in groups if writes_to(g, "outbox")]
    assert len(with_case) == 1 and len(with_envelope) == 1, (with_case, with_envelope)
    (together,) = with_case
    assert together is with_envelope[0], "the case and its envelope were committed separately"
    assert together[0].upper().startswith("BEGIN") and together[-1].upper() == "COMMIT"
    assert writes_to(together, "blobs") and writes_to(together, "case_events")


def test_what_a_peer_is_told_was_received_is_committed_at_full_sync_in_wal(net, monkeypatch):
    village, township, hub = net.village(), net.township, net.hub
    seen: dict[str, list[tuple]] = {"township": [], "hub": []}
    for tier, handle in (("township", township), ("hub", hub)):
        service = handle.app.extensions["liandong_sync"]
        real_push = service.push

        def push(conn, node, caller, documents, prepared=None, _real=real_push, _tier=tier, **options):
            answer = _real(conn, node, caller, documents, prepared, **options)
            # Still inside the push's transaction: this connection commits what the answer acknowledges.
            seen[_tier].append((conn.in_transaction, conn.execute("PRAGMA synchronous").fetchone()[0],
                                conn.execute("PRAGMA journal_mode").fetchone()[0], len(documents)))
            return answer

        monkeypatch.setattr(service, "push", push)
    agent = village.account("durable_push", "agent")
    item = city_item(village, agent)
    created = village.api("POST", "/api/v1/cases", agent, json=case_payload(item, material_files(item, "durable-push")))
    assert created.status_code == 201
    village.sync()  # village -> township custody (receipt)
    township.sync()  # township -> hub ingest (ack)
    for tier in ("township", "hub"):
        pushes = [p for p in seen[tier] if p[3]]
        assert pushes, f"no push reached the {tier}"
        for in_transaction, synchronous, journal_mode, _ in pushes:
            assert in_transaction, tier
            assert synchronous == FULL, f"{tier} acknowledged at synchronous={synchronous}"
            assert journal_mode == "wal", tier
    assert hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (created.json()["case_id"],)) == 1


# ------------------------------------------------------------------ a batch of files (§6.3)
#
# Files are not in SQLite: their durability is the order of system calls. Each call is
# recorded, in one list with the SQL statements of the receiving node, and the order is checked.
# (Small files are rows of the database unless BLOB_INLINE_MAX_BYTES is 0, as here; their batch:
# tests/test_blob_storage.py.)


def test_a_file_batch_is_durable_before_it_is_registered_and_answered(net, monkeypatch):
    import os

    from faults import WireSession, client_with, sha256

    village, township = net.village(), net.township
    root = os.path.realpath(township.node.blobs.root)
    agent = village.account("durable_files", "agent")
    item = city_item(village, agent)
    files = [data for _, _, data in material_files(item, "durable-files")]
    files += [os.urandom(300) for _ in range(3)]
    events: list[tuple] = []
    real_fsync, real_replace, real_connect = os.fsync, os.replace, storage.connect

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(root):
            events.append(("fsync_dir" if os.path.isdir(path) else "fsync", path))
        return real_fsync(fd)

    def replace(src, dst):
        if os.path.realpath(os.path.dirname(dst)).startswith(root):
            events.append(("rename", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst)

    def connect(path, *args, **kwargs):
        conn = real_connect(path, *args, **kwargs)
        if os.path.realpath(path).startswith(os.path.realpath(township.data_dir)):
            conn.set_trace_callback(lambda statement: events.append(("sql", statement)))
        return conn

    monkeypatch.setattr(township.node.blobs, "inline_max", 0)  # every file a file
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(storage, "connect", connect)
    township.app.extensions["liandong_db"].renew_connections()  # its serving threads open traced ones
    (answer,) = client_with(village, WireSession()).send_blob_batch([(sha256(d), d, 0) for d in files])
    monkeypatch.undo()
    assert sorted(answer["complete"]) == sorted(sha256(d) for d in files)
    kinds = [e[0] for e in events]
    registered = next(i for i, e in enumerate(events) if e[0] == "sql" and re.match(r"\s*INSERT INTO blobs", e[1]))
    folders = set()
    for data in files:
        sha = sha256(data)
        partial, target = os.path.join(root, "partial", sha), os.path.join(root, sha[:2], sha)
        synced = events.index(("fsync", partial))
        renamed = events.index(("rename", partial, target))
        folder_synced = events.index(("fsync_dir", os.path.dirname(target)), renamed)
        # The file's bytes are on disk before its name, its name before the database says it is held.
        assert synced < renamed < folder_synced < registered, (sha, synced, renamed, folder_synced, registered)
        folders.add(os.path.dirname(target))
    # Together, not file by file: every file's fsync before the first rename, one fsync per
    # folder after the last, then one transaction for the whole batch.
    assert kinds.count("fsync") == len(files)
    assert max(i for i, k in enumerate(kinds) if k == "fsync") < kinds.index("rename")
    assert kinds.count("fsync_dir") == len(folders)
    assert max(i for i, k in enumerate(kinds) if k == "rename") < kinds.index("fsync_dir")
    sql_after = [e[1].split()[0].upper() for e in events[registered:] if e[0] == "sql"]
    assert "COMMIT" in sql_after and not [k for k in kinds[registered:] if k != "sql"]


def test_a_file_batch_that_cannot_be_made_durable_keeps_nothing_of_it(tmp_path, monkeypatch):
    import errno
    import hashlib
    import os

    from sync.blobs import BlobStore

    store = BlobStore(tmp_path / "blobs")
    whole, failing, resumed = os.urandom(100), os.urandom(100), os.urandom(100)
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in
           (("whole", whole), ("failing", failing), ("resumed", resumed))}
    assert not store.write_chunk(sha["resumed"], 100, 0, resumed[:10], 1024)
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(sha["failing"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # delayed allocation: full at fsync
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(storage.DiskFullError):
        store.write_batch([(sha["whole"], 100, 0, whole), (sha["failing"], 100, 0, failing),
                           (sha["resumed"], 100, 10, resumed[10:])], 1024)
    monkeypatch.undo()
    # No file of the batch counts, none is half there: each is back where its sender resumes.
    assert [store.has(s) for s in sha.values()] == [False, False, False]
    assert {name: store.received(s) for name, s in sha.items()} == {"whole": 0, "failing": 0, "resumed": 10}
    batch = store.write_batch([(sha["whole"], 100, 0, whole), (sha["resumed"], 100, 10, resumed[10:])], 1024)
    assert batch.complete == {sha["whole"]: 100, sha["resumed"]: 100} and not batch.rejected


def test_a_file_written_to_meanwhile_is_hashed_from_disk_not_from_memory(tmp_path, monkeypatch):
    import hashlib
    import os

    from sync import blobs

    store = blobs.BlobStore(tmp_path / "blobs")
    data = os.urandom(100)
    sha = hashlib.sha256(data).hexdigest()
    real_close = blobs._Arriving.close

    def close(self, sync):
        if sync and self._fd is not None:
            os.write(self._fd, b"another writer")  # a second request appending to the same partial file
        return real_close(self, sync)

    monkeypatch.setattr(blobs._Arriving, "close", close)
    batch = store.write_batch([(sha, 100, 0, data)], 1024)
    assert sha in batch.rejected and not store.has(sha)  # the bytes in memory were right; the file is not
    assert store.received(sha) == 0


def test_a_batch_s_fsyncs_have_all_returned_before_its_error_is_raised():
    """The batch's fsyncs run together; when one fails, the error is raised only once every other
    has returned, so the clean-up that follows never cuts a file another thread is still syncing."""
    import time

    from sync import blobs

    finished = []

    def call(item):
        if item == "fails":
            raise OSError("an fsync failed")
        time.sleep(0.2)
        finished.append(item)

    with pytest.raises(OSError, match="an fsync failed"):
        blobs._together(call, ["fails", "slow 1", "slow 2"])
    assert sorted(finished) == ["slow 1", "slow 2"]
