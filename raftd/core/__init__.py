"""raftd.core: the Raft algorithm with no I/O (see node.py and ready.py for the contract)."""
from .errors import (CompactedError, ConfChangeInProgressError, InvalidConfChangeError,
                     NotLeaderError, ProposalDroppedError, RaftError)
from .log import LogCorruptionError, RaftLog
from .membership import (Configuration, SnapshotMeta, committed_index, has_quorum,
                         vote_result)
from .messages import (MESSAGE_TYPES, AppendEntries, AppendEntriesResponse, InstallSnapshot,
                       Message, MessageType, PreVote, PreVoteResponse, RequestVote,
                       RequestVoteResponse, TimeoutNow)
from .node import RaftConfig, RaftNode
from .ready import Ready, ReadState
from .types import Entry, EntryKind, HardState, Role, SoftState

__all__ = [
    "AppendEntries", "AppendEntriesResponse", "CompactedError", "ConfChangeInProgressError",
    "Configuration", "Entry", "InstallSnapshot", "SnapshotMeta", "EntryKind", "HardState",
    "InvalidConfChangeError",
    "LogCorruptionError", "MESSAGE_TYPES", "Message", "MessageType", "NotLeaderError",
    "PreVote", "PreVoteResponse", "ProposalDroppedError", "RaftConfig", "RaftError", "RaftLog",
    "RaftNode", "ReadState", "Ready", "RequestVote", "RequestVoteResponse", "Role", "SoftState",
    "TimeoutNow", "committed_index", "has_quorum", "vote_result",
]
