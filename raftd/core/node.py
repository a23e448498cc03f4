"""RaftNode: the Raft algorithm as a deterministic state machine (sans-I/O).

Inputs are method calls: ``tick()`` (one logical clock tick), ``step(msg)`` (a received
message), ``propose(data)``, ``read_index(request_id)``, ``propose_configuration(cfg)``,
``transfer_leadership(target)``, and notices from the runtime: ``persisted(index, term)`` and
``applied(index)``.  Output is collected and handed over by ``ready()`` (see ready.py for the
contract the runtime must honour: persist, then send, then apply).

No clock, no socket, no disk, no global randomness: time is a tick count and the only source of
randomness is the ``random.Random`` passed in (for election timeouts, Raft §5.2).
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import membership
from .errors import (ConfChangeInProgressError, InvalidConfChangeError, NotLeaderError,
                     ProposalDroppedError)
from .log import LogCorruptionError, RaftLog
from .membership import Configuration, SnapshotMeta
from .messages import (AppendEntries, AppendEntriesResponse, InstallSnapshot, Message, PreVote,
                       PreVoteResponse, RequestVote, RequestVoteResponse, TimeoutNow)
from .progress import Progress, ProgressState
from .ready import ReadState, Ready
from .types import Entry, EntryKind, HardState, Role, SoftState
from .validate import problem


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tuning of the core, in ticks and counts (only the runtime knows what a tick lasts)."""

    election_ticks: int = 10  # minimum election timeout; the actual one is drawn in [e, 2e)
    heartbeat_ticks: int = 1
    max_append_entries: int = 512  # batching: entries per AppendEntries
    max_append_bytes: int = 1 << 20
    max_inflight_msgs: int = 64  # pipelining: AppendEntries in flight per follower
    max_inflight_bytes: int = 32 << 20
    pre_vote: bool = True  # thesis §9.6
    check_quorum: bool = True  # leader steps down without a live majority; enables withholding


def entry_size(e: Entry) -> int:
    return len(e.data) + 24


