"""Unit tests of RaftNode against the rules of the paper's Figure 2 and the thesis."""
import random

import pytest

from raftd.core import (AppendEntries, AppendEntriesResponse, Configuration, Entry, HardState,
                        NotLeaderError, PreVote, ProposalDroppedError, RaftConfig, RaftNode,
                        RequestVote, RequestVoteResponse, Role)

from .harness import Net


def test_single_node_elects_itself_and_commits_only_after_persisting():
    """Raft §5.2; thesis §10.2.1: the leader counts its own vote for an entry only once durable."""
    net = Net(1)
    node = net.nodes["1"]
    for _ in range(30):
        node.tick()
    assert node.role == Role.LEADER and node.term == 1
    rd = net.process("1", persist=False)
    assert [e.kind for e in rd.entries] == [1]  # the no-op of the new term (§5.4.2)
    assert node.commit_index == 0
    node.persisted(rd.entries[-1].index, rd.entries[-1].term)
    assert node.commit_index == 1


def test_three_nodes_elect_exactly_one_leader_and_replicate():
    net = Net(3)
    leader = net.elect("1")
    idx = leader.propose(b"hello")
    net.stabilize()
    for nid in net.ids:
        assert [e.data for e in net.applied[nid]][-1] == b"hello"
        assert net.nodes[nid].commit_index == idx
    assert sum(n.role == Role.LEADER for n in net.nodes.values()) == 1


def test_vote_is_in_the_same_ready_as_its_hard_state():
    """Figure 2: voted_for is durable before the vote reply leaves (the Ready contract)."""
    node = RaftNode("2", RaftConfig(), random.Random(1),
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(RequestVote("1", "2", 1, 0, 0))
    rd = node.ready()
    assert rd.hard_state == HardState(1, "1")
    assert rd.messages == [RequestVoteResponse("2", "1", 1, True)]


def test_vote_denied_to_candidate_with_stale_log():
    """Raft §5.4.1: compare last term, then last index."""
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(3, None),
                    entries=[Entry(1, 1), Entry(3, 2)],
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(RequestVote("1", "2", 4, 5, 2))  # longer log, older last term
    assert node.ready().messages[0].granted is False
    node.step(RequestVote("3", "2", 4, 2, 3))
    assert node.ready().messages[0].granted is True


def test_higher_term_makes_follower_and_clears_vote():
    node = RaftNode("1", RaftConfig(), random.Random(1), hard_state=HardState(2, "1"),
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(AppendEntriesResponse("2", "1", 5, False, 0))
    assert (node.term, node.voted_for, node.role) == (5, None, Role.FOLLOWER)


def test_stale_term_messages_are_ignored():
    node = RaftNode("1", RaftConfig(), random.Random(1), hard_state=HardState(5, None),
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(RequestVote("2", "1", 3, 10, 3))
    assert node.ready().messages == []
    # a stale leader is told the current term so it steps down
    node.step(AppendEntries("3", "1", 4, 0, 0, (), 0))
    (resp,) = node.ready().messages
    assert resp.term == 5 and not resp.success


def test_follower_commit_is_capped_by_last_verified_entry():
    """Figure 2 AppendEntries step 5: commitIndex = min(leaderCommit, index of last new entry)."""
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(1, None),
                    entries=[Entry(1, 1), Entry(1, 2), Entry(1, 3)],
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(AppendEntries("1", "2", 2, 1, 1, (), 3))  # heartbeat that only verifies index 1
    assert node.commit_index == 1


def test_duplicate_append_entries_never_truncates():
    """Figure 2 step 3: truncate only at a real conflict; a reordered message changes nothing."""
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(1, None),
                    base_configuration=Configuration.make(["1", "2", "3"]))
    e = [Entry(1, i) for i in range(1, 6)]
    node.step(AppendEntries("1", "2", 1, 0, 0, tuple(e), 0))
    node.step(AppendEntries("1", "2", 1, 0, 0, tuple(e[:2]), 0))  # old, reordered
    assert node.log.last_index == 5 and node.log.truncations == 0


def test_conflicting_entries_are_replaced():
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(2, None),
                    entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3)],
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(AppendEntries("1", "2", 3, 1, 1, (Entry(3, 2),), 0))
    assert [x.term for x in node.log.slice(1, 10)] == [1, 3]
    rd = node.ready()
    assert rd.entries == [Entry(3, 2)]  # storage truncates from 2 and appends


def test_rejection_carries_a_conflict_hint_for_fast_backtracking():
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(3, None),
                    entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3), Entry(2, 4)],
                    base_configuration=Configuration.make(["1", "2", "3"]))
    node.step(AppendEntries("1", "2", 3, 4, 3, (), 0))
    (r,) = node.ready().messages
    assert not r.success and r.reject_index == 4
    assert (r.conflict_index, r.conflict_term) == (4, 2)


