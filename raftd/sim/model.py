"""The simulator's model: its parameters, a node's durable disk, a node and a client's
proposal.  Split from cluster.py (issue 17 §2)."""
from __future__ import annotations

from dataclasses import dataclass, field

from raftd.core import Entry, HardState, RaftNode, Ready, SnapshotMeta

from .checker import SafetyViolation


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
    # Membership changes (Raft §6).  Off: the pool is the bootstrap configuration and the run
    # draws exactly the random numbers it drew before membership changes existed.
    membership: bool = True
    spare_nodes: int = 2  # servers in the pool beyond the bootstrap configuration
    reconfig_every_ms: tuple[int, int] = (100, 400)
    min_voters: int = 3  # shrink below this only rarely (never to zero)
    # Snapshots and log compaction (Raft §7): every node snapshots its state machine every
    # ``snapshot_every`` applied entries and keeps ``snapshot_trailing`` entries below it, so
    # lagging and restarted nodes catch up by InstallSnapshot.  0 turns it off.
    snapshot_every: int = 40
    snapshot_trailing: int = 5
    # Pipelined saves, like raftd's runtime: a node takes the next Ready while an fsync runs;
    # the leader's AppendEntries leave at once (thesis §10.2.1), everything else of a Ready
    # waits behind its save, and Readies queued meanwhile share the next fsync.  A crash keeps
    # a random prefix of the Readies being written (unsynced data may or may not survive).
    # False: one Ready at a time, all its messages after its fsync.
    pipeline: bool = True
    # Pipeline only, a fault of the faulty phase: now and then an fsync stalls (a busy disk),
    # long enough for replies from the followers to come back first; that is when a leader
    # that counted its own copy before its fsync completed would commit what a crash can still
    # take back.
    slow_fsync: float = 0.05
    slow_fsync_ms: tuple[int, int] = (15, 60)


class SimDisk:
    """What survives a crash: only what an fsync completed.  The log starts after
    (base_index, base_term); ``snapshot`` is the newest durable snapshot and the state machine
    it holds (the applied entries up to its index; every node's snapshot at one (index, term)
    holds the same state, by State Machine Safety)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []
        self.base_index = 0
        self.base_term = 0
        self.snapshot: tuple[SnapshotMeta, tuple[Entry, ...]] | None = None

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_term
        pos = index - self.base_index - 1
        return self.entries[pos].term if 0 <= pos < len(self.entries) else None

    def install(self, meta: SnapshotMeta, state: tuple[Entry, ...]) -> None:
        """A received snapshot (Figure 13 steps 6-7): keep the suffix only if it continues it."""
        if self.term_at(meta.index) == meta.term:
            self.entries = self.entries[meta.index - self.base_index:]
        else:
            self.entries = []
        self.base_index, self.base_term = meta.index, meta.term
        self.snapshot = (meta, state)

    def compact(self, index: int, term: int) -> None:
        if index > self.base_index:
            self.entries = self.entries[index - self.base_index:]
            self.base_index, self.base_term = index, term

    def write(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        entries = [e for e in rd.entries if e.index > self.base_index]
        if entries:
            first = entries[0].index
            del self.entries[first - 1 - self.base_index:]
            if self.last_index != first - 1:
                raise SafetyViolation(f"storage gap: log ends at {self.last_index}, "
                                      f"append at {first}")
            self.entries.extend(entries)


@dataclass
class SimNode:
    id: str
    disk: SimDisk = field(default_factory=SimDisk)
    raft: RaftNode | None = None  # None while crashed
    incarnation: int = 0
    disk_busy: bool = False  # one fsync at a time, like the real runtime
    saves: list[Ready] = field(default_factory=list)  # pipeline: waiting for the next fsync
    writing: list[Ready] = field(default_factory=list)  # pipeline: in the fsync under way
    applied: list[Entry] = field(default_factory=list)  # this incarnation's state machine
    was_leader: bool = False  # as of the last Ready's soft state (to trace step-downs)

    @property
    def up(self) -> bool:
        return self.raft is not None

    @property
    def live(self) -> RaftNode:
        """The running RaftNode; asking a crashed node for it is a bug of the simulator."""
        if self.raft is None:
            raise RuntimeError(f"{self.id} is down")
        return self.raft


@dataclass
class Proposal:
    value: bytes
    node: str = ""
    incarnation: int = -1
    index: int = 0
    term: int = 0
    acked: bool = False
    waits: int = 0  # times a client waited for this proposal's answer in vain
