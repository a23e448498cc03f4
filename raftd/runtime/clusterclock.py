"""Cluster time: the clock that stamps commands for the state machine's session expiry.

Wall clocks differ between nodes and jump (NTP steps, a mistyped date); a state machine that
followed the proposing leader's wall clock expired every session at once on one step forward,
and froze expiry after a far-future one.  Cluster time (LogCabin's approach; Raft thesis
§6.3) only moves forward by elapsed time measured on one node's monotonic clock: a leader
continues from the cluster time it finds in its applied state when its term starts, and adds
the time that has passed on its own monotonic clock since.  The state machine keeps the
maximum, so a new leader that starts a little behind (it has not applied everything yet)
never moves time backwards; it only delays expiry by that much.
"""
from __future__ import annotations

from collections.abc import Callable


class ClusterClock:
    """``now_ms(term, applied_ms)`` -> the cluster time to stamp on a command proposed in
    ``term`` by this node as leader.  ``monotonic`` returns seconds (time.monotonic)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._term = -1
        self._base_ms = 0
        self._start = 0.0

    def now_ms(self, term: int, applied_ms: int) -> int:
        if term != self._term:
            # A new term: continue from what the log says, not from our own past terms.
            self._term, self._base_ms, self._start = term, applied_ms, self._monotonic()
        elapsed_ms = int((self._monotonic() - self._start) * 1000)
        return max(applied_ms, self._base_ms + elapsed_ms)
