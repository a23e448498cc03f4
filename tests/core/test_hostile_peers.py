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


# --- issue 19 §4 / §5 / §6: AppendEntries a follower must refuse without stopping -----------
import random  # noqa: E402 - after the section comment that explains these tests

import pytest  # noqa: E402 - after the section comment that explains these tests

from raftd.core import (AppendEntries, Configuration, Entry, EntryKind, HardState,  # noqa: E402 - after the section comment that explains these tests
                        RaftConfig, RaftNode, RequestVote, TimeoutNow)

C3 = Configuration.make(["1", "2", "3"])


def _follower(entries=(), term=2, conf=C3, commit_upto=0):
    """Node 2, follower of 1 in ``term``, holding ``entries``, committed up to commit_upto."""
    f = RaftNode("2", RaftConfig(), random.Random(2), hard_state=HardState(term),
                 entries=list(entries), base_configuration=conf)
    last = entries[-1] if entries else Entry(0, 0)
    f.step(AppendEntries("1", "2", term, last.index, last.term, (), commit_upto))
    f.ready()
    assert f.commit_index == commit_upto and f.leader_id == "1"
    return f


def _e(term, index, kind=EntryKind.NORMAL, data=b"d"):
    return Entry(term, index, kind, data)


OLD = [_e(1, 1), _e(1, 2), _e(1, 3)]


@pytest.mark.parametrize("entries, why", [
    ((_e(2, 4), _e(2, 6)), "does not follow"),           # a gap
    ((_e(2, 4), _e(2, 4)), "does not follow"),           # a duplicate index
    ((_e(2, 2),), "does not follow"),                    # before prev+1: would hit committed 2
    ((_e(-1, 4),), "term"),                              # negative term
    ((_e(3, 4),), "term"),                               # above the message's term
    ((_e(2, 4), _e(1, 5)), "term"),                      # terms going down
    ((_e(2, 4, EntryKind.CONFIG, b"{not json"),), "configuration does not decode"),
    ((_e(2, 4, EntryKind.CONFIG, b'{"voters": [1]}'),), "not a string"),
])
def test_malformed_append_entries_is_refused_and_the_follower_carries_on(entries, why):
    f = _follower(OLD, commit_upto=3)
    f.step(AppendEntries("1", "2", 2, 3, 1, entries, 3))
    rd = f.ready()
    assert f.refused == 1 and why in f.last_refused
    assert not rd.messages and not rd.entries and f.log.last_index == 3
    f.step(AppendEntries("1", "2", 2, 3, 1, (_e(2, 4),), 4))  # the real leader goes on
    assert f.log.last_index == 4 and f.commit_index == 4


def test_negative_or_huge_indexes_are_refused():
    f = _follower(OLD, commit_upto=3)
    for prev, commit in [(-1, 0), (3, -5), (2**64 - 1, 3), (3, 2**63)]:
        f.step(AppendEntries("1", "2", 2, prev, 1, (), commit))
    assert f.refused == 4 and f.commit_index == 3 and f.log.last_index == 3


def test_entries_conflicting_with_committed_ones_are_refused():
    """Leader Completeness: entries at or below our commit index can only be ours."""
    f = _follower(OLD, commit_upto=3)
    f.step(AppendEntries("1", "2", 2, 1, 1, (_e(2, 2), _e(2, 3), _e(2, 4)), 4))
    rd = f.ready()
    assert f.refused == 1 and not rd.messages
    assert [f.log.term_at(i) for i in (1, 2, 3)] == [1, 1, 1] and f.log.last_index == 3


def test_leader_commit_is_clamped_to_the_last_new_entry():
    """Figure 2 rule 5: min(leaderCommit, index of last new entry); entries of an old term
    beyond what the message verified are never committed by a huge leader_commit."""
    f = _follower(OLD, commit_upto=1)
    f.step(AppendEntries("1", "2", 2, 1, 1, (), 10**9))
    assert f.commit_index == 1  # 2 and 3 were not verified by this message
    f.step(AppendEntries("1", "2", 2, 1, 1, (_e(2, 2),), 10**9))
    assert f.commit_index == 2 and f.log.last_index == 2  # 3 (term 1) truncated, not committed


def test_a_second_leader_in_one_term_is_refused():
    """Election Safety: once 1 leads term 2, an AppendEntries of term 2 from 3 is forged."""
    f = _follower(OLD, commit_upto=1)
    f.step(AppendEntries("3", "2", 2, 1, 1, (_e(2, 2),), 2))
    assert f.refused == 1 and f.log.term_at(2) == 1 and f.commit_index == 1


