"""A deterministic simulated cluster: real RaftNodes over a simulated clock, network and disk.

The simulator is just another runtime for the sans-I/O core (style guide §6, TigerBeetle's VOPR,
FoundationDB): it calls tick()/step(), shuttles Ready.messages through a seeded network that
delays, drops, duplicates and reorders them, models a disk whose unsynced writes are lost on a
crash, and checks Raft's safety properties after every event (see checker.py).

Membership (Raft §6, joint consensus): the cluster has a pool of servers larger than its
bootstrap configuration.  Servers outside it start with an empty configuration (raftd's
``join: true``) and learn everything from the leader's log.  During the faulty phase the
simulator asks the current leader, now and then, to add a learner, promote a learner, remove or
demote a voter (the leader itself included) or replace several voters at once; the refusals
(change in progress, not the leader) are normal and counted.  Removed servers keep running.
Liveness is then required of the members of the final (latest committed) configuration only.

One integer seed determines the whole run: every random choice comes from ``random.Random(seed)``
and nothing iterates a set of strings (whose order depends on PYTHONHASHSEED) without sorting it.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import replace

from raftd.core import (AppendEntries, AppendEntriesResponse, ConfChangeInProgressError,
                        Configuration, Entry, EntryKind, InstallSnapshot,
                        InvalidConfChangeError, NotLeaderError, PreVote, ProposalDroppedError,
                        RaftConfig, RaftNode, Ready, RequestVote, RequestVoteResponse, Role,
                        SnapshotMeta)
from raftd.core.ready import may_send_early

from .changes import pick_change
from .checker import SafetyChecker, SafetyViolation
from .model import Proposal, SimDisk, SimNode, SimParams

__all__ = ["Proposal", "SimCluster", "SimDisk", "SimNode", "SimParams"]  # (model.py's: the API)


class SimCluster:
    def __init__(self, seed: int, params: SimParams | None = None, trace: bool = False):
        self.seed = seed
        self.p = params or SimParams()
        self.rng = random.Random(seed)
        self.now = 0
        self._events: list[tuple] = []
        self._seq = 0
        self.trace_enabled = trace
        self.trace: list[str] = []
        spares = self.p.spare_nodes if self.p.membership else 0
        # The pool: every server that exists.  The first ``nodes`` form the bootstrap
        # configuration; the others start empty and wait to be added.
        self.ids = [f"n{i + 1}" for i in range(self.p.nodes + spares)]
        self.initial_ids = self.ids[:self.p.nodes]
        self.config = Configuration.make(self.initial_ids)  # bootstrap configuration
        self._empty_config = Configuration.make(())
        self.nodes = {nid: SimNode(nid) for nid in self.ids}
        self.blocked: set[tuple[str, str]] = set()  # directed links that drop everything
        self.drop = self.p.drop
        self.duplicate = self.p.duplicate
        self.slow_fsync = self.p.slow_fsync
        self.checker = SafetyChecker(self.ids, self.config, self._config_committed)
        self.proposals: list[Proposal] = []
        self._by_value: dict[bytes, Proposal] = {}
        self._next_value = 0
        self._last_commit_log = -1000
        self.stats = {"delivered": 0, "dropped": 0, "duplicated": 0, "crashes": 0,
                      "elections": 0, "events": 0,
                      # membership: attempts = proposed + refused (the refusals by reason)
                      "conf_attempts": 0, "conf_proposed": 0, "conf_in_progress": 0,
                      "conf_not_leader": 0, "conf_dropped": 0, "conf_invalid": 0,
                      "joint_committed": 0, "cnew_committed": 0, "learner_conf_committed": 0,
                      "removed_leader_stepdowns": 0, "removed_vote_requests": 0,
                      "snapshots": 0, "snapshot_transfers": 0, "snapshots_installed": 0,
                      # pipeline: fsyncs that covered more than one Ready, and crashes that
                      # kept a prefix of the Readies being written
                      "group_fsyncs": 0, "partial_writes": 0}
        self.snapshot_states: dict[tuple[int, int], tuple[Entry, ...]] = {}
        self.raft_cfg = RaftConfig(election_ticks=self.p.election_ticks,
                                   heartbeat_ticks=self.p.heartbeat_ticks,
                                   max_append_entries=self.p.max_append_entries,
                                   max_inflight_msgs=self.p.max_inflight_msgs)
        for nid in self.ids:
            self._start(nid)

    # ------------------------------------------------------------------ event plumbing --
    def _at(self, delay: int, kind: str, *args) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, kind, args))

    def _log(self, text: str) -> None:
        if self.trace_enabled:
            self.trace.append(f"{self.now:>6}ms  {text}")

    def run_until(self, t_end: int) -> None:
        ev = self._events
        while ev and ev[0][0] <= t_end:
            t, _, kind, args = heapq.heappop(ev)
            self.now = t
            self.stats["events"] += 1
            getattr(self, "_ev_" + kind)(*args)
        self.now = t_end

    # ------------------------------------------------------------------ node lifecycle --
    def _start(self, nid: str) -> None:
        n = self.nodes[nid]
        n.incarnation += 1
        base = self.config if nid in self.initial_ids else self._empty_config
        d = n.disk
        n.raft = RaftNode(nid, self.raft_cfg, random.Random(self.rng.getrandbits(64)),
                          hard_state=d.hard_state, entries=list(d.entries),
                          snapshot_index=d.base_index, snapshot_term=d.base_term,
                          base_configuration=base,
                          snapshot=d.snapshot[0] if d.snapshot else None)
        # The state machine restarts from the snapshot (Raft §7), then replays the log.
        n.applied = list(d.snapshot[1]) if d.snapshot else []
        n.disk_busy = False
        n.saves, n.writing = [], []
        n.was_leader = False
        self.checker.node_started(nid)
        self._at(self.rng.randrange(self.p.tick_ms) + 1, "tick", nid, n.incarnation)

    def crash(self, nid: str) -> None:
        n = self.nodes[nid]
        if n.up:
            n.raft = None  # in-flight fsync and everything volatile are gone
            if n.writing and self.rng.random() < 0.5:
                # ... or part of it reached the disk: the Readies are written in order, so
                # what survives is a prefix (the WAL truncates a torn record).
                self.stats["partial_writes"] += 1
                for rd in n.writing[:self.rng.randint(1, len(n.writing))]:
                    self._write_to_disk(n, rd)
            n.writing = []
            self.stats["crashes"] += 1
            self._log(f"{nid} CRASH (durable: term={n.disk.hard_state.term} "
                      f"log ends at {n.disk.last_index})")

    def restart(self, nid: str) -> None:
        if not self.nodes[nid].up:
            self._start(nid)
            self._log(f"{nid} RESTART from disk: log ends at {self.nodes[nid].disk.last_index}")

    def _ev_tick(self, nid: str, inc: int) -> None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != inc:
            return
        n.raft.tick()
        self._after_input(n)
        self._at(self.p.tick_ms, "tick", nid, inc)

    def _ev_deliver(self, msg) -> None:
        n = self.nodes[msg.dst]
        if n.raft is None or (msg.src, msg.dst) in self.blocked:
            self.stats["dropped"] += 1
            return
        self.stats["delivered"] += 1
        if self.p.membership and isinstance(msg, (PreVote, RequestVote)):
            if not self.checker.latest_config()[1].is_voter(msg.src):
                self.stats["removed_vote_requests"] += 1  # must not disrupt (vote withholding)
        n.raft.step(msg)
        self._after_input(n)

    def _after_input(self, n: SimNode) -> None:
        self.checker.observe(n, self.now)
        self._pump(n)

    def _pump(self, n: SimNode) -> None:
        """Take the next Ready if the disk is free; persist (with latency), then send/apply."""
        raft = n.raft
        if self.p.pipeline:
            self._pump_pipelined(n)
            return
        if raft is None or n.disk_busy or not raft.has_ready():
            return
        rd = raft.ready()
        self._note_soft_state(n, rd)
        if rd.must_sync:
            n.disk_busy = True
            lo, hi = self.p.disk_ms
            self._at(self.rng.randint(lo, hi), "fsync_done", n.id, n.incarnation, rd)
        else:
            self._complete(n, rd)

    def _note_soft_state(self, n: SimNode, rd: Ready) -> None:
        if rd.soft_state is None:
            return
        raft = n.live
        if rd.soft_state.role == Role.LEADER:
            self.stats["elections"] += 1
            n.was_leader = True
            self._log(f"{n.id} became LEADER term={rd.soft_state.term} "
                      f"last_index={raft.log.last_index}" + (
                          f" config: {raft.config.describe()}" if self.p.membership else ""))
        elif n.was_leader:
            n.was_leader = False
            if not raft.config.is_voter(n.id):
                # Raft §6: a leader that is not part of C_new steps down once C_new commits.
                self.stats["removed_leader_stepdowns"] += 1
                self._log(f"{n.id} STEPS DOWN (was leader, term {rd.soft_state.term}): not a "
                          f"voter of its configuration {raft.config.describe()}")
            elif self.p.membership:
                self._log(f"{n.id} steps down (now {rd.soft_state.role}, term "
                          f"{rd.soft_state.term})")

    def _write_to_disk(self, n: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:  # contract step 0: install the received snapshot
            state = self.snapshot_states[(rd.snapshot.index, rd.snapshot.term)]
            n.disk.install(rd.snapshot, state)
            self.stats["snapshots_installed"] += 1
            self._log(f"{n.id} INSTALLED snapshot {rd.snapshot.index}/{rd.snapshot.term}")
        n.disk.write(rd)

    def _ev_fsync_done(self, nid: str, inc: int, rd: Ready) -> None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != inc:
            return  # crashed before the fsync finished: the write is lost
        self._write_to_disk(n, rd)
        if rd.snapshot is not None:
            n.applied = list(self.snapshot_states[(rd.snapshot.index, rd.snapshot.term)])
        n.disk_busy = False
        if rd.entries:
            n.raft.persisted(rd.entries[-1].index, rd.entries[-1].term)
        self._complete(n, rd)

    # -------------------------------------------------------- pipelined saves (runtime) --
    def _pump_pipelined(self, n: SimNode) -> None:
        """What raftd's runtime does (server.py _handle_ready / _write_saves)."""
        raft = n.raft
        while raft is not None and raft.has_ready():
            rd = raft.ready()
            self._note_soft_state(n, rd)
            if rd.must_sync:
                late = []
                hold = self._hold_early(n, rd)
                for msg in rd.messages:
                    if not hold and may_send_early(msg):
                        self._check_persisted_before_send(n, msg)
                        self._send(msg)
                    else:
                        late.append(msg)
                n.saves.append(replace(rd, messages=late))
            elif n.disk_busy or n.saves:
                n.saves.append(rd)  # waits behind the saves before it
            else:
                self._complete(n, rd, pump=False)
            raft = n.raft
        if raft is not None and not n.disk_busy and n.saves:
            n.writing, n.saves = n.saves, []
            n.disk_busy = True
            if sum(1 for rd in n.writing if rd.must_sync) > 1:
                self.stats["group_fsyncs"] += 1
            lo, hi = (self.p.slow_fsync_ms if self.rng.random() < self.slow_fsync
                      else self.p.disk_ms)
            self._at(self.rng.randint(lo, hi), "batch_done", n.id, n.incarnation)

    @staticmethod
    def _hold_early(n: SimNode, rd: Ready) -> bool:
        """ready.py step 2: nothing leaves early while a new term or vote is unsaved (a leader
        elected alone has its new term in the Ready of its first AppendEntries)."""
        return rd.hard_state is not None or any(r.hard_state is not None
                                                for r in n.saves + n.writing)

    def _ev_batch_done(self, nid: str, inc: int) -> None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != inc:
            return  # crashed before the fsync finished (crash() decided what survived)
        batch, n.writing = n.writing, []
        for rd in batch:
            self._write_to_disk(n, rd)
            # Check each Ready's replies against the disk as its own save left it: a later
            # Ready of the batch may truncate what this one acknowledges.  Sending that ack
            # after the truncation is the same as a slow network delivering it late.
            for msg in rd.messages:
                self._check_persisted_before_send(n, msg)
        for rd in batch:
            if rd.snapshot is not None:
                n.applied = list(self.snapshot_states[(rd.snapshot.index, rd.snapshot.term)])
            if rd.entries:
                n.raft.persisted(rd.entries[-1].index, rd.entries[-1].term)
            self._complete(n, rd, pump=False, checked=True)
        n.disk_busy = False
        self.checker.observe(n, self.now)
        self._pump(n)

    def _complete(self, n: SimNode, rd: Ready, pump: bool = True,
                  checked: bool = False) -> None:
        for msg in rd.messages:
            if not checked:
                self._check_persisted_before_send(n, msg)
            self._send(msg)
        for e in rd.committed_entries:
            n.applied.append(e)
            self.checker.applied(n.id, e)
            p = self._by_value.get(e.data) if e.kind == EntryKind.NORMAL else None
            if (p is not None and p.node == n.id and p.incarnation == n.incarnation
                    and p.index == e.index and p.term == e.term and not p.acked):
                p.acked = True  # the proposing leader applied it: the client hears "ok"
                self.checker.acknowledged(e)
        if rd.committed_entries:
            raft = n.live
            raft.applied(rd.committed_entries[-1].index)
            self._maybe_snapshot(n)
            if raft.role == Role.LEADER and self.now - self._last_commit_log >= 250:
                self._last_commit_log = self.now
                self._log(f"{n.id} (leader, term {raft.term}) commit_index={raft.commit_index}; "
                          f"acknowledged so far: {len(self.checker.acked)}")
        self.checker.observe(n, self.now)
        if pump:
            self._pump(n)

    def _maybe_snapshot(self, n: SimNode) -> None:
        """Snapshot and compact (Raft §7).  Everything applied is durable here (a Ready is
        applied only after its fsync), so the disk may drop what the snapshot covers."""
        every = self.p.snapshot_every
        raft = n.live
        last = raft.snapshot.index if raft.snapshot else 0
        if not every or raft.last_applied - last < every:
            return
        index = raft.last_applied
        term_at_index = raft.log.term_at(index)
        if term_at_index is None:
            raise SafetyViolation(f"{n.id}: no term for its applied index {index}")
        meta = SnapshotMeta(index, term_at_index, raft.configuration_at(index))
        state = tuple(n.applied[:index])
        if len(state) != index or state[-1].index != index:
            raise SafetyViolation(f"{n.id}: applied state does not reach {index}")
        self.snapshot_states.setdefault((index, meta.term), state)
        n.disk.snapshot = (meta, state)
        raft.snapshot_taken(meta)
        compact_to = index - self.p.snapshot_trailing
        if compact_to > raft.log.snapshot_index:
            term = raft.log.term_at(compact_to)
            if term is None:
                raise SafetyViolation(f"{n.id}: no term at {compact_to}, below its applied index")
            raft.compact(compact_to)
            n.disk.compact(compact_to, term)
        self.stats["snapshots"] += 1

    def _check_persisted_before_send(self, n: SimNode, msg) -> None:
        """The Ready contract: a reply never promises more than the disk holds."""
        hs = n.disk.hard_state
        if isinstance(msg, RequestVoteResponse) and msg.granted:
            if hs.term != msg.term or hs.voted_for != msg.dst:
                raise SafetyViolation(f"{n.id} granted a vote to {msg.dst} in term {msg.term} "
                                      f"before persisting it (disk: {hs})")
        if isinstance(msg, (AppendEntries, InstallSnapshot)) and msg.term > hs.term:
            # Sent early (before this Ready's save): only safe once the term is durable.
            raise SafetyViolation(f"{n.id} sent {type(msg).__name__} in term {msg.term} with "
                                  f"term {hs.term} on disk")
        if isinstance(msg, AppendEntriesResponse) and msg.success:
            if n.disk.last_index < msg.match_index:
                raise SafetyViolation(f"{n.id} acknowledged index {msg.match_index} with a "
                                      f"log ending at {n.disk.last_index} on disk")

    # --------------------------------------------------------------------- the network --
    def _send(self, msg) -> None:
        if isinstance(msg, InstallSnapshot):
            # What the runtime's chunked stream amounts to: the whole snapshot arrives as one
            # complete message, or the transfer fails and the leader is told so.
            self.stats["snapshot_transfers"] += 1
            if (msg.src, msg.dst) in self.blocked or self.rng.random() < self.drop:
                self.stats["dropped"] += 1
                self._at(self.rng.randint(5, 50), "snapshot_failed", msg.src, msg.dst)
                return
            msg = InstallSnapshot(msg.src, msg.dst, msg.term, msg.last_included_index,
                                  msg.last_included_term, msg.configuration, 0, b"", True)
        if (msg.src, msg.dst) in self.blocked or self.rng.random() < self.drop:
            self.stats["dropped"] += 1
            return
        lo, hi = self.p.latency_ms
        self._at(self.rng.randint(lo, hi), "deliver", msg)
        if self.rng.random() < self.duplicate:
            self.stats["duplicated"] += 1
            self._at(self.rng.randint(lo, hi), "deliver", msg)

    def _ev_snapshot_failed(self, src: str, dst: str) -> None:
        r = self.nodes[src].raft
        if r is not None:
            r.report_snapshot(dst, False)
            self._pump(self.nodes[src])

    def partition(self, *groups: list[str]) -> None:
        """Symmetric partition: nodes in different groups cannot talk."""
        self.blocked = set()
        for g in groups:
            for a in g:
                for other in groups:
                    if other is g:
                        continue
                    for b in other:
                        self.blocked.add((a, b))
        self._log("PARTITION " + " | ".join(",".join(g) for g in groups))

    def cut_one_way(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))
        self._log(f"CUT {src} -> {dst} (one-way)")

    def heal(self) -> None:
        self.blocked = set()
        self._log("HEAL network")

    # -------------------------------------------------------------------- the workload --
    def leader(self) -> str | None:
        best = None
        for nid in self.ids:
            r = self.nodes[nid].raft
            if r is not None and r.role == Role.LEADER and (best is None or r.term > best[1]):
                best = (nid, r.term)
        return best[0] if best else None

    def _ev_client(self, value: bytes, target: str, attempt: int) -> None:
        """A client proposing ``value``; it follows leader hints and retries a bounded number
        of times, as raftd.client does."""
        n = self.nodes[target]
        if n.raft is not None:
            try:
                index = n.raft.propose(value)
            except NotLeaderError as e:
                target = e.leader_hint or self.ids[self.rng.randrange(len(self.ids))]
            except ProposalDroppedError:
                pass
            else:
                p = self._by_value[value]
                p.node, p.incarnation, p.index, p.term = target, n.incarnation, index, n.raft.term
                self._pump(n)
                # No answer in time (the leader may have lost that entry): retry, as a real
                # client would; the state machine's sessions make the retry harmless.  Each
                # wait doubles (400 ms .. 3.2 s): hundreds of clients re-proposing every 400 ms
                # after a long outage are a retry storm that can keep a cluster from ever
                # catching its followers up (seeds 4064, 7582, 8520 of the 10,000-seed run).
                self._at(400 << min(p.waits, 3), "client_check", value, attempt)
                p.waits += 1
                return
        else:
            target = self.ids[self.rng.randrange(len(self.ids))]
        if attempt < 200:
            self._at(self.rng.randint(5, 30), "client", value, target, attempt + 1)

    def _ev_client_check(self, value: bytes, attempt: int) -> None:
        if not self._by_value[value].acked and attempt < 200:
            target = self.ids[self.rng.randrange(len(self.ids))]
            self._at(0, "client", value, target, attempt + 1)

    def submit(self) -> bytes:
        self._next_value += 1
        value = b"v%d" % self._next_value
        p = Proposal(value)
        self.proposals.append(p)
        self._by_value[value] = p
        self._at(0, "client", value, self.ids[self.rng.randrange(len(self.ids))], 0)
        return value

    def _ev_workload(self, until: int) -> None:
        if self.now >= until:
            return
        self.submit()
        lo, hi = self.p.proposal_every_ms
        self._at(self.rng.randint(lo, hi), "workload", until)

    # ------------------------------------------------------------------------- faults --
    def _ev_fault(self, until: int) -> None:
        if self.now >= until:
            return
        rng, ids = self.rng, self.ids
        roll = rng.random()
        down = [i for i in ids if not self.nodes[i].up]
        if roll < 0.25:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            self.partition(shuffled[:cut], shuffled[cut:])
        elif roll < 0.35:
            a, b = rng.sample(ids, 2)
            self.cut_one_way(a, b)
        elif roll < 0.55:
            self.heal()
        elif roll < 0.70:
            up = [i for i in ids if self.nodes[i].up]
            if up:
                # Prefer the leader now and then: that is where the interesting bugs are.
                lead = self.leader()  # (draws nothing from rng)
                victim = lead if rng.random() < 0.5 and lead else rng.choice(up)
                self.crash(victim)
        elif roll < 0.85:
            if down:
                self.restart(rng.choice(down))
        elif roll < 0.93:
            self.drop = rng.choice([0.0, 0.05, 0.2, 0.4])
            self.duplicate = rng.choice([0.0, 0.03, 0.1])
            self._log(f"NETWORK drop={self.drop} duplicate={self.duplicate}")
        else:
            pass  # a quiet period
        lo, hi = self.p.fault_every_ms
        self._at(rng.randint(lo, hi), "fault", until)

    # ------------------------------------------------------------- membership changes --
    def propose_configuration(self, nid: str, target: Configuration, what: str = "") -> int | None:
        """Ask ``nid`` to move to ``target`` (Raft §6); returns the index of the configuration
        entry it appended, or None if it refused (the refusal is counted and traced)."""
        n = self.nodes[nid]
        raft = n.raft
        if raft is None:
            return None
        self.stats["conf_attempts"] += 1
        what = f"{what}: " if what else ""
        try:
            index = raft.propose_configuration(target)
        except (ConfChangeInProgressError, NotLeaderError, ProposalDroppedError,
                InvalidConfChangeError) as e:
            key = {ConfChangeInProgressError: "conf_in_progress", NotLeaderError: "conf_not_leader",
                   ProposalDroppedError: "conf_dropped",
                   InvalidConfChangeError: "conf_invalid"}[type(e)]
            self.stats[key] += 1
            self._log(f"{nid} refuses config change {what}{target.describe()} "
                      f"({type(e).__name__})")
            return None
        self.stats["conf_proposed"] += 1
        step = ("joint C_old,new " + raft.config.describe() if raft.config.joint
                else "one step (learners only)")
        self._log(f"{nid} (leader, term {raft.term}) PROPOSES config {what}{target.describe()} "
                  f"at index {index}: {step}")
        self._pump(n)
        return index

    def _ev_midchange_fault(self, nid: str, inc: int, kind: str, side: tuple[str, ...]) -> None:
        """A fault aimed at the leader while its membership change is in flight: crash it,
        isolate it, or split the pool between the leader with ``side`` and everyone else (the
        servers of C_old on one side, those of C_new on the other: the case that breaks an
        implementation that forgets either majority), then often crash the leader too."""
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != inc or self.now >= self.p.fault_ms:
            return
        if kind == "crash":
            self.crash(nid)
        elif kind == "isolate":
            self.partition([nid], [i for i in self.ids if i != nid])
        else:
            group = [i for i in self.ids if i == nid or i in side]
            self.partition(group, [i for i in self.ids if i not in group])
            if self.rng.random() < 0.5:
                self._at(self.rng.randint(5, 80), "midchange_fault", nid, inc, "crash", ())

    def _config_committed(self, nid: str, index: int, term: int, cfg: Configuration,
                          prev: Configuration) -> None:
        """Called by the checker when a configuration entry is first known to be committed."""
        if cfg.joint:
            self.stats["joint_committed"] += 1
            self._log(f"JOINT config committed at index {index} (term {term}, seen on {nid}): "
                      f"{cfg.describe()}")
        elif prev.joint:
            self.stats["cnew_committed"] += 1
            self._log(f"C_new committed at index {index} (term {term}, seen on {nid}): "
                      f"{cfg.describe()}")
        else:
            self.stats["learner_conf_committed"] += 1
            self._log(f"config committed at index {index} (term {term}, seen on {nid}; learners "
                      f"only): {cfg.describe()}")

    def _ev_reconfig(self, until: int) -> None:
        if self.now >= until:
            return
        rng = self.rng
        target = self.leader()
        if target is None or rng.random() < 0.1:
            # No leader, or a client that asks the wrong server: NotLeaderError, by design.
            up = [i for i in self.ids if self.nodes[i].up]
            target = rng.choice(up) if up else None
        change = (pick_change(rng, self.p, self.ids, target, self.nodes[target].live.config)
                  if target is not None else None)
        if change is not None and target is not None:
            what, cfg = change
            old = self.nodes[target].live.config
            if self.propose_configuration(target, cfg, what) is not None and rng.random() < 0.25:
                # Hit the leader while the change is in flight (before or after the joint entry
                # commits, before or after C_new is appended).
                kind = rng.choice(["crash", "isolate", "split", "split"])
                # The leader's side of a split: the voters the change adds, and a random part
                # of those it keeps; the voters it removes stay on the other side.
                kept = sorted(cfg.voters & old.voters)
                side = sorted(cfg.voters - old.voters) + rng.sample(kept, rng.randint(0, len(kept)))
                self._at(rng.randint(1, 40), "midchange_fault", target,
                         self.nodes[target].incarnation, kind, tuple(sorted(side)))
        lo, hi = self.p.reconfig_every_ms
        if rng.random() < 0.15:
            lo, hi = 1, 30  # a burst: the next change comes while this one may be in flight
        self._at(rng.randint(lo, hi), "reconfig", until)

    # ---------------------------------------------------------------------------- run --
    def run(self) -> None:
        """Faulty phase, then heal everything and demand liveness within a bounded time."""
        p = self.p
        self._at(0, "workload", p.fault_ms)
        self._at(p.fault_every_ms[0], "fault", p.fault_ms)
        if p.membership:
            self._at(p.reconfig_every_ms[0], "reconfig", p.fault_ms)
        self.run_until(p.fault_ms)

        self.heal()
        self.drop = self.duplicate = self.slow_fsync = 0.0
        for nid in self.ids:
            self.restart(nid)
        self._log("HEAL all: network restored, every node up; liveness check starts" + (
            "; no more membership changes" if p.membership else ""))
        finals = [self.submit() for _ in range(p.final_proposals)]
        deadline = self.now + p.heal_ms
        step = 100
        while self.now < deadline:
            self.run_until(self.now + step)
            if self._converged(finals):
                break
        else:
            raise SafetyViolation(self._liveness_report(finals))
        self.checker.final(self)

    def final_configuration(self) -> tuple[int, Configuration]:
        """The latest committed configuration (index 0: the bootstrap one)."""
        return self.checker.latest_config()

    def _converged(self, finals: list[bytes]) -> bool:
        """The final configuration is settled (simple, and the configuration of a leader that is
        one of its voters) and every one of its members applied everything acknowledged (and the
        configuration entry itself).  Servers outside it are ignored: they may be long gone."""
        if not all(self._by_value[v].acked for v in finals):
            return False
        index, final = self.final_configuration()
        if final.joint:
            return False  # C_new has yet to commit
        if self.p.membership:
            lead = self.leader()
            if lead is None or lead not in final.voters or self.nodes[lead].live.config != final:
                return False
        target = max(max(self.checker.acked), index)
        return all(len(self.nodes[nid].applied) >= target for nid in sorted(final.members))

    def _liveness_report(self, finals: list[bytes]) -> str:
        lines = [f"liveness: the cluster did not commit {len(finals)} proposals on every node "
                 f"within {self.p.heal_ms} ms after healing"]
        index, final = self.final_configuration()
        if self.p.membership:
            lines.append(f"  final (latest committed) configuration, index {index}: "
                         f"{final.describe()}; leader: {self.leader()}")
        for nid in self.ids:
            r = self.nodes[nid].raft
            lines.append(f"  {nid}: role={r.role if r else 'down'} term={r.term if r else '-'} "
                         f"commit={r.commit_index if r else '-'} "
                         f"last={r.log.last_index if r else '-'}"
                         f" applied={len(self.nodes[nid].applied)}" + (
                             f" config: {r.config.describe() if r else '-'}"
                             if self.p.membership else ""))
        return "\n".join(lines)
