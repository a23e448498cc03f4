"""Raft's safety properties (paper Figure 3), checked incrementally after every simulated event.

- Election Safety: at most one leader per term.
- Log Matching: if two logs hold an entry with the same index and term, they are identical up to
  it.  Checked by induction: every (index, term) maps to exactly one (entry, previous term).
- Leader Completeness: a committed entry is in the log of every later leader.
- State Machine Safety: no two nodes apply different entries at one index.
- Commit monotonicity: a node's commit index never decreases (within one incarnation).
- Durability: no acknowledged proposal is ever lost (checked at the end on every node).
"""
from __future__ import annotations

from raftd.core import Entry, Role


class SafetyViolation(AssertionError):
    pass


class SafetyChecker:
    def __init__(self, ids: list[str]):
        self.leaders: dict[int, str] = {}  # term -> leader
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}  # (index, term) -> ...
        self.committed: dict[int, int] = {}  # index -> term
        self.applied_at: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.acked: dict[int, Entry] = {}  # index -> acknowledged entry
        self._log_checked: dict[str, tuple[int, int]] = {}  # node -> (checked upto, truncations)
        self._commit_seen: dict[str, int] = {i: 0 for i in ids}
        self._leader_seen: dict[str, int] = {i: -1 for i in ids}

    def node_started(self, nid: str) -> None:
        self._commit_seen[nid] = 0
        self._log_checked.pop(nid, None)
        self._leader_seen[nid] = -1

    def observe(self, node, now: int) -> None:
        raft = node.raft
        if raft is None:
            return
        nid = node.id
        # Election Safety + Leader Completeness, once per (node, term) it leads.
        if raft.role == Role.LEADER and self._leader_seen[nid] != raft.term:
            self._leader_seen[nid] = raft.term
            other = self.leaders.setdefault(raft.term, nid)
            if other != nid:
                raise SafetyViolation(f"two leaders in term {raft.term}: {other} and {nid}")
            for index, term in self.committed.items():
                if raft.log.term_at(index) != term:
                    raise SafetyViolation(
                        f"leader {nid} (term {raft.term}) lacks committed entry {index} "
                        f"(term {term}); its log has term {raft.log.term_at(index)} there")
        # Log Matching, only over what changed since the last look.
        log = raft.log
        upto, truncs = self._log_checked.get(nid, (log.snapshot_index, log.truncations))
        if truncs != log.truncations:
            upto = log.snapshot_index
        for e in log.slice(upto + 1, log.last_index + 1):
            key = (e.index, e.term)
            value = (e.kind, e.data, log.term_at(e.index - 1))
            seen = self.entries.setdefault(key, value)
            if seen != value:
                raise SafetyViolation(f"log matching: {nid} holds a different entry at index "
                                      f"{e.index} term {e.term}: {value!r} vs {seen!r}")
        self._log_checked[nid] = (log.last_index, log.truncations)
        # Commit monotonicity, and agreement on what is committed.
        prev = self._commit_seen[nid]
        if raft.commit_index < prev:
            raise SafetyViolation(f"{nid} commit index went back from {prev} to {raft.commit_index}")
        for index in range(prev + 1, raft.commit_index + 1):
            term = log.term_at(index)
            if term is None:
                continue
            seen = self.committed.setdefault(index, term)
            if seen != term:
                raise SafetyViolation(f"{nid} committed index {index} at term {term}, "
                                      f"but term {seen} was committed there before")
        self._commit_seen[nid] = raft.commit_index

    def applied(self, nid: str, e: Entry) -> None:
        seen = self.applied_at.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            raise SafetyViolation(f"state machine safety: {nid} applied {(e.term, e.data)!r} at "
                                  f"index {e.index}, another node applied {seen!r}")

    def acknowledged(self, e: Entry) -> None:
        self.acked[e.index] = e

    def final(self, cluster) -> None:
        """Every acknowledged proposal is applied, at its index, on every node."""
        for nid in cluster.ids:
            applied = cluster.nodes[nid].applied
            for index, e in self.acked.items():
                if index > len(applied) or applied[index - 1] != e:
                    got = applied[index - 1] if index <= len(applied) else None
                    raise SafetyViolation(f"acknowledged entry {e} lost on {nid}: has {got}")
