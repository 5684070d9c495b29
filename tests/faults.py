"""Helpers for the fault and security tests: the CLI as a user runs it, materials, decisions.

Everything here drives real code: ``liandong`` through click's runner on
:func:`provisioning.cli.main`, the real HTTP API of the nodes of a :class:`network.Network`,
and real signatures (a forged document is signed by a real key, just not the right one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from click.testing import CliRunner
from network import Network, NodeHandle, catalog, create_case, pick_item

from provisioning.cli import main
from shared import canonical
from shared.crypto import SigningKey
from sync import envelope


def cli(*args: str, ok: bool = True):
    """Run ``liandong <args>``; with ``ok`` assert it succeeded. Returns click's result."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def last_json(output: str) -> dict:
    """The JSON object a CLI command printed on its last line."""
    return json.loads(output.strip().splitlines()[-1])


def city_item(handle: NodeHandle, token: str) -> dict:
    """An item the hub decides that a village may take, as the village's catalog shows it."""
    return pick_item(catalog(handle, token), "city")


def material_files(item: dict, tag: str) -> list[tuple[str, str, bytes]]:
    """One distinct file per required material of ``item`` (content depends on ``tag``)."""
    return [
        (m["code"], f"{m['code']}.pdf", f"%PDF-1.4 {tag} {m['code']} ".encode() + os.urandom(64))
        for m in item["materials"] if m.get("required")
    ]


def new_case(handle: NodeHandle, token: str, item: dict, tag: str = "") -> tuple[dict, list]:
    """A case with every required material, created through the node's API; (receipt, files)."""
    files = material_files(item, tag or os.urandom(4).hex())
    return create_case(handle, token, item, files), files


def decide(net: Network, case_id: str, office: str, actions=("accept", "approve")) -> None:
    """A hub window account of the deciding office applies ``actions`` over HTTP."""
    token = net.hub.account(f"win-{office}", "window", office=office)
    for action in actions:
        response = net.hub.api("POST", f"/api/v1/cases/{case_id}/actions", token, json={"action": action})
        assert response.status_code == 200, response.text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_signed(path: Path) -> dict:
    """A signed document stored in a file (bundle)."""
    return canonical.loads(Path(path).read_bytes(), max_bytes=1 << 30)


def resign(document: dict, key: SigningKey, **changes) -> dict:
    """The document's body with ``changes``, signed again by ``key`` (a real, but wrong, signer)."""
    body = canonical.loads(base64.b64decode(document["payload"]), max_bytes=1 << 30)
    return envelope.sign(key, document["payloadType"], {**body, **changes})


def write_signed(path: Path, document: dict) -> Path:
    Path(path).write_bytes(canonical.dumps(document))
    return Path(path)


def outbox_states(handle: NodeHandle) -> dict[int, str]:
    """seq -> state of a node's outbox."""
    return {r["seq"]: r["state"] for r in handle.query("SELECT seq, state FROM outbox ORDER BY seq")}


def village_cases(handle: NodeHandle) -> dict[str, dict]:
    """case_id -> row (as dict) of the cases a node holds."""
    return {r["case_id"]: dict(r) for r in handle.query("SELECT * FROM cases")}
