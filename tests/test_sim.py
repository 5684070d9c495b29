"""`liandong sim` on a small county: nothing lost, duplicated or wrongly accepted under faults.

Each run is the real thing at a small size: a hub and two townships as `liandong node serve`
processes (one township and the hub killed with SIGKILL and restarted, one township offline
for a stretch), six villages syncing through a fault-injecting link, a forged, a replayed and
a revoked sender. The last test proves the count would notice a case that never arrives.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from provisioning import nodes
from provisioning.cli import main
from provisioning.sim.county import VILLAGE_CACHE_KIB, SharedTrustVillage, SimConfig
from provisioning.sim.loop import Simulation, run_sim
from provisioning.sim.processes import NodeProcess, free_port
from provisioning.sim.report import failed
from provisioning.tiers import TIERS


def small(seed: int, **overrides) -> SimConfig:
    values = dict(townships=2, villages=6, cases=40, seed=seed, rate=12.0, offline_every=8.0, offline_seconds=2.5,
                  kill_every=4.0, quiesce_seconds=40.0, progress_every=1000.0)
    values.update(overrides)
    return SimConfig(**values)


@pytest.mark.parametrize("seed", [1, 2])
def test_small_county_survives_faults(seed):
    lines: list[str] = []
    summary = run_sim(small(seed), lines.append)

    assert summary["quiescent"], (summary, lines[-15:])
    assert summary["errors"] == [], summary
    assert summary["lost"] == 0 and summary["duplicated"] == 0, summary
    assert summary["cases_at_hub"] == summary["cases_created"] - summary["revoked_created"]
    # Every decision went back to the village that took the application (the revoked one cannot pull).
    assert summary["decisions_missing"] == 0 and summary["undecided"] == 0
    assert summary["decisions_returned"] > 0
    # The attacks happened and were all refused.
    assert summary["forged_sent"] >= 2 and summary["forged_accepted"] == 0
    assert summary["replayed_sent"] >= 2 and summary["replayed_accepted"] == 0
    assert summary["revoked_created"] >= 2 and summary["revoked_accepted"] == 0, summary
    assert summary["hub_quarantine"].get("bad_signature", 0) >= 1
    # The skewed clocks' cases were taken (the hub only refuses to trust their timestamps).
    assert summary["skewed_cases_created"] > 0
    assert summary["skewed_cases_at_hub"] == summary["skewed_cases_created"]
    # The faults really happened.
    faults = summary["faults"]
    assert faults.get("township.sigkill", 0) >= 1 and faults.get("hub.sigkill") == 1
    assert faults.get("township.offline", 0) >= 1
    assert sum(n for k, n in faults.items() if k.startswith("link.")) > 0
    assert summary["ok"] and not failed(summary)


def test_sim_fails_when_an_envelope_is_lost(tmp_path):
    """A village that drops an unsent envelope (a fault nothing can repair) makes the run fail."""
    result = CliRunner().invoke(main, [
        "sim", "--townships", "1", "--villages", "2", "--cases", "8", "--seed", "3", "--no-faults",
        "--quiesce-seconds", "4", "--sabotage-outbox", "--data", str(tmp_path / "county"),
    ])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["lost"] == 1 and not summary["ok"]
    assert summary["cases_at_hub"] == summary["cases_created"] - 1
    assert "SABOTAGE" in result.output


def test_throughput_run_counts_every_case_and_keeps_the_simulator_small(tmp_path, monkeypatch):
    """`--throughput` on a tiny county: cases in a closed loop for a few seconds, every one at the
    hub once, the figures reported; and the simulator's memory guards hold."""
    config = SimConfig(townships=1, villages=3, seed=4, faults=False, kill_hub=False, throughput=True,
                       seconds=4.0, window=2, workers=2, quiesce_seconds=40.0, progress_every=1000.0)
    lines: list[str] = []
    opened: list[int] = []
    open_db = nodes.open_db

    def spy(data_dir, tier=None, cached_statements=128):
        if tier == "village":
            opened.append(cached_statements)
        return open_db(data_dir, tier, cached_statements)

    monkeypatch.setattr(nodes, "open_db", spy)
    sim = Simulation(config, lines.append)
    try:
        sim.build(tmp_path / "county")
        summary = sim.run_throughput()
        villages = list(sim.villages.values())
        # One trust store for every village on the same registry version, not one each.
        stores = {id(v.node.trust(v.conn)) for v in villages}
        assert len(stores) == 1
        # ... also when they all load it at the same moment.
        for v in villages:
            v.node.forget_trust()
        sim.village_tier._stores.clear()
        start = threading.Barrier(len(villages))
        loaded: list[int] = []

        def load(village):
            start.wait()
            loaded.append(id(village.node.trust(village.conn)))

        threads = [threading.Thread(target=load, args=(v,)) for v in villages]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(loaded) == len(villages) and len(set(loaded)) == 1
        # Each village's SQLite page cache is capped (the default 2 MiB each was most of the memory).
        assert {v.conn.execute("PRAGMA cache_size").fetchone()[0] for v in villages} == {-VILLAGE_CACHE_KIB}
        # ... and keeps no prepared statements (sqlite3 keeps 128 a connection).
        assert opened and set(opened) == {0}
        # Villages hang up after a round: no connection held open to the township.
        assert all(v.client.session.open_connections() == 0 for v in villages)
    finally:
        sim.close()
    assert summary["quiescent"] and summary["errors"] == [], (summary, lines[-10:])
    assert summary["lost"] == 0 and summary["duplicated"] == 0, summary
    assert summary["cases_created"] > 0 and summary["cases_at_hub"] == summary["cases_created"]
    assert summary["hub_cases_per_second"] > 0
    assert summary["latency_to_hub_ms"]["n"] == summary["cases_created"]
    assert summary["latency_acknowledged_ms"]["n"] == summary["cases_created"]
    assert summary["latency_to_hub_ms"]["p50"] <= summary["latency_to_hub_ms"]["p95"]
    assert summary["peak_rss_mib"]["sim"] > 0 and summary["peak_rss_mib"]["hub"] > 0
    assert set(summary["cpu_seconds"]) == {"sim", "hub", *sim.townships}
    assert len(summary["load_average"]["before"]) == 3
    assert not failed(summary)


