"""The record of work the core hands to its runtime after each batch of events.

THE CONTRACT (the runtime must do these in this order for each Ready):

0. If ``snapshot`` is set (a follower received InstallSnapshot, Raft §7): make the received
   snapshot file the node's newest snapshot, restore the state machine from it, and make the
   log start after it (keep stored entries after snapshot.index if the one at snapshot.index
   has snapshot.term, else discard the whole log).
1. Persist ``hard_state`` (if not None) and ``entries``: storage first deletes every stored
   entry with index >= entries[0].index (a conflict truncation, Raft Figure 2 step 3), then
   appends.  fsync if ``must_sync``.  Then call ``node.persisted(entries[-1].index,
   entries[-1].term)`` so a leader may count its own copy (thesis §10.2.1).
2. Only then send ``messages``: a vote or an AppendEntries acknowledgement must never leave
   before the state it promises is on disk (Figure 2, "Persistent state ... updated on stable
   storage before responding to RPCs").  One exception, ``may_send_early(msg)``: a
   leader's AppendEntries and InstallSnapshot may leave before its own write, so the leader's
   fsync runs in parallel with the followers' (thesis §10.2.1).  That is safe because they
   promise nothing about the leader's disk once its term is durable, and it counts its own copy
   of an entry only after ``persisted()``.  The term is durable when its RequestVotes left (they
   wait for the save), but a leader elected alone (one voter) carries its new term in the same
   Ready as its first AppendEntries: while a ``hard_state`` is not yet saved (this Ready's or an
   earlier one still being written), early messages must wait too.
3. Apply ``committed_entries`` to the state machine in index order, exactly once, and call
   ``node.applied(index)``.  The core hands out an index once; it never repeats or skips one.
   (Only step 1 must come before this; the runtime applies before step 2's sends so that
   client replies leave ahead of the commit-index AppendEntries.)
4. Answer ``read_states``: a read registered with request id R may be served once the state
   machine has applied ``index`` (thesis §6.4).  ``index`` None means the read failed (this node
   lost leadership) and the client must retry.

Ready objects from one node must be processed in the order they were produced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .membership import SnapshotMeta
from .messages import AppendEntries, InstallSnapshot, Message
from .types import Entry, HardState, SoftState


def may_send_early(msg: Message) -> bool:
    """True for messages that step 2's exception allows before the Ready is persisted."""
    return isinstance(msg, (AppendEntries, InstallSnapshot))


@dataclass(frozen=True, slots=True)
class ReadState:
    request_id: object
    index: int | None


@dataclass(frozen=True, slots=True)
class Ready:
    """Immutable: a runtime that hands parts of it on makes a new one (dataclasses.replace)."""
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None  # set when role, leader or term changed
    snapshot: SnapshotMeta | None = None  # install this received snapshot first (step 0)

    @property
    def must_sync(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None

    def empty(self) -> bool:
        return not (self.hard_state or self.entries or self.messages or self.committed_entries
                    or self.read_states or self.soft_state or self.snapshot)
