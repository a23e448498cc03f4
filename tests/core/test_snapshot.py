"""Snapshots and log compaction in the core (Raft §7, Figure 13)."""
from raftd.core import InstallSnapshot, Role, SnapshotMeta
from raftd.core.progress import ProgressState

from .harness import Net


def _leader_with_compacted_log(net, n_entries=30, down="3"):
    leader = net.elect("1")
    net.down.add(down)
    for i in range(n_entries):
        leader.propose(b"%d" % i)
        net.stabilize()
    snap = SnapshotMeta(leader.last_applied, leader.log.term_at(leader.last_applied),
                        leader.config)
    leader.snapshot_taken(snap)
    leader.compact(snap.index - 5)  # keep a few trailing entries
    net.snapshot_source = list(net.applied["1"])
    return leader, snap


def test_follower_behind_the_log_base_gets_the_snapshot():
    net = Net(3)
    leader, snap = _leader_with_compacted_log(net)
    assert leader.log.first_index == snap.index - 4
    net.down.clear()
    leader.tick()
    rd = net.process("1")
    sent = [m for m in rd.messages if isinstance(m, InstallSnapshot) and m.dst == "3"]
    assert not sent  # first a probe; its rejection reveals how far behind 3 is
    net.stabilize()
    f = net.nodes["3"]
    assert any(r.snapshot is not None and r.snapshot.index == snap.index for r in net.readys["3"])
    assert f.log.snapshot_index == snap.index and f.commit_index == leader.commit_index
    assert f.log.last_index == leader.log.last_index
    assert leader.progress["3"].state == ProgressState.REPLICATE
    idx = leader.propose(b"after")
    net.stabilize()
    assert net.applied["3"][-1].index == idx


def test_follower_keeps_entries_after_a_snapshot_it_already_holds():
    """Figure 13 step 6: if the log has the snapshot's last entry, keep what follows."""
    net = Net(3)
    leader = net.elect("1")
    for _ in range(10):
        leader.propose(b"x")
    net.stabilize()
    f = net.nodes["2"]
    last = f.log.last_index
    meta = SnapshotMeta(5, f.log.term_at(5), leader.config)
    f.step(InstallSnapshot("1", "2", leader.term, 5, meta.term, meta.configuration.encode(),
                           done=True))
    assert f.log.last_index == last  # nothing discarded (5 <= commit: already known)
    assert f.log.truncations == 0


def test_install_snapshot_discards_a_conflicting_log():
    net = Net(3)
    leader = net.elect("1")
    f = net.nodes["2"]
    term = leader.term
    cfg = leader.config
    f.step(InstallSnapshot("1", "2", term, 50, term, cfg.encode(), done=True))
    rd = f.ready()
    assert rd.snapshot == SnapshotMeta(50, term, cfg)
    assert f.log.snapshot_index == 50 and f.log.last_index == 50
    assert f.commit_index == 50 and f.last_applied == 50
    (resp,) = [m for m in rd.messages]
    assert resp.success and resp.match_index == 50


def test_failed_transfer_is_retried():
    net = Net(3)
    leader, snap = _leader_with_compacted_log(net)
    net.down.clear()
    for _ in range(5):  # probe, rejection, snapshot
        leader.tick()
        net.process("1")
        net.deliver(drop=lambda m: isinstance(m, InstallSnapshot))
        net.process("3")
        net.deliver(drop=lambda m: isinstance(m, InstallSnapshot))
    assert leader.progress["3"].state == ProgressState.SNAPSHOT
    leader.report_snapshot("3", ok=False)
    assert leader.progress["3"].state == ProgressState.PROBE
    net.stabilize()
    for _ in range(3):
        leader.tick()
        net.stabilize()
    assert net.nodes["3"].commit_index == leader.commit_index


def test_stuck_transfer_gives_up_after_a_while():
    """hashicorp/raft #212: a transfer that never completes must not wedge the follower."""
    net = Net(3)
    leader, snap = _leader_with_compacted_log(net)
    net.down.clear()
    ticks = 0
    while leader.progress["3"].state != ProgressState.SNAPSHOT and ticks < 20:
        leader.tick()
        ticks += 1
        net.stabilize(drop=lambda m: isinstance(m, InstallSnapshot))
    assert leader.progress["3"].state == ProgressState.SNAPSHOT
    sent = 0
    for _ in range(31 * net.cfg.election_ticks):
        leader.tick()
        net.process("1")
        sent += sum(isinstance(m, InstallSnapshot) for m in net.inflight)
        net.stabilize(drop=lambda m: isinstance(m, InstallSnapshot))
    assert sent >= 1  # gave up on the lost transfer and started a new one
    assert leader.role == Role.LEADER


def test_compact_needs_a_snapshot():
    import pytest

    net = Net(1)
    node = net.nodes["1"]
    with pytest.raises(ValueError):
        node.compact(1)
