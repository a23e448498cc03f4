"""The alternative we did not take: a Raft log in SQLite (WAL mode, synchronous=FULL), on the
same workload as bench_wal.py (batches of 100-byte entries, one durable commit per batch).

    python benchmarks/bench_sqlite_log.py
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import time


def run(batch: int, seconds: float = 2.0) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "log.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER, "
                   "data BLOB)")
        data = b"x" * 100
        idx = 0
        commits = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            db.execute("BEGIN")
            db.executemany("INSERT INTO log VALUES (?, 1, 0, ?)",
                           [(idx + i + 1, data) for i in range(batch)])
            db.execute("COMMIT")
            idx += batch
            commits += 1
        dt = time.perf_counter() - t0
        db.close()
        return idx / dt, commits / dt


if __name__ == "__main__":
    print("sqlite (WAL, synchronous=FULL), 100 B/entry")
    print(" batch    entries/s   commits/s")
    for b in (1, 64, 512):
        e, c = run(b)
        print(f"{b:>6} {e:>12,.0f} {c:>11,.0f}")
