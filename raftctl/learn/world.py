"""A small deterministic runtime for the real RaftNode, made for watching and teaching.

Virtual time in ticks; a network that delivers each message after one or two ticks unless the
link is cut; a synchronous disk per node that survives crashes (a node restarts from exactly
what it persisted: term, vote, log, snapshot, Figure 2); a state machine per node (the list of
applied commands).  It honours the Ready contract (raftd/core/ready.py): install a snapshot,
persist, send, apply.  Every random choice comes from ``random.Random(seed)``, so the same seed
and the same inputs at the same ticks give the same run.  It checks Election Safety and State
Machine Safety (Figure 3) after every event and raises SafetyViolation if the core breaks them.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from raftd.core import (AppendEntries, Configuration, Entry, EntryKind,
                        HardState, InstallSnapshot, NotLeaderError, PreVote, RaftConfig, RaftNode,
                        RaftError, Ready, RequestVote, RequestVoteResponse, Role, SnapshotMeta)
from raftd.core.messages import Message

from . import narrate
from .model import Flight, Frame, NodeView

DEFAULT_CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=2, max_append_entries=4)


class SafetyViolation(AssertionError):
    """The core broke one of Raft's safety properties (Figure 3)."""


class TimerRandom(random.Random):
    """The node's seeded random source.  It remembers the last draw so the view can draw the
    election timer: the core's only random choice is its election timeout (Raft §5.2)."""

    last_draw = 0

    def randrange(self, *args, **kwargs):  # noqa: D102 - random.Random's
        self.last_draw = super().randrange(*args, **kwargs)
        return self.last_draw


