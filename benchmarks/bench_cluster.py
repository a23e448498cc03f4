"""Throughput and latency of a real local raftd cluster (issue 8), one row of JSON per run.

    python benchmarks/bench_cluster.py --clients 1,8,64,256,1024          # the load curve
    python benchmarks/bench_cluster.py --nodes 5 --clients 64              # cluster size
    python benchmarks/bench_cluster.py --value-size 16384 --clients 64     # value size
    python benchmarks/bench_cluster.py --read-ratio 1 --clients 64         # linearizable reads
    python benchmarks/bench_cluster.py --pause-follower --clients 64       # SIGSTOP one follower
    python benchmarks/bench_cluster.py --set inline_fsync=true --set event_loop=uvloop

Each run: a fresh cluster in a temp dir (raftd processes, fsync on unless --set fsync=false),
the closed-loop load of `raftctl bench` from this process, then the cluster is stopped.  With
--pause-follower the run is cut in three equal parts (all up / one follower SIGSTOPped / resumed)
and a row is printed for each part.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raftctl.commands.bench import run_bench  # noqa: E402 - after sys.path points at the repo
from raftctl.commands.local import (bring_down, bring_up, plan_layout, write_configs,  # noqa: E402 - after sys.path points at the repo
                                    free_base_port)
from raftctl.cluster import gather_status  # noqa: E402 - after sys.path points at the repo


def _value(v: str):
    return yaml.safe_load(v)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(directory: Path, nodes: int, tuning: dict) -> tuple[list[dict], list[str]]:
    base = free_base_port(nodes)
    layout = plan_layout(directory, nodes, base, "127.0.0.1", False)
    write_configs(directory, layout, {"fsync": True, "tick_ms": 25, "election_timeout_ms": 500,
                                       "heartbeat_interval_ms": 100, **tuning})
    layout, _ = bring_up(directory, nodes, timeout=30)
    return layout, [n["address"] for n in layout]


def one_run(args, clients: int) -> list[dict]:
    tuning = dict(kv.split("=", 1) for kv in args.set)
    tuning = {k: _value(v) for k, v in tuning.items()}
    with tempfile.TemporaryDirectory(prefix="raftd-bench-") as tmp:
        d = Path(tmp)
        layout, eps = start(d, args.nodes, tuning)
        try:
            common = dict(endpoints=eps, clients=clients, value_size=args.value_size,
                          keys=args.keys, read_ratio=args.read_ratio,
                          keep=True)  # a throw-away cluster: no clean-up inside the timing
            if not args.pause_follower:
                pids = {n["id"]: n["pid"] for n in layout}
                c0 = {k: cpu_s(p) for k, p in pids.items()}
                t0, me0 = time.monotonic(), sum(os.times()[:2])
                r = asyncio.run(run_bench(duration=args.duration, warmup=args.warmup, **common))
                wall = time.monotonic() - t0
                # Share of one core each process used over the run (warm-up included).
                r["cpu_cores"] = {**{k: round((cpu_s(p) - c0[k]) / wall, 2)
                                     for k, p in pids.items()},
                                  "client": round((sum(os.times()[:2]) - me0) / wall, 2)}
                rows = [r]
            else:
                st = asyncio.run(gather_status(eps, 1.0))
                follower = next(n for n in st["nodes"] if n["id"] != st["leader"])
                pid = next(n["pid"] for n in layout if n["id"] == follower["id"])
                part = args.duration / 3
                rows = [asyncio.run(run_bench(duration=part, warmup=args.warmup, **common))]
                rows[0]["phase"] = "all up"
                os.kill(pid, signal.SIGSTOP)
                rows.append(asyncio.run(run_bench(duration=part, warmup=0.2, **common)))
                rows[1]["phase"] = f"{follower['id']} stopped (SIGSTOP)"
                os.kill(pid, signal.SIGCONT)
                rows.append(asyncio.run(run_bench(duration=part, warmup=0.2, **common)))
                rows[2]["phase"] = f"{follower['id']} resumed"
            rss = {n["id"]: rss_mb(n["pid"]) for n in layout}
            for r in rows:
                r.update({"nodes": args.nodes, "tuning": tuning, "rss_mb": rss})
            return rows
        finally:
            bring_down(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", default="64", help="comma-separated: one run per value")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--read-ratio", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--pause-follower", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="raftd config key for every node (e.g. inline_fsync=true)")
    args = ap.parse_args()
    for c in [int(x) for x in args.clients.split(",")]:
        for _ in range(args.repeat):
            t0 = time.monotonic()
            for row in one_run(args, c):
                row["wall_s"] = round(time.monotonic() - t0, 1)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
