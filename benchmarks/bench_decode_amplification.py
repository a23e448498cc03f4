"""Decode amplification (issue 19 §9): a 16 MiB client request holding 16.7 million empty
msgpack arrays.  Prints the time and peak memory the server's request decoding spends on it,
and on an ordinary put for comparison.

    python benchmarks/bench_decode_amplification.py [--unchecked]
"""
from __future__ import annotations

import resource
import struct
import time

import sys

from raftd.wire.codec import UndecodableBody, decode_body, decode_request, encode_client_request
from raftd.wire.framing import HEADER_SIZE


def hostile(size: int = 16 * 1024 * 1024 - 64) -> bytes:
    n = size - 16
    # {"op": [[], [], ... n empty arrays]}
    return b"\x81\xa2op\xdd" + struct.pack(">I", n) + b"\x90" * n


def measure(name: str, body: bytes, decode=decode_request) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        decode(body)
        outcome = "decoded"
    except UndecodableBody as e:
        outcome = f"refused ({e})"
    dt = time.perf_counter() - t0
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"{name}: {len(body)} bytes, {dt * 1000:.2f} ms, peak RSS +{grew / 1024:.0f} MB, "
          f"{outcome}")


if __name__ == "__main__":
    put = encode_client_request({"id": 1, "op": "put", "key": "k", "value": b"v" * 100,
                                 "client_id": "c", "seq": 1})[HEADER_SIZE:]
    measure("put", put)
    measure("16 MiB of empty arrays", hostile())
    if "--unchecked" in sys.argv:  # what the server did before the check (slow, ~1.2 GB)
        measure("16 MiB of empty arrays, unchecked decode", hostile(), decode_body)
