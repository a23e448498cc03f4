"""Pure CPU cost of the Raft core: a 3-node in-memory cluster with a zero-cost network and disk.

    python benchmarks/bench_core.py [--entries 200000] [--batch 256] [--size 100]

Proposals arrive at the leader ``--batch`` at a time (the runtime hands the core everything that
arrived since its last fsync); every Ready is "persisted" instantly and its messages delivered at
once.  Reports entries committed (and applied on the leader) per second.
"""
from __future__ import annotations

import argparse
import random
import time

from raftd.core import Configuration, RaftConfig, RaftNode, Role


def run(entries: int, batch: int, size: int) -> float:
    ids = ["n1", "n2", "n3"]
    conf = Configuration.make(ids)
    cfg = RaftConfig(election_ticks=10, max_append_entries=batch, max_inflight_msgs=64)
    nodes = {i: RaftNode(i, cfg, random.Random(k), base_configuration=conf)
             for k, i in enumerate(ids)}
    pending = []
    applied = 0

    def pump() -> int:
        done = 0
        moved = True
        while moved:
            moved = False
            for nid, node in nodes.items():
                if not node.has_ready():
                    continue
                moved = True
                rd = node.ready()
                if rd.entries:
                    node.persisted(rd.entries[-1].index, rd.entries[-1].term)
                pending.extend(rd.messages)
                if rd.committed_entries:
                    node.applied(rd.committed_entries[-1].index)
                    if nid == leader_id:
                        done += len(rd.committed_entries)
            while pending:
                msgs = pending[:]
                pending.clear()
                for m in msgs:
                    nodes[m.dst].step(m)
                moved = True
        return done

    leader_id = None
    for _ in range(100):
        for n in nodes.values():
            n.tick()
        pump()
        leader_id = next((i for i, n in nodes.items() if n.role == Role.LEADER), None)
        if leader_id:
            break
    leader = nodes[leader_id]
    pump()
    data = b"x" * size
    base = leader.commit_index
    t0 = time.perf_counter()
    proposed = 0
    while proposed < entries:
        for _ in range(batch):
            leader.propose(data)  # one call per client request, as the runtime does
        proposed += batch
        applied += pump()
    dt = time.perf_counter() - t0
    assert leader.commit_index - base >= entries
    return entries / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()
    rates = [run(a.entries, a.batch, a.size) for _ in range(3)]
    rates.sort()
    print(f"core: 3 nodes, batch {a.batch}, {a.size}-byte entries: "
          f"{rates[1]:,.0f} entries/s committed (median of 3; min {rates[0]:,.0f}, "
          f"max {rates[2]:,.0f})")


if __name__ == "__main__":
    main()
