"""Deterministic simulation of raftd's own runtime (issue 15): ``python -m raftd.simrt``."""
from .cluster import SimCluster, SimFailure, SimParams

__all__ = ["SimCluster", "SimFailure", "SimParams"]
