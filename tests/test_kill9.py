"""kill -9 during sync (issue 3, "how it will be checked"): nothing lost, nothing duplicated.

The hub, the township and the village each run as a real ``liandong node serve`` process with
its own scheduler syncing every 0.2 s. Cases (with material files) are created at the village
over HTTP while a seeded killer sends SIGKILL to a random node at random moments and restarts
it. Then the network is left to reach quiescence, and every invariant is checked on the
SQLite files themselves.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import requests
from faults import NodeProcess, city_item, material_files, open_readonly, sha256
from network import case_payload

from sync import envelope


class CaseMaker(threading.Thread):
    """Creates cases at the village over HTTP until stopped; keeps the receipts it got."""

    def __init__(self, village, token: str, item: dict, seed: int, materials: bool):
        super().__init__(daemon=True)
        self.village, self.token, self.item, self.materials = village, token, item, materials
        self.rng = random.Random(seed)
        self.receipts: list[dict] = []
        self.failures = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            n += 1
            payload = case_payload(self.item, material_files(self.item, f"kill9-{n}") if self.materials else ())
            try:
                response = requests.post(self.village.url + "/api/v1/cases", json=payload, timeout=3,
                                         headers={"Authorization": f"Bearer {self.token}"})
            except requests.RequestException:
                self.failures += 1
                time.sleep(0.05)
                continue
            if response.status_code == 201:
                self.receipts.append(response.json())
            else:
                assert response.status_code >= 500, response.text  # never a client error for a valid case
                self.failures += 1
            time.sleep(self.rng.uniform(0.02, 0.15))


def _state(hub, township, village) -> dict:
    with open_readonly(village) as v, open_readonly(township) as t, open_readonly(hub) as h:
        return {
            "village_outbox": dict(v.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()),
            "custody": t.execute("SELECT COUNT(*) FROM custody").fetchone()[0],
            "township_to_follow": t.execute("SELECT COUNT(*) FROM follow_queue").fetchone()[0],
            "hub_inbox": h.execute("SELECT COUNT(*) FROM inbox").fetchone()[0],
            "hub_blobs_pending": h.execute("SELECT COUNT(*) FROM inbox WHERE blobs_pending > 0").fetchone()[0],
            "hub_held": h.execute("SELECT COUNT(*) FROM held").fetchone()[0],
            "hub_to_apply": h.execute("SELECT COUNT(*) FROM apply_queue").fetchone()[0],
            "hub_quarantine": [tuple(r) for r in h.execute("SELECT origin, seq, reason, detail FROM quarantine")],
            "hub_waiting_for": [(r[0], r[1], r[2], hub.node.blobs.has(r[2])) for r in h.execute(
                "SELECT origin, seq, sha256 FROM inbox_blobs ORDER BY origin, seq")],
        }


def _quiet(state: dict) -> bool:
    return (set(state["village_outbox"]) == {"acked"} and state["custody"] == 0 and state["hub_blobs_pending"] == 0
            and state["hub_to_apply"] == 0 and state["township_to_follow"] == 0)


def _wait_for_quiescence(hub, township, village, procs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(hub, township, village)
        if _quiet(state):
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.handle.node_id}\n{p.log_tail()}" for p in procs.values())
    raise AssertionError(f"no quiescence within {timeout}s: {state}\n{logs}")


def run_kill9(build_network, seed: int, kills: int, materials: bool, township_env: dict | None = None) -> None:
    net = build_network(villages=1)
    hub, township, village = net.hub, net.township, net.village()
    token = village.account("agent", "agent")
    item = city_item(village, token)
    procs = {}
    for handle in (hub, township, village):
        handle.close()  # the in-process server leaves; the real process takes its port
        procs[handle.node_id] = NodeProcess(handle, sync_interval=0.4,
                                            extra_env=township_env if handle is township else None)
    maker = None
    try:
        for proc in procs.values():
            proc.start()
        rng = random.Random(seed)
        maker = CaseMaker(village, token, item, seed, materials)
        maker.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.5))
            victim = procs[rng.choice([hub.node_id, township.node_id, village.node_id, township.node_id])]
            victim.kill()
            time.sleep(rng.uniform(0.0, 0.2))  # the others keep trying meanwhile
            victim.start()
        maker.stopped.set()
        maker.join(timeout=10)
        assert sum(p.kills for p in procs.values()) == kills
        assert len(maker.receipts) >= kills  # cases really were being made throughout
        _wait_for_quiescence(hub, township, village, procs, 15)
    finally:
        if maker is not None:
            maker.stopped.set()
        for proc in procs.values():
            proc.stop()

    with open_readonly(village) as v, open_readonly(township) as t, open_readonly(hub) as h:
        for conn in (v, t, h):
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        village_cases = {r[0] for r in v.execute("SELECT case_id FROM cases")}
        # Every receipt handed to an agent names a case that exists (a kill never loses one).
        assert {r["case_id"] for r in maker.receipts} <= village_cases
        outbox = {r["seq"]: (r["envelope_id"], r["state"]) for r in v.execute(
            "SELECT seq, envelope_id, state FROM outbox")}
        assert sorted(outbox) == list(range(1, len(outbox) + 1))
        assert {state for _, state in outbox.values()} == {"acked"}

        # The hub holds exactly the village's chain: same ids, each once, nothing held or quarantined.
        inbox = {r["seq"]: r["envelope_id"] for r in h.execute(
            "SELECT seq, envelope_id FROM inbox WHERE origin = ?", (village.node_id,))}
        assert inbox == {seq: eid for seq, (eid, _) in outbox.items()}
        assert h.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] == len(outbox)
        assert h.execute("SELECT COUNT(*) FROM held").fetchone()[0] == 0
        assert [tuple(r) for r in h.execute("SELECT origin, seq, reason FROM quarantine")] == []
        assert h.execute("SELECT acked_seq FROM origin_heads WHERE origin = ?",
                         (village.node_id,)).fetchone()[0] == len(outbox)

        # Every case exactly once at the hub, and no case the village does not have.
        hub_cases = [r[0] for r in h.execute("SELECT case_id FROM cases WHERE origin = ?", (village.node_id,))]
        assert sorted(hub_cases) == sorted(village_cases)
        assert t.execute("SELECT COUNT(*) FROM custody").fetchone()[0] == 0
        # The station followed every case exactly once, each at the hub by now.
        township_cases = [tuple(r) for r in t.execute("SELECT case_id, sync_state FROM cases WHERE origin = ?",
                                                       (village.node_id,))]
        assert sorted(township_cases) == sorted((case_id, "acked") for case_id in village_cases)

        # Every material file reached the hub whole (a torn chunk never counts).
        wanted = set()
        for (document,) in v.execute("SELECT document FROM outbox"):
            wanted |= {a["sha256"] for a in envelope.peek(envelope.from_bytes(document))["attachments"]}
    assert bool(wanted) == materials
    for sha in wanted:
        assert hub.node.blobs.has(sha)
        assert sha256(hub.node.blobs.read(sha)) == sha


def test_kill9_a_few_times(build_network):
    run_kill9(build_network, seed=7, kills=5, materials=False)


def test_kill9_with_every_push_followed_from_the_queue(build_network):
    """The township answers every push once in custody and follows it afterwards from its queue
    (FOLLOW_INLINE_MAX_ENVELOPES 0): a kill between the two loses no case from its register."""
    run_kill9(build_network, seed=11, kills=5, materials=False,
              township_env={"LIANDONG_FOLLOW_INLINE_MAX_ENVELOPES": "0", "LIANDONG_FOLLOW_QUIET_SECONDS": "0.3"})


@pytest.mark.slow
def test_kill9_many_times(build_network):
    run_kill9(build_network, seed=2, kills=15, materials=False)


@pytest.mark.slow
def test_kill9_with_material_files(build_network):
    run_kill9(build_network, seed=3, kills=6, materials=True)
