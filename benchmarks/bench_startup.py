"""raftctl start-up time (issue 16 §6): wall time of whole commands, median of N runs each,
against `python -c "import typer, rich"` on the same machine.  `kv get` runs against a fresh
local 3-node cluster on free ports (started and stopped here).

    python benchmarks/bench_startup.py [--runs 15] [-o json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_cluster import start  # noqa: E402 - after sys.path points at the repo
from raftctl.commands.local import bring_down  # noqa: E402 - after sys.path points at the repo
from raftd.client import Client  # noqa: E402 - after sys.path points at the repo

RAFTCTL = [sys.executable, "-m", "raftctl.main"]


def median_ms(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode().strip()}")
    return round(statistics.median(times), 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("-o", "--output", default="table")
    args = ap.parse_args()
    res = {"baseline_import_typer_rich_ms": median_ms(
        [sys.executable, "-c", "import typer, rich"], args.runs)}
    res["raftctl_help_ms"] = median_ms(RAFTCTL + ["--help"], args.runs)
    with tempfile.TemporaryDirectory(prefix="raftd-startup-") as tmp:
        _, eps = start(Path(tmp), 3, {})
        try:
            with Client(eps, timeout=20) as c:
                c.put("startup", b"x")
            res["raftctl_kv_get_ms"] = median_ms(RAFTCTL + ["-e", ",".join(eps), "kv", "get",
                                                            "startup"], args.runs)
        finally:
            bring_down(Path(tmp))
    base = res["baseline_import_typer_rich_ms"]
    res["help_ratio"] = round(res["raftctl_help_ms"] / base, 2)
    res["kv_get_ratio"] = round(res["raftctl_kv_get_ms"] / base, 2)
    if args.output == "json":
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
