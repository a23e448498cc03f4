"""Resident memory of each raftd with N keys (issue 8): a fresh local 3-node cluster, N distinct
keys of 100 bytes written with 1,024 in flight, then VmRSS of every node.

    python benchmarks/bench_rss.py --keys 1000000
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cluster import rss_mb, start  # noqa: E402 - after sys.path points at the repo
from raftctl.commands.local import bring_down  # noqa: E402 - after sys.path points at the repo
from raftd.client import AsyncClient  # noqa: E402 - after sys.path points at the repo


async def fill(eps: list[str], n: int, inflight: int) -> float:
    value = b"v" * 100
    t0 = time.monotonic()
    async with AsyncClient(eps, timeout=30) as c:
        it = iter(range(n))

        async def worker() -> None:
            for i in it:
                await c.put(f"key/{i:08d}", value)

        await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--inflight", type=int, default=1024)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftd-rss-") as tmp:
        layout, eps = start(Path(tmp), 3, {})
        try:
            secs = asyncio.run(fill(eps, a.keys, a.inflight))
            time.sleep(2)
            print(json.dumps({"keys": a.keys, "fill_s": round(secs, 1),
                              "writes_per_s": round(a.keys / secs),
                              "rss_mb": {n["id"]: rss_mb(n["pid"]) for n in layout}}))
        finally:
            bring_down(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
