"""Quorum rules as pure functions (Raft §5.2, §5.4.2, §6). Reference: Raft §6, thesis §4.3."""
import pytest

from raftd.core.membership import (Configuration, VoteResult, committed_index, has_quorum,
                                   vote_result)

C3 = Configuration.make(["1", "2", "3"])
JOINT = Configuration.make(["4", "5", "6"], outgoing=["1", "2", "3"])


@pytest.mark.parametrize("match, want", [
    ({"1": 5, "2": 5, "3": 5}, 5),
    ({"1": 5, "2": 3, "3": 1}, 3),
    ({"1": 5}, 0),
    ({"1": 9, "2": 9}, 9),
])
def test_committed_index_simple(match, want):
    assert committed_index(C3, match) == want


@pytest.mark.parametrize("match, want", [
    # a majority of C_old alone is not enough while joint
    ({"1": 9, "2": 9, "3": 9}, 0),
    ({"1": 9, "2": 9, "4": 7, "5": 8}, 7),
    ({"1": 9, "2": 2, "3": 1, "4": 9, "5": 9, "6": 9}, 2),
])
def test_committed_index_joint_needs_both_majorities(match, want):
    assert committed_index(JOINT, match) == want


@pytest.mark.parametrize("votes, want", [
    ({"1": True}, VoteResult.PENDING),
    ({"1": True, "2": True}, VoteResult.WON),
    ({"1": True, "2": False, "3": False}, VoteResult.LOST),
    ({"1": True, "2": False}, VoteResult.PENDING),
])
def test_vote_result_simple(votes, want):
    assert vote_result(C3, votes) == want


def test_vote_result_joint():
    assert vote_result(JOINT, {"1": True, "2": True, "3": True}) == VoteResult.PENDING
    assert vote_result(JOINT, {"1": True, "2": True, "4": True, "5": True}) == VoteResult.WON
    assert vote_result(JOINT, {"1": True, "2": True, "4": False, "5": False}) == VoteResult.LOST


def test_learners_never_count():
    c = Configuration.make(["1"], learners=["2", "3"])
    assert committed_index(c, {"1": 4, "2": 9, "3": 9}) == 4
    assert has_quorum(c, {"1"})
    assert not has_quorum(c, {"2", "3"})


def test_configuration_round_trips_through_its_encoding():
    c = Configuration.make(["a", "b"], ["c"], ["d"], {"a": "127.0.0.1:1", "d": "127.0.0.1:4"})
    assert Configuration.decode(c.encode()) == c
    assert c.joint and c.members == {"a", "b", "c", "d"}


def test_joint_change_keeps_every_address():
    """The joint entry and C_new carry the addresses of old and new members (a joining node
    learns where everyone is from the log)."""
    from .harness import Net

    net = Net(3)
    leader = net.elect("1")
    base = {"1": "h:1", "2": "h:2", "3": "h:3"}
    leader.propose_configuration(
        Configuration.make(["1", "2", "3"], (), ["4"], {**base, "4": "h:4"}))
    net.stabilize(drop=lambda m: m.dst == "4")
    leader.propose_configuration(Configuration.make(["1", "2", "4"], (), (), {**base, "4": "h:4"}))
    assert leader.config.joint and leader.config.address_of("4") == "h:4"
    assert leader.config.address_of("3") == "h:3"  # still in C_old


def test_configuration_rejects_a_mapping_for_addresses():
    with pytest.raises(TypeError):
        Configuration(frozenset("a"), addresses={"a": "h:1"})
