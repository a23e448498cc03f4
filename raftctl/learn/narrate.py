"""The narrative: one plain sentence per interesting event, citing the paper's section.

Sections: "§N" is the Raft paper (Ongaro & Ousterhout, USENIX ATC 2014); "thesis §N" is
Ongaro's PhD thesis (Stanford 2014).  Heartbeats and acknowledgements that change nothing are
not narrated: the view shows them as messages in flight.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from raftd.core import Role


@dataclass
class Narrator:
    lines: list[tuple[int, str]] = field(default_factory=list)
    _said_once: set[str] = field(default_factory=set)

    def say(self, time: int, text: str) -> None:
        self.lines.append((time, text))

    def once(self, time: int, key: str, text: str) -> None:
        """Say ``text`` the first time ``key`` comes up (e.g. a vote request ignored over and
        over by the same follower)."""
        if key not in self._said_once:
            self._said_once.add(key)
            self.say(time, text)

    def transcript(self) -> str:
        return "".join(f"{t:5d}  {text}\n" for t, text in self.lines)

    def tail(self, n: int) -> list[str]:
        return [f"{t:5d}  {text}" for t, text in self.lines[-n:]]


def role_change(nid: str, old_role: Role, old_term: int, role: Role, term: int, *,
                votes: list[str], leader: str | None, check_quorum: bool) -> str:
    """Explain a change of role (Ready.soft_state)."""
    if role == Role.PRE_CANDIDATE:
        return (f"{nid}'s election timeout fired (no leader heard from): "
                f"pre-candidate, asks whether the others would vote for it in term {term + 1}; "
                f"its own term stays {term} (thesis §9.6)")
    if role == Role.CANDIDATE:
        if old_role == Role.PRE_CANDIDATE:
            return (f"a majority would vote for {nid}: candidate for term {term}, votes for "
                    f"itself and sends RequestVote (§5.2)")
        return (f"{nid}'s election timeout fired: candidate for term {term}, votes for itself "
                f"and sends RequestVote (§5.2)")
    if role == Role.LEADER:
        who = ",".join(sorted(votes))
        return (f"{nid} has votes from a majority ({who}): leader of term {term} (§5.2); it "
                f"appends a no-op entry of its own term to learn what is committed (§5.4.2, §8)")
    # Back to follower.
    if term > old_term:
        return f"{nid} sees term {term} > its term {old_term}: steps down to follower (§5.1)"
    if old_role == Role.LEADER:
        if check_quorum:
            return (f"leader {nid} has not heard from a majority for an election timeout: "
                    f"steps down (check-quorum, thesis §6.2)")
        return f"leader {nid} steps down"
    if old_role == Role.PRE_CANDIDATE:
        return f"{nid} did not get a majority of pre-votes: stays a follower (thesis §9.6)"
    if old_role == Role.CANDIDATE:
        if leader:
            return f"candidate {nid} hears from leader {leader} of term {term}: follower (§5.2)"
        return f"{nid} lost the election for term {term}: back to follower (§5.2)"
    return f"{nid} is now a follower of term {term}"


def vote_refusal(voter, src: str, term: int, last_index: int, last_term: int) -> str | None:
    """Why ``voter`` (a RaftNode, before it steps the request) will refuse, or None."""
    if term < voter.term:
        return f"its term {voter.term} is newer (§5.1)"
    if not voter.log.is_up_to_date(last_index, last_term):
        return (f"its log (last term {voter.log.last_term}, index {voter.log.last_index}) is more "
                f"up to date than {src}'s (last term {last_term}, index {last_index}): "
                f"election restriction (§5.4.1)")
    if term == voter.term and voter.voted_for not in (None, src):
        return f"it already voted for {voter.voted_for} in term {term} (§5.2)"
    return None


def withheld(voter: str, src: str, leader: str | None, kind: str) -> str:
    return (f"{voter} ignores {src}'s {kind}: it heard from leader {leader} less than an election "
            f"timeout ago (vote withholding, thesis §4.2.3)")


def vote_answer(voter: str, cand: str, term: int, granted: bool, reason: str | None) -> str:
    if granted:
        return f"{voter} grants {cand} its vote for term {term} (§5.2)"
    return f"{voter} refuses {cand} its vote for term {term}: {reason or 'see §5.2'}"


def mismatch(nid: str, leader: str, prev: int, prev_term: int, has: int | None) -> str:
    got = "no entry there" if has is None else f"term {has} there"
    return (f"{nid} rejects {leader}'s AppendEntries: its log has {got}, not term {prev_term} at "
            f"index {prev} (consistency check, §5.3); {leader} backs up and retries")


def truncation(nid: str, index: int, old_term: int, new_term: int) -> str:
    return (f"{nid} deletes its entries from index {index} on (term {old_term} conflicts with the "
            f"leader's term {new_term}) and appends the leader's (§5.3)")


def stale_append(nid: str, leader: str, term: int, own: int) -> str:
    return (f"{nid} rejects AppendEntries from {leader} of stale term {term} (its term is {own}); "
            f"the reply tells {leader} the newer term (§5.1)")


def commit(nid: str, lo: int, hi: int, term: int, holders: list[str]) -> str:
    span = f"index {hi}" if lo == hi else f"indexes {lo}..{hi}"
    return (f"{nid} commits {span}: stored on a majority ({','.join(holders)}) and index {hi} "
            f"is of its own term {term} (§5.3, §5.4.2)")


def write(nid: str, data: bytes, index: int, term: int) -> str:
    return (f"client write {data.decode(errors='replace')!r} to leader {nid}: appended at index "
            f"{index}, term {term}; it commits once a majority stores it (§5.3)")


def crash(nid: str, role: Role, term: int) -> str:
    return (f"{nid} ({role}, term {term}) crashes: role, commit index and state machine are lost; "
            f"term, vote and log are on its disk (Figure 2)")


def restart(nid: str, term: int, last_index: int) -> str:
    return (f"{nid} restarts from its disk: follower of term {term} with log up to index "
            f"{last_index}; it relearns the commit index from a leader (Figure 2)")


def snapshot_taken(nid: str, index: int, term: int) -> str:
    return (f"{nid} snapshots its state machine at index {index} (term {term}) and discards its "
            f"log up to there (§7)")


def snapshot_sent(leader: str, nid: str, index: int, term: int) -> str:
    return (f"{leader} sends {nid} its snapshot (index {index}, term {term}): the entries {nid} "
            f"needs were compacted away (InstallSnapshot, §7)")


def snapshot_installed(nid: str, index: int) -> str:
    return (f"{nid} installs the snapshot: state machine restored, log continues after index "
            f"{index} (§7)")
