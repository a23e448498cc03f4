"""Raft's safety properties (paper Figure 3), checked incrementally after every simulated event.

- Election Safety: at most one leader per term, across every server of the pool (members,
  removed servers and servers that never joined alike).
- Log Matching: if two logs hold an entry with the same index and term, they are identical up to
  it.  Checked by induction: every (index, term) maps to exactly one (entry, previous term).
- Leader Completeness: a committed entry is in the log of every later leader.
- State Machine Safety: no two nodes apply different entries at one index.
- Commit monotonicity: a node's commit index never decreases (within one incarnation).
- Durability: no acknowledged proposal is ever lost (checked at the end on every member of the
  final configuration).

Membership (Raft §6) adds checks on the core's own state after every event:

- a configuration that is not empty has voters; a joint one has a non-empty C_old
  (``outgoing``) and a non-empty C_new (``voters``); nobody is both voter and learner;
- a leader's progress map covers exactly the other members of its configuration, plus, while
  its newest configuration is uncommitted, possibly servers of the one before it (which the
  leader keeps informing until they learn they were removed);
- a new leader is a voter of the latest committed configuration or of one its log holds after
  it (a server that was removed cannot lead a term: it would depose the real members' leader);
- a node's configuration is the newest configuration entry in its log, or its snapshot's (the
  bootstrap one before any snapshot) when its log holds none: a configuration never outlives
  the entry that carried it when the log is truncated or discarded (issue 14 §1).

Committed configuration entries are recorded in commit order (the committed indexes always form
a prefix 1..M) so the simulator knows the configuration that is in force and can report
"joint entry committed" and "C_new committed".
"""
from __future__ import annotations

from collections.abc import Callable

from raftd.core import Configuration, Entry, EntryKind, Role


class SafetyViolation(AssertionError):
    pass


ConfigCallback = Callable[[str, int, int, Configuration, Configuration], None]