def test_a_follower_that_rejects_its_acked_index_gets_one_probe_per_heartbeat():
    """Issue 19 §6: next_index never goes below match_index + 1, so a diverged follower that
    rejects prev = match_index must not be answered at once, forever."""
    from raftd.core import AppendEntriesResponse
    net = Net(3)
    leader = net.elect("1")
    match = leader.progress["2"].match_index
    for _ in range(2):  # two messages in flight to 2: prev = match, then match + 1
        leader.propose(b"x")
        net.process("1")
    net.inflight.clear()
    # The second is rejected: 2 goes back to PROBE at match + 1.
    leader.step(AppendEntriesResponse("2", "1", leader.term, False, 0,
                                      reject_index=match + 1, conflict_index=0))
    sent = 0
    for _ in range(50):
        for m in net.process("1").messages:
            if isinstance(m, AppendEntries) and m.dst == "2":
                sent += 1
                leader.step(AppendEntriesResponse("2", "1", leader.term, False, 0,
                                                  reject_index=m.prev_log_index,
                                                  conflict_index=0))
        net.inflight.clear()
    assert leader.progress["2"].next_index == match + 1
    assert sent <= 2, f"{sent} AppendEntries to 2 without a single tick"


# --- issue 19 §7: only voters may force an election; removed members are not leaders -------
def test_timeout_now_from_a_non_voter_or_a_non_leader_is_refused():
    net = Net(3)
    net.elect("1")
    f = net.nodes["2"]
    term = f.term
    f.step(TimeoutNow("9", "2", term))  # unknown id
    f.step(TimeoutNow("9", "2", term + 5))  # unknown id, higher term: must not be adopted
    f.step(TimeoutNow("3", "2", term))  # a voter, but not the leader of this term
    assert f.refused == 3 and f.term == term and f.role == Role.FOLLOWER
    f.step(TimeoutNow("1", "2", term))  # the leader: honoured (thesis §3.10)
    assert f.role == Role.CANDIDATE and f.term == term + 1


def test_transfer_vote_from_a_non_voter_does_not_depose_the_leader():
    net = Net(3)
    leader = net.elect("1")
    term = leader.term
    last, last_term = leader.log.last_index, leader.log.last_term
    leader.step(RequestVote("9", "1", term + 1, last + 10, last_term + 1, transfer=True))
    assert leader.role == Role.LEADER and leader.term == term  # withheld: not a voter's claim
    net.nodes["2"].step(RequestVote("9", "2", term + 1, last + 10, last_term + 1, transfer=True))
    assert net.nodes["2"].term == term


def test_append_entries_from_an_id_outside_our_configuration_is_accepted():
    """The core cannot refuse ids it does not know: a server added (or re-added) by a
    configuration this follower has not received yet may lead it.  Refusing a once-removed id
    in the core stranded lagging followers when ids came back (simulator, 5 nodes, seed 39);
    the runtime refuses removed ids instead, and ids are never reused (issue 19 §2)."""
    c4 = Configuration.make(["1", "2", "3", "4"])
    entries = [_e(1, 1, EntryKind.CONFIG, c4.encode()), _e(1, 2, EntryKind.CONFIG, C3.encode())]
    f = _follower(entries, term=1, conf=c4, commit_upto=2)
    f.step(AppendEntries("4", "2", 9, 2, 1, (_e(9, 3),), 3))
    assert f.refused == 0 and f.term == 9 and f.log.last_index == 3


# --- issue 19 §1: a term near the 64-bit limit is never adopted ------------------------------
def test_request_vote_with_term_2_64_minus_1_is_refused_and_the_node_keeps_working():
    from raftd.core.types import MAX_TERM
    net = Net(3)
    leader = net.elect("1")
    term = leader.term
    for dst in ("1", "2"):
        net.nodes[dst].step(RequestVote("2" if dst == "1" else "3", dst, 2**64 - 1, 2**63,
                                        2**64 - 1, transfer=True))
        net.nodes[dst].step(RequestVote("3", dst, MAX_TERM, 1, 1))
    assert leader.role == Role.LEADER and leader.term == term and net.nodes["2"].term == term
    assert "term" in leader.last_refused
    idx = leader.propose(b"still-serving")
    net.stabilize()
    assert net.applied["2"][-1].index == idx
    # An election afterwards computes term + 1 from a sane term.
    net.down = {"1"}
    for _ in range(40):
        net.nodes["2"].tick()
        net.nodes["3"].tick()
        net.stabilize()
    assert max(n.term for n in net.nodes.values()) < 100
