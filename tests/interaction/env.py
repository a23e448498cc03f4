"""InteractionEnv: drive RaftNodes by hand from a datadriven script and print what happens.

Modelled on etcd-io/raft's InteractionEnv (rafttest/interaction_env*.go).  There is no clock and
no network of its own: a script ticks nodes, hands their Readys to an in-memory "disk" exactly as
the Ready contract (raftd/core/ready.py) says, and moves messages between nodes one batch at a
time, so every message, vote, truncation and commit shows up in the expected output.

Notation used in every output:
  * ``T/I`` is a log position or an entry: term T, index I (as in etcd-io/raft).  An entry that
    is not a NORMAL command carries a suffix: ``8/11:noop``, ``2/4:conf``.
  * messages print on one line: ``1->2 AppendEntries term=8 prev=6/10 entries=[8/11:noop]
    commit=0``; a rejected AppendEntries prints the index it rejected, the follower's last index
    and its fast-backtracking hint ``conflict=T/I``.
  * events print as sentences: ``2 became leader at term 3``, ``4 truncated its log: removed
    6/11``.

Commands (arguments in brackets are optional; ids are "1", "2", ...):

  add-nodes N [voters=(1 2 3)] [learners=()] [pre-vote=false] [check-quorum=false]
            [max-append=512] [max-inflight=64]
        add N nodes with the next free ids.  The bootstrap configuration is ``voters`` (default:
        the new nodes if the cluster is empty, else an empty one: a node joining later learns
        its configuration from the leader's log).  pre-vote and check-quorum default to false
        (the paper's basic algorithm); turn them on per node.
  set-log N terms=(1 1 4 ...) [term=T] [vote=V]
        give node N this durable state (entries with those terms at indexes 1..k, data "e<i>")
        and rebuild its RaftNode from it, as after a restart.  term defaults to the last term.
  tick N [n=K]          tick node N K times (default 1)
  tick-heartbeat N      tick N heartbeat_ticks times (a leader then sends heartbeats)
  tick-election N       tick N election_ticks times
  campaign N            tick N until its election timer fires (at most 2 * election_ticks)
  propose N data        propose a NORMAL entry on N
  read-index N id       ask N for a linearizable read (thesis §6.4)
  propose-conf-change N voters=(..) [learners=(..)]
  transfer-leadership N to=M
  process-ready [N ...] handle the Ready of N (or of every node that has one)
  deliver-msgs [N ...] [from=(..)] [drop=(..)]
        deliver the in-flight messages addressed to N (default: all), or only those from the
        ``from`` nodes; the ones addressed to a node in ``drop`` are lost instead
  drop-msgs [to=(..)] [from=(..)]   lose in-flight messages
        both also take ``carrying=T/I``: only the AppendEntries that carry entry T/I (so that a
        heartbeat and an append queued in the same Ready can be told apart)
  stabilize             process every Ready and deliver every message until nothing happens
  partition (1 2) (3 4 5)  / heal
        nodes in different groups cannot talk; unlisted nodes form one more group
  crash N               N loses everything but its disk; in-flight messages to/from it are lost
  restart N             rebuild N from its disk (new RaftNode, empty state machine)
  raft-log N            N's log, one entry a line (its disk if it is down)
  log-terms             every node's log as a list of terms, with its commit index
  raft-state            role, term, commit index and leader of every node
  status N              N's status, with its view of the followers' progress
  stats [reset]         AppendEntries received and rejected per node since the last reset
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raftd.core import (AppendEntries, AppendEntriesResponse, Configuration, Entry, EntryKind,
                        HardState, Message, PreVote, PreVoteResponse, RaftConfig, RaftError,
                        RaftNode, Ready, RequestVote, RequestVoteResponse, Role, TimeoutNow)

from .datadriven import DataDrivenError, TestData


# ================================================================================ format ==
def fmt_entry(e: Entry) -> str:
    suffix = {EntryKind.NOOP: ":noop", EntryKind.CONFIG: ":conf"}.get(e.kind, "")
    return f"{e.term}/{e.index}{suffix}"


def fmt_entries(es) -> str:
    return " ".join(fmt_entry(e) for e in es)


def fmt_msg(m: Message) -> str:
    head = f"{m.src}->{m.dst} {type(m).__name__} term={m.term}"
    if isinstance(m, AppendEntries):
        text = f"{head} prev={m.prev_log_term}/{m.prev_log_index}"
        if m.entries:
            text += f" entries=[{fmt_entries(m.entries)}]"
        text += f" commit={m.leader_commit}"
        return text + (f" seq={m.seq}" if m.seq else "")
    if isinstance(m, AppendEntriesResponse):
        if m.success:
            text = f"{head} match={m.match_index}"
        elif m.reject_index:
            text = (f"{head} REJECT rejected={m.reject_index} last={m.match_index} "
                    f"conflict={m.conflict_term}/{m.conflict_index}")
        else:
            text = f"{head} REJECT (stale term) last={m.match_index}"
        return text + (f" seq={m.seq}" if m.seq else "")
    if isinstance(m, (RequestVote, PreVote)):
        text = f"{head} last={m.last_log_term}/{m.last_log_index}"
        return text + (" transfer" if getattr(m, "transfer", False) else "")
    if isinstance(m, (RequestVoteResponse, PreVoteResponse)):
        return f"{head} {'granted' if m.granted else 'REJECTED'}"
    if isinstance(m, TimeoutNow):
        return head
    return repr(m)


def describe_entry(e: Entry) -> str:
    if e.kind == EntryKind.NOOP:
        what = "noop"
    elif e.kind == EntryKind.CONFIG:
        what = "conf " + Configuration.decode(e.data).describe()
    else:
        what = "normal " + e.data.decode(errors="replace")
    return f"{e.index}: term={e.term} {what}"


def _id_key(nid: str) -> tuple:
    return (0, int(nid), "") if nid.isdigit() else (1, 0, nid)


# ================================================================================ nodes ==
@dataclass
class Disk:
    """What survives a crash.  Written only through the Ready contract."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)

    def save(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            first = rd.entries[0].index
            del self.entries[first - 1:]  # a conflict truncation (Figure 2, AppendEntries step 3)
            if len(self.entries) != first - 1:
                raise AssertionError(f"storage gap: {len(self.entries)} entries stored, "
                                     f"Ready appends at {first}")
            self.entries.extend(rd.entries)


@dataclass
class Node:
    id: str
    cfg: RaftConfig
    base: Configuration
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None  # None while crashed
    applied: list[Entry] = field(default_factory=list)  # this incarnation's state machine

    def boot(self) -> None:
        self.raft = RaftNode(self.id, self.cfg, random.Random(0),
                             hard_state=self.disk.hard_state, entries=list(self.disk.entries),
                             base_configuration=self.base)
        self.applied = []


# ================================================================================== env ==
class InteractionEnv:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.inflight: list[Message] = []
        self.group_of: dict[str, int] | None = None  # partition: node -> group number
        self.stats: dict[str, dict[str, int]] = {}
        self._out: list[str] = []

    # ----------------------------------------------------------------------- plumbing --
    def handle(self, td: TestData) -> str:
        fn = getattr(self, "cmd_" + td.cmd.replace("-", "_"), None)
        if fn is None:
            raise td.fatal(f"unknown command {td.cmd!r}")
        self._out = []
        try:
            fn(td)
        except RaftError as e:  # refusals by the core are part of the expected output
            self._emit(f"error: {type(e).__name__}: {e}")
        return "\n".join(self._out)

    def _emit(self, line: str) -> None:
        self._out.append(line)

    def _node(self, td: TestData, nid: str, up: bool = True) -> Node:
        n = self.nodes.get(nid)
        if n is None:
            raise td.fatal(f"no node {nid}")
        if up and n.raft is None:
            raise td.fatal(f"node {nid} is down")
        return n

    def _ids(self) -> list[str]:
        return sorted(self.nodes, key=_id_key)

    def _target(self, td: TestData) -> Node:
        pos = td.positional()
        if not pos:
            raise td.fatal("which node?")
        return self._node(td, pos[0].vals[0])

    def _input(self, n: Node, fn: Callable[[], object], indent: str = "") -> object:
        """Feed one input to ``n`` and print what it changed (role, term, truncations)."""
        raft = n.raft
        role, term = raft.role, raft.term
        old = raft.log.slice(raft.log.first_index, raft.log.last_index + 1)
        result = fn()
        removed = [e for e in old if raft.log.term_at(e.index) != e.term]
        if removed:
            self._emit(f"{indent}{n.id} truncated its log: removed {fmt_entries(removed)}")
        if raft.role != role or raft.term != term:
            self._emit(f"{indent}{n.id} became {raft.role} at term {raft.term}")
        return result

    def _stat(self, nid: str, key: str) -> None:
        s = self.stats.setdefault(nid, {})
        s[key] = s.get(key, 0) + 1

    # ------------------------------------------------------------------------- setup --
    def cmd_add_nodes(self, td: TestData) -> None:
        count = int(td.positional()[0].vals[0])
        start = len(self.nodes)
        new = [str(start + i + 1) for i in range(count)]
        voters = td.get("voters", new if not self.nodes else [])
        learners = td.get("learners", [])
        base = Configuration.make(voters, learners=learners)

        def flag(name: str) -> bool:
            v = td.get(name, "false")
            if v not in ("true", "false"):
                raise td.fatal(f"{name} must be true or false")
            return v == "true"

        cfg = RaftConfig(election_ticks=10, heartbeat_ticks=1,
                         pre_vote=flag("pre-vote"), check_quorum=flag("check-quorum"),
                         max_append_entries=int(td.get("max-append", 512)),
                         max_inflight_msgs=int(td.get("max-inflight", 64)))
        for nid in new:
            n = self.nodes[nid] = Node(nid, cfg, base)
            n.boot()
        self._emit(f"added {' '.join(new)}: configuration {base.describe()}, "
                   f"pre-vote={cfg.pre_vote} check-quorum={cfg.check_quorum}"
                   + (f" max-append={cfg.max_append_entries}" if td.has("max-append") else ""))

    def cmd_set_log(self, td: TestData) -> None:
        n = self._node(td, td.positional()[0].vals[0], up=False)
        terms = [int(t) for t in td.get("terms", [])]
        entries = [Entry(t, i + 1, EntryKind.NORMAL, f"e{i + 1}".encode())
                   for i, t in enumerate(terms)]
        if any(b < a for a, b in zip(terms, terms[1:], strict=False)):
            raise td.fatal("terms in a Raft log never decrease")
        term = int(td.get("term", terms[-1] if terms else 0))
        vote = td.get("vote")
        n.disk = Disk(HardState(term, vote), entries)
        n.boot()
        self._emit(f"{n.id}: term={term} vote={vote or '-'} log=[{' '.join(map(str, terms))}]")

    # ------------------------------------------------------------------------ inputs --
    def _tick_once(self, n: Node, indent: str = "") -> bool:
        """One tick; True if it fired the election timer (a campaign, or a try by a non-voter)."""
        raft = n.raft
        role, term, before = raft.role, raft.term, len(self._out)
        self._input(n, raft.tick, indent)
        fired = raft.role != Role.LEADER and role != Role.LEADER and raft.election_elapsed == 0
        if fired and len(self._out) == before:
            if raft.config.is_voter(n.id):  # a new round in the same role and term
                self._emit(f"{indent}{n.id} became {raft.role} at term {raft.term} (again)")
            else:
                self._emit(f"{indent}{n.id} did not campaign (not a voter in "
                           f"{raft.config.describe()})")
        return fired or (raft.role, raft.term) != (role, term)

    def _tick(self, td: TestData, times: int) -> None:
        n = self._target(td)
        for i in range(times):
            before = len(self._out)
            self._tick_once(n)
            if times > 1:
                for j in range(before, len(self._out)):
                    self._out[j] = f"tick {i + 1}: {self._out[j]}"

    def cmd_tick(self, td: TestData) -> None:
        self._tick(td, int(td.get("n", 1)))

    def cmd_tick_heartbeat(self, td: TestData) -> None:
        self._tick(td, self._target(td).cfg.heartbeat_ticks)

    def cmd_tick_election(self, td: TestData) -> None:
        self._tick(td, self._target(td).cfg.election_ticks)

    def cmd_campaign(self, td: TestData) -> None:
        n = self._target(td)
        if n.raft.role == Role.LEADER:
            raise td.fatal(f"{n.id} is the leader")
        for _ in range(2 * n.cfg.election_ticks):
            if self._tick_once(n):
                return
        raise td.fatal(f"{n.id}'s election timer did not fire")

    def cmd_propose(self, td: TestData) -> None:
        n = self._target(td)
        data = td.positional()[1].vals[0].encode()
        index = self._input(n, lambda: n.raft.propose(data))
        self._emit(f"{n.id} appended {n.raft.term}/{index}")

    def cmd_read_index(self, td: TestData) -> None:
        n = self._target(td)
        rid = td.positional()[1].vals[0]
        self._input(n, lambda: n.raft.read_index(rid))
        self._emit(f"{n.id} accepted read {rid} (commit index now {n.raft.commit_index})")

    def cmd_propose_conf_change(self, td: TestData) -> None:
        n = self._target(td)
        target = Configuration.make(td.get("voters", []), learners=td.get("learners", []))
        index = self._input(n, lambda: n.raft.propose_configuration(target))
        self._emit(f"{n.id} appended {describe_entry(n.raft.log.entry(index))}")

    def cmd_transfer_leadership(self, td: TestData) -> None:
        n = self._target(td)
        self._input(n, lambda: n.raft.transfer_leadership(td.get("to")))
        self._emit(f"{n.id} is transferring leadership to {td.get('to')}")

    # ------------------------------------------------------------------------- Ready --
    def _handle_ready(self, n: Node) -> bool:
        raft = n.raft
        if raft is None or not raft.has_ready():
            return False
        rd = raft.ready()
        self._emit(f"> {n.id} handling Ready")
        if rd.empty():
            self._emit("  (empty: has_ready() was true but ready() had nothing)")
        if rd.soft_state is not None:
            ss = rd.soft_state
            self._emit(f"  state: {ss.role} term={ss.term} leader={ss.leader_id or '-'}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self._emit(f"  hard state: term={hs.term} vote={hs.voted_for or '-'}")
        if rd.entries:
            self._emit(f"  entries: {fmt_entries(rd.entries)}")
        # 1. persist, then tell the node what is durable
        n.disk.save(rd)
        if rd.entries:
            last = rd.entries[-1]
            self._input(n, lambda: raft.persisted(last.index, last.term), "  ")
        # 2. only then send
        if rd.messages:
            self._emit("  messages:")
            for m in rd.messages:
                self._emit(f"    {fmt_msg(m)}")
            self.inflight.extend(rd.messages)
        # 3. apply
        if rd.committed_entries:
            self._emit(f"  committed: {fmt_entries(rd.committed_entries)}")
            n.applied.extend(rd.committed_entries)
            last_index = rd.committed_entries[-1].index
            self._input(n, lambda: raft.applied(last_index), "  ")
        # 4. reads
        for rs in rd.read_states:
            what = f"index={rs.index}" if rs.index is not None else "FAILED (retry elsewhere)"
            self._emit(f"  read state: {rs.request_id} {what}")
        return True

    def cmd_process_ready(self, td: TestData) -> None:
        ids = [a.vals[0] for a in td.positional()] or self._ids()
        for nid in ids:
            n = self._node(td, nid)
            if not self._handle_ready(n) and td.positional():
                self._emit(f"> {nid}: no Ready")

    # ---------------------------------------------------------------------- network --
    def _blocked(self, m: Message) -> str | None:
        dst = self.nodes.get(m.dst)
        if dst is None or dst.raft is None:
            return f"{m.dst} is down"
        if self.group_of is not None:
            if self.group_of.get(m.src, -1) != self.group_of.get(m.dst, -1):
                return "partitioned"
        return None

    def _deliver(self, msgs: list[Message], drop: frozenset[str] = frozenset()) -> None:
        for dst in sorted({m.dst for m in msgs}, key=_id_key):
            self._emit(f"> {dst} receiving messages")
            for m in msgs:
                if m.dst != dst:
                    continue
                reason = "dropped by the script" if dst in drop else self._blocked(m)
                if reason:
                    self._emit(f"  {fmt_msg(m)}  DROPPED ({reason})")
                    continue
                self._emit(f"  {fmt_msg(m)}")
                if isinstance(m, AppendEntries):
                    self._stat(m.dst, "append")
                elif isinstance(m, AppendEntriesResponse) and not m.success:
                    self._stat(m.src, "rejected")
                n = self.nodes[dst]
                self._input(n, lambda n=n, m=m: n.raft.step(m), "    ")

    def _select(self, td: TestData, to_key: str | None) -> list[Message]:
        to = ([a.vals[0] for a in td.positional()] if to_key is None
              else td.get(to_key, []))
        src = td.get("from", [])
        msgs = [m for m in self.inflight if (not to or m.dst in to) and (not src or m.src in src)]
        if td.has("carrying"):
            want = td.get("carrying")
            msgs = [m for m in msgs if isinstance(m, AppendEntries)
                    and any(f"{e.term}/{e.index}" == want for e in m.entries)]
        return msgs

    def cmd_deliver_msgs(self, td: TestData) -> None:
        msgs = self._select(td, None)
        chosen = set(map(id, msgs))
        self.inflight = [m for m in self.inflight if id(m) not in chosen]
        if not msgs:
            self._emit("no messages")
        self._deliver(msgs, frozenset(td.get("drop", [])))

    def cmd_drop_msgs(self, td: TestData) -> None:
        msgs = self._select(td, "to")
        chosen = set(map(id, msgs))
        self.inflight = [m for m in self.inflight if id(m) not in chosen]
        for m in msgs:
            self._emit(f"dropped {fmt_msg(m)}")
        if not msgs:
            self._emit("no messages")

    def cmd_stabilize(self, td: TestData) -> None:
        for _ in range(1000):
            busy = False
            for nid in self._ids():
                busy |= self._handle_ready(self.nodes[nid])
            if self.inflight:
                msgs, self.inflight = self.inflight, []
                self._deliver(msgs)
                busy = True
            if not busy:
                return
        raise td.fatal("did not stabilize after 1000 rounds")

    def cmd_partition(self, td: TestData) -> None:
        self.group_of = {}
        for g, arg in enumerate(td.positional()):
            for nid in arg.vals:
                self.group_of[nid] = g
        rest = [nid for nid in self._ids() if nid not in self.group_of]
        groups = [a.vals for a in td.positional()] + ([rest] if rest else [])
        self._emit("partitioned: " + " | ".join(f"({' '.join(g)})" for g in groups))

    def cmd_heal(self, td: TestData) -> None:
        self.group_of = None
        self._emit("healed: every node can reach every other")

    def cmd_crash(self, td: TestData) -> None:
        n = self._target(td)
        n.raft = None
        lost = [m for m in self.inflight if n.id in (m.src, m.dst)]
        self.inflight = [m for m in self.inflight if n.id not in (m.src, m.dst)]
        hs = n.disk.hard_state
        self._emit(f"{n.id} crashed; its disk keeps term={hs.term} vote={hs.voted_for or '-'} "
                   f"log=[{fmt_entries(n.disk.entries)}]")
        for m in lost:
            self._emit(f"  lost in flight: {fmt_msg(m)}")

    def cmd_restart(self, td: TestData) -> None:
        n = self._node(td, td.positional()[0].vals[0], up=False)
        if n.raft is not None:
            raise td.fatal(f"{n.id} is up")
        n.boot()
        hs = n.disk.hard_state
        self._emit(f"{n.id} restarted from its disk: term={hs.term} vote={hs.voted_for or '-'} "
                   f"log=[{fmt_entries(n.disk.entries)}]")

    # ---------------------------------------------------------------------- queries --
    def cmd_raft_log(self, td: TestData) -> None:
        n = self._node(td, td.positional()[0].vals[0], up=False)
        if n.raft is None:
            self._emit(f"({n.id} is down; its disk:)")
            entries = n.disk.entries
        else:
            log = n.raft.log
            entries = log.slice(log.first_index, log.last_index + 1)
        for e in entries:
            self._emit(describe_entry(e))
        if not entries:
            self._emit("(empty log)")

    def cmd_log_terms(self, td: TestData) -> None:
        for nid in self._ids():
            n = self.nodes[nid]
            if n.raft is None:
                terms = " ".join(str(e.term) for e in n.disk.entries)
                self._emit(f"{nid}: [{terms}] (down)")
                continue
            log = n.raft.log
            terms = " ".join(str(e.term) for e in log.slice(log.first_index, log.last_index + 1))
            self._emit(f"{nid}: [{terms}] commit={n.raft.commit_index}")

    def cmd_raft_state(self, td: TestData) -> None:
        for nid in self._ids():
            r = self.nodes[nid].raft
            if r is None:
                hs = self.nodes[nid].disk.hard_state
                self._emit(f"{nid}: DOWN (disk: term={hs.term} vote={hs.voted_for or '-'})")
                continue
            voter = "" if r.config.is_voter(nid) else " (not a voter)"
            self._emit(f"{nid}: {str(r.role):<13} term={r.term} commit={r.commit_index} "
                       f"last={r.log.last_index} leader={r.leader_id or '-'}{voter}")

    def cmd_status(self, td: TestData) -> None:
        n = self._target(td)
        r = n.raft
        self._emit(f"{n.id}: {r.role} term={r.term} vote={r.voted_for or '-'} "
                   f"leader={r.leader_id or '-'} commit={r.commit_index} "
                   f"applied={r.last_applied} last={r.log.last_index}")
        self._emit(f"configuration: {r.config.describe()}")
        for p in sorted(r.progress, key=_id_key):
            pr = r.progress[p]
            self._emit(f"  {p}: match={pr.match_index} next={pr.next_index} "
                       f"{pr.state.name.lower()}")

    def cmd_stats(self, td: TestData) -> None:
        for nid in self._ids():
            s = self.stats.get(nid, {})
            if s:
                self._emit(f"{nid}: received {s.get('append', 0)} AppendEntries, "
                           f"rejected {s.get('rejected', 0)}")
        if not self.stats:
            self._emit("no AppendEntries delivered")
        if td.positional() and td.positional()[0].vals[0] == "reset":
            self.stats = {}


def handler() -> Callable[[TestData], str]:
    env = InteractionEnv()
    return env.handle


__all__ = ["InteractionEnv", "handler", "DataDrivenError"]