class SafetyChecker:
    def __init__(self, ids: list[str], initial: Configuration | None = None,
                 on_config_committed: ConfigCallback | None = None):
        self.leaders: dict[int, str] = {}  # term -> leader
        self.entries: dict[tuple[int, int], tuple[int, bytes, int]] = {}  # (index, term) -> ...
        self.committed: dict[int, int] = {}  # index -> term
        self.applied_at: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.acked: dict[int, Entry] = {}  # index -> acknowledged entry
        self._log_checked: dict[str, tuple[int, int]] = {}  # node -> (checked upto, truncations)
        self._commit_seen: dict[str, int] = {i: 0 for i in ids}
        self._leader_seen: dict[str, int] = {i: -1 for i in ids}
        # Committed configurations, in index order: (index, term, configuration).
        self.initial = initial if initial is not None else Configuration.make(ids)
        self.configs: list[tuple[int, int, Configuration]] = []
        self._on_config_committed = on_config_committed
        self._config_checked: dict[str, Configuration] = {}  # node -> configuration checked
        # node -> (log checked upto, truncations, index of its newest CONFIG entry, decoded)
        self._newest_cfg: dict[str, tuple[int, int, int, Configuration | None]] = {}
        self._looked_at: dict[str, tuple] = {}  # node -> what observe last saw (_state_key)

    # ------------------------------------------------------------------ configurations --
    def latest_config(self) -> tuple[int, Configuration]:
        """The configuration in force: the latest committed one (index 0: the bootstrap one)."""
        if self.configs:
            index, _, cfg = self.configs[-1]
            return index, cfg
        return 0, self.initial

    def node_started(self, nid: str) -> None:
        self._commit_seen[nid] = 0
        self._log_checked.pop(nid, None)
        self._leader_seen[nid] = -1
        self._newest_cfg.pop(nid, None)
        self._looked_at.pop(nid, None)

    @staticmethod
    def _state_key(raft) -> tuple:
        """Everything the checks below read from a node.  The log changes only through
        RaftLog's methods, each of which moves last_index, snapshot_index or truncations;
        configurations and snapshots are immutable values replaced whole."""
        log = raft.log
        return (raft, raft.term, raft.role, raft.commit_index, log.last_index,
                log.snapshot_index, log.truncations, raft.config, raft.snapshot,
                tuple(raft.progress) if raft.role == Role.LEADER else ())

    def observe(self, node, now: int) -> bool:
        """Check ``node``'s state; False if it did not change since the last look."""
        raft = node.raft
        if raft is None:
            return False
        nid = node.id
        # A node whose state did not change since the last look passes every check again (the
        # checks are incremental, and what other nodes did is checked when they change): skip.
        key = self._state_key(raft)
        if self._looked_at.get(nid) == key:
            return False
        self._looked_at[nid] = key
        self._check_core_state(nid, raft)
        # Election Safety + Leader Completeness, once per (node, term) it leads.
        if raft.role == Role.LEADER and self._leader_seen[nid] != raft.term:
            self._leader_seen[nid] = raft.term
            other = self.leaders.setdefault(raft.term, nid)
            if other != nid:
                raise SafetyViolation(f"two leaders in term {raft.term}: {other} and {nid}")
            for index, term in self.committed.items():
                if index <= raft.log.snapshot_index:
                    continue  # compacted into a snapshot (its state is checked when applied)
                if raft.log.term_at(index) != term:
                    raise SafetyViolation(
                        f"leader {nid} (term {raft.term}) lacks committed entry {index} "
                        f"(term {term}); its log has term {raft.log.term_at(index)} there")
            self._check_leader_is_member(nid, raft)
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
            raise SafetyViolation(
                f"{nid} commit index went back from {prev} to {raft.commit_index}")
        for index in range(prev + 1, raft.commit_index + 1):
            term = log.term_at(index)
            if term is None or index <= log.snapshot_index:
                continue  # known only through a snapshot (checked when applied)
            first = self.committed.setdefault(index, term)
            if first != term:
                raise SafetyViolation(f"{nid} committed index {index} at term {term}, "
                                      f"but term {first} was committed there before")
            e = log.entry(index)
            if e.kind == EntryKind.CONFIG and (not self.configs or self.configs[-1][0] < index):
                self._config_committed(nid, e)
        self._commit_seen[nid] = raft.commit_index
        return True

    def _config_committed(self, nid: str, e: Entry) -> None:
        cfg = Configuration.decode(e.data)
        _, prev = self.latest_config()
        self.configs.append((e.index, e.term, cfg))
        if self._on_config_committed is not None:
            self._on_config_committed(nid, e.index, e.term, cfg, prev)

    def _check_core_state(self, nid: str, raft) -> None:
        cfg = raft.config
        if self._config_checked.get(nid) is not cfg:  # configurations are immutable values
            self._check_config(nid, cfg)
            self._config_checked[nid] = cfg
        self._check_config_follows_log(nid, raft)
        if raft.role == Role.LEADER:
            self._check_leader_progress(nid, raft)

    def _check_config_follows_log(self, nid: str, raft) -> None:
        """Raft §6: a server uses the newest configuration in its log; with none there, the
        one at its log base (its snapshot's, or the bootstrap one).  Incremental: only entries
        appended since the last look are scanned, unless the log was truncated."""
        log = raft.log
        upto, truncs, index, cfg = self._newest_cfg.get(nid, (0, -1, 0, None))
        if truncs != log.truncations or upto > log.last_index:
            upto, index, cfg = log.snapshot_index, 0, None
        for e in reversed(log.slice(max(upto, log.snapshot_index) + 1, log.last_index + 1)):
            if e.kind == EntryKind.CONFIG:
                index, cfg = e.index, Configuration.decode(e.data)
                break
        self._newest_cfg[nid] = (log.last_index, log.truncations, index, cfg)
        if index > log.snapshot_index and cfg is not None:  # (index > 0: cfg was found)
            want, where = cfg, f"its newest configuration entry (index {index})"
        elif raft.snapshot is not None:
            want = raft.snapshot.configuration
            where = f"its snapshot's (index {raft.snapshot.index})"
        else:
            want = self.initial if nid in self.initial.members else Configuration.make(())
            where = "the bootstrap one (no snapshot, no configuration entry)"
        if raft.config != want:
            raise SafetyViolation(
                f"{nid}: configuration in force {raft.config.describe()} is not {where}: "
                f"{want.describe()} (log {log.snapshot_index + 1}..{log.last_index})")

    @staticmethod
    def _check_config(nid: str, cfg: Configuration) -> None:
        if cfg.members and not cfg.voters:
            raise SafetyViolation(f"{nid}: configuration without voters: {cfg.describe()}")
        if cfg.joint and not (cfg.outgoing and cfg.voters):
            raise SafetyViolation(f"{nid}: joint configuration with an empty half: "
                                  f"{cfg.describe()}")
        if cfg.voters & cfg.learners:
            raise SafetyViolation(f"{nid}: a server is both voter and learner: {cfg.describe()}")

    def _check_leader_progress(self, nid: str, raft) -> None:
        cfg = raft.config
        want = cfg.members - {nid}
        have = frozenset(raft.progress)
        if have == want:
            return
        if want - have:
            raise SafetyViolation(
                f"leader {nid} (term {raft.term}) tracks progress of {sorted(have)} but its "
                f"configuration's other members are {sorted(want)} ({cfg.describe()})")
        # Extra peers are allowed only while the newest configuration is uncommitted, and
        # only servers of the configuration before it (the leader keeps replicating to the
        # servers a change removes until it commits, so they learn they were removed).
        newest, previous = self._newest_configs(raft)
        if newest <= raft.commit_index or not (have - want) <= previous.members:
            raise SafetyViolation(
                f"leader {nid} (term {raft.term}, commit {raft.commit_index}) tracks progress "
                f"of {sorted(have)}; its configuration (index {newest}: {cfg.describe()}) has "
                f"the other members {sorted(want)}, the one before it {previous.describe()}")

    def _newest_configs(self, raft) -> tuple[int, Configuration]:
        """Index of the newest configuration entry in ``raft``'s log (0 if none) and the
        configuration in force before it (from the core, which also knows the configuration
        at its log base once older entries were compacted into a snapshot)."""
        log = raft.log
        for index in range(log.last_index, log.snapshot_index, -1):
            if log.entry(index).kind == EntryKind.CONFIG:
                return index, raft.configuration_at(index - 1)
        return 0, raft.configuration_at(log.snapshot_index)

    def _check_leader_is_member(self, nid: str, raft) -> None:
        """A leader must be a voter of the configuration in force (the latest committed one) or
        of a configuration its own log holds after it (a change in progress), or a server that
        the newest configuration in its log removes before that configuration committed (as far
        as it knows): it may lead to finish the change without counting itself (Raft §6)."""
        index, cfg = self.latest_config()
        if cfg.is_voter(nid) or raft._may_campaign():
            return
        log = raft.log
        for e in log.slice(index + 1, log.last_index + 1):
            if e.kind == EntryKind.CONFIG and Configuration.decode(e.data).is_voter(nid):
                return
        raise SafetyViolation(
            f"{nid} became leader of term {raft.term} but is not a voter of the committed "
            f"configuration (index {index}: {cfg.describe()}) nor of any later one in its log")

    def applied(self, nid: str, e: Entry) -> None:
        seen = self.applied_at.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            raise SafetyViolation(f"state machine safety: {nid} applied {(e.term, e.data)!r} at "
                                  f"index {e.index}, another node applied {seen!r}")

    def acknowledged(self, e: Entry) -> None:
        self.acked[e.index] = e

    def final(self, cluster) -> None:
        """Every acknowledged proposal is applied, at its index, on every member of the final
        configuration (servers outside it may have been removed long ago)."""
        _, cfg = self.latest_config()
        for nid in sorted(cfg.members):
            applied = cluster.nodes[nid].applied
            for index, e in self.acked.items():
                if index > len(applied) or applied[index - 1] != e:
                    got = applied[index - 1] if index <= len(applied) else None
                    raise SafetyViolation(f"acknowledged entry {e} lost on {nid}: has {got}")
