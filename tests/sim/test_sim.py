"""Seeded simulation: Raft's safety properties after every event, liveness after healing.

CI runs a few hundred seeds; set RAFTD_SIM_SEEDS=N for more.  A failure prints the command that
replays the seed exactly (with a trace)."""
import os

import pytest

from raftd.sim import SimCluster, SimParams, run_seed
from raftd.sim.model import main as sim_main

# 50 rather than 80 since membership changes (on by default) doubled the cost of a seed;
# tests/sim/test_membership_sim.py runs further seeds of its own.
SEEDS = int(os.environ.get("RAFTD_SIM_SEEDS", "50"))


@pytest.mark.parametrize("nodes, seeds", [(3, SEEDS), (5, SEEDS), (7, SEEDS // 4)])
def test_simulated_cluster_is_safe_and_live(nodes, seeds):
    failures = []
    for seed in range(seeds):
        try:
            run_seed(seed, nodes)
        except Exception as e:  # noqa: BLE001 - any failure here is reported, never raised
            failures.append(f"seed {seed}: {type(e).__name__}: {e}\n  replay: "
                            f"python -m raftd.sim.model --seeds 1 --start {seed} --nodes {nodes} "
                            f"--trace")
            break
    assert not failures, failures[0]


def test_a_seed_reproduces_exactly():
    a = SimCluster(12345, SimParams(nodes=5), trace=True)
    a.run()
    b = SimCluster(12345, SimParams(nodes=5), trace=True)
    b.run()
    assert a.trace == b.trace and a.stats == b.stats
    assert a.checker.committed == b.checker.committed


def test_faults_actually_happen():
    """The simulation is only worth something if it injects the faults it claims to."""
    totals = {"crashes": 0, "dropped": 0, "duplicated": 0, "elections": 0}
    for seed in range(10):
        c = run_seed(seed, 5)
        for k in totals:
            totals[k] += c.stats[k]
        assert len(c.checker.acked) > 50
    assert all(v > 10 for v in totals.values()), totals


def test_checker_detects_a_broken_core(monkeypatch):
    """Break Figure 8's rule (commit old-term entries by counting replicas) and demand the
    simulation notices: the tests above could not fail otherwise."""
    from raftd.core import membership
    from raftd.core.node import RaftNode

    def unsafe_maybe_commit(self):
        match = {p: pr.match_index for p, pr in self.progress.items()}
        match[self.id] = self._durable
        n = membership.committed_index(self.config, match)
        if n > self.commit_index:  # no current-term check: unsafe
            self.commit_index = n
            self._commit_dirty = True
            self._on_commit_advanced()

    def unsafe_vote(self, m):
        from raftd.core.messages import RequestVoteResponse
        self.voted_for = m.src
        self._send(RequestVoteResponse(self.id, m.src, self.term, True))  # ignores the log

    monkeypatch.setattr(RaftNode, "_maybe_commit", unsafe_maybe_commit)
    monkeypatch.setattr(RaftNode, "_HANDLERS", {**RaftNode._HANDLERS,
                                                 __import__("raftd.core").core.RequestVote:
                                                 unsafe_vote})
    caught = 0
    for seed in range(40):
        try:
            run_seed(seed, 3)
        except AssertionError:
            caught += 1
            break  # one is proof enough
    assert caught > 0


def test_cli_reports_success_and_replay_command(capsys):
    assert sim_main(["--seeds", "2", "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 2 seeds")


def test_snapshots_and_install_snapshot_are_exercised():
    """Raft §7 in the simulation: nodes snapshot and compact, and lagging or restarted nodes
    are caught up by InstallSnapshot, with every safety check holding."""
    taken = installed = 0
    for seed in range(8):
        c = run_seed(seed, 5)
        taken += c.stats["snapshots"]
        installed += c.stats["snapshots_installed"]
    assert taken > 50 and installed > 10, (taken, installed)