def test_commit_only_counts_current_term_entries():
    """Raft §5.4.2 (Figure 8): an entry of an old term is never committed by counting replicas;
    it commits only together with an entry of the leader's current term."""
    net = Net(3, max_append_entries=1, max_inflight_msgs=1)
    conf = net.conf
    net.nodes["1"] = RaftNode("1", net.cfg, random.Random(1), hard_state=HardState(2, None),
                              entries=[Entry(1, 1), Entry(2, 2)], base_configuration=conf)
    for nid in ("2", "3"):
        net.nodes[nid] = RaftNode(nid, net.cfg, random.Random(int(nid)),
                                  hard_state=HardState(2, None), entries=[Entry(1, 1)],
                                  base_configuration=conf)
    leader = net.nodes["1"]
    while leader.role == Role.FOLLOWER:
        leader.tick()
    # hold back every AppendEntries until the election is over
    net.stabilize(drop=lambda m: isinstance(m, AppendEntries))
    assert leader.role == Role.LEADER and leader.term == 3  # its no-op is 3/3
    # drive one message at a time: first the old-term entry 2 reaches a majority
    for _ in range(10):
        leader.tick()  # heartbeat: re-sends the probe that was held back
        net.process("1")
        # the no-op 3/3 may reach a follower only while it cannot accept it (no entry 2 yet)
        net.deliver(drop=lambda m: getattr(m, "entries", ()) and m.entries[0].index >= 3
                    and net.nodes[m.dst].log.last_index >= 2)
        for nid in ("2", "3"):
            net.process(nid)
        net.deliver()
        if all(net.nodes[n].log.last_index >= 2 for n in ("2", "3")):
            break
    assert leader.progress["2"].match_index >= 2
    assert leader.commit_index < 2  # a majority holds 2/2, but it is not of term 3
    net.stabilize()
    assert leader.commit_index == 3  # the no-op of term 3 commits, and 2/2 with it


def test_leader_does_not_count_itself_before_fsync():
    net = Net(3)
    net.elect("1")
    leader = net.nodes["1"]
    idx = leader.propose(b"x")
    net.process("1", persist=False)  # leader's entry is not yet durable
    net.deliver(drop=lambda m: m.dst == "3")  # only follower 2 receives it
    net.process("2")
    net.deliver()
    assert leader.commit_index < idx  # 1 follower alone is not a majority of 3
    leader.persisted(idx, leader.term)
    assert leader.commit_index == idx


def test_proposal_on_follower_raises_with_leader_hint():
    net = Net(3)
    net.elect("1")
    with pytest.raises(NotLeaderError) as exc:
        net.nodes["2"].propose(b"x")
    assert exc.value.leader_hint == "1"


def test_pre_vote_does_not_bump_terms():
    """Thesis §9.6: a partitioned node that rejoins cannot disrupt the leader."""
    net = Net(3)
    net.elect("1")
    term = net.nodes["1"].term
    isolated = net.nodes["3"]
    for _ in range(100):  # node 3 is cut off and keeps timing out
        isolated.tick()
        net.process("3")
        net.inflight = [m for m in net.inflight if m.src != "3" and m.dst != "3"]
    assert isolated.term == term  # pre-votes never raise the term
    net.stabilize()
    assert net.nodes["1"].role == Role.LEADER and net.nodes["1"].term == term


def test_vote_withheld_while_leader_is_live():
    """Raft §6: a server that heard from a leader recently ignores RequestVote."""
    net = Net(3)
    net.elect("1")
    f = net.nodes["2"]
    term = f.term
    f.step(RequestVote("3", "2", term + 1, 100, term))
    assert f.term == term and f.ready().messages == []
    f.step(PreVote("3", "2", term + 1, 100, term))
    assert f.ready().messages == []


def test_check_quorum_leader_steps_down_when_cut_off():
    net = Net(3)
    leader = net.elect("1")
    for _ in range(3 * net.cfg.election_ticks):
        leader.tick()
        net.process("1")
        net.inflight = []  # nobody hears it
    assert leader.role == Role.FOLLOWER


def test_committed_entries_are_handed_out_once_in_order():
    net = Net(3)
    leader = net.elect("1")
    for i in range(50):
        leader.propose(b"%d" % i)
        if i % 7 == 0:
            net.stabilize()
    net.stabilize()
    for nid in net.ids:
        idx = [e.index for e in net.applied[nid]]
        assert idx == list(range(1, len(idx) + 1))
        assert len(idx) == leader.commit_index


