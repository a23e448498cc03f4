"""save() throughput of DurableLog: entries/s and fsyncs/s for batches of 1, 64 and 512 entries.

    .venv/bin/python benchmarks/bench_wal.py [--dir DIR] [--seconds S] [--no-fsync]

Each batch size runs in a fresh log for about --seconds. Put --dir on the disk you care about: on tmpfs
fsync costs nothing and the numbers only measure encoding.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from raftd.core.types import Entry, HardState
from raftd.storage import DurableLog


def run(directory: str, batch: int, seconds: float, fsync: bool) -> dict:
    log = DurableLog.open(directory, fsync=fsync)
    data, nxt, saves = os.urandom(100), 1, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        log.save(HardState(1, "n1") if saves == 0 else None, [Entry(1, i, data=data) for i in range(nxt, nxt + batch)])
        nxt += batch
        saves += 1
    stats = dict(log.stats)
    log.close()
    return {"batch": batch, "saves": saves, "entries/s": (nxt - 1) / elapsed,
            "fsyncs/s": stats["fsyncs"] / elapsed, "MB/s": stats["bytes_written"] / elapsed / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="parent directory for the temporary logs")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration per batch size")
    parser.add_argument("--no-fsync", action="store_true", help="skip fdatasync (measures encoding only)")
    args = parser.parse_args()
    rows = []
    for batch in (1, 64, 512):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rows.append(run(os.path.join(tmp, "wal"), batch, args.seconds, not args.no_fsync))
    print(f"fsync={'off' if args.no_fsync else 'on'}  dir={args.dir or tempfile.gettempdir()}  data=100 B/entry")
    print(f"{'batch':>6} {'saves':>8} {'entries/s':>12} {'fsyncs/s':>10} {'MB/s':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['saves']:>8} {r['entries/s']:>12,.0f} {r['fsyncs/s']:>10,.0f} {r['MB/s']:>8.1f}")


if __name__ == "__main__":
    main()
