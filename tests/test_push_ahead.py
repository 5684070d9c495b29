"""A village draining a backlog sends each push while the answer to the one before is applied
(``sync/node_sync.py`` ``_pushes_in_flight``, docs/sync-protocol.md §5.1.2): every envelope is
pushed once, in order; a failure loses nothing; a batch's material files follow its push
while the next push goes; ``SYNC_PUSH_AHEAD`` false keeps one push at a time."""

from __future__ import annotations

import hashlib

import pytest
from faults import city_item, material_files
from network import create_case

from sync import client as client_module
from sync import envelope, node_sync, outbox
from sync.client import SyncUnavailable
from sync.node_sync import SyncState, drain


@pytest.fixture
def net(build_network):
    net = build_network(villages=1)
    net.village().app.config.update(SYNC_BATCH=5, SYNC_BATCH_MAX=5)  # 23 cases: five pushes
    return net


@pytest.fixture
def agent(net):
    return net.village().account("agent", "agent")


def _backlog(village, agent, n: int = 23) -> list[str]:
    item = city_item(village, agent)
    return [create_case(village, agent, item, materials=[])["case_id"] for _ in range(n)]


def _watch(monkeypatch, village, fail_at: int | None = None) -> list[tuple]:
    """Log the village's pushes (the seqs sent, when sent and answered) and its applied answers;
    ``fail_at``: the push with that number (1-based) fails as a broken link would."""
    events: list[tuple] = []
    real_push, real_apply = client_module.ParentClient.push_stored, node_sync._apply_answer

    def push_stored(self, documents, **kwargs):
        if self.node_id != village.node_id:
            return real_push(self, documents, **kwargs)
        seqs = tuple(envelope.peek(envelope.from_bytes(d))["seq"] for d in documents)
        events.append(("sent", seqs))
        if fail_at is not None and sum(1 for e in events if e[0] == "sent") == fail_at:
            raise SyncUnavailable("ConnectionError: the link dropped")
        answer = real_push(self, documents, **kwargs)
        events.append(("answered", seqs))
        return answer

    def apply_answer(conn, node, *args, **kwargs):
        events.append(("applying",))
        result = real_apply(conn, node, *args, **kwargs)
        events.append(("applied",))
        return result

    real_files = client_module.ParentClient.send_blob_batch

    def send_blob_batch(self, files, *args, **kwargs):
        events.append(("files", len(files)))
        return real_files(self, files, *args, **kwargs)

    monkeypatch.setattr(client_module.ParentClient, "push_stored", push_stored)
    monkeypatch.setattr(client_module.ParentClient, "send_blob_batch", send_blob_batch)
    monkeypatch.setattr(node_sync, "_apply_answer", apply_answer)
    return events


def _settle(net) -> None:
    net.township.sync()
    net.village().sync()


def test_each_push_goes_while_the_answer_before_is_applied_and_every_envelope_once(net, agent, monkeypatch):
    village, hub = net.village(), net.hub
    case_ids = _backlog(village, agent)
    events = _watch(monkeypatch, village)
    summary = drain(village.conn, village.node, SyncState(), force=True)
    sent = [e[1] for e in events if e[0] == "sent"]
    assert [s for batch in sent for s in batch] == list(range(1, 24))  # each once, in order
    assert [len(b) for b in sent] == [5, 5, 5, 5, 3] and summary["pushed"] == 23
    # Push k+1 was sent before the answer to push k was applied, for every k after the first.
    order = [e[0] for e in events]
    second = order.index("sent", order.index("sent") + 1)
    assert "applied" not in order[:second]
    assert order.count("applied") == 5
    monkeypatch.undo()
    _settle(net)
    assert set(outbox.counts(village.conn)) >= {"acked"} and outbox.counts(village.conn)["acked"] == 23
    assert sorted(r[0] for r in hub.query("SELECT case_id FROM cases WHERE origin = ?", (village.node_id,))) \
        == sorted(case_ids)