@dataclass
class Disk:
    """What survives a crash.  The log holds the entries after the snapshot (or all of them)."""

    hard_state: HardState = HardState()
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    state: tuple[bytes, ...] = ()  # the state machine the snapshot holds

    def base(self) -> tuple[int, int]:
        return (self.snapshot.index, self.snapshot.term) if self.snapshot else (0, 0)

    def write(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            base, _ = self.base()
            del self.entries[rd.entries[0].index - 1 - base:]  # conflict truncation first
            self.entries.extend(rd.entries)

    def install(self, meta: SnapshotMeta, state: tuple[bytes, ...]) -> None:
        """Figure 13 steps 6-7: keep the log's suffix only if it continues the snapshot."""
        base, _ = self.base()
        pos = meta.index - base - 1
        keeps = 0 <= pos < len(self.entries) and self.entries[pos].term == meta.term
        self.entries = self.entries[pos + 1:] if keeps else []
        self.snapshot, self.state = meta, state


class World:
    def __init__(self, seed: int, nodes: int = 5, *, config: RaftConfig = DEFAULT_CONFIG,
                 voters: list[str] | None = None, disks: dict[str, Disk] | None = None,
                 latency: tuple[int, int] = (1, 2)):
        self.rng = random.Random(seed)
        self.cfg = config
        self.ids = [f"n{i + 1}" for i in range(nodes)]
        self.latency = latency
        self.time = 0
        self.story = narrate.Narrator()
        self.bootstrap = Configuration.make(voters or self.ids)
        self.disks = {n: Disk() for n in self.ids} | (disks or {})
        self.nodes: dict[str, RaftNode | None] = {n: None for n in self.ids}
        self.rngs: dict[str, TimerRandom] = {}
        self.machine: dict[str, list[bytes]] = {}
        self.flights: list[Flight] = []
        self.groups: list[frozenset[str]] = []  # partition: links between groups are cut
        self.frames: list[Frame] | None = None  # recording for scenario playback
        self.reads: dict[object, int | None] = {}
        self._seq = 0
        self._seen: dict[str, tuple[Role, int]] = {}
        self._votes: dict[tuple[str, int], set[str]] = {}
        self._refusals: dict[tuple[str, str, int], str] = {}
        self._commits: dict[str, int] = {}
        self._leaders: dict[int, str] = {}  # term -> leader (Election Safety)
        self._applied_terms: dict[int, int] = {}  # index -> term (State Machine Safety)
        self._snapshots: dict[tuple[int, int], tuple[bytes, ...]] = {}
        for n in self.ids:
            self._start(n)

    # ============================================================ nodes: start and crash ==
    def _start(self, nid: str) -> None:
        d = self.disks[nid]
        rng = self.rngs[nid] = TimerRandom(self.rng.randrange(1 << 30))
        base, base_term = d.base()
        joins = nid not in self.bootstrap.members
        node = RaftNode(nid, self.cfg, rng, hard_state=d.hard_state, entries=list(d.entries),
                        snapshot_index=base, snapshot_term=base_term, snapshot=d.snapshot,
                        base_configuration=Configuration(frozenset()) if joins else self.bootstrap)
        self.nodes[nid] = node
        self.machine[nid] = list(d.state)
        self._seen[nid] = (node.role, node.term)
        self._commits[nid] = node.commit_index

    def up(self, nid: str) -> bool:
        return self.nodes[nid] is not None

    def node(self, nid: str) -> RaftNode:
        node = self.nodes[nid]
        if node is None:
            raise ValueError(f"{nid} is down")
        return node

    def live(self) -> list[str]:
        return [n for n in self.ids if self.up(n)]

    def leader(self) -> str | None:
        """The live leader of the highest term (an isolated old leader may still think it
        leads a lower term)."""
        leaders = [n for n in self.live() if self.node(n).role == Role.LEADER]
        return max(leaders, key=lambda n: self.node(n).term) if leaders else None

    def crash(self, nid: str) -> None:
        node = self.node(nid)
        self.story.say(self.time, narrate.crash(nid, node.role, node.term))
        self.nodes[nid] = None
        self._record()

    def restart(self, nid: str) -> None:
        if self.up(nid):
            return
        self._start(nid)
        node = self.node(nid)
        self.story.say(self.time, narrate.restart(nid, node.term, node.log.last_index))
        self._record()

    def toggle(self, nid: str) -> None:
        self.crash(nid) if self.up(nid) else self.restart(nid)

    # ================================================================= network: faults ==
    def partition(self, *groups: list[str]) -> None:
        self.groups = [frozenset(g) for g in groups]
        text = " | ".join(",".join(sorted(g)) for g in self.groups)
        self.story.say(self.time, f"network partition: {text}; messages between the sides are "
                                  f"lost")
        self._record()

    def isolate(self, nid: str) -> None:
        self.groups = [frozenset({nid}), frozenset(self.ids) - {nid}]
        self.story.say(self.time, f"{nid} is cut off: every message to or from it is lost")
        self._record()

    def heal(self) -> None:
        self.groups = []
        self.story.say(self.time, "the network heals: every node can reach every other")
        self._record()

    def toggle_isolation(self, nid: str) -> None:
        self.heal() if self.isolated(nid) else self.isolate(nid)

    def isolated(self, nid: str) -> bool:
        return any(g == {nid} for g in self.groups)

    def linked(self, a: str, b: str) -> bool:
        return not self.groups or any(a in g and b in g for g in self.groups)

    # ==================================================================== time passing ==
    def tick(self) -> None:
        """One tick of virtual time: deliver what is due, tick every live node, pump."""
        self.time += 1
        due = [f for f in self.flights if f.deliver_at <= self.time]
        for f in sorted(due, key=lambda f: (f.deliver_at, f.seq)):
            self._deliver(f)
        for nid in self.live():
            self.node(nid).tick()
            self._pump(nid)
        self._record()

    def run(self, ticks: int, until=None) -> bool:
        """Tick up to ``ticks`` times; stop early (returning True) once ``until()`` holds."""
        for _ in range(ticks):
            self.tick()
            if until is not None and until():
                return True
        return until is None

    def timeout(self, nid: str) -> None:
        """Let only ``nid``'s election timer run out (the others' timers are longer)."""
        node = self.node(nid)
        for _ in range(4 * self.cfg.election_ticks):
            before = (node.role, node.term)
            node.tick()
            self._pump(nid)
            if (node.role, node.term) != before:
                break
        self._record()

    def settle(self, until=None, where=None, rounds: int = 200) -> bool:
        """Deliver the messages in flight now, one by one in send order, without time passing
        (no timer fires), until none is left or ``until()`` holds.  ``where(msg)`` selects the
        messages to deliver; the others stay in flight."""
        for _ in range(rounds):
            pending = [f for f in self.flights if where is None or where(f.msg)]
            if not pending:
                return until is None
            self._deliver(min(pending, key=lambda f: f.seq))
            self._record()
            if until is not None and until():
                return True
        return False

    def drop(self, where) -> int:
        """Lose the messages in flight that ``where(msg)`` selects."""
        lost = [f for f in self.flights if where(f.msg)]
        self.flights = [f for f in self.flights if not where(f.msg)]
        return len(lost)

    # ======================================================================== messages ==
    def _send(self, msg: Message) -> None:
        self._seq += 1
        delay = self.rng.randint(*self.latency)
        self.flights.append(Flight(msg, self.time, self.time + delay, self._seq))

    def _deliver(self, f: Flight) -> None:
        self.flights.remove(f)
        msg = f.msg
        if not self.up(msg.dst) or not self.linked(msg.src, msg.dst):
            return  # lost: the receiver is down or the link is cut
        node = self.node(msg.dst)
        if isinstance(msg, InstallSnapshot) and not msg.done:
            # raftd's runtime streams the snapshot in chunks; here it arrives whole.
            self.story.say(self.time, narrate.snapshot_sent(msg.src, msg.dst,
                                                            msg.last_included_index,
                                                            msg.last_included_term))
            msg = dataclasses.replace(msg, done=True)
        self._explain_before(node, msg)
        node.step(msg)
        self._explain_after(node, msg)
        self._pump(msg.dst)

    def _explain_before(self, node: RaftNode, msg: Message) -> None:
        """Narrate what the receiver is about to do with ``msg`` (reasons are only visible
        before it steps it)."""
        t = self.time
        if isinstance(msg, (RequestVote, PreVote)):
            lease = (self.cfg.check_quorum and node.leader_id is not None
                     and node.election_elapsed < self.cfg.election_ticks)
            kind = "RequestVote" if isinstance(msg, RequestVote) else "PreVote"
            if msg.term > node.term and lease and not getattr(msg, "transfer", False):
                self.story.once(t, f"withhold {node.id} {msg.src} {msg.term} {kind}",
                                narrate.withheld(node.id, msg.src, node.leader_id, kind))
            elif isinstance(msg, RequestVote):
                reason = narrate.vote_refusal(node, msg.src, msg.term, msg.last_log_index,
                                              msg.last_log_term)
                if reason:
                    self._refusals[(node.id, msg.src, msg.term)] = reason
        elif isinstance(msg, AppendEntries):
            self._explain_append(node, msg)

    def _explain_append(self, node: RaftNode, msg: AppendEntries) -> None:
        t = self.time
        if msg.term < node.term:
            self.story.once(t, f"stale {node.id} {msg.src} {msg.term}",
                            narrate.stale_append(node.id, msg.src, msg.term, node.term))
            return
        has = node.log.term_at(msg.prev_log_index)
        if msg.prev_log_index >= node.commit_index and has != msg.prev_log_term:
            self.story.once(t, f"mismatch {node.id} {msg.term} {msg.prev_log_index} "
                               f"{node.log.last_index}",
                            narrate.mismatch(node.id, msg.src, msg.prev_log_index,
                                             msg.prev_log_term, has))
            return
        for e in msg.entries:
            old = node.log.term_at(e.index)
            if old is not None and old != e.term and e.index > node.commit_index:
                self.story.say(t, narrate.truncation(node.id, e.index, old, e.term))
                return

    def _explain_after(self, node: RaftNode, msg) -> None:
        if isinstance(msg, RequestVoteResponse) and msg.term == node.term:
            if msg.granted:
                self._votes.setdefault((node.id, msg.term), {node.id}).add(msg.src)
            reason = self._refusals.pop((msg.src, node.id, msg.term), None)
            self.story.say(self.time, narrate.vote_answer(msg.src, node.id, msg.term,
                                                          msg.granted, reason))

    # ====================================================================== the runtime ==
    def _pump(self, nid: str) -> None:
        """Honour the Ready contract (ready.py): install, persist, send, apply."""
        node = self.node(nid)
        for _ in range(20):
            if not node.has_ready():
                break
            rd = node.ready()
            disk = self.disks[nid]
            if rd.snapshot is not None:
                state = self._snapshots[(rd.snapshot.index, rd.snapshot.term)]
                disk.install(rd.snapshot, state)
                self.machine[nid] = list(state)
                self.story.say(self.time, narrate.snapshot_installed(nid, rd.snapshot.index))
            disk.write(rd)
            if rd.entries:
                node.persisted(rd.entries[-1].index, rd.entries[-1].term)
            if rd.soft_state is not None:
                self._note_role(nid)
            for m in rd.messages:
                self._send(m)
            self._apply(nid, rd)
            for rs in rd.read_states:
                self.reads[rs.request_id] = rs.index
        self._note_commit(nid)

    def _apply(self, nid: str, rd: Ready) -> None:
        for e in rd.committed_entries:
            known = self._applied_terms.setdefault(e.index, e.term)
            if known != e.term:
                raise SafetyViolation(f"State Machine Safety: {nid} applies term {e.term} at "
                                      f"index {e.index}, another node applied term {known}")
            if e.kind == EntryKind.NORMAL:
                self.machine[nid].append(e.data)
        if rd.committed_entries:
            self.node(nid).applied(rd.committed_entries[-1].index)

    def _note_role(self, nid: str) -> None:
        node = self.node(nid)
        old_role, old_term = self._seen[nid]
        self._seen[nid] = (node.role, node.term)
        if node.role == Role.LEADER:
            other = self._leaders.setdefault(node.term, nid)
            if other != nid:
                raise SafetyViolation(f"Election Safety: {other} and {nid} both lead term "
                                      f"{node.term}")
            self._commits[nid] = node.commit_index
        if (old_role, old_term) == (node.role, node.term) or (
                node.role == old_role == Role.FOLLOWER):
            return
        text = narrate.role_change(
            nid, old_role, old_term, node.role, node.term,
            votes=sorted(self._votes.get((nid, node.term), {nid})),
            leader=node.leader_id, check_quorum=self.cfg.check_quorum)
        self.story.say(self.time, text)

    def _note_commit(self, nid: str) -> None:
        node = self.node(nid)
        old = self._commits.get(nid, 0)
        self._commits[nid] = node.commit_index
        if node.role != Role.LEADER or node.commit_index <= old:
            return
        hi = node.commit_index
        holders = [nid] + [p for p, pr in sorted(node.progress.items()) if pr.match_index >= hi]
        self.story.say(self.time, narrate.commit(nid, old + 1, hi, node.term, sorted(holders)))

    # ================================================================ client and admin ==
    def write(self, data: bytes, nid: str | None = None) -> int | None:
        """A client write to ``nid`` (default: the leader).  None if there is no leader."""
        nid = nid or self.leader()
        if nid is None:
            self.story.say(self.time, f"client write {data.decode()!r}: no leader to take it; "
                                      f"the client retries later (§8)")
            return None
        node = self.node(nid)
        try:
            index = node.propose(data)
        except RaftError as e:
            self.story.say(self.time, f"client write {data.decode()!r} to {nid} refused: {e}")
            return None
        self.story.say(self.time, narrate.write(nid, data, index, node.term))
        self._pump(nid)
        self._record()
        return index

    def read(self, nid: str, request_id: object) -> None:
        """A linearizable read (ReadIndex, thesis §6.4); its result lands in ``reads``."""
        try:
            self.node(nid).read_index(request_id)
        except NotLeaderError:
            self.reads[request_id] = None
        self._pump(nid)

    def snapshot(self, nid: str) -> SnapshotMeta:
        """Snapshot the state machine at the applied index and compact the log (§7)."""
        node = self.node(nid)
        index = node.last_applied
        term = node.log.term_at(index)
        if term is None:
            raise RuntimeError(f"{nid}: no term for its applied index {index}")  # a core bug
        meta = SnapshotMeta(index, term, node.configuration_at(index))
        node.snapshot_taken(meta)
        node.compact(index)
        disk = self.disks[nid]
        disk.install(meta, tuple(self.machine[nid]))
        self._snapshots[(meta.index, meta.term)] = disk.state
        self.story.say(self.time, narrate.snapshot_taken(nid, meta.index, meta.term))
        self._record()
        return meta

    def reconfigure(self, nid: str, voters: list[str]) -> int:
        index = self.node(nid).propose_configuration(Configuration.make(voters))
        self._pump(nid)
        self._record()
        return index

    # ========================================================================= viewing ==
    def _record(self) -> None:
        if self.frames is not None:
            self.frames.append(self.frame())

    def frame(self, title: str = "") -> Frame:
        return Frame(self.time, tuple(self._node_view(n) for n in self.ids),
                     tuple(self.flights), tuple(self.story.tail(14)), title)

    def _node_view(self, nid: str) -> NodeView:
        node, disk = self.nodes[nid], self.disks[nid]
        cut = not all(self.linked(nid, o) for o in self.ids)
        if node is None:
            base, _ = disk.base()
            return NodeView(nid, False, cut, "down", disk.hard_state.term,
                            disk.hard_state.voted_for, None, 0, 0, base,
                            tuple(e.term for e in disk.entries), 0, "")
        timeout = self.cfg.election_ticks + self.rngs[nid].last_draw
        left = 0 if node.role == Role.LEADER else max(timeout - node.election_elapsed, 0)
        cfg = node.config
        conf = ",".join(sorted(cfg.voters))
        if cfg.joint:
            conf = f"old {','.join(sorted(cfg.outgoing))} new {conf}"
        return NodeView(nid, True, cut, str(node.role), node.term, node.voted_for,
                        node.leader_id, left, timeout, node.log.snapshot_index,
                        tuple(node.log.term_at(i) or 0
                              for i in range(node.log.first_index, node.log.last_index + 1)),
                        node.commit_index, conf)