class RaftNode:
    def __init__(self, node_id: str, config: RaftConfig, rng: random.Random, *,
                 hard_state: HardState = HardState(),
                 entries: list[Entry] | tuple[Entry, ...] = (),
                 snapshot_index: int = 0, snapshot_term: int = 0,
                 base_configuration: Configuration = Configuration(frozenset()),
                 snapshot: SnapshotMeta | None = None):
        """Build a node from its durable state.  ``entries`` follow the log base
        (``snapshot_index``, ``snapshot_term``).  ``snapshot`` is the newest durable snapshot
        (the state machine was restored from it; it may be ahead of the log base when trailing
        entries were kept for slow followers).  ``base_configuration`` is the configuration at
        the log base when there is no snapshot (the bootstrap configuration for a fresh
        cluster; empty for a node that joins later and learns everything from the leader)."""
        self.id = node_id
        self.cfg = config
        self._rng = rng
        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self.log = RaftLog(entries, snapshot_index, snapshot_term)
        if snapshot is None and snapshot_index:
            snapshot = SnapshotMeta(snapshot_index, snapshot_term, base_configuration)
        self.snapshot = snapshot  # newest durable snapshot; what a lagging follower gets (§7)
        start = snapshot.index if snapshot else 0
        if snapshot is not None:
            base_configuration = snapshot.configuration
        # Invariant: log base <= snapshot.index <= last_applied <= commit_index <= last_index
        self.commit_index = start
        self.last_applied = start
        self._applying = start  # highest index handed to the runtime to apply
        self._snapshot_to_install: SnapshotMeta | None = None
        # Invariant: _durable <= _stable <= last_index; entries after _stable go in the next Ready.
        self._stable = self.log.last_index  # highest index handed to the runtime to persist
        self._durable = self.log.last_index  # highest index the runtime said is durable
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None

        # Configurations: the newest one in the log wins as soon as it is appended (Raft §6).
        self._base_config = base_configuration
        self._config_log: list[tuple[int, Configuration]] = [
            (e.index, Configuration.decode(e.data)) for e in entries
            if e.kind == EntryKind.CONFIG and e.index > start]
        self.config = self._config_log[-1][1] if self._config_log else base_configuration

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._reset_randomized_timeout()
        self._votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self._seq = 0  # heartbeat round counter (ReadIndex)
        self._reads: list[tuple[object, int, int]] = []  # (request_id, read index, seq round)
        self._reads_waiting_commit: list[object] = []  # reads before this term's first commit
        self._need_heartbeat = False
        self._commit_dirty = False
        self.transfer_target: str | None = None
        self._transfer_elapsed = 0
        self.refused = 0  # messages dropped as impossible from an honest peer (issue 19)
        self.last_refused: str | None = None  # what the latest of them was, and why

        # Output accumulated until the next ready().
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._last_hs = HardState(self.term, self.voted_for)
        self._last_ss = SoftState(self.role, self.leader_id, self.term)

    # ===================================================================== public inputs ==
    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, msg: Message) -> None:
        """Handle one message.  Term rules (Figure 2, "Rules for Servers") live here, once; the
        handlers below see only messages of the current term."""
        why = self._refusal(msg)
        if why is not None:
            self._refuse(msg, why)  # before the term rules: it must change nothing (issue 19)
            return
        if isinstance(msg, RequestVote) and msg.transfer and msg.src not in self._known_voters():
            msg = dataclasses.replace(msg, transfer=False)  # only a voter may claim a transfer
        if msg.term > self.term:
            if isinstance(msg, (PreVote, RequestVote)):
                # Vote withholding (Raft §6): while we hear from a live leader, ignore vote
                # requests, so removed or partitioned servers cannot depose it.
                in_lease = (self.cfg.check_quorum and self.leader_id is not None
                            and self.election_elapsed < self.cfg.election_ticks)
                if in_lease and not getattr(msg, "transfer", False):
                    return
            if isinstance(msg, PreVote) or (isinstance(msg, PreVoteResponse) and msg.granted):
                pass  # thesis §9.6: a pre-vote never changes anyone's term
            elif isinstance(msg, (AppendEntries, TimeoutNow, InstallSnapshot)):
                self._become_follower(msg.term, msg.src)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self.term:
            if isinstance(msg, AppendEntries):
                # A stale leader: tell it our term so it steps down (needed with check-quorum and
                # pre-vote, where our term may have moved on without it hearing).
                self._send(AppendEntriesResponse(self.id, msg.src, self.term, False,
                                                 self.log.last_index))
            elif isinstance(msg, PreVote):
                self._send(PreVoteResponse(self.id, msg.src, self.term, False))
            return  # every other stale message is ignored (Figure 2)
        handler = self._HANDLERS[type(msg)]
        handler(self, msg)

    def propose(self, data: bytes, kind: int = EntryKind.NORMAL) -> int:
        """Append a command to the leader's log; returns its index.  The entry is committed
        once a quorum holds it; the runtime learns that through Ready.committed_entries."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transfer_target is not None:
            raise ProposalDroppedError(f"leadership transfer to {self.transfer_target} in progress")
        return self._append(kind, data)

    def read_index(self, request_id: object) -> None:
        """Register a linearizable read (thesis §6.4).  Its ReadState comes out of ready() once
        this leader has confirmed its leadership with a quorum after the read arrived."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.log.term_at(self.commit_index) != self.term:
            # A new leader does not know the commit index until it commits an entry of its own
            # term (thesis §6.4 step 1); park the read until the no-op commits.
            self._reads_waiting_commit.append(request_id)
            return
        self._register_read(request_id)

    def propose_configuration(self, target: Configuration) -> int:
        """Start a membership change to ``target`` (Raft §6).  Changes of voters go through a
        joint configuration C_old,new; the leader appends C_new itself once that commits.
        Learner-only changes take effect in one step (they never count in a quorum)."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transfer_target is not None:
            raise ProposalDroppedError(f"leadership transfer to {self.transfer_target} in progress")
        cur = self.config
        if cur.joint or self.config_index() > self.commit_index:
            raise ConfChangeInProgressError(
                f"a membership change is still in progress ({cur.describe()})")
        if not target.voters:
            raise InvalidConfChangeError("the new configuration would have no voters")
        if target.voters & target.learners:
            raise InvalidConfChangeError("a server cannot be both voter and learner")
        if target.voters == cur.voters:
            return self._append(EntryKind.CONFIG, target.encode())
        joint = Configuration.make(target.voters, cur.voters, target.learners,
                                   _merge_addresses(cur, target))
        return self._append(EntryKind.CONFIG, joint.encode())

    def transfer_leadership(self, target: str) -> None:
        """Thesis §3.10: bring ``target`` up to date, then send it TimeoutNow.  Proposals are
        refused meanwhile; the transfer is abandoned after an election timeout."""
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id or not self.config.is_voter(target):
            raise InvalidConfChangeError(
                f"cannot transfer leadership to {target}: not another voter")
        self.transfer_target = target
        self._transfer_elapsed = 0
        if self.progress[target].match_index == self.log.last_index:
            self._send(TimeoutNow(self.id, target, self.term))

    def snapshot_taken(self, meta: SnapshotMeta) -> None:
        """The runtime made a snapshot of the state machine durable (Raft §7).  It is what a
        follower behind the log base will be sent."""
        if meta.index > self.last_applied:
            raise ValueError(f"snapshot at {meta.index} is ahead of applied {self.last_applied}")
        if self.snapshot is None or meta.index > self.snapshot.index:
            self.snapshot = meta

    def compact(self, index: int) -> None:
        """Forget log entries up to ``index`` (covered by a durable snapshot).  The runtime
        keeps some trailing entries below its snapshot so slow followers can still catch up
        from the log (thesis §5.1)."""
        if self.snapshot is None or index > self.snapshot.index:
            raise ValueError(f"cannot compact to {index}: no snapshot covers it")
        if index <= self.log.snapshot_index:
            return
        term = self.log.term_at(index)
        assert term is not None  # snapshot_index < index <= last_index: the entry is here
        self.log.compact(index, term)
        # Configuration entries at or below the new base are no longer in the log; the newest of
        # them is the configuration at the base.
        older = [(i, c) for i, c in self._config_log if i <= index]
        if older:
            self._base_config = older[-1][1]
            self._config_log = [(i, c) for i, c in self._config_log if i > index]

    def report_snapshot(self, peer: str, ok: bool) -> None:
        """The runtime's transfer of a snapshot to ``peer`` ended.  On failure we probe again
        (and so resend the snapshot); on success we wait for the follower's answer."""
        pr = self.progress.get(peer)
        if pr is not None and pr.state == ProgressState.SNAPSHOT and not ok:
            pr.become_probe()

    def persisted(self, index: int, term: int) -> None:
        """The runtime made entries up to (index, term) durable."""
        if self.log.term_at(index) != term or index <= self._durable:
            return  # stale notice: that suffix was truncated and rewritten since
        self._durable = min(index, self._stable)
        if self.role == Role.LEADER:
            self._maybe_commit()

    def applied(self, index: int) -> None:
        """The runtime applied entries up to ``index`` to its state machine."""
        self.last_applied = max(self.last_applied, index)

    def ready(self) -> Ready:
        """Hand over everything produced since the last call (and forget it)."""
        if self.role == Role.LEADER:
            self._flush_appends()
        snapshot, self._snapshot_to_install = self._snapshot_to_install, None
        entries: list[Entry] = []
        if self._stable < self.log.last_index:
            entries = self.log.slice(self._stable + 1, self.log.last_index + 1)
            self._stable = self.log.last_index
        hard_state = None
        hs = HardState(self.term, self.voted_for)
        if hs != self._last_hs:
            hard_state = self._last_hs = hs
        committed: list[Entry] = []
        hi = min(self.commit_index, self._stable)
        if hi > self._applying:
            committed = self.log.slice(self._applying + 1, hi + 1)
            self._applying = hi
        soft_state = None
        ss = SoftState(self.role, self.leader_id, self.term)
        if ss != self._last_ss:
            soft_state = self._last_ss = ss
        messages, self._msgs = self._msgs, []
        read_states, self._read_states = self._read_states, []
        return Ready(hard_state, entries, messages, committed, read_states, soft_state, snapshot)

    def has_ready(self) -> bool:
        return bool(self._msgs or self._read_states or self._stable < self.log.last_index
                    or self._snapshot_to_install is not None
                    or HardState(self.term, self.voted_for) != self._last_hs
                    or min(self.commit_index, self._stable) > self._applying
                    or SoftState(self.role, self.leader_id, self.term) != self._last_ss
                    or (self.role == Role.LEADER and self._has_appends_to_send()))

    def status(self) -> dict[str, object]:
        return {
            "id": self.id, "term": self.term, "leader": self.leader_id,
            "role": ("learner" if self.role == Role.FOLLOWER and self.id in self.config.learners
                     else str(self.role)),
            "commit_index": self.commit_index, "applied_index": self.last_applied,
            "last_log_index": self.log.last_index, "first_log_index": self.log.first_index,
            "snapshot_index": self.snapshot.index if self.snapshot else 0,
            "voted_for": self.voted_for,
            "refused_messages": self.refused,
            "configuration": {"voters": sorted(self.config.voters | self.config.outgoing),
                              "learners": sorted(self.config.learners),
                              "joint": self.config.joint},
            "progress": {p: {"match_index": pr.match_index, "next_index": pr.next_index,
                             "state": pr.state.name.lower()} for p, pr in self.progress.items()},
        }

    # ================================================================ state transitions ==
    def _become_follower(self, term: int, leader_id: str | None) -> None:
        if term != self.term:
            self.term = term
            self.voted_for = None
        self._fail_pending_reads()
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.transfer_target = None
        self.progress = {}
        self._reset_election_timer()

    def _become_pre_candidate(self) -> None:
        # No term change and no vote cast: thesis §9.6.
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._votes = {self.id: True}
        self._reset_election_timer()
        self._broadcast_votes(PreVote, self.term + 1)

    def _become_candidate(self, transfer: bool = False) -> None:
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self.leader_id = None
        self._votes = {self.id: True}
        self._reset_election_timer()
        self._broadcast_votes(RequestVote, self.term, transfer)

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self.transfer_target = None
        self.progress = {}
        self._sync_progress(fresh=True)
        # Raft §5.4.2 / §8: commit an entry of our own term to learn what is committed.
        self._append(EntryKind.NOOP, b"")

    def _campaign(self, transfer: bool = False) -> None:
        if not self._may_campaign():
            return  # learners, removed servers and joining nodes never campaign
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)
        self._tally()  # a single-voter configuration wins at once

    def _broadcast_votes(self, cls: type, term: int, transfer: bool = False) -> None:
        for peer in sorted(self._voters()):
            if peer == self.id:
                continue
            if cls is RequestVote:
                self._send(RequestVote(self.id, peer, term, self.log.last_index,
                                       self.log.last_term, transfer))
            else:
                self._send(PreVote(self.id, peer, term, self.log.last_index, self.log.last_term))

    def _tally(self) -> None:
        result = membership.vote_result(self.config, self._votes)
        if result == membership.VoteResult.WON:
            if self.role == Role.PRE_CANDIDATE:
                self._become_candidate()
                self._tally()
            else:
                self._become_leader()
        elif result == membership.VoteResult.LOST:
            self._become_follower(self.term, None)

    # =========================================================================== timers ==
    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self._randomized_timeout = e + self._rng.randrange(e)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        self._reset_randomized_timeout()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            self._reset_randomized_timeout()
            self._campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.transfer_target is not None:
            # Thesis §3.10: give up one election timeout after the transfer began, on its own
            # clock (tied to the check-quorum round, it could end one tick after it began).
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.cfg.election_ticks:
                self.transfer_target = None
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)  # check-quorum: we may be partitioned
                return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {self.id} | {p for p, pr in self.progress.items() if pr.recent_active}
        for pr in self.progress.values():
            pr.recent_active = False
        return membership.has_quorum(self.config, active)

    # ======================================================================== handlers ==
    def _refusal(self, msg: Message) -> str | None:
        """Why ``msg`` cannot come from an honest peer (issue 19), or None.  The runtime checks
        connections too; the core checks what its own state lets it know."""
        why = problem(msg)
        if why is not None:
            return why
        if isinstance(msg, (AppendEntries, InstallSnapshot)):
            if msg.term == self.term and self.leader_id not in (None, msg.src):
                # Election Safety: one leader per term, and we know who it is.
                return f"{self.leader_id} leads term {self.term}"
        if isinstance(msg, TimeoutNow):
            if msg.src not in self._known_voters():
                return "not a voter of our configuration"
            if msg.term == self.term and msg.src != self.leader_id:
                return "not the leader of this term"
        return None

    def _on_append_entries(self, m: AppendEntries) -> None:
        if self.role != Role.FOLLOWER:
            self._become_follower(self.term, m.src)  # a candidate learns of the leader (§5.2)
        self.leader_id = m.src
        self.election_elapsed = 0
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < self.commit_index:
            if not self._agrees_with_committed(m):
                # Leader Completeness: a real leader holds every committed entry.  Refuse
                # rather than stop the node (issue 19 §4); our log stays as it is.
                self._refuse(m, "entries conflict with committed ones")
                return
            # Entries up to our commit index are committed, so they already match the leader's
            # (Leader Completeness); skip them.  Also covers prev below a compacted base.
            skip = self.commit_index - prev
            if skip >= len(entries):
                self._send(AppendEntriesResponse(self.id, m.src, self.term, True,
                                                 prev + len(entries), seq=m.seq))
                return
            entries = entries[skip:]
            committed_term = self.log.term_at(self.commit_index)
            assert committed_term is not None  # snapshot_index <= commit_index <= last_index
            prev, prev_term = self.commit_index, committed_term
        if self.log.term_at(prev) != prev_term:
            hint_index, hint_term = self.log.find_conflict_by_term(min(prev, self.log.last_index),
                                                                   prev_term)
            self._send(AppendEntriesResponse(self.id, m.src, self.term, False, self.log.last_index,
                                             reject_index=m.prev_log_index,
                                             conflict_term=hint_term, conflict_index=hint_index,
                                             seq=m.seq))
            return
        last_new = prev + len(entries)
        self._append_from_leader(entries)
        # Figure 2 step 5: never beyond the last entry this message verified.
        new_commit = min(m.leader_commit, last_new)
        if new_commit > self.commit_index:
            self.commit_index = new_commit
        self._send(AppendEntriesResponse(self.id, m.src, self.term, True, last_new, seq=m.seq))

    def _agrees_with_committed(self, m: AppendEntries) -> bool:
        """Every (index, term) the message states at or below our commit index, that our log
        still holds, is ours."""
        stated = [(m.prev_log_index, m.prev_log_term)] + [(e.index, e.term) for e in m.entries]
        for index, term in stated:
            if index > self.commit_index:
                break
            mine = self.log.term_at(index)
            if mine is not None and mine != term:
                return False
        return True

    def _append_from_leader(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Figure 2 steps 3-4: truncate at the first real conflict only, so a duplicated or
        reordered AppendEntries never removes entries after it."""
        log = self.log
        for i, e in enumerate(entries):
            t = log.term_at(e.index)
            if t == e.term:
                continue
            if t is not None:
                if e.index <= self.commit_index:
                    raise LogCorruptionError(
                        f"{self.id}: leader {self.leader_id} conflicts with committed entry "
                        f"{e.index}")
                self._drop_acks_beyond(e.index - 1)
                log.truncate_after(e.index - 1)
                self._truncate_bookkeeping(e.index - 1)
            new = entries[i:]
            log.extend(new)
            for ne in new:
                if ne.kind == EntryKind.CONFIG:
                    self._on_config_appended(ne)
            return

    def _on_append_entries_response(self, m: AppendEntriesResponse) -> None:
        pr = self.progress.get(m.src) if self.role == Role.LEADER else None
        if pr is None:
            return
        if max(m.match_index if m.success else m.reject_index, m.conflict_index) > pr.sent_index:
            # Issue 19 §3: about an index we never sent this follower (so above our log's end
            # too): not an answer to anything of ours.  Counting it would commit what no
            # follower holds, or stop us when the index is past our log.
            self._refuse(m, "index above what was sent")
            return
        pr.recent_active = True
        if m.seq > pr.acked_seq:
            pr.acked_seq = m.seq
            self._release_reads()
        if m.success:
            if pr.state == ProgressState.SNAPSHOT:
                if m.match_index < pr.pending_snapshot:
                    return  # an answer to something sent before the snapshot
                pr.maybe_update(m.match_index)
                pr.become_replicate()
                self._maybe_commit()
                return
            if pr.maybe_update(m.match_index):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                self._maybe_commit()
                if (m.src == self.transfer_target
                        and pr.match_index == self.log.last_index):
                    self._send(TimeoutNow(self.id, m.src, self.term))
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = False
        else:
            hint = m.conflict_index
            if m.conflict_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.conflict_index, m.conflict_term)
            pr.maybe_decrease_to(m.reject_index, hint)

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        """Raft §7 / Figure 13, for the final (done) message of a transfer: the runtime has the
        whole snapshot in a file and will install it when it sees Ready.snapshot."""
        if self.role != Role.FOLLOWER:
            self._become_follower(self.term, m.src)
        self.leader_id = m.src
        self.election_elapsed = 0
        index, term = m.last_included_index, m.last_included_term
        if not m.done:
            return  # the runtime assembles chunks; only a complete snapshot reaches the core
        if index <= self.commit_index:
            # We already have (and have committed) everything it covers.  Ack the snapshot's
            # index, not our commit index: the leader ignores acks above what it sent us.
            self._send(AppendEntriesResponse(self.id, m.src, self.term, True, index))
            return
        meta = SnapshotMeta(index, term, Configuration.decode(m.configuration))
        if self.log.term_at(index) == term:
            # Figure 13 step 6: our log continues the snapshot's history; keep what follows.
            self.log.compact(index, term)
            self._durable = max(self._durable, index)
            self._stable = max(self._stable, index)
        else:
            self._drop_acks_beyond(index)
            self.log.compact(index, term)  # step 7: discard the whole log
            self._durable = self._stable = index
        self.commit_index = index
        self._applying = self.last_applied = index  # the runtime restores the state machine
        self.snapshot = meta
        self._snapshot_to_install = meta
        self._base_config = meta.configuration
        # Configuration bookkeeping follows the log: after step 7 no entry above the snapshot
        # is left, so a configuration from a discarded entry must not stay in force (issue 14).
        self._configs_follow_log()
        self._send(AppendEntriesResponse(self.id, m.src, self.term, True, index))

    def _on_request_vote(self, m: RequestVote) -> None:
        can_vote = (self.voted_for == m.src
                    or (self.voted_for is None and self.leader_id is None))
        granted = can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term)
        if granted:
            self.voted_for = m.src  # persisted (Ready.hard_state) before the reply is sent
            self._reset_election_timer()
        self._send(RequestVoteResponse(self.id, m.src, self.term, granted))

    def _on_pre_vote(self, m: PreVote) -> None:
        # m.term >= self.term here (stale ones were rejected in step()).
        can_vote = m.term > self.term or (self.voted_for in (None, m.src)
                                          and self.leader_id is None)
        granted = can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term)
        self._send(PreVoteResponse(self.id, m.src, m.term if granted else self.term, granted))

    def _on_request_vote_response(self, m: RequestVoteResponse) -> None:
        if self.role == Role.CANDIDATE:
            self._votes[m.src] = m.granted
            self._tally()

    def _on_pre_vote_response(self, m: PreVoteResponse) -> None:
        if self.role == Role.PRE_CANDIDATE and (m.term == self.term + 1 or not m.granted):
            self._votes[m.src] = m.granted
            self._tally()

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role != Role.LEADER:
            self._campaign(transfer=True)

    _HANDLERS: dict[type, Callable[[RaftNode, Any], None]] = {
        AppendEntries: _on_append_entries,
        AppendEntriesResponse: _on_append_entries_response,
        RequestVote: _on_request_vote,
        RequestVoteResponse: _on_request_vote_response,
        PreVote: _on_pre_vote,
        PreVoteResponse: _on_pre_vote_response,
        TimeoutNow: _on_timeout_now,
        InstallSnapshot: _on_install_snapshot,
    }

    # ===================================================================== replication ==
    def _append(self, kind: int, data: bytes) -> int:
        e = Entry(self.term, self.log.last_index + 1, kind, data)
        self.log.append(e)
        if kind == EntryKind.CONFIG:
            self._on_config_appended(e)
        return e.index

    def _has_appends_to_send(self) -> bool:
        last = self.log.last_index
        for pr in self.progress.values():
            if pr.next_index <= last and not pr.paused(self.cfg.max_inflight_msgs,
                                                       self.cfg.max_inflight_bytes):
                return True
        return self._need_heartbeat or self._commit_dirty

    def _flush_appends(self) -> None:
        """Send every follower what it can take now.  Called once per ready(), so proposals
        that arrived together travel together (batching) and several messages may be in flight
        (pipelining), each capped in entries and bytes."""
        commit_dirty, self._commit_dirty = self._commit_dirty, False
        if self._need_heartbeat:
            self._broadcast_heartbeat()
            commit_dirty = False  # the heartbeat already carries the commit index
        last = self.log.last_index
        c = self.cfg
        for peer, pr in self.progress.items():
            sent = False
            while (pr.next_index <= last
                   and not pr.paused(c.max_inflight_msgs, c.max_inflight_bytes)):
                self._send_append(peer, pr)
                sent = True
                if pr.state == ProgressState.PROBE:
                    break
            if commit_dirty and not sent and pr.state == ProgressState.REPLICATE:
                self._send_commit_notice(peer, pr)

    def _send_commit_notice(self, peer: str, pr: Progress) -> None:
        """An AppendEntries with no entries that tells the follower the new commit index.  It
        must stay empty: with the in-flight window full, a normal append would carry another
        batch past max_inflight_msgs/bytes on every commit (issue 14 §5)."""
        prev = pr.next_index - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            return  # the follower needs a snapshot; the next heartbeat sees to it
        self._send(AppendEntries(self.id, peer, self.term, prev, prev_term, (),
                                 self.commit_index, self._seq))

    def _send_append(self, peer: str, pr: Progress) -> None:
        prev = pr.next_index - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            # The follower needs entries we compacted away: send the snapshot (Raft §7).
            self._send_snapshot(peer, pr)
            return
        c = self.cfg
        entries = self.log.slice(pr.next_index, pr.next_index + c.max_append_entries)
        nbytes = sum([len(e.data) for e in entries]) + 24 * len(entries)
        if nbytes > c.max_append_bytes and len(entries) > 1:
            nbytes = 0
            for i, e in enumerate(entries):
                nbytes += entry_size(e)
                if nbytes > c.max_append_bytes and i > 0:
                    entries = entries[:i]
                    nbytes -= entry_size(e)
                    break
        self._send(AppendEntries(self.id, peer, self.term, prev, prev_term, tuple(entries),
                                 self.commit_index, self._seq))
        pr.note_sent(prev + len(entries))
        pr.sent(prev + len(entries), nbytes)

    def _send_snapshot(self, peer: str, pr: Progress) -> None:
        snap = self.snapshot
        if snap is None:
            raise LogCorruptionError(f"{self.id}: {peer} needs entries before our log base "
                                     f"{self.log.snapshot_index} but there is no snapshot")
        pr.become_snapshot(snap.index)
        pr.note_sent(snap.index)
        self._send(InstallSnapshot(self.id, peer, self.term, snap.index, snap.term,
                                   snap.configuration.encode()))

    def _broadcast_heartbeat(self) -> None:
        self._need_heartbeat = False
        self._seq += 1
        for peer, pr in self.progress.items():
            if pr.state == ProgressState.SNAPSHOT:
                # Thesis §5: a transfer that never completes must not wedge this follower
                # forever (hashicorp/raft #212): give up after a while and probe again.
                pr.snapshot_ticks += self.cfg.heartbeat_ticks
                if pr.snapshot_ticks > 30 * self.cfg.election_ticks:
                    pr.become_probe()
                continue
            if pr.state == ProgressState.PROBE:
                pr.probe_sent = False  # a probe may have been lost: allow a resend
                self._send_append(peer, pr)
            else:
                # Empty AppendEntries at next_index-1: a lost message shows up as a rejection.
                prev = pr.next_index - 1
                prev_term = self.log.term_at(prev)
                if prev_term is None:
                    self._send_snapshot(peer, pr)  # compacted past what it has
                    continue
                self._send(AppendEntries(self.id, peer, self.term, prev, prev_term,
                                         (), self.commit_index, self._seq))
                pr.note_sent(prev)
        if not self.progress:
            self._release_reads()

    def _maybe_commit(self) -> None:
        match = {p: pr.match_index for p, pr in self.progress.items()}
        match[self.id] = self._durable  # count ourselves only once our copy is on disk
        n = membership.committed_index(self.config, match)
        # Raft §5.4.2 (Figure 8): only entries of the current term commit by counting replicas.
        if n > self.commit_index and self.log.term_at(n) == self.term:
            self.commit_index = n
            self._commit_dirty = True
            self._on_commit_advanced()

    def _on_commit_advanced(self) -> None:
        if self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for rid in waiting:
                self._register_read(rid)
        cfg_index = self.config_index()
        if cfg_index and cfg_index <= self.commit_index:
            cfg = self.config
            if cfg.joint:
                # Raft §6: C_old,new is committed; now move to C_new.
                addrs = {n: a for n, a in cfg.addresses if n in cfg.voters or n in cfg.learners}
                self._append(EntryKind.CONFIG,
                             Configuration.make(cfg.voters, (), cfg.learners, addrs).encode())
            elif not cfg.is_voter(self.id):
                # Raft §6: a leader not in C_new steps down once C_new is committed.  Tell the
                # others the new commit index first, so C_new takes effect without waiting for
                # the next leader.
                self._broadcast_heartbeat()
                self._become_follower(self.term, None)
            elif any(p not in cfg.members for p in self.progress):
                self._sync_progress()  # C_new committed: stop replicating to removed servers

    # ================================================================ linearizable reads ==
    def _register_read(self, request_id: object) -> None:
        if membership.has_quorum(self.config, {self.id}):
            self._read_states.append(ReadState(request_id, self.commit_index))
            return
        self._reads.append((request_id, self.commit_index, self._seq + 1))
        self._need_heartbeat = True  # one heartbeat round serves every read waiting now

    def _release_reads(self) -> None:
        while self._reads:
            rid, index, seq = self._reads[0]
            acked = {self.id} | {p for p, pr in self.progress.items() if pr.acked_seq >= seq}
            if not membership.has_quorum(self.config, acked):
                return
            # Everything registered in this or an earlier round is now confirmed.
            while self._reads and self._reads[0][2] <= seq:
                rid, index, _ = self._reads.pop(0)
                self._read_states.append(ReadState(rid, index))

    def _fail_pending_reads(self) -> None:
        for rid, _, _ in self._reads:
            self._read_states.append(ReadState(rid, None))
        for rid in self._reads_waiting_commit:
            self._read_states.append(ReadState(rid, None))
        self._reads = []
        self._reads_waiting_commit = []

    # ====================================================================== membership ==
    def _voters(self) -> frozenset[str]:
        return self.config.voters | self.config.outgoing

    def _pending_previous(self) -> Configuration | None:
        """The configuration before the newest one while the newest is uncommitted (its
        servers still take part until it commits, Raft §6), else None."""
        return self._previous_config() if self.config_index() > self.commit_index else None

    def _known_voters(self) -> frozenset[str]:
        """Voters of the current configuration (both halves if joint) and, while it is
        uncommitted, of the one before it: who may send TimeoutNow or a transfer vote."""
        prev = self._pending_previous()
        return self._voters() | (prev.voters | prev.outgoing if prev else frozenset())

    def config_index(self) -> int:
        """Index of the entry that holds the configuration in force (the snapshot's index when
        no configuration entry is left in the log)."""
        return self._config_log[-1][0] if self._config_log else self.log.snapshot_index

    @property
    def pending_snapshot(self) -> SnapshotMeta | None:
        """A received snapshot the core accepted and the runtime has not been handed yet."""
        return self._snapshot_to_install

    def configuration_at(self, index: int) -> Configuration:
        """The configuration in force at ``index`` (for a snapshot taken there, Raft §7)."""
        cfg = self._base_config
        for i, c in self._config_log:
            if i > index:
                break
            cfg = c
        return cfg

    def _may_campaign(self) -> bool:
        """Voters campaign.  So does a server that the newest configuration in its log removes
        while that configuration is not yet committed, if it was a voter before: its log may be
        the only one that can win (it may hold C_new when the members of C_new do not), and as
        leader it commits C_new without counting itself and steps down (Raft §6).  Without this,
        a leader crash right after C_new reached only removed servers left the cluster with no
        electable candidate (found by the simulator, seed 2005)."""
        if self.config.is_voter(self.id):
            return True
        return (self.config_index() > self.commit_index
                and self._previous_config().is_voter(self.id))

    def _previous_config(self) -> Configuration:
        return self._config_log[-2][1] if len(self._config_log) >= 2 else self._base_config

    def _on_config_appended(self, e: Entry) -> None:
        # Raft §6: a server uses the newest configuration in its log, committed or not.
        cfg = Configuration.decode(e.data)
        while self._config_log and self._config_log[-1][0] >= e.index:
            self._config_log.pop()  # a rewritten index: never two configurations at one index
        self._config_log.append((e.index, cfg))
        self.config = cfg
        if self.role == Role.LEADER:
            self._sync_progress()

    def _truncate_bookkeeping(self, last_kept: int) -> None:
        self._stable = min(self._stable, last_kept)
        self._durable = min(self._durable, last_kept)
        # The entry carrying the newest configuration may be gone: fall back (Raft §6).
        self._configs_follow_log()

    def _configs_follow_log(self) -> None:
        """Keep only the configuration entries the log still holds, in index order, and make
        the newest of them (or, with none, the one at the log base) the configuration in force
        (Raft §6: a server uses the newest configuration in its log).  Called whenever the log
        is truncated or discarded, so no configuration outlives its entry."""
        lo, hi = self.log.snapshot_index, self.log.last_index
        self._config_log = sorted(((i, c) for i, c in self._config_log if lo < i <= hi),
                                  key=lambda ic: ic[0])
        self.config = self._config_log[-1][1] if self._config_log else self._base_config

    def _sync_progress(self, fresh: bool = False) -> None:
        members = self.config.members
        if self.config_index() > self.commit_index:
            # Until the newest configuration commits, keep replicating to the servers it
            # removes, so they learn they were removed and stop campaigning (Raft §6).
            members = members | self._previous_config().members
        members = members - {self.id}
        for peer in list(self.progress):
            if peer not in members:
                del self.progress[peer]
        # A new leader starts at last_index + 1 (Figure 2).  A member added by a configuration
        # entry is probed from that entry, so it hears from us now, not at the next heartbeat.
        start = self.log.last_index + 1 if fresh else max(self.log.last_index, 1)
        for peer in sorted(members):
            if peer not in self.progress:
                pr = self.progress[peer] = Progress(start)
                # A member just added has had no chance to answer yet: count it as active for
                # the next check-quorum round, or adding voters that form a majority of C_new
                # would make a healthy leader step down (etcd marks new progress the same way).
                # A new leader marks no one: followers have a whole election timeout to answer
                # its first round, and a leader isolated right after winning steps down after
                # one check-quorum round, not two (issue 14 §8).
                pr.recent_active = not fresh

    # ========================================================================= helpers ==
    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _refuse(self, msg: Message, why: str) -> None:
        """A message no honest peer sends (issue 19): drop it and count it; the node carries
        on.  The runtime reads ``refused`` (status) to log and count it."""
        self.refused += 1
        self.last_refused = f"{type(msg).__name__} from {msg.src}: {why}"

    def _drop_acks_beyond(self, last_kept: int) -> None:
        """Entries after ``last_kept`` are about to be discarded.  Acknowledgements of them that
        have not been handed out in a Ready yet (they wait for the disk, ready.py step 2) must
        not leave: an older leader would count a copy that no longer exists, after this node
        may already have voted for a newer one.  (Found by the simulator, seed 1640.)"""
        self._msgs = [m for m in self._msgs
                      if not (isinstance(m, AppendEntriesResponse) and m.success
                              and m.match_index > last_kept)]


def _merge_addresses(a: Configuration, b: Configuration) -> dict[str, str]:
    merged = a.address_map()
    merged.update(b.address_map())
    return merged

