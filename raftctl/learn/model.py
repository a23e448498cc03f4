"""Plain values the view draws: one Frame per moment of a run (recorded for scenario playback)."""
from __future__ import annotations

from dataclasses import dataclass

from raftd.core.messages import Message


@dataclass(frozen=True, slots=True)
class Flight:
    """A message on the wire: sent at ``sent_at``, arrives at ``deliver_at`` (ticks)."""

    msg: Message
    sent_at: int
    deliver_at: int
    seq: int


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    up: bool
    cut: bool  # some link to or from it is cut
    role: str
    term: int
    voted_for: str | None
    leader: str | None
    timer_left: int  # ticks until its election timeout fires (0 for a leader)
    timer_total: int
    log_base: int  # entries before this index are in the snapshot
    log_terms: tuple[int, ...]  # term of each entry after log_base
    commit_index: int
    config: str


@dataclass(frozen=True, slots=True)
class Frame:
    time: int
    nodes: tuple[NodeView, ...]
    flights: tuple[Flight, ...]
    narrative: tuple[str, ...]
    title: str = ""
