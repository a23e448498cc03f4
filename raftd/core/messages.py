"""Messages exchanged between Raft nodes (paper Figure 2, thesis §3.10 and §9.6).

Frozen, slotted dataclasses; every message carries ``src``, ``dst`` and ``term``.  Adding a
message type means: a class here, a tag in ``MessageType`` (never renumber), an entry in
``MESSAGE_TYPES``, and a handler in node.py.  The wire codec (raftd.wire.codec) is driven by
MESSAGE_TYPES, so it needs no change.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .types import Entry


class MessageType(enum.IntEnum):
    # Wire tags: never renumber.
    APPEND_ENTRIES = 1
    APPEND_ENTRIES_RESPONSE = 2
    REQUEST_VOTE = 3
    REQUEST_VOTE_RESPONSE = 4
    PRE_VOTE = 5
    PRE_VOTE_RESPONSE = 6
    TIMEOUT_NOW = 7
    INSTALL_SNAPSHOT = 8


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Leader -> follower: replicate ``entries`` after (prev_log_index, prev_log_term).
    An empty ``entries`` is a heartbeat.  ``seq`` numbers the leader's heartbeat rounds so a
    response can confirm leadership for ReadIndex (thesis §6.4)."""

    src: str
    dst: str
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """``match_index`` is the last index known to match the leader (success), or the follower's
    last log index (reject).  On reject, ``reject_index`` is the prev_log_index that failed and
    (conflict_index, conflict_term) is the fast-backtracking hint: the largest index at or
    before min(reject_index, follower's last index) whose term is <= the leader's
    prev_log_term, and that term (etcd-io/raft's findConflictByTerm).  The leader skips back to
    it in one step instead of one entry per round trip."""

    src: str
    dst: str
    term: int
    success: bool
    match_index: int
    reject_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: str
    dst: str
    term: int
    last_log_index: int
    last_log_term: int
    # Set when the election was started by TimeoutNow (leadership transfer, thesis §3.10):
    # such a vote request may not be withheld on the grounds of a live leader.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    src: str
    dst: str
    term: int
    granted: bool


@dataclass(frozen=True, slots=True)
class PreVote:
    """Thesis §9.6: "would you vote for me in ``term``?"  ``term`` is the candidate's
    current term + 1; the receiver does not change its own term."""

    src: str
    dst: str
    term: int
    last_log_index: int
    last_log_term: int


@dataclass(frozen=True, slots=True)
class PreVoteResponse:
    src: str
    dst: str
    term: int
    granted: bool


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader -> transfer target: start an election now (thesis §3.10)."""

    src: str
    dst: str
    term: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Leader -> follower: the state machine up to last_included_index (Raft §7, Figure 13).

    The core emits one with offset 0, no data and done=False, meaning "send this follower the
    snapshot"; the runtime streams the snapshot file as a series of these with ``offset`` and
    ``data`` chunks, the last with done=True.  The receiving runtime assembles the chunks into
    a file and steps the final (done=True, data=b"") message into its core."""

    src: str
    dst: str
    term: int
    last_included_index: int
    last_included_term: int
    configuration: bytes  # Configuration.encode() of the configuration at that index
    offset: int = 0
    data: bytes = b""
    done: bool = False


Message = (AppendEntries | AppendEntriesResponse | RequestVote | RequestVoteResponse | PreVote
           | PreVoteResponse | TimeoutNow | InstallSnapshot)

MESSAGE_TYPES: dict[MessageType, type] = {
    MessageType.APPEND_ENTRIES: AppendEntries,
    MessageType.APPEND_ENTRIES_RESPONSE: AppendEntriesResponse,
    MessageType.REQUEST_VOTE: RequestVote,
    MessageType.REQUEST_VOTE_RESPONSE: RequestVoteResponse,
    MessageType.PRE_VOTE: PreVote,
    MessageType.PRE_VOTE_RESPONSE: PreVoteResponse,
    MessageType.TIMEOUT_NOW: TimeoutNow,
    MessageType.INSTALL_SNAPSHOT: InstallSnapshot,
}
TYPE_OF: dict[type, MessageType] = {cls: tag for tag, cls in MESSAGE_TYPES.items()}
