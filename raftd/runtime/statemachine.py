"""What the runtime needs from the replicated state machine (Raft §2: the log feeds it).

``KVStateMachine`` (raftd.kv.fsm) is the default and the only one with client reads (get,
list) and sessions; the protocol names the calls the drive loop and the snapshot code make,
so another state machine can be passed to ``RaftServer(state_machine=...)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol


class StateMachine(Protocol):
    applied_index: int  # the last log index applied

    def apply_entry(self, entry) -> Any:
        """Apply one committed log entry (raftd.core.Entry), in log order; the result goes to
        the client that proposed it (None for entries that carry no command)."""

    def freeze(self) -> tuple[dict, Any]:
        """A consistent image for a snapshot: (header, data batches)."""

    def thaw(self) -> None:
        """The snapshot image is written: the state machine may change in place again."""

    def restore_stream(self, header: dict, batches: Iterable) -> None:
        """Replace the whole state with a snapshot's (InstallSnapshot, restart)."""

    def digest(self) -> str:
        """A short fingerprint of the state: replicas at the same applied index agree."""

    def __len__(self) -> int: ...
