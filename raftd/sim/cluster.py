"""A deterministic simulated cluster: real RaftNodes over a simulated clock, network and disk.

The simulator is just another runtime for the sans-I/O core (style guide §6, TigerBeetle's VOPR,
FoundationDB): it calls tick()/step(), shuttles Ready.messages through a seeded network that
delays, drops, duplicates and reorders them, models a disk whose unsynced writes are lost on a
crash, and checks Raft's safety properties after every event (see checker.py).

One integer seed determines the whole run: every random choice comes from ``random.Random(seed)``
and nothing iterates a set of strings (whose order depends on PYTHONHASHSEED).
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from raftd.core import (AppendEntriesResponse, Configuration, Entry, EntryKind, HardState,
                        NotLeaderError, ProposalDroppedError, RaftConfig, RaftNode, Ready,
                        RequestVoteResponse, Role)

from .checker import SafetyChecker, SafetyViolation


@dataclass
class SimParams:
    nodes: int = 5
    tick_ms: int = 10
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    latency_ms: tuple[int, int] = (1, 12)  # uniform; a wide range reorders messages
    disk_ms: tuple[int, int] = (1, 4)  # time for one fsync
    drop: float = 0.05
    duplicate: float = 0.03
    fault_every_ms: tuple[int, int] = (100, 400)
    fault_ms: int = 4000  # length of the faulty phase
    heal_ms: int = 6000  # bound for liveness after everything heals
    proposal_every_ms: tuple[int, int] = (2, 20)
    final_proposals: int = 5
    max_append_entries: int = 8  # small batches so pipelining and backtracking get exercised
    max_inflight_msgs: int = 4


class SimDisk:
    """What survives a crash: only what an fsync completed."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []

    def write(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            first = rd.entries[0].index
            del self.entries[first - 1:]
            if len(self.entries) != first - 1:
                raise SafetyViolation(f"storage gap: {len(self.entries)} entries, append at {first}")
            self.entries.extend(rd.entries)


@dataclass
class SimNode:
    id: str
    disk: SimDisk = field(default_factory=SimDisk)
    raft: RaftNode | None = None  # None while crashed
    incarnation: int = 0
    disk_busy: bool = False  # one fsync at a time, like the real runtime
    applied: list[Entry] = field(default_factory=list)  # this incarnation's state machine

    @property
    def up(self) -> bool:
        return self.raft is not None


@dataclass
class Proposal:
    value: bytes
    node: str = ""
    incarnation: int = -1
    index: int = 0
    term: int = 0
    acked: bool = False


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
        self.ids = [f"n{i + 1}" for i in range(self.p.nodes)]
        self.config = Configuration.make(self.ids)
        self.nodes = {nid: SimNode(nid) for nid in self.ids}
        self.blocked: set[tuple[str, str]] = set()  # directed links that drop everything
        self.drop = self.p.drop
        self.duplicate = self.p.duplicate
        self.checker = SafetyChecker(self.ids)
        self.proposals: list[Proposal] = []
        self._by_value: dict[bytes, Proposal] = {}
        self._next_value = 0
        self._last_commit_log = -1000
        self.stats = {"delivered": 0, "dropped": 0, "duplicated": 0, "crashes": 0,
                      "elections": 0, "events": 0}
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
        n.raft = RaftNode(nid, self.raft_cfg, random.Random(self.rng.getrandbits(64)),
                          hard_state=n.disk.hard_state, entries=list(n.disk.entries),
                          base_configuration=self.config)
        n.applied = []
        n.disk_busy = False
        self.checker.node_started(nid)
        self._at(self.rng.randrange(self.p.tick_ms) + 1, "tick", nid, n.incarnation)

    def crash(self, nid: str) -> None:
        n = self.nodes[nid]
        if n.up:
            n.raft = None  # in-flight fsync and everything volatile are gone
            self.stats["crashes"] += 1
            self._log(f"{nid} CRASH (durable: term={n.disk.hard_state.term} "
                      f"log={len(n.disk.entries)})")

    def restart(self, nid: str) -> None:
        if not self.nodes[nid].up:
            self._start(nid)
            self._log(f"{nid} RESTART from disk: log={len(self.nodes[nid].disk.entries)}")

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
        n.raft.step(msg)
        self._after_input(n)

    def _after_input(self, n: SimNode) -> None:
        self.checker.observe(n, self.now)
        self._pump(n)

    def _pump(self, n: SimNode) -> None:
        """Take the next Ready if the disk is free; persist (with latency), then send/apply."""
        raft = n.raft
        if raft is None or n.disk_busy or not raft.has_ready():
            return
        rd = raft.ready()
        if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
            self.stats["elections"] += 1
            self._log(f"{n.id} became LEADER term={rd.soft_state.term} "
                      f"last_index={raft.log.last_index}")
        if rd.must_sync:
            n.disk_busy = True
            lo, hi = self.p.disk_ms
            self._at(self.rng.randint(lo, hi), "fsync_done", n.id, n.incarnation, rd)
        else:
            self._complete(n, rd)

    def _ev_fsync_done(self, nid: str, inc: int, rd: Ready) -> None:
        n = self.nodes[nid]
        if n.raft is None or n.incarnation != inc:
            return  # crashed before the fsync finished: the write is lost
        n.disk.write(rd)
        n.disk_busy = False
        if rd.entries:
            n.raft.persisted(rd.entries[-1].index, rd.entries[-1].term)
        self._complete(n, rd)

    def _complete(self, n: SimNode, rd: Ready) -> None:
        raft = n.raft
        for msg in rd.messages:
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
            raft.applied(rd.committed_entries[-1].index)
            if raft.role == Role.LEADER and self.now - self._last_commit_log >= 250:
                self._last_commit_log = self.now
                self._log(f"{n.id} (leader, term {raft.term}) commit_index={raft.commit_index}; "
                          f"acknowledged so far: {len(self.checker.acked)}")
        self.checker.observe(n, self.now)
        self._pump(n)

    def _check_persisted_before_send(self, n: SimNode, msg) -> None:
        """The Ready contract: a reply never promises more than the disk holds."""
        hs = n.disk.hard_state
        if isinstance(msg, RequestVoteResponse) and msg.granted:
            if hs.term != msg.term or hs.voted_for != msg.dst:
                raise SafetyViolation(f"{n.id} granted a vote to {msg.dst} in term {msg.term} "
                                      f"before persisting it (disk: {hs})")
        if isinstance(msg, AppendEntriesResponse) and msg.success:
            if len(n.disk.entries) < msg.match_index:
                raise SafetyViolation(f"{n.id} acknowledged index {msg.match_index} with only "
                                      f"{len(n.disk.entries)} entries on disk")

    # --------------------------------------------------------------------- the network --
    def _send(self, msg) -> None:
        if (msg.src, msg.dst) in self.blocked or self.rng.random() < self.drop:
            self.stats["dropped"] += 1
            return
        lo, hi = self.p.latency_ms
        self._at(self.rng.randint(lo, hi), "deliver", msg)
        if self.rng.random() < self.duplicate:
            self.stats["duplicated"] += 1
            self._at(self.rng.randint(lo, hi), "deliver", msg)

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
                # client would; the state machine's sessions make the retry harmless.
                self._at(400, "client_check", value, attempt)
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
                victim = self.leader() if rng.random() < 0.5 and self.leader() else rng.choice(up)
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

    # ---------------------------------------------------------------------------- run --
    def run(self) -> None:
        """Faulty phase, then heal everything and demand liveness within a bounded time."""
        p = self.p
        self._at(0, "workload", p.fault_ms)
        self._at(p.fault_every_ms[0], "fault", p.fault_ms)
        self.run_until(p.fault_ms)

        self.heal()
        self.drop = self.duplicate = 0.0
        for nid in self.ids:
            self.restart(nid)
        self._log("HEAL all: network restored, every node up; liveness check starts")
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

    def _converged(self, finals: list[bytes]) -> bool:
        if not all(self._by_value[v].acked for v in finals):
            return False
        target = max(self.checker.acked)  # every node has applied everything acknowledged
        return all(len(self.nodes[nid].applied) >= target for nid in self.ids)

    def _liveness_report(self, finals: list[bytes]) -> str:
        lines = [f"liveness: the cluster did not commit {len(finals)} proposals on every node "
                 f"within {self.p.heal_ms} ms after healing"]
        for nid in self.ids:
            r = self.nodes[nid].raft
            lines.append(f"  {nid}: role={r.role if r else 'down'} term={r.term if r else '-'} "
                         f"commit={r.commit_index if r else '-'} last={r.log.last_index if r else '-'}"
                         f" applied={len(self.nodes[nid].applied)}")
        return "\n".join(lines)