def test_batching_and_pipelining_are_capped():
    net = Net(3, max_append_entries=10, max_inflight_msgs=3)
    leader = net.elect("1")
    for _ in range(100):
        leader.propose(b"x")
    rd = net.process("1")
    to2 = [m for m in rd.messages if m.dst == "2"]
    assert len(to2) == 3 and all(len(m.entries) == 10 for m in to2)
    net.stabilize()
    assert net.nodes["2"].commit_index == leader.commit_index == leader.log.last_index


def test_read_index_waits_for_a_quorum_heartbeat_round():
    net = Net(3)
    leader = net.elect("1")
    net.stabilize()
    leader.read_index("r1")
    rd = net.process("1")
    assert rd.read_states == []  # not before a quorum confirmed leadership
    assert any(isinstance(m, AppendEntries) for m in rd.messages)
    net.deliver()
    for nid in ("2", "3"):
        net.process(nid)
    net.deliver()
    rd = net.process("1")
    assert [(r.request_id, r.index) for r in rd.read_states] == [("r1", leader.commit_index)]


def test_read_index_fails_on_follower():
    net = Net(3)
    net.elect("1")
    with pytest.raises(NotLeaderError):
        net.nodes["2"].read_index("r")


def test_leadership_transfer_with_timeout_now():
    """Thesis §3.10."""
    net = Net(3)
    leader = net.elect("1")
    net.stabilize()
    leader.transfer_leadership("2")
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"x")
    net.stabilize()
    assert net.nodes["2"].role == Role.LEADER
    assert leader.role == Role.FOLLOWER


def test_log_can_start_after_a_snapshot():
    """Raft §7: the log may begin at an index > 1 and consistency checks work at its base."""
    node = RaftNode("2", RaftConfig(), random.Random(1), hard_state=HardState(4, None),
                    entries=[Entry(4, 101), Entry(4, 102)], snapshot_index=100,
                    snapshot_term=3, base_configuration=Configuration.make(["1", "2", "3"]))
    assert node.log.first_index == 101 and node.log.term_at(100) == 3
    node.step(AppendEntries("1", "2", 4, 102, 4, (Entry(4, 103),), 103))
    assert node.commit_index == 103 and node.log.last_index == 103


def test_leader_isolated_right_after_winning_steps_down_after_one_round():
    """Issue 14 §8: a new leader counts no follower as active until it hears from it, so
    check-quorum deposes a leader cut off at once after one election timeout, not two."""
    net = Net(3)
    node = net.nodes["1"]
    for _ in range(3 * net.cfg.election_ticks):
        node.tick()
        if node.role != Role.FOLLOWER:
            break
    for _ in range(20):  # votes flow until 1 wins; from then on nobody hears it
        net.stabilize(rounds=1)
        if node.role == Role.LEADER:
            break
    assert node.role == Role.LEADER
    net.down = {"1"}
    net.inflight = []
    for _ in range(net.cfg.election_ticks):
        node.tick()
        net.process("1")
        net.inflight = []
    assert node.role == Role.FOLLOWER


def test_commit_notices_stay_inside_the_in_flight_window():
    """Issue 14 §5: with a follower's window full, each commit's notice used to carry another
    batch (100 in flight with a cap of 4).  A notice is empty: the window bounds everything."""
    net = Net(3, max_append_entries=10, max_inflight_msgs=3)
    leader = net.elect("1")
    net.stabilize()
    batches_to_3 = 0
    for i in range(20):  # n3 never answers: its window fills and stays full
        for _ in range(10):
            leader.propose(b"x%d" % i)
        for _ in range(5):
            rd = net.process("1")
            batches_to_3 += sum(1 for m in rd.messages
                                if m.dst == "3" and isinstance(m, AppendEntries) and m.entries)
            net.deliver(drop=lambda m: "3" in (m.src, m.dst))
            net.process("2")
            net.deliver(drop=lambda m: "3" in (m.src, m.dst))
    assert leader.commit_index >= 200  # commits kept advancing with n2
    assert batches_to_3 == 3, batches_to_3


def test_a_transfer_has_a_deadline_of_its_own():
    """Issue 14 §6: the transfer was dropped whenever election_elapsed wrapped, possibly one
    tick after it began; it now lasts one election timeout from its start."""
    net = Net(3)
    leader = net.elect("1")
    net.stabilize()
    leader.election_elapsed = net.cfg.election_ticks - 1  # the wrap is one tick away
    leader.transfer_leadership("2")
    net.process("1")
    net.inflight = []  # n2 never hears of it
    leader.tick()
    assert leader.transfer_target == "2"
    for _ in range(net.cfg.election_ticks):
        leader.tick()
        net.stabilize(drop=lambda m: "2" in (m.src, m.dst))  # n3 keeps the quorum alive
    assert leader.transfer_target is None and leader.role == Role.LEADER
