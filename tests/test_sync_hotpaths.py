"""The sync path without per-item or quadratic work (issue 12, points 1 and 4): each shortcut
gives exactly what the long way gave, and the guarantees (nothing lost or duplicated, order per
origin, kill -9 safety) hold."""

from __future__ import annotations

from shared.core.crypto import SigningKey
from sync import envelope
from sync.client import ParentClient


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