def test_throughput_options_are_checked_before_anything_runs(monkeypatch):
    runs: list[SimConfig] = []
    arenas: list[bool] = []
    monkeypatch.setattr("provisioning.sim.cli.run_sim", lambda config, echo: runs.append(config) or {"ok": True})
    monkeypatch.setattr("provisioning.sim.cli.limit_malloc_arenas", lambda: arenas.append(True))
    runner = CliRunner()
    for args, wrong in ((["--cases", "5"], "--cases"), (["--faults"], "--faults"), (["--kill-every", "3"], "--kill-every"),
                        (["--rate", "4"], "--rate"), (["--clock-start", "2027-03-01T00:00:00Z"], "--clock-start")):
        result = runner.invoke(main, ["sim", "--throughput", *args])
        assert result.exit_code == 2 and wrong in result.output and "Traceback" not in result.output, result.output
    result = runner.invoke(main, ["sim", "--window", "3"])
    assert result.exit_code == 2 and "--window: only with --throughput" in result.output
    result = runner.invoke(main, ["sim", "--throughput", "--window", "0"])
    assert result.exit_code == 2 and "--window" in result.output
    assert runs == [] and arenas == []
    result = runner.invoke(main, ["sim", "--throughput", "--no-faults", "--villages", "1012", "--seconds", "90",
                                  "--window", "3", "--workers", "8"])
    assert result.exit_code == 0, result.output
    (config,) = runs
    assert config.throughput and not config.faults and not config.kill_hub
    assert (config.villages, config.seconds, config.window, config.workers) == (1012, 90.0, 3, 8)
    assert arenas == [True]  # malloc arenas capped before the simulator's threads start
    # Defaults: the throughput run's villages are the load (more threads, a window of 8); the
    # fault run keeps its own.
    assert runner.invoke(main, ["sim", "--throughput"]).exit_code == 0
    assert runner.invoke(main, ["sim", "--no-kill-hub"]).exit_code == 0
    assert [(c.throughput, c.workers, c.window) for c in runs[1:]] == [(True, 16, 8), (False, 6, 8)]


def test_sim_says_plainly_when_a_node_does_not_start(monkeypatch):
    def broken(config, echo):
        raise RuntimeError("130926 did not come up on http://127.0.0.1:1")

    monkeypatch.setattr("provisioning.sim.cli.run_sim", broken)
    result = CliRunner().invoke(main, ["sim", "--throughput", "--villages", "3", "--townships", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the simulation stopped: 130926 did not come up" in result.output


def test_a_node_process_is_up_only_when_its_own_node_answers(tmp_path):
    """On a shared machine another process can take the port free_port() found before the node
    binds it: the other server's health answer must not count as the node being up."""
    port = free_port()
    squatter = make_server("127.0.0.1", port, lambda environ, start_response: Response(
        '{"status": "ok", "node_id": "130927"}', content_type="application/json")(environ, start_response))
    thread = threading.Thread(target=squatter.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "node").mkdir()
    proc = NodeProcess("130926", tmp_path / "node", port, dict(os.environ))
    try:
        with pytest.raises(RuntimeError, match="130926 exited"):
            proc.start(wait=30)
    finally:
        proc.close()
        squatter.shutdown()
        thread.join(timeout=5)


def test_villages_keep_sharing_the_current_trust_store_while_others_catch_up(monkeypatch):
    """Villages still behind load old registry versions in their first round; the current
    version's store stays shared meanwhile (least recently used goes first, not oldest built)."""
    tier = SharedTrustVillage()
    built: list[str] = []
    monkeypatch.setattr(type(TIERS["village"]), "load_trust", lambda self, conn, node: built.append(conn) or object())
    monkeypatch.setattr(tier, "trust_version", lambda conn: conn)  # the "connection" names its version here
    current = tier.load_trust("registry:64,root:1", None)
    for old in range(40, 60):
        tier.load_trust(f"registry:{old},root:1", None)
        assert tier.load_trust("registry:64,root:1", None) is current
    assert built.count("registry:64,root:1") == 1
    assert len(tier._stores) <= 8
