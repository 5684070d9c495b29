"""Build the zstd dictionary sync bodies are compressed with (``zstd-ld1``, sync/wire.py).

Samples are the project's own sync traffic: a hub and a township served on loopback, one
village in this process (``benchmarks/common.Network``), cases of every item a village takes
(the benchmarks' realistic applicants and forms), synced one at a time and in small batches
through the nodes' own clients. Every request body and answer body (decoded) is a sample: the
pushes (envelopes v2, their pulls), the answers (custody receipts, hub acks, downlink, the
pull inside the push), the separate pulls. Applicant data is synthetic. Then
``zstandard.train_dictionary`` (fixed size and level) writes ``sync/wire-1.zdict``.

A dictionary is part of the protocol: one a peer decodes with must be byte for byte the one
the sender used, so a new one is a new coding name (``zstd-ld2``), never a replaced file.

    .venv/bin/python tools/wire_dictionary.py --out /tmp/wire.zdict
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard  # noqa: E402

from benchmarks import common  # noqa: E402
from shared.services.intake import submit  # noqa: E402
from sync import wire  # noqa: E402
from sync.node_sync import SyncState, run_round  # noqa: E402
from sync.transport import Transport  # noqa: E402

DICT_BYTES = 16 * 1024


class Sampling(Transport):
    """The client's transport, keeping each request body and answer body decoded."""

    def __init__(self, samples: list[bytes]):
        super().__init__()
        self.samples = samples

    def exchanged(self, method, url, headers, body, sent, response):
        coding = headers.get("Content-Encoding")
        if body and "blobs" not in url:
            self.samples.append(wire.decode(body, coding, 1 << 26) if coding else body)
        if response.content:
            self.samples.append(response.content)


def collect(cases: int) -> list[bytes]:
    samples: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix="ld-wire-dict-") as tmp:
        net = common.Network(Path(tmp))
        try:
            net.settle()
            session = Sampling(samples)
            items = common.village_items()
            # Applicants numbered apart from the benchmarks' (bench_wire's cases are 0 to 1,000).
            i = start = 5000
            while i < start + cases:
                batch = 1 if i % 7 else 3  # mostly one case alone, some small batches
                for _ in range(batch):
                    item = items[i % len(items)]
                    submit(net.village_conn, net.village, common.api_payload(item, i), [], agent="agent")
                    i += 1
                for node, conn in ((net.village, net.village_conn), (net.township, net.township_conn),
                                   (net.village, net.village_conn)):
                    run_round(conn, node, SyncState(), client=common.client_with(node, session), force=True)
        finally:
            net.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "sync" / "wire-1.zdict")
    args = parser.parse_args()
    samples = collect(args.cases)
    trained = zstandard.train_dictionary(DICT_BYTES, samples, level=wire.ZSTD_LEVEL, threads=1)
    args.out.write_bytes(trained.as_bytes())
    print(f"{len(samples)} samples, {sum(map(len, samples))} bytes -> {args.out} ({len(trained.as_bytes())} bytes,"
          f" dict id {trained.dict_id()})")


if __name__ == "__main__":
    main()
