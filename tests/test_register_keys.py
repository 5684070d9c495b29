"""The register's keys that grow at their edge: a case's events keyed by (case, event), the
hub's inbox by (origin, seq) alone (migrations 29 and 30, issue 12's ingest).

A database made by the release before them is migrated with its rows in it: every row and its
rowid kept (events of one instant keep their order), the index and triggers made again, a
repeated event still refused, and no unique index left on the inbox's envelope id while its
primary key still refuses a second envelope at the same place in a chain.
"""

from __future__ import annotations

import sqlite3

import pytest

from city_hub.db import MIGRATIONS as HUB_MIGRATIONS
from shared.core import storage
from shared.services import casework
from village_node.db import MIGRATIONS as VILLAGE_MIGRATIONS

BEFORE = 28  # the last schema with case_events keyed by event_id and inbox.envelope_id unique
CASE = "0190f3a1b2c3d4e5f60718293a4b5c6d"


def _database(path, migrations, version):
    conn = storage.connect(path)
    storage.migrate(conn, migrations[:version])
    return conn


def _old_hub_with_rows(path):
    conn = _database(path, HUB_MIGRATIONS, BEFORE)
    with storage.write_transaction(conn):
        conn.execute(
            "INSERT INTO cases(case_id, receipt_no, item_code, item_name, catalog_version, origin, applicant_name,"
            " id_number, form, status, route_level, route_office, submitted_at, updated_at)"
            " VALUES (?, 'v1-20261202-0001', 'x', '事项', 1, 'v1', '王建国', '130926195001010003', '{}',"
            " 'RECEIVED', 'township', 't1', '2026-12-02T01:00:00Z', '2026-12-02T01:00:00Z')", (CASE,))
        # Two events of one instant: their order is the rowid's (with a gap, as after a deletion).
        for rowid, event_id, action, from_status, to_status in ((5, "e-submit", "submit", None, "SUBMITTED"),
                                                                (9, "e-receive", "receive", "SUBMITTED", "RECEIVED")):
            conn.execute("INSERT INTO case_events(rowid, event_id, case_id, at, node, actor, action, from_status,"
                         " to_status) VALUES (?, ?, ?, '2026-12-02T01:00:00Z', 'v1', 'agent', ?, ?, ?)",
                         (rowid, event_id, CASE, action, from_status, to_status))
        conn.execute("INSERT INTO inbox(origin, seq, envelope_id, prev, kind, document, received_at, via)"
                     " VALUES ('v1', 1, ?, ?, 'case.submit', x'7b7d', '2026-12-02T01:00:00Z', 't1')",
                     ("ab" * 32, "00" * 32))
    return conn


def _index_columns(conn, table: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """{index name: (unique, columns)} of ``table``."""
    return {row["name"]: (row["unique"], tuple(c["name"] for c in conn.execute(f"PRAGMA index_info('{row['name']}')")))
            for row in conn.execute(f"PRAGMA index_list('{table}')")}


def test_an_old_hub_keeps_every_event_and_envelope_under_the_new_keys(tmp_path):
    conn = _old_hub_with_rows(tmp_path / "hub.sqlite3")
    before = [tuple(r) for r in conn.execute("SELECT rowid, * FROM case_events ORDER BY rowid")]
    assert (1, ("event_id",)) in _index_columns(conn, "case_events").values()
    assert (1, ("envelope_id",)) in _index_columns(conn, "inbox").values()

    storage.migrate(conn, HUB_MIGRATIONS)

    assert [tuple(r) for r in conn.execute("SELECT rowid, * FROM case_events ORDER BY rowid")] == before
    assert [r[0] for r in conn.execute("SELECT action FROM case_events WHERE case_id = ? ORDER BY at, rowid",
                                       (CASE,))] == ["submit", "receive"]
    indexes = sorted(_index_columns(conn, "case_events").values())
    assert indexes == [(0, ("case_id", "at")), (1, ("case_id", "event_id"))]
    assert sorted(_index_columns(conn, "inbox").values()) == [(1, ("origin", "seq"))]
    assert [tuple(r) for r in conn.execute("SELECT seq, envelope_id FROM inbox")] == [(1, "ab" * 32)]
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                           " AND tbl_name = 'case_events'")}
    assert triggers == {"case_facts_event_insert", "case_facts_event_update", "case_facts_event_delete"}
    # The primary key still refuses a second envelope at one place of a chain.
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO inbox(origin, seq, envelope_id, prev, kind, document, received_at, via)"
                     " VALUES ('v1', 1, ?, ?, 'case.submit', x'7b7d', '2026-12-02T01:00:00Z', 't1')",
                     ("cd" * 32, "00" * 32))


def test_the_remade_triggers_still_keep_the_statistics_facts_exact(tmp_path):
    conn = _old_hub_with_rows(tmp_path / "hub.sqlite3")
    storage.migrate(conn, HUB_MIGRATIONS)
    facts = ("INSERT INTO case_facts(case_id, delivered, decision_any, counted, on_time, transmitted, live,"
             " computed_at) VALUES (?, 0, 0, 1, 1, 1, 1, '2026-12-02T01:00:00Z')")
    conn.execute(facts, (CASE,))
    conn.execute("UPDATE case_events SET comment = '补充' WHERE case_id = ? AND event_id = 'e-submit'", (CASE,))
    assert conn.execute("SELECT COUNT(*) FROM case_facts").fetchone()[0] == 0  # update: facts recomputed
    conn.execute(facts, (CASE,))
    conn.execute("INSERT INTO case_events(event_id, case_id, at, node, actor, action, from_status, to_status)"
                  " VALUES ('e-extend', ?, '2026-12-02T02:00:00Z', 't1', 'clerk', 'extend', 'RECEIVED', 'RECEIVED')",
                  (CASE,))
    assert conn.execute("SELECT COUNT(*) FROM case_facts").fetchone()[0] == 0  # a step that keeps the status
    conn.execute(facts, (CASE,))
    conn.execute("DELETE FROM case_events WHERE case_id = ? AND event_id = 'e-receive'", (CASE,))
    assert conn.execute("SELECT COUNT(*) FROM case_facts").fetchone()[0] == 0  # delete: recomputed


def test_a_repeated_event_is_stored_once(tmp_path):
    conn = _old_hub_with_rows(tmp_path / "hub.sqlite3")
    storage.migrate(conn, HUB_MIGRATIONS)
    event = {"event_id": "e-extend", "at": "2026-12-02T02:00:00Z", "node": "t1", "actor": "clerk", "action": "extend",
             "from_status": "RECEIVED", "to_status": "RECEIVED", "comment": "", "detail": {}}
    for _ in range(2):
        conn.execute(casework._EVENT_INSERT, casework.event_row(CASE, event))
    assert conn.execute("SELECT COUNT(*) FROM case_events WHERE event_id = 'e-extend'").fetchone()[0] == 1


def test_a_village_migrates_too_and_gets_an_empty_inbox(tmp_path):
    conn = _database(tmp_path / "village.sqlite3", VILLAGE_MIGRATIONS, BEFORE)
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'inbox'").fetchone() is None
    storage.migrate(conn, VILLAGE_MIGRATIONS)
    assert conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == 0
    assert sorted(_index_columns(conn, "case_events").values()) == [(0, ("case_id", "at")), (1, ("case_id", "event_id"))]
