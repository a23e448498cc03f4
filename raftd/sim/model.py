"""python -m raftd.sim.model --seeds N [--nodes K] [--start S] [--jobs J] [--trace]
[--no-membership] [--no-pipeline]   (also: python -m raftd.sim --model ...)

Runs seeds S..S+N-1 of the model simulation (the sans-I/O core alone, on a simulated runtime
of its own; ``python -m raftd.sim`` runs the daemon's runtime instead) and checks Raft's safety
properties after every event and liveness after the network heals.  Exits 0 when every seed
passes; otherwise prints the first failing seed and the command that replays it exactly.

K is the size of the bootstrap configuration.  Unless --no-membership is given the pool has two
more servers and the configuration changes at random during the faulty phase (Raft §6).
Saves are pipelined as in raftd's runtime unless --no-pipeline is given (one Ready at a time).
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import traceback

from . import SimCluster, SimParams, run_seed


MEMBERSHIP_KEYS = ("conf_attempts", "conf_proposed", "conf_in_progress", "conf_not_leader",
                   "joint_committed", "cnew_committed", "learner_conf_committed",
                   "removed_leader_stepdowns", "removed_vote_requests")


def membership_summary(st: dict) -> str:
    return (f"membership: {st['conf_attempts']} changes asked, {st['conf_proposed']} proposed "
            f"({st['conf_in_progress']} refused: change in progress, {st['conf_not_leader']}: "
            f"not the leader), {st['joint_committed']} joint committed, {st['cnew_committed']} "
            f"C_new committed, {st['learner_conf_committed']} learner-only committed, "
            f"{st['removed_leader_stepdowns']} removed leaders stepped down, "
            f"{st['removed_vote_requests']} vote requests from servers outside the configuration")


def _one(args: tuple[int, int, bool, bool]) -> tuple[int, str | None, dict]:
    seed, nodes, membership, pipeline = args
    try:
        c = run_seed(seed, nodes, membership=membership, pipeline=pipeline)
    except Exception as e:  # noqa: BLE001 - any failure of a seed is reported with its seed
        return seed, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}", {}
    st = dict(c.stats)
    st["committed"] = len(c.checker.committed)
    st["acked"] = len(c.checker.acked)
    return seed, None, st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raftd.sim.model",
                                 description=__doc__.split("\n\n")[1])
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--nodes", type=int, default=5, help="cluster size (3, 5, 7, ...)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--trace", action="store_true",
                    help="print a readable trace of each run (use with --seeds 1)")
    ap.add_argument("--no-membership", dest="membership", action="store_false",
                    help="no membership changes (the pool is the bootstrap configuration)")
    ap.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                    help="one Ready at a time (the runtime before pipelined saves)")
    a = ap.parse_args(argv)
    flag = ("" if a.membership else " --no-membership") + ("" if a.pipeline else " --no-pipeline")
    t0 = time.monotonic()
    if a.trace:
        for seed in range(a.start, a.start + a.seeds):
            c = SimCluster(seed, SimParams(nodes=a.nodes, membership=a.membership,
                                           pipeline=a.pipeline), trace=True)
            try:
                c.run()
            except Exception as e:  # noqa: BLE001 - any failure here is reported, never raised
                print("\n".join(c.trace))
                print(f"seed {seed} FAILED: {e}")
                return 1
            print("\n".join(c.trace))
            print(f"seed {seed}: ok; {len(c.checker.committed)} entries committed, "
                  f"{len(c.checker.acked)} acknowledged, {c.stats['elections']} elections, "
                  f"{c.stats['crashes']} crashes, {c.stats['dropped']} messages dropped")
            if a.membership:
                index, final = c.final_configuration()
                print(f"final configuration (index {index}): {final.describe()}; "
                      + membership_summary(c.stats))
        return 0
    work = [(s, a.nodes, a.membership, a.pipeline) for s in range(a.start, a.start + a.seeds)]
    totals = {"committed": 0, "acked": 0, "elections": 0, "crashes": 0, "events": 0,
              "snapshots": 0, "snapshot_transfers": 0, "snapshots_installed": 0,
              "group_fsyncs": 0, "partial_writes": 0}
    totals.update({k: 0 for k in MEMBERSHIP_KEYS})
    failed: list[tuple[int, str]] = []
    if a.jobs > 1:
        with multiprocessing.Pool(a.jobs) as pool:
            results = list(pool.imap_unordered(_one, work, chunksize=4))
    else:
        results = map(_one, work)
    for seed, err, st in results:
        if err:
            failed.append((seed, err))
        for k in totals:
            totals[k] += st.get(k, 0)
    dt = time.monotonic() - t0
    if failed:
        failed.sort()
        seed, err = failed[0]
        print(f"FAIL: {len(failed)} of {a.seeds} seeds failed ({a.nodes} nodes, {dt:.1f}s). "
              f"First failing seed: {seed}\n{err}")
        print(f"replay: python -m raftd.sim.model --seeds 1 --start {seed} --nodes {a.nodes} "
              f"--trace{flag}")
        if len(failed) > 1:
            print("all failing seeds:")
            for seed, err in failed:
                print(f"  {seed}: {err.splitlines()[0]}")
            for seed, err in failed[1:10]:
                print(f"\nseed {seed}: {err.split('Traceback')[0].rstrip()}")
        return 1
    print(f"ok: {a.seeds} seeds ({a.start}..{a.start + a.seeds - 1}), {a.nodes} nodes, "
          f"{dt:.1f}s; {totals['events']} events, {totals['elections']} elections, "
          f"{totals['crashes']} crashes, {totals['committed']} entries committed, "
          f"{totals['acked']} acknowledged, {totals['snapshots']} snapshots taken, "
          f"{totals['snapshots_installed']} installed by InstallSnapshot; all safety and "
          f"liveness checks held")
    if a.pipeline:
        print(f"pipelined saves: {totals['group_fsyncs']} fsyncs covered several Readies, "
              f"{totals['partial_writes']} crashes kept part of the Readies being written")
    if a.membership:
        print(membership_summary(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
