"""Wire codec throughput: AppendEntries with N entries of S-byte data, encode + decode.

    .venv/bin/python benchmarks/bench_codec.py [--entries 64] [--size 100] [--seconds 2]

Prints msgs/s and entries/s for encode, decode and the round trip (encode_message, then
FrameDecoder.feed + decode_message, as the runtime does), a heartbeat round trip, and two
baselines for comparison: the same message through json (data base64-encoded) and through
msgpack with a plain ``Entry(*fields)`` per entry and no validation on decode.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # noqa: E402 - after sys.path points at the repo

from raftd.core.messages import AppendEntries  # noqa: E402 - after sys.path points at the repo
from raftd.core.types import Entry  # noqa: E402 - after sys.path points at the repo
from raftd.wire import FrameDecoder, decode_message, encode_message  # noqa: E402 - after sys.path points at the repo


def rate(fn, seconds: float) -> float:
    """Calls per second of ``fn``: best of 5 runs of ~seconds/5 (best-of filters out
    interference from other processes on a shared machine)."""
    n = 1
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.05:
            break
        n *= 2
    per_run = max(1, int(n * (seconds / 5) / dt))
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_run):
            fn()
        best = max(best, per_run / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=64)
    ap.add_argument("--size", type=int, default=100, help="bytes of data per entry")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()
    n = args.entries

    entries = tuple(Entry(7, 1000 + i, 0, os.urandom(args.size)) for i in range(n))
    msg = AppendEntries("node-1", "node-2", 7, 999, 7, entries, 998, 42)
    heartbeat = AppendEntries("node-1", "node-2", 7, 1063, 7, (), 1063, 43)
    frame = encode_message(msg)
    decoder = FrameDecoder()
    [(ftype, body)] = decoder.feed(frame)
    assert decode_message(ftype, body) == msg

    def encode() -> None:
        encode_message(msg)

    def decode() -> None:
        for t, b in decoder.feed(frame):
            decode_message(t, b)

    def round_trip() -> None:
        for t, b in decoder.feed(encode_message(msg)):
            decode_message(t, b)

    def hb_round_trip() -> None:
        for t, b in decoder.feed(encode_message(heartbeat)):
            decode_message(t, b)

    # Baseline 1: json, bytes as base64 (what the protocol would look like without msgpack).
    def json_round_trip() -> None:
        s = json.dumps([msg.src, msg.dst, msg.term, msg.prev_log_index, msg.prev_log_term,
                        [[e.term, e.index, e.kind, base64.b64encode(e.data).decode()]
                         for e in msg.entries], msg.leader_commit, msg.seq]).encode()
        v = json.loads(s)
        v[5] = tuple([Entry(t, i, k, base64.b64decode(d)) for t, i, k, d in v[5]])
        AppendEntries(*v)

    # Baseline 2: msgpack, but constructing each Entry through its dataclass __init__.
    def naive_round_trip() -> None:
        b = msgpack.packb([msg.src, msg.dst, msg.term, msg.prev_log_index, msg.prev_log_term,
                           msg.entries, msg.leader_commit, msg.seq], use_bin_type=True)
        v = msgpack.unpackb(b, raw=False)
        v[5] = tuple([Entry(*e) for e in v[5]])
        AppendEntries(*v)

    print(f"AppendEntries: {n} entries x {args.size} B data, frame {len(frame)} B;"
          f" python {sys.version.split()[0]}, msgpack {'.'.join(map(str, msgpack.version))}")
    rows = [
        ("encode", encode, n),
        ("decode (feed + decode_message)", decode, n),
        ("encode + decode", round_trip, n),
        ("heartbeat encode + decode", hb_round_trip, 0),
        ("baseline: json + base64 round trip", json_round_trip, n),
        ("baseline: msgpack, Entry(*e) decode", naive_round_trip, n),
    ]
    for label, fn, per_msg in rows:
        r = rate(fn, args.seconds)
        extra = f"  {r * per_msg:>12,.0f} entries/s" if per_msg else ""
        print(f"  {label:38s} {r:>10,.0f} msgs/s{extra}")


if __name__ == "__main__":
    main()
