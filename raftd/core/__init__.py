"""raftd.core: the Raft algorithm with no I/O (see node.py and ready.py for the contract).

Every public name below is importable from here, but each is imported only when first asked
for (PEP 562): the wire codec needs only messages and types, and importing the whole core
(node, log, membership, ...) cost every `raftctl kv get` about 30 ms (issue 16 §6)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (CompactedError, ConfChangeInProgressError, InvalidConfChangeError,
                         NotLeaderError, ProposalDroppedError, RaftError)
    from .log import LogCorruptionError, RaftLog
    from .membership import (Configuration, SnapshotMeta, committed_index, has_quorum,
                             vote_result)
    from .messages import (MESSAGE_TYPES, AppendEntries, AppendEntriesResponse,
                           InstallSnapshot, Message, MessageType, PreVote, PreVoteResponse,
                           RequestVote, RequestVoteResponse, TimeoutNow)
    from .node import RaftConfig, RaftNode
    from .ready import Ready, ReadState
    from .types import Entry, EntryKind, HardState, Role, SoftState

# public name -> the submodule that defines it
_HOME = {
    **dict.fromkeys(("CompactedError", "ConfChangeInProgressError", "InvalidConfChangeError",
                     "NotLeaderError", "ProposalDroppedError", "RaftError"), "errors"),
    **dict.fromkeys(("LogCorruptionError", "RaftLog"), "log"),
    **dict.fromkeys(("Configuration", "SnapshotMeta", "committed_index", "has_quorum",
                     "vote_result"), "membership"),
    **dict.fromkeys(("MESSAGE_TYPES", "AppendEntries", "AppendEntriesResponse",
                     "InstallSnapshot", "Message", "MessageType", "PreVote", "PreVoteResponse",
                     "RequestVote", "RequestVoteResponse", "TimeoutNow"), "messages"),
    **dict.fromkeys(("RaftConfig", "RaftNode"), "node"),
    **dict.fromkeys(("Ready", "ReadState"), "ready"),
    **dict.fromkeys(("Entry", "EntryKind", "HardState", "Role", "SoftState"), "types"),
}

__all__ = [
    "AppendEntries", "AppendEntriesResponse", "CompactedError", "ConfChangeInProgressError",
    "Configuration", "Entry", "InstallSnapshot", "SnapshotMeta", "EntryKind", "HardState",
    "InvalidConfChangeError",
    "LogCorruptionError", "MESSAGE_TYPES", "Message", "MessageType", "NotLeaderError",
    "PreVote", "PreVoteResponse", "ProposalDroppedError", "RaftConfig", "RaftError", "RaftLog",
    "RaftNode", "ReadState", "Ready", "RequestVote", "RequestVoteResponse", "Role", "SoftState",
    "TimeoutNow", "committed_index", "has_quorum", "vote_result",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