def test_a_push_that_fails_in_flight_loses_nothing(net, agent, monkeypatch):
    village, hub = net.village(), net.hub
    case_ids = _backlog(village, agent)
    _watch(monkeypatch, village, fail_at=3)
    summary = node_sync.run_round(village.conn, village.node, SyncState(), force=True)
    assert "error" in summary
    states = outbox.counts(village.conn)
    assert states["custody"] == 10 and states["pending"] == 13  # the two answers before it were applied
    monkeypatch.undo()
    drain(village.conn, village.node, SyncState(), force=True)
    _settle(net)
    assert outbox.counts(village.conn)["acked"] == 23
    at_hub = [r[0] for r in hub.query("SELECT case_id FROM cases WHERE origin = ?", (village.node_id,))]
    assert sorted(at_hub) == sorted(case_ids)  # each once
    assert hub.scalar("SELECT COUNT(*) FROM inbox WHERE origin = ?", (village.node_id,)) == 23


def _backlog_with_a_file(village, agent) -> tuple[str, list]:
    item = city_item(village, agent)
    _backlog(village, agent, 12)
    files = material_files(item, "ahead")
    with_file = create_case(village, agent, item, materials=files)["case_id"]
    _backlog(village, agent, 5)
    return with_file, files


def _files_arrived(net, with_file: str, files: list) -> None:
    _settle(net)
    assert net.hub.scalar("SELECT COUNT(*) FROM cases WHERE case_id = ?", (with_file,)) == 1
    for _, _, data in files:
        assert net.hub.node.blobs.has(hashlib.sha256(data).hexdigest())
    assert outbox.counts(net.village().conn)["acked"] == 18


def test_a_batchs_files_follow_its_push_while_the_next_push_goes(net, agent, monkeypatch):
    """One request at a time: push n, push n + 1, then the files of push n (named at the
    township by then), read while push n + 1 was in flight; the pipeline does not stop."""
    village = net.village()
    with_file, files = _backlog_with_a_file(village, agent)
    events = _watch(monkeypatch, village)
    summary = node_sync.run_round(village.conn, village.node, SyncState(), force=True)
    assert summary["pushed"] == 18  # one round: the file did not end the pipeline
    sent = [e[1] for e in events if e[0] == "sent"]
    assert [s for batch in sent for s in batch] == list(range(1, 19))
    assert 13 in sent[2]
    order = [e[:2] if e[0] == "sent" else e[:1] for e in events]
    # the file's push answered, the next push sent, then the file (once), before anything else
    assert order.index(("sent", sent[2])) < order.index(("sent", sent[3])) < order.index(("files",))
    assert order.count(("files",)) == 1 and [e[1] for e in events if e[0] == "files"] == [len(files)]
    monkeypatch.undo()
    _files_arrived(net, with_file, files)


def test_a_parent_that_does_not_answer_about_files_in_a_push_is_asked_in_turn(net, agent, monkeypatch):
    village = net.village()
    with_file, files = _backlog_with_a_file(village, agent)
    events = _watch(monkeypatch, village)
    pushing = client_module.ParentClient.push_stored
    asked = []

    def older_parent(self, documents, **kwargs):
        answer = dict(pushing(self, documents, **kwargs))
        answer.pop("blobs", None)  # an older township ignores ``blobs`` in a push
        return answer

    def blob_status(self, shas):
        asked.append(list(shas))
        return real_status(self, shas)

    real_status = client_module.ParentClient.blob_status
    monkeypatch.setattr(client_module.ParentClient, "push_stored", older_parent)
    monkeypatch.setattr(client_module.ParentClient, "blob_status", blob_status)
    summary = node_sync.run_round(village.conn, village.node, SyncState(), force=True)
    assert summary["pushed"] == 18 and len(asked) == 1 and len(asked[0]) == len(files)
    assert [e[1] for e in events if e[0] == "files"] == [len(files)]
    monkeypatch.undo()
    _files_arrived(net, with_file, files)


def test_with_push_ahead_off_each_answer_is_applied_before_the_next_push(net, agent, monkeypatch):
    village = net.village()
    village.app.config["SYNC_PUSH_AHEAD"] = False
    _backlog(village, agent, 12)
    events = _watch(monkeypatch, village)
    drain(village.conn, village.node, SyncState(), force=True)
    order = [e[0] for e in events]
    assert order == ["sent", "answered", "applying", "applied"] * 3
