"""Snapshots in the runtime (Raft §7, thesis ch. 5): take, compact, send, receive, install.

- Taking one: the state machine is frozen on the event loop (O(1): its writes go to an overlay
  until the file is written), then written by a dedicated thread while the node keeps serving.  Once
  durable,
  the core is told (snapshot_taken) and the log is compacted up to ``snapshot_trailing``
  entries below it, but never past the oldest kept snapshot, so start-up can fall back to it
  when the newest is damaged (issue 21 §8), in the core and, through the disk thread, in the WAL.
- Sending one: the core emits an InstallSnapshot header; we stream the file to the follower on
  a connection of its own, in 1 MiB chunks, awaiting the socket between chunks (bounded memory).
  A failed transfer is reported to the core only after a back-off (doubling from a heartbeat
  interval up to an election timeout), so a dead follower costs a few attempts a second, not
  thousands; the warning is rate-limited.
- Receiving one: chunks go to a temp file; a complete, verified file is stepped into the core,
  whose Ready.snapshot makes us install it.  Install has one durable commit point, the rename of
  the fsynced file into snapshots/ followed by an fsync of that directory.  A crash before it
  leaves the old snapshots and the old WAL; a crash after it leaves the new snapshot next to a
  WAL that may still hold the old log, which start-up reconciles (``reconcile``) exactly as the
  install would have: the WAL is kept if its entry at the snapshot index has the snapshot's
  term (Figure 13 step 6), else it is reset to start after the snapshot (step 7).

Fault injection for tests: ``fault`` is called with each install step's name (INSTALL_STEPS);
``RAFTD_FAULT_INSTALL=<step>`` makes a real raftd kill -9 itself there.  The mutants that
show the tests catch the old bugs patch this module at run time
(tests/runtime/test_snapshot_install_mutants.py); nothing here switches on them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from raftd.core import Configuration, InstallSnapshot, SnapshotMeta
from raftd.storage.snapshots import (CorruptSnapshotError, IncomingSnapshot, SnapshotInfo,
                                     SnapshotStore, iter_chunks, read_state)
from raftd.storage.install import fit_wal, reconcile
from raftd.wire.codec import encode_hello, encode_message
from .removed import remember
from .transport import open_peer_connection

log = logging.getLogger("raftd.snapshot")

INSTALL_STEPS = ("received", "adopted", "restored", "wal", "pruned")
FAULT_ENV = "RAFTD_FAULT_INSTALL"
_WARN_EVERY_S = 10.0  # at most one warning per peer this often while its transfers keep failing


def _kill_at(step: str | None) -> Callable[[str], None] | None:
    if not step:
        return None
    if step not in INSTALL_STEPS:
        raise ValueError(f"{FAULT_ENV}={step!r}: expected one of {', '.join(INSTALL_STEPS)}")

    def fault(at: str) -> None:
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return fault


class Snapshotter:
    def __init__(self, server):
        self.server = server
        cfg = server.cfg
        self.store = SnapshotStore(os.path.join(cfg.data_dir, "snapshots"), cfg.snapshot_keep,
                                   cfg.fsync)
        self._pool = server.new_executor("raftd-snapshot")
        self.in_progress: asyncio.Task | None = None
        self.last: dict | None = None  # the last snapshot this node took
        self.count = 0
        self.bytes_since = 0  # entry bytes applied since the last snapshot
        self._sending: dict[str, asyncio.Task] = {}
        self.received: dict[tuple[int, int], Path] = {}
        self.transfers = {"sent": 0, "received": 0, "failed": 0}
        self._failures: dict[str, int] = {}  # peer -> consecutive failed transfers
        self._retry: dict[str, asyncio.TimerHandle] = {}  # peer -> delayed failure report
        self._warned: dict[str, tuple[float, int]] = {}  # peer -> (last warning, suppressed)
        self.fault: Callable[[str], None] | None = (server.install_fault
                                                    or _kill_at(os.environ.get(FAULT_ENV)))

    # ------------------------------------------------------------------- startup --
    def recover(self):
        """Newest valid snapshot, restored into the state machine (None if there is none)."""
        removed = self.store.cleanup()
        if removed:
            log.info("removed leftover temp files: %s", ", ".join(removed))
        info = self.store.latest_valid()
        if info is not None:
            _, header, batches = read_state(info.path)
            self.server.fsm.restore_stream(header, batches)
            remember(self.server.cfg.data_dir, info.removed_ids - info.meta.configuration.members)
            log.info("restored snapshot index=%d term=%d (%d keys)", info.meta.index,
                     info.meta.term, len(self.server.fsm))
        return info

    def reconcile(self, info: SnapshotInfo | None) -> None:
        """Start-up half of the install's commit point (raftd.storage.install.reconcile)."""
        done = reconcile(self.server.storage, info, self.store.oldest_kept_index())
        if done is not None:
            log.warning("%s", done)

    def close(self) -> None:
        for h in self._retry.values():
            h.cancel()
        for t in self._sending.values():
            t.cancel()
        self._pool.shutdown(wait=True)

    # -------------------------------------------------------------------- taking --
    def maybe_take(self) -> None:
        cfg = self.server.cfg
        node = self.server.node
        base = node.snapshot.index if node.snapshot else 0
        if self.in_progress is None and (
                node.last_applied - base >= cfg.snapshot_entries
                or self.bytes_since >= cfg.snapshot_bytes):
            self.take()

    def take(self) -> asyncio.Task:
        if self.in_progress is not None:
            return self.in_progress
        self.in_progress = asyncio.get_running_loop().create_task(self._take())
        self.in_progress.add_done_callback(self._taken)
        return self.in_progress

    def _taken(self, task: asyncio.Task) -> None:
        self.in_progress = None
        if not task.cancelled() and task.exception() is not None:
            log.error("snapshot failed: %r", task.exception())

    async def _take(self) -> dict:
        srv = self.server
        node = srv.node
        t0 = self.server.sysclock.perf()
        index = srv.fsm.applied_index
        if node.snapshot is not None and index <= node.snapshot.index:
            return {**(self.last or {}), "index": node.snapshot.index, "unchanged": True}
        meta = SnapshotMeta(index, node.log.term_at(index), node.configuration_at(index))
        header, data = srv.fsm.freeze()  # O(1): writes go to an overlay meanwhile
        stall = self.server.sysclock.perf() - t0
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self._pool, self.store.write, meta, header, data,
                                              srv.removed.ids)  # applied as far as the fsm
        finally:
            srv.fsm.thaw()
        node.snapshot_taken(meta)
        self.bytes_since = 0
        compact_to = min(meta.index, node.last_applied) - srv.cfg.snapshot_trailing
        oldest = self.store.oldest_kept_index()
        if oldest is not None:
            compact_to = min(compact_to, oldest)  # the older snapshots stay usable (§8)
        if compact_to > node.log.snapshot_index:
            term = node.log.term_at(compact_to)
            node.compact(compact_to)
            # Through the disk thread, so it is ordered with every WAL write.
            await srv.on_disk(srv.storage.compact, compact_to, term)
        elapsed = self.server.sysclock.perf() - t0
        self.count += 1
        self.last = {"index": meta.index, "term": meta.term, "size": info.size,
                     "keys": info.keys, "duration_ms": round(elapsed * 1000, 1),
                     "stall_ms": round(stall * 1000, 2), "path": str(info.path),
                     "first_log_index": node.log.first_index}
        srv._event("snapshot", f"snapshot at index {meta.index} ({info.size} bytes, "
                               f"{elapsed * 1000:.0f} ms; log now starts at "
                               f"{node.log.first_index})")
        log.info("snapshot index=%d size=%d in %.0f ms (stall %.1f ms)", meta.index, info.size,
                 elapsed * 1000, stall * 1000)
        return self.last

    # ------------------------------------------------------------------- sending --
    def send(self, msg: InstallSnapshot, address: str | None) -> None:
        if address is None or msg.dst in self._sending or msg.dst in self._retry:
            return  # a failure waiting out its back-off is reported later; the core retries then
        task = asyncio.get_running_loop().create_task(self._send(msg, address))
        self._sending[msg.dst] = task
        peer = msg.dst
        task.add_done_callback(lambda t: self._sent(peer, t))

    def _sent(self, peer: str, task: asyncio.Task) -> None:
        self._sending.pop(peer, None)
        if not task.cancelled() and task.exception() is None:
            self.transfers["sent"] += 1
            failed = self._failures.pop(peer, 0)
            if self._warned.pop(peer, None) is not None:
                log.info("snapshot transfer to %s succeeded after %d failures", peer, failed)
            self._report(peer, True)
            return
        self.transfers["failed"] += 1
        n = self._failures[peer] = self._failures.get(peer, 0) + 1
        cfg = self.server.cfg
        # Doubling from a heartbeat interval, capped at an election timeout: by then the
        # follower may be back, and it would have started an election anyway.
        delay = min(cfg.heartbeat_interval_ms * 2 ** min(n - 1, 16),
                    cfg.election_timeout_ms) / 1000
        self._warn(peer, n, delay, None if task.cancelled() else task.exception())
        self._retry[peer] = asyncio.get_running_loop().call_later(
            delay, self._report, peer, False)

    def _warn(self, peer: str, n: int, delay: float, exc: BaseException | None) -> None:
        """One line per failing peer per _WARN_EVERY_S, saying how many were not logged."""
        now = self.server.sysclock.monotonic()
        last, suppressed = self._warned.get(peer, (None, 0))
        if last is not None and now - last < _WARN_EVERY_S:
            self._warned[peer] = (last, suppressed + 1)
            return
        self._warned[peer] = (now, 0)
        more = f" ({suppressed} more failures not logged)" if suppressed else ""
        log.warning("snapshot transfer to %s failed (%d in a row): %r; retrying in %.2f s%s",
                    peer, n, exc, delay, more)

    def _report(self, peer: str, ok: bool) -> None:
        self._retry.pop(peer, None)
        self.server.node.report_snapshot(peer, ok)
        self.server.wake()

    async def _send(self, msg: InstallSnapshot, address: str) -> None:
        srv = self.server
        # The file is named by index and term only; the message carries the configuration
        # encoded, so an empty one stands in for it here.
        path = self.store.path_for(SnapshotMeta(msg.last_included_index, msg.last_included_term,
                                                Configuration(frozenset())))
        _, writer = await open_peer_connection(srv.tls, address, srv.cfg.host, msg.dst, 5.0)
        try:
            writer.write(encode_hello(srv.node_id, srv.cfg.cluster, srv.cfg.listen,
                                      srv.identity.cluster_id))
            srv._event("snapshot", f"sending snapshot {msg.last_included_index} to {msg.dst}")
            for offset, data in iter_chunks(path):
                writer.write(encode_message(InstallSnapshot(
                    msg.src, msg.dst, msg.term, msg.last_included_index, msg.last_included_term,
                    msg.configuration, offset, data, False)))
                await writer.drain()  # bounded memory: one chunk in flight at a time
            writer.write(encode_message(InstallSnapshot(
                msg.src, msg.dst, msg.term, msg.last_included_index, msg.last_included_term,
                msg.configuration, 0, b"", True)))
            await writer.drain()
        finally:
            writer.close()

    # ----------------------------------------------------------------- receiving --
    def receive_chunk(self, state: dict, msg: InstallSnapshot) -> InstallSnapshot | None:
        """Handle one chunk on a peer connection (``state`` is per connection).  Returns the
        message to step into the core once the file is complete and verified."""
        inc: IncomingSnapshot | None = state.get("incoming")
        if not msg.done:
            if msg.offset == 0:
                if inc is not None:
                    inc.abort()
                inc = state["incoming"] = IncomingSnapshot(
                    self.store, msg.last_included_index, msg.last_included_term, msg.src)
            if inc is None:
                raise ValueError("snapshot chunk without a start")
            inc.write(msg.offset, msg.data)
            return None
        if inc is None:
            # Nothing transferred: the core can answer only a snapshot it already covers.  Any
            # other would make it install a file that does not exist (issue 19 §4).
            if msg.last_included_index > self.server.node.commit_index:
                raise ValueError("snapshot end without its chunks")
            return msg
        state["incoming"] = None
        try:
            path = inc.finish()
        except (CorruptSnapshotError, OSError, ValueError):
            inc.abort()
            raise
        self.received[(msg.last_included_index, msg.last_included_term)] = path
        self.transfers["received"] += 1
        return msg

    def discard_unused(self, msg: InstallSnapshot) -> None:
        """The core did not want a snapshot we received (it already had that much)."""
        pending = self.server.node.pending_snapshot
        key = (msg.last_included_index, msg.last_included_term)
        if key in self.received and (pending is None or (pending.index, pending.term) != key):
            self.received.pop(key).unlink(missing_ok=True)

    def abort_incoming(self, state: dict) -> None:
        inc = state.get("incoming")
        if inc is not None:
            inc.abort()  # a broken transfer leaves no temp file behind
            state["incoming"] = None

    # ---------------------------------------------------------------- installing --
    async def install(self, meta: SnapshotMeta) -> None:
        """Ready.snapshot (contract step 0): commit the received file as the newest snapshot,
        restore the state machine from it, make the WAL start after it, prune older files.
        Every step after the commit point is redone by ``reconcile`` if a crash cuts it."""
        srv = self.server
        path = self.received.pop((meta.index, meta.term), None)
        if path is None:
            raise RuntimeError(f"asked to install snapshot {meta.index} that was not received")
        loop = asyncio.get_running_loop()
        self._at("received")
        info = await loop.run_in_executor(self._pool, self.store.adopt, path, meta)
        self._at("adopted")  # the commit point is behind us
        for nid in sorted(srv.removed.installed(info.removed_ids, meta.configuration)):
            srv._event("membership", f"{nid} removed (learned from a snapshot): its id is "
                                     f"refused from now on")
        _, header, batches = read_state(info.path)
        await loop.run_in_executor(self._pool, srv.fsm.restore_stream, header, batches)
        self._at("restored")
        kept = await srv.on_disk(fit_wal, srv.storage, meta, self.store.oldest_kept_index())
        self._at("wal")
        # Only now: an older snapshot may be the WAL's base until the line above.
        await loop.run_in_executor(self._pool, self.store.prune)
        self._at("pruned")
        self.bytes_since = 0
        srv._event("snapshot", f"installed snapshot {meta.index} from the leader "
                               f"({info.size} bytes, log {'kept' if kept else 'reset'})")

    def _at(self, step: str) -> None:
        if self.fault is not None:
            self.fault(step)
