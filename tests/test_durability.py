"""Durability that kill -9 cannot show (issue 10 point 9), tested where it is decided.

* A case and its outbox envelope are committed in one transaction: SQLite's trace callback
  shows every statement of the intake request, and the ``INSERT``s of both must sit between
  one ``BEGIN`` and its ``COMMIT``. A crash can then never leave a case that is never sent, or
  an envelope without its case.
* Where a node tells a peer "received" (a township's custody receipt, the hub's ack), the
  connection that committed the batch runs with ``synchronous=FULL`` (2) in WAL mode, so
  what was acknowledged survives a power cut, not only a process crash.
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
