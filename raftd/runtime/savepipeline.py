"""The save pipeline (ready.py's contract): each Ready's entries and hard state go to the WAL
(inline or on the disk thread), what may leave early leaves at once, the rest of the Ready
finishes in order behind its save; Readies queued during an fsync share the next one (group
commit).  A part of RaftServer (mixed in), split from server.py by responsibility (issue 17 §2).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from raftd.core import Ready
from raftd.core.messages import Message
from raftd.core.ready import may_send_early

from .serverstate import ServerState

log = logging.getLogger("raftd")

_INLINE_BACKOFF_S = 30.0  # inline_fsync auto: how long a slow fsync sends saves to the thread
_T = TypeVar("_T")


@dataclass(slots=True)
class _Save:
    """A Ready whose remaining steps wait for the disk: its own save (persist) or one before it."""
    rd: Ready
    late: list[Message]  # messages that may leave only after the save (votes, acks, ...)
    persist: bool


class SavePipeline(ServerState):
    """RaftServer's save pipeline (see the module docstring)."""

    _saves: list[_Save]  # Readies waiting for the disk writer, in order

    async def _handle_ready(self, rd: Ready) -> None:
        """Start one Ready on its way (ready.py's contract).  Saves are pipelined: the loop
        does not wait for the disk.  What may leave early (the leader's AppendEntries, thesis
        §10.2.1) leaves now; the rest of the Ready waits, in order, behind its own save and
        every save before it (see _Save); Readies that queue up while an fsync runs share
        the next one (group commit across Readies)."""
        if rd.snapshot is not None:
            # Contract step 0 replaces the log: every save queued before it lands first.
            await self._saves_drained()
            if rd.soft_state is not None:
                self._on_soft_state(rd.soft_state)
            await self.snapshots.install(rd.snapshot)  # contract step 0
            rd = replace(rd, soft_state=None, snapshot=None)
        self._process_ready(rd)

    def _process_ready(self, rd: Ready) -> None:
        if self._disk_failed:
            return  # the node is stopping (fatal): an ack now could promise what is not on disk
        persist = rd.hard_state is not None or bool(rd.entries)
        late = rd.messages
        if persist:
            late = []
            early = False
            # Early AppendEntries promise nothing about our disk only if our term is already
            # durable (ready.py step 2): a leader elected alone (one voter) has its new term in
            # this very Ready, and with pipelined saves an earlier one may still be queued.
            hold = rd.hard_state is not None or self._hs_unsaved > 0
            for msg in rd.messages:
                if not hold and may_send_early(msg):
                    self._send(msg)
                    early = True
                else:
                    late.append(msg)
            if self._disk_writer is None and not self._disk_jobs and self._save_inline():
                # On the loop: no thread hand-off and wake-up per batch; while it runs, new
                # requests and acks queue in the kernel and form the next batch.  What may
                # leave early goes to the kernel first, so followers write in parallel.
                if early:
                    for link in self.peers.values():
                        link.flush_now()
                t0 = self.sysclock.perf()
                try:
                    self.wal.save(rd.hard_state, rd.entries)
                except BaseException:
                    self._disk_failed = True  # see _write_saves
                    raise
                dt = self.sysclock.perf() - t0
                self._count_fsync(dt)
                if dt > self._inline_limit_s and self.cfg.inline_fsync == "auto":
                    # The loop was blocked that long: heartbeats, reads and status waited.
                    # Let the disk thread take the saves for a while.
                    self._inline_until = self.sysclock.monotonic() + _INLINE_BACKOFF_S
                    self.counters["inline_fsync_backoffs"] += 1
                    log.warning("an fsync took %.0f ms; saves run on the disk thread for the "
                                "next %.0f s (inline_fsync: auto)", dt * 1000,
                                _INLINE_BACKOFF_S)
                if rd.entries:
                    self.core.persisted(rd.entries[-1].index, rd.entries[-1].term)
                self._finish(rd, late)
                return
        elif self._disk_writer is None:
            self._finish(rd, late)  # nothing to persist and no save before it in flight
            return
        if rd.hard_state is not None:
            self._hs_unsaved += 1
        self._saves.append(_Save(rd, late, persist))
        if self._disk_writer is None:
            self._disk_writer = asyncio.get_running_loop().create_task(
                self._write_saves(), name="disk-writer")
            self._disk_writer.add_done_callback(self._on_task_done)

    def _save_inline(self) -> bool:
        mode = self.cfg.inline_fsync
        if mode == "auto":
            return self.sysclock.monotonic() >= self._inline_until
        return bool(mode)

    async def _write_saves(self) -> None:
        """Drain the save queue: everything queued goes to the disk thread as one batch (one
        write, one fdatasync); then each Ready of the batch finishes in order."""
        node = self.core
        try:
            while self._saves:
                batch, self._saves = self._saves, []
                to_disk = [(s.rd.hard_state, s.rd.entries) for s in batch if s.persist]
                if to_disk:
                    t0 = self.sysclock.perf()
                    await self.on_disk(self.wal.save_many, to_disk)
                    self._count_fsync(self.sysclock.perf() - t0)
                for s in batch:
                    if s.persist and s.rd.entries:
                        node.persisted(s.rd.entries[-1].index, s.rd.entries[-1].term)
                    if s.rd.hard_state is not None:
                        self._hs_unsaved -= 1
                    self._finish(s.rd, s.late)
                self._wake.set()
        except BaseException:
            # The batch's state is unknown (a failed fsync may have lost pages), or we are
            # stopping: finish nothing more, or an ack could promise what is not on disk.
            self._disk_failed = True
            raise
        finally:
            self._disk_writer = None
            if self._saves_idle is not None:
                self._saves_idle.set()

    async def _saves_drained(self) -> None:
        while self._disk_writer is not None:
            self._saves_idle = asyncio.Event()
            await self._saves_idle.wait()
        self._saves_idle = None

    def _count_fsync(self, dt: float) -> None:
        self.counters["fsyncs"] += 1
        self.counters["fsync_seconds"] += dt
        if self.metrics is not None:
            self.metrics.observe_fsync(dt)

    def _finish(self, rd: Ready, late: list[Message]) -> None:
        """Everything of a Ready that comes after its save (contract steps 2-4), in order."""
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.committed_entries:
            # Before the messages: the replies are queued first and so leave first (the
            # commit-index AppendEntries to followers can wait a few microseconds).
            self._apply(rd)
        for msg in late:
            self._send(msg)
        if rd.committed_entries:
            self.snapshots.maybe_take()
        for rs in rd.read_states:
            self._on_read_state(rs.request_id, rs.index)
        if self._reads_waiting_apply:
            self._serve_waiting_reads()

    async def on_disk(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` on the disk thread (one at a time, in order).  While any such job is
        outstanding, saves go there too, never beside it on the loop (inline_fsync)."""
        self._disk_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        finally:
            self._disk_jobs -= 1
