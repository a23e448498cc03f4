"""What the leader knows about each follower (Raft §5.3, etcd-io/raft's Progress).

match_index only moves forward; next_index is a guess that may move back.  In PROBE state the
leader sends one AppendEntries at a time until it finds where the logs match; in REPLICATE state
it streams entries optimistically, with at most ``max_inflight_msgs`` messages and
``max_inflight_bytes`` bytes in flight (pipelining, bounded so a slow follower cannot make the
leader hold unbounded data: etcd #12548).
"""
from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2  # an InstallSnapshot is being transferred; send nothing else meanwhile


class Progress:
    __slots__ = ("match_index", "next_index", "state", "probe_sent", "inflight",
                 "inflight_bytes", "recent_active", "acked_seq", "pending_snapshot",
                 "snapshot_ticks", "sent_index")

    def __init__(self, next_index: int):
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        # PROBE: an AppendEntries is outstanding; wait for its reply or the next heartbeat
        self.probe_sent = False
        self.inflight: deque[tuple[int, int]] = deque()  # (last index sent, bytes) per message
        self.inflight_bytes = 0
        self.recent_active = False  # heard from since the last check-quorum round
        self.acked_seq = 0  # highest heartbeat round acknowledged (ReadIndex)
        self.pending_snapshot = 0  # SNAPSHOT: index of the snapshot being sent
        self.snapshot_ticks = 0  # SNAPSHOT: ticks since it started (gives up eventually)
        # Highest index any message of this term told the follower about (entries, a
        # heartbeat's prev_log_index, a snapshot).  An answer about an index above it cannot
        # be honest and is ignored, so a forged ack never commits or breaks anything.
        self.sent_index = 0

    def note_sent(self, index: int) -> None:
        if index > self.sent_index:
            self.sent_index = index

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.next_index = self.match_index + 1
        self.inflight.clear()
        self.inflight_bytes = 0

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.inflight.clear()
        self.inflight_bytes = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next_index = self.match_index + 1
        self.inflight.clear()
        self.inflight_bytes = 0

    def maybe_update(self, index: int) -> bool:
        """A successful AppendEntries response up to ``index``; True if match moved."""
        updated = index > self.match_index
        if updated:
            self.match_index = index
            self.probe_sent = False
        if self.next_index < index + 1:
            self.next_index = index + 1
        while self.inflight and self.inflight[0][0] <= index:
            self.inflight_bytes -= self.inflight.popleft()[1]
        return updated

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """A rejection of the AppendEntries whose prev_log_index was ``rejected``.  Returns False
        if it is stale (an answer to a message we no longer care about)."""
        if self.state == ProgressState.SNAPSHOT:
            return False  # answers to appends sent before the snapshot started
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False  # stale: we already know the logs match beyond it
            self.become_probe()
            self.next_index = max(self.match_index + 1, min(rejected, hint + 1))
            return True
        if self.next_index - 1 != rejected or rejected <= self.match_index:
            # PROBE: only the answer to the probe we sent counts.  A rejection at or below
            # match_index contradicts an earlier ack (a diverged or lying follower): leave
            # probe_sent set so we retry at the next heartbeat, not in a tight loop (issue 19 §6).
            return False
        self.next_index = max(min(rejected, hint + 1), self.match_index + 1, 1)
        self.probe_sent = False
        return True

    def paused(self, max_msgs: int, max_bytes: int) -> bool:
        if self.state == ProgressState.SNAPSHOT:
            return True
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        return len(self.inflight) >= max_msgs or self.inflight_bytes >= max_bytes

    def sent(self, last_index: int, nbytes: int) -> None:
        if self.state == ProgressState.REPLICATE:
            if last_index >= self.next_index:
                self.inflight.append((last_index, nbytes))
                self.inflight_bytes += nbytes
                self.next_index = last_index + 1
        else:
            self.probe_sent = True
