"""Deterministic simulation of a raftd cluster (see cluster.py); ``python -m raftd.sim``."""
from .checker import SafetyChecker, SafetyViolation
from .cluster import SimCluster, SimParams

__all__ = ["SafetyChecker", "SafetyViolation", "SimCluster", "SimParams", "run_seed"]


def run_seed(seed: int, nodes: int = 5, trace: bool = False, membership: bool = True,
             pipeline: bool = True) -> SimCluster:
    """Run one seed to completion; raises SafetyViolation (or any bug) on failure.  ``nodes`` is
    the size of the bootstrap configuration; with ``membership`` the pool has two servers more
    and the configuration changes while the faults go on.  ``pipeline``: saves are pipelined as
    in raftd's runtime (False: one Ready at a time)."""
    c = SimCluster(seed, SimParams(nodes=nodes, membership=membership, pipeline=pipeline),
                   trace=trace)
    c.run()
    return c
