"""Value types shared by the Raft core and everything around it.

Names follow the paper (Ongaro & Ousterhout 2014, Figure 2).  Everything here is
immutable data; no behaviour that touches a clock, a socket or a disk.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

# Terms and indexes stay far below the 64-bit limit of the wire and disk encodings, so term + 1
# and index + n never overflow them (issue 19 §1).  A message with a larger value is refused.
MAX_TERM = 2**62
MAX_INDEX = 2**62


class Role(enum.IntEnum):
    # Wire/status values: never renumber.
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    # 4 is reserved (a LEARNER role that was never produced: status derives "learner" from
    # the configuration).

    def __str__(self) -> str:  # "leader", "follower", ...
        return self.name.lower().replace("_", "-")


class EntryKind(enum.IntEnum):
    # Stored on disk and sent on the wire: never renumber.
    NORMAL = 0  # opaque state-machine command
    NOOP = 1  # appended by a new leader (Raft §5.4.2 / §8)
    CONFIG = 2  # a Configuration, see membership.py (Raft §6)


class Entry(NamedTuple):
    """One log entry.  A NamedTuple rather than a frozen dataclass: it is built once per client
    write and serialised as a plain array, and tuple construction is several times cheaper."""

    term: int
    # The paper's name; it shadows tuple.index, which nothing here uses.
    index: int  # type: ignore[assignment]
    kind: int = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves the node (Figure 2)."""

    term: int = 0
    voted_for: str | None = None


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the runtime may want to log or show; never persisted."""

    role: Role
    leader_id: str | None
    term: int
