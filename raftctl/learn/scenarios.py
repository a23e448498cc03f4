"""The scenarios: each plays one rule of the paper on the real core and asserts its point.

`raftctl sim --list-scenarios` lists them; `--scenario NAME --script` prints the transcript.
The paper's figures (7 and 8), membership and snapshots are in paper.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftd.core import Role

from . import paper
from .script import BASIC, Script


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    play: Callable[[Script], None]


def leader_election(s: Script) -> None:
    w = s.world(5)
    s.note("five followers of term 0; each waits a random election timeout in [10, 20) ticks "
           "so that one of them usually fires first (§5.2)")
    s.check(w.run(100, until=lambda: w.leader() is not None), "a leader is elected")
    w.run(6)
    lead = w.node(s.expect(w.leader(), "a leader"))
    s.check(all(w.node(n).term == lead.term and w.node(n).leader_id == lead.id for n in w.ids),
            f"all five nodes follow {lead.id} in term {lead.term}: one leader per term, "
            f"elected by a majority (Election Safety, §5.2)")
    s.check(all(w.node(n).commit_index == lead.commit_index for n in w.ids),
            "its no-op entry is committed and every follower learned it with the next "
            "heartbeat (§5.3)")


def split_vote(s: Script) -> None:
    w = s.world(4, config=BASIC)
    s.note("four nodes, so a majority is three; pre-vote off to show the terms (§5.2)")
    s.note("n1 and n2 time out at the same moment and both become candidates for term 1")
    w.timeout("n1")
    w.timeout("n2")
    w.settle(where=lambda m: (m.src, m.dst) in {("n1", "n3"), ("n2", "n4")})
    w.settle()
    s.check(w.leader() is None, "n1 has n1,n3 and n2 has n2,n4: nobody has a majority of "
                                "term 1 (split vote, §5.2)")
    s.note("each waits a new random timeout: the first to fire wins the next term (§5.2)")
    s.check(w.run(100, until=lambda: w.leader() is not None), "a leader is elected")
    lead = w.node(s.expect(w.leader(), "a leader"))
    s.check(lead.term >= 2, f"{lead.id} leads term {lead.term}, a term after the split one")


def log_replication(s: Script) -> None:
    w = s.world(5)
    s.elect("n1")
    s.note("the client's command goes to the leader, which appends it and sends "
           "AppendEntries (§5.3)")
    idx = s.expect(w.write(b"x=1"), "the leader to take x=1")
    pair = lambda a, b: lambda m: {m.src, m.dst} == {a, b}  # noqa: E731 - a one-line message filter reads best as a lambda
    w.settle(where=pair("n1", "n2"))
    s.check(w.node("n1").commit_index < idx,
            f"index {idx} is on n1 and n2 only, 2 of 5: not committed (§5.3)")
    w.settle(where=pair("n1", "n3"))
    s.check(w.node("n1").commit_index >= idx,
            f"n3 stores it too, 3 of 5 is a majority: n1 commits index {idx} and applies it "
            f"(§5.3)")
    w.settle()
    w.write(b"y=2")
    w.write(b"z=3")
    w.run(6)
    logs = {tuple(w.node(n).log.slice(1, 100)) for n in w.ids}
    s.check(len(logs) == 1, "every log holds the same entries in the same order (Log Matching, "
                            "§5.3)")
    s.check(all(w.machine[n] == [b"x=1", b"y=2", b"z=3"] for n in w.ids),
            "every state machine applied x=1, y=2, z=3 in that order (State Machine Safety, "
            "§5.4.3)")


def leader_crash(s: Script) -> None:
    w = s.world(5)
    s.elect("n1")
    w.write(b"x=1")
    w.run(4)
    s.note("n1 appends one more entry and crashes before sending it anywhere")
    w.write(b"lost")
    w.drop(lambda m: m.src == "n1")
    w.crash("n1")
    s.check(w.run(100, until=lambda: w.leader() is not None), "the others elect a new leader")
    new = w.node(s.expect(w.leader(), "a leader"))
    s.check(new.log.term_at(2) == 1 and new.log.entry(2).data == b"x=1",
            f"{new.id} holds the committed x=1: only a node with every committed entry can "
            f"win (Leader Completeness, §5.4)")
    w.write(b"y=2")
    w.run(4)
    s.note("n1 comes back: it learns the new term and the leader's log replaces its own "
           "uncommitted entry (§5.3)")
    w.restart("n1")
    w.run(12)
    n1 = w.node("n1")
    s.check(n1.role == Role.FOLLOWER and n1.term == new.term,
            f"n1 is a follower of term {new.term}")
    s.check(w.machine["n1"] == w.machine[new.id] == [b"x=1", b"y=2"],
            "n1's state machine equals the leader's; 'lost' was never committed, so no client "
            "was told it was")


def partition(s: Script) -> None:
    w = s.world(5)
    s.elect("n1")
    w.write(b"x=1")
    w.run(4)
    w.partition(["n1", "n2"], ["n3", "n4", "n5"])
    s.note("n1 still believes it leads: a client writes to it and asks for a linearizable "
           "read (ReadIndex, thesis §6.4)")
    idx = s.expect(w.write(b"minority"), "n1 to take the write")
    w.read("n1", "read-1")
    w.run(4)
    s.check(w.node("n1").commit_index < idx and "read-1" not in w.reads,
            "n1 has 2 of 5: it can neither commit the write nor confirm it still leads, so the "
            "read is not served (§5.3, thesis §6.4)")
    s.check(w.run(60, until=lambda: w.leader() not in (None, "n1")),
            "the majority side elects a leader of a newer term (§5.2)")
    new = w.leader()
    w.write(b"majority", new)
    w.run(30)
    s.check(w.reads.get("read-1", "absent") is None and w.node("n1").role != Role.LEADER,
            "check-quorum made n1 step down and its pending read failed: the client retries "
            "elsewhere (thesis §6.2, §6.4)")
    s.check(all(w.machine[n] == [b"x=1", b"majority"] for n in ("n3", "n4", "n5")),
            f"{new}'s side commits 'majority' with 3 of 5")
    w.heal()
    w.run(20)
    s.check(all(w.machine[n] == [b"x=1", b"majority"] for n in w.ids),
            "after healing, n1 and n2 drop 'minority' (never committed) and take the majority's "
            "log (§5.3)")


def pre_vote(s: Script) -> None:
    w = s.world(5)
    s.elect("n1")
    w.run(4)
    term = w.node("n1").term
    s.note("with pre-vote (the default): n5 is cut off and its timer fires again and again")
    w.isolate("n5")
    w.run(60)
    s.check(w.node("n5").term == term, f"n5 asked for pre-votes only: its term stays {term} "
                                       f"(thesis §9.6)")
    w.heal()
    w.run(20)
    s.check(w.leader() == "n1" and w.node("n1").term == term,
            "n5 rejoins without disturbing the leader: n1 still leads term "
            f"{term} (thesis §9.6)")
    w = s.world(5, config=BASIC)
    s.note("the same without pre-vote and check-quorum (the paper's basic algorithm)")
    s.elect("n1")
    w.isolate("n5")
    w.run(60)
    s.check(w.node("n5").term > term + 1, f"n5 became a candidate again and again: its term "
                                          f"is now {w.node('n5').term} (§5.2)")
    w.heal()
    w.run(40)
    s.check(w.node("n1").term > term or w.leader() != "n1",
            "on rejoining, n5's higher term deposed the healthy leader n1: the disruption "
            "pre-vote prevents (thesis §9.6)")


SCENARIOS: dict[str, Scenario] = {sc.name: sc for sc in (
    Scenario("leader-election", "five followers, randomized timeouts, one leader (§5.2)",
             leader_election),
    Scenario("split-vote", "two candidates split the votes; randomized timeouts retry (§5.2)",
             split_vote),
    Scenario("log-replication", "a write commits once a majority stores it (§5.3)",
             log_replication),
    Scenario("leader-crash", "the leader dies; the new one has every committed entry (§5.4)",
             leader_crash),
    Scenario("figure7", "a new leader forces its log on six divergent followers (§5.3, Fig. 7)",
             paper.figure7),
    Scenario("figure8", "an old-term entry on a majority is not committed (§5.4.2, Fig. 8)",
             paper.figure8),
    Scenario("partition", "a minority leader cannot commit or serve linearizable reads",
             partition),
    Scenario("joint-consensus", "replace two of three voters through C_old,new (§6)",
             paper.joint_consensus),
    Scenario("snapshot-catch-up", "a node behind the compacted log gets a snapshot (§7)",
             paper.snapshot_catch_up),
    Scenario("pre-vote", "a rejoining node does not depose the leader (thesis §9.6)", pre_vote),
)}


def play(name: str, seed: int = 1) -> Script:
    """Run scenario ``name``; raises KeyError for an unknown name, ScenarioFailed if its point
    does not hold."""
    sc = SCENARIOS[name]
    s = Script(name, seed)
    sc.play(s)
    return s


__all__ = ["SCENARIOS", "Scenario", "play"]
