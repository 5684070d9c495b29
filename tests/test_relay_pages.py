"""村级报件 (the township's list of its villages' applications): newest first across villages,
paged without overlap or gaps, and filtered by village (the list query reads only its page's
rows; its speed is measured by benchmarks/bench_pages.py)."""

from __future__ import annotations

import re

from network import catalog, create_case, pick_item
from network_session import session_for

from township_node import relay_pages


def _receipts(page: str) -> list[str]:
    return re.findall(r'<a href="/cases/[0-9a-f]+">([^<]+)</a>', page)


def test_village_cases_pages_newest_first_across_villages(build_network, monkeypatch):
    net = build_network(villages=2)
    township = net.township
    township.account("clerk", "clerk", township.node_id)
    made: dict[str, str] = {}
    for _ in range(3):
        for village in (net.village(0), net.village(1)):
            agent = village.account("agent", "agent")
            item = pick_item(catalog(village, agent), "city")
            made[create_case(village, agent, item)["receipt_no"]] = village.node_id
    for village in (net.village(0), net.village(1)):
        assert "error" not in village.sync()
    submitted = dict(township.query("SELECT receipt_no, submitted_at FROM cases"))
    assert set(made) <= set(submitted)

    monkeypatch.setattr(relay_pages, "LIST_PAGE", 4)
    clerk = session_for(township, "clerk")
    first = clerk.get(f"{township.url}/relay/cases").text
    second = clerk.get(f"{township.url}/relay/cases?page=2").text
    assert "共 6 件" in first
    listed = _receipts(first) + _receipts(second)
    assert len(_receipts(first)) == 4 and sorted(listed) == sorted(made)  # every case once, none twice
    times = [submitted[r] for r in listed]
    assert times == sorted(times, reverse=True)

    one = net.village(1).node_id
    only = _receipts(clerk.get(f"{township.url}/relay/cases", params={"village": one}).text)
    assert sorted(only) == sorted(r for r, v in made.items() if v == one)

