"""`liandong sim` on a small county: nothing lost, duplicated or wrongly accepted under faults.

Each run is the real thing at a small size: a hub and two townships as `liandong node serve`
processes (one township and the hub killed with SIGKILL and restarted, one township offline
for a stretch), six villages syncing through a fault-injecting link, a forged, a replayed and
a revoked sender. The last test proves the count would notice a case that never arrives.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from provisioning.cli import main
from provisioning.sim.county import SimConfig
from provisioning.sim.loop import run_sim
from provisioning.sim.report import failed


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
