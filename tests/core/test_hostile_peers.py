"""Hostile and buggy peers against the core alone (issue 19): a frame no honest peer sends is
refused, counted, and the node carries on with its log intact."""
from raftd.core import AppendEntriesResponse, Role

from .harness import Net


def _leader_with_unsent_entries(n=10):
    """Leader 1 of three with ``n`` entries only it holds; the window (one message of two
    entries per follower) keeps most of them unsent."""
    net = Net(3, max_append_entries=2, max_inflight_msgs=1)
    leader = net.elect("1")
    net.down = {"2", "3"}
    for i in range(n):
        leader.propose(b"e%d" % i)
    net.process("1")
    net.inflight.clear()
    return net, leader


def test_forged_ack_inside_the_log_commits_nothing():
    """Issue 19 §3: a match_index beyond what was sent to that follower is ignored."""
    net, leader = _leader_with_unsent_entries()
    commit, last = leader.commit_index, leader.log.last_index
    assert commit + 2 < last  # two entries were sent to 2, the rest never
    leader.step(AppendEntriesResponse("2", "1", leader.term, True, last))
    net.process("1")
    assert leader.commit_index == commit
    assert leader.progress["2"].match_index < last
    assert leader.status()["refused_messages"] == 1


def test_forged_ack_past_the_end_of_the_log_does_not_stop_the_leader():
    net, leader = _leader_with_unsent_entries()
    last = leader.log.last_index
    leader.step(AppendEntriesResponse("2", "1", leader.term, True, last + 5))
    leader.step(AppendEntriesResponse("2", "1", leader.term, False, last + 9,
                                      reject_index=last + 9, conflict_index=last + 9))
    for _ in range(3):
        leader.tick()
        net.process("1")
    net.down = set()
    net.stabilize(rounds=200)
    assert leader.role == Role.LEADER and leader.commit_index == last
    assert all(n.log.last_index == last for n in net.nodes.values())
