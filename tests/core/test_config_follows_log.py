"""Configuration bookkeeping follows the log when it is discarded or truncated (issue 14 §1).

Raft §6: a server uses the newest configuration in its log.  Figure 13 step 7 discards the whole
log when the entry at the snapshot index has another term; a configuration carried by a
discarded entry must not stay in force, or a server elects itself under a configuration that no
longer exists and two different entries commit at one index.
"""
from raftd.core import Configuration, EntryKind, Role, SnapshotMeta

from .harness import Net

C0 = Configuration.make(["1", "2", "3"], learners=["4", "5"])
C_NEW = Configuration.make(["1", "4", "5"])


def _tick_until_campaign(net, nid):
    node = net.nodes[nid]
    for _ in range(3 * net.cfg.election_ticks):
        node.tick()
        if node.role != Role.FOLLOWER:
            return
    raise AssertionError(f"{nid} never campaigned")


def replay_issue_14_1(net):
    """The issue's sequence, on a 5-node pool (C0: voters 1,2,3; learners 4,5).  Returns the
    partitioned node 1 and node 2 after each tried to commit on its side."""
    n1, n2 = net.nodes["1"], net.nodes["2"]
    net.elect("1")
    n1.propose(b"a")
    net.stabilize()
    # Node 1 is cut off with two uncommitted entries: x, then the joint entry C0 -> {1,4,5}.
    net.down = {"1"}
    n1.propose(b"x")
    n1.propose_configuration(C_NEW)
    net.process("1")
    net.inflight.clear()
    assert n1.config.joint
    # Node 2 leads the next term under C0, commits its own entry at that index, snapshots.
    net.elect("2")
    snap_index = n2.commit_index
    assert n2.log.term_at(snap_index) != n1.log.term_at(snap_index)
    n2.snapshot_taken(SnapshotMeta(snap_index, n2.log.term_at(snap_index),
                                   n2.configuration_at(snap_index)))
    n2.compact(snap_index)
    net.snapshot_source = list(net.applied["2"])
    # Node 1 comes back and installs that snapshot (Figure 13 step 7: log discarded).
    net.down = set()
    n2.tick()
    net.stabilize()
    assert n1.log.snapshot_index == snap_index == n1.log.last_index
    yield "installed"
    # Node 1 campaigns and wins (node 3 and the learners' votes).
    _tick_until_campaign(net, "1")
    net.stabilize(drop=lambda m: m.dst in ("2", "3") and any(
        e.kind == EntryKind.CONFIG for e in getattr(m, "entries", ())))
    assert n1.role == Role.LEADER
    # Partition {1,4,5} | {2,3}; each side tries to commit a write.
    side = {"1": 0, "4": 0, "5": 0, "2": 1, "3": 1}
    cut = lambda m: side[m.src] != side[m.dst]  # noqa: E731 - a one-line message filter reads best as a lambda
    net.stabilize(drop=cut)
    n1.propose(b"from-1")
    net.stabilize(drop=cut)
    _tick_until_campaign(net, "2")
    net.stabilize(drop=cut)
    if n2.role == Role.LEADER:
        n2.propose(b"from-2")
        net.stabilize(drop=cut)
    yield "partitioned"


def test_conflicting_install_snapshot_reverts_to_the_snapshot_configuration():
    """Reference: Raft §6, §7 (Figure 13 step 7); issue 14 §1."""
    net = Net(5, conf=C0, check_quorum=False)  # no vote withholding: fewer ticks
    steps = replay_issue_14_1(net)
    next(steps)
    n1 = net.nodes["1"]
    assert n1.config == C0
    assert n1.configuration_at(n1.log.last_index) == C0
    next(steps)
    n2 = net.nodes["2"]
    upto = min(n1.commit_index, n2.commit_index)
    for i in range(max(n1.log.snapshot_index, n2.log.snapshot_index) + 1, upto + 1):
        assert n1.log.entry(i) == n2.log.entry(i), f"two entries committed at index {i}"
    # Node 1 alone with learners must not commit anything of its own: C0 needs 1 of {2,3}.
    committed_1 = [e.data for e in net.applied["1"]]
    assert b"from-1" not in committed_1


def test_truncation_drops_configurations_of_removed_entries_and_stays_ordered():
    """AppendEntries conflict truncation (Figure 2 step 3) takes the configuration back too."""
    net = Net(5, conf=C0, check_quorum=False)  # no vote withholding: fewer ticks
    n1 = net.elect("1")
    net.down = {"2", "3", "4", "5"}
    n1.propose_configuration(C_NEW)  # uncommitted joint entry, only on node 1
    net.process("1")
    net.inflight.clear()
    net.down = {"1"}
    n2 = net.elect("2")
    for i in range(3):
        n2.propose(b"y%d" % i)
    net.stabilize()
    net.down = set()
    n2.tick()
    net.stabilize()
    assert n1.log.last_index == n2.log.last_index
    assert n1.config == C0 and n1.configuration_at(n1.log.last_index) == C0
