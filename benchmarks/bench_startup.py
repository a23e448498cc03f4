"""raftctl start-up time (issue 16 §6): wall time of whole commands, median of N runs each,
against `python -c "import typer, rich"` on the same machine.  `kv get` runs against a fresh
local 3-node cluster on free ports (started and stopped here).  Also the CPU time (user + sys)
of each command, which a busy machine disturbs much less than the wall time (`*_cpu_ms`).

raftd and raftctl are byte-compiled first (`compileall`, as `pip install` does), so that the
figures are those of an installed raftctl also where PYTHONDONTWRITEBYTECODE is set: without
.pyc files every run compiles raftctl's modules again (about 20 ms of `kv get`).
`--no-compile` measures the tree as it is.

    python benchmarks/bench_startup.py [--runs 15] [-o json]
"""
from __future__ import annotations

import argparse
import compileall
import json
import resource
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
REPO = Path(__file__).resolve().parent.parent


def medians(cmds: dict[str, list[str]], runs: int) -> dict[str, tuple[float, float]]:
    """name -> (median wall ms, median CPU ms) over ``runs`` rounds.  Each round runs every
    command once, in turn, so that a machine busy with other work slows them alike and their
    ratios hold (timing all runs of one command, then all of the next, did not)."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    cpus: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True)
            times[name].append((time.perf_counter() - t0) * 1000)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[name].append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode().strip()}")
    return {name: (round(statistics.median(times[name]), 1),
                   round(statistics.median(cpus[name]), 1)) for name in cmds}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("-o", "--output", default="table")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile raftd and raftctl first")
    args = ap.parse_args()
    if not args.no_compile:
        for package in ("raftd", "raftctl"):
            compileall.compile_dir(REPO / package, quiet=1)
    res: dict[str, float | bool] = {"bytecode_compiled": not args.no_compile}
    with tempfile.TemporaryDirectory(prefix="raftd-startup-") as tmp:
        _, eps = start(Path(tmp), 3, {})
        try:
            with Client(eps, timeout=20) as c:
                c.put("startup", b"x")
            m = medians({"baseline": [sys.executable, "-c", "import typer, rich"],
                         "help": RAFTCTL + ["--help"],
                         "kv_get": RAFTCTL + ["-e", ",".join(eps), "kv", "get", "startup"]},
                        args.runs)
        finally:
            bring_down(Path(tmp))
    res["baseline_import_typer_rich_ms"], res["baseline_cpu_ms"] = m["baseline"]
    res["raftctl_help_ms"], res["raftctl_help_cpu_ms"] = m["help"]
    res["raftctl_kv_get_ms"], res["raftctl_kv_get_cpu_ms"] = m["kv_get"]
    base, base_cpu = res["baseline_import_typer_rich_ms"], res["baseline_cpu_ms"]
    res["help_ratio"] = round(res["raftctl_help_ms"] / base, 2)
    res["kv_get_ratio"] = round(res["raftctl_kv_get_ms"] / base, 2)
    res["help_cpu_ratio"] = round(res["raftctl_help_cpu_ms"] / base_cpu, 2)
    res["kv_get_cpu_ratio"] = round(res["raftctl_kv_get_cpu_ms"] / base_cpu, 2)
    if args.output == "json":
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
