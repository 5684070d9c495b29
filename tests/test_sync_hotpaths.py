"""The sync path without per-item or quadratic work (issue 12, points 1 and 4): each shortcut
gives exactly what the long way gave, and the guarantees (nothing lost or duplicated, order per
origin, kill -9 safety) hold."""

from __future__ import annotations

from faults import city_item, material_files
from network import create_case

from shared.core import canonical
from shared.core.crypto import SigningKey
from sync import envelope, trust
from sync.client import ParentClient
from township_node.relay_service import TownshipSync


def _documents(key: SigningKey, n: int) -> list[dict]:
    return [envelope.sign(key, envelope.ENVELOPE, {"v": 1, "origin": "130926100201", "seq": i, "kind": "case.submit",
                                                   "body": {"申请人": "王建国", "form": {"地址": "东关村三街12号"}, "n": i},
                                                   "attachments": []})
            for i in range(1, n + 1)]


def test_a_push_joined_from_stored_bytes_sends_the_bytes_of_the_parsed_push(monkeypatch):
    key = SigningKey.generate()
    sent = []
    monkeypatch.setattr(ParentClient, "_call", lambda self, method, path, body, *a, **k: sent.append((path, body)) or {})
    client = ParentClient("http://127.0.0.1:9", "130926100", "130926100201", key, nonces=None)
    for n in (0, 1, 3):
        docs = _documents(key, n)
        for compact in (False, True):
            sent.clear()
            client.push(docs, compact=compact)
            client.push_stored([envelope.to_bytes(d) for d in docs], compact=compact)
            assert sent[0] == sent[1], (n, compact)


def test_a_township_push_parses_each_envelope_once_and_reads_its_catalog_once(build_network, monkeypatch):
    net = build_network(villages=1)
    village, township = net.village(), net.township
    agent = village.account("agent", "agent")
    item = city_item(village, agent)
    for tag in "abc":
        create_case(village, agent, item, material_files(item, tag))
    counts = {"active": False, "payloads": 0, "catalogs": 0}
    real_loads, real_catalog, real_push = canonical.loads_canonical, trust.trusted_catalog, TownshipSync.push

    def loads_canonical(data, *args, **kwargs):
        counts["payloads"] += counts["active"]
        return real_loads(data, *args, **kwargs)

    def trusted_catalog(conn):
        counts["catalogs"] += counts["active"]
        return real_catalog(conn)

    def push(self, *args, **kwargs):
        counts["active"] = True
        try:
            return real_push(self, *args, **kwargs)
        finally:
            counts["active"] = False

    monkeypatch.setattr(canonical, "loads_canonical", loads_canonical)
    monkeypatch.setattr(trust, "trusted_catalog", trusted_catalog)
    monkeypatch.setattr(TownshipSync, "push", push)
    assert "error" not in village.sync()
    assert township.scalar("SELECT COUNT(*) FROM custody") == 3
    assert township.scalar("SELECT COUNT(*) FROM cases") == 3  # every case followed
    assert counts["payloads"] == 3  # custody's parse only: following them parsed each again
    assert counts["catalogs"] == 1  # once per push, not once per case
