"""Each serving thread keeps its SQLite connection from one request to the next (shared/web/db.py):
opening one parsed the whole schema, at every request. What must not leak between requests is
checked here: an unfinished transaction, another thread's or another app's connection."""

from __future__ import annotations

import threading

from service import ServiceHub

from shared.core import storage
from shared.web.db import get_db


def database_file(conn) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2]


def test_a_threads_requests_share_one_connection_opened_once(service, monkeypatch):
    opened = []
    real = storage.connect
    monkeypatch.setattr(storage, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    token = service.account("conn_admin", "admin")
    for _ in range(3):
        assert service.api("GET", "/api/v1/complaints", token).status_code == 200
    assert len(opened) <= 1  # the first request of this thread may open it; none after


def test_a_request_that_leaves_a_transaction_open_leaves_nothing_of_it(service):
    app = service.app
    with app.app_context():
        conn = get_db()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO node_meta(key, value) VALUES ('left_open', 'x')")
    # The context ended: rolled back, the write lock released, the connection kept.
    with app.app_context():
        assert get_db() is conn and not conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM node_meta WHERE key = 'left_open'").fetchone()[0] == 0
    other = storage.connect(service.data_dir / app.config["DATABASE"])
    try:
        other.execute("PRAGMA busy_timeout=100")
        with storage.write_transaction(other):  # "database is locked" if the lock had stayed
            other.execute("DELETE FROM node_meta WHERE key = 'nothing'")
    finally:
        other.close()


def test_each_thread_and_each_app_has_its_own_connection(service, tmp_path):
    app = service.app
    with app.app_context():
        mine = get_db()
        path = database_file(mine)
    seen = []

    def take():
        with app.app_context():
            seen.append(get_db())

    t = threading.Thread(target=take)
    t.start()
    t.join()
    assert seen[0] is not mine
    second = ServiceHub(tmp_path / "second-hub")  # another app of the same tier, on this thread
    try:
        with second.app.app_context():
            assert database_file(get_db()) != path
        with app.app_context():
            assert database_file(get_db()) == path
    finally:
        second.close()


def test_renewed_connections_are_opened_again_at_the_next_request(service):
    app = service.app
    with app.app_context():
        before = get_db()
    app.extensions["liandong_db"].renew_connections()
    with app.app_context():
        after = get_db()
    assert after is not before
    with app.app_context():
        assert get_db() is after
