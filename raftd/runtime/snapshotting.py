"""Snapshots in the runtime (Raft §7, thesis ch. 5): take, compact, send, receive, install.

- Taking one: the state machine is frozen on the event loop (O(1): its writes go to an overlay
  until the file is written), then written by a dedicated thread while the node keeps serving.  Once durable,
  the core is told (snapshot_taken) and the log is compacted up to ``snapshot_trailing``
  entries below it, in the core and, through the disk thread, in the WAL.
- Sending one: the core emits an InstallSnapshot header; we stream the file to the follower on
  a connection of its own, in 1 MiB chunks, awaiting the socket between chunks (bounded memory).
- Receiving one: chunks go to a temp file; a complete, verified file is stepped into the core,
  whose Ready.snapshot makes us adopt the file, restore the state machine and reset the WAL.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raftd.core import InstallSnapshot, SnapshotMeta
from raftd.storage.snapshots import (CorruptSnapshotError, IncomingSnapshot, SnapshotStore,
                                     iter_chunks, read_state)
from raftd.wire.codec import encode_hello, encode_message
from .transport import open_peer_connection

log = logging.getLogger("raftd.snapshot")


class Snapshotter:
    def __init__(self, server):
        self.server = server
        cfg = server.cfg
        self.store = SnapshotStore(os.path.join(cfg.data_dir, "snapshots"), cfg.snapshot_keep,
                                   cfg.fsync)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftd-snapshot")
        self.in_progress: asyncio.Task | None = None
        self.last: dict | None = None  # the last snapshot this node took
        self.count = 0
        self.bytes_since = 0  # entry bytes applied since the last snapshot
        self._sending: dict[str, asyncio.Task] = {}
        self.received: dict[tuple[int, int], Path] = {}
        self.transfers = {"sent": 0, "received": 0, "failed": 0}

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
            log.info("restored snapshot index=%d term=%d (%d keys)", info.meta.index,
                     info.meta.term, len(self.server.fsm))
        return info

    def close(self) -> None:
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
        t0 = time.perf_counter()
        index = srv.fsm.applied_index
        if node.snapshot is not None and index <= node.snapshot.index:
            return {**(self.last or {}), "index": node.snapshot.index, "unchanged": True}
        meta = SnapshotMeta(index, node.log.term_at(index), node.configuration_at(index))
        header, data = srv.fsm.freeze()  # O(1): writes go to an overlay meanwhile
        stall = time.perf_counter() - t0
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self._pool, self.store.write, meta, header, data)
        finally:
            srv.fsm.thaw()
        node.snapshot_taken(meta)
        self.bytes_since = 0
        compact_to = min(meta.index, node.last_applied) - srv.cfg.snapshot_trailing
        if compact_to > node.log.snapshot_index:
            term = node.log.term_at(compact_to)
            node.compact(compact_to)
            # Through the disk thread, so it is ordered with every WAL write.
            await srv.on_disk(srv.storage.compact, compact_to, term)
        elapsed = time.perf_counter() - t0
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
        if address is None or msg.dst in self._sending:
            return
        task = asyncio.get_running_loop().create_task(self._send(msg, address))
        self._sending[msg.dst] = task
        task.add_done_callback(lambda t, peer=msg.dst: self._sent(peer, t))

    def _sent(self, peer: str, task: asyncio.Task) -> None:
        self._sending.pop(peer, None)
        ok = not task.cancelled() and task.exception() is None
        if not ok:
            self.transfers["failed"] += 1
            log.warning("snapshot transfer to %s failed: %r", peer,
                        None if task.cancelled() else task.exception())
        else:
            self.transfers["sent"] += 1
        self.server.node.report_snapshot(peer, ok)
        self.server.wake()

    async def _send(self, msg: InstallSnapshot, address: str) -> None:
        srv = self.server
        path = self.store.path_for(SnapshotMeta(msg.last_included_index, msg.last_included_term,
                                                None))
        _, writer = await open_peer_connection(srv.tls, address, srv.cfg.host, msg.dst, 5.0)
        try:
            writer.write(encode_hello(srv.node_id, srv.cfg.cluster, srv.cfg.listen))
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
            return msg  # nothing transferred: the core answers from its state
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
        pending = self.server.node._snapshot_to_install
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
        """Ready.snapshot (contract step 0): adopt the received file, restore the state
        machine, and make the WAL start after it."""
        srv = self.server
        path = self.received.pop((meta.index, meta.term), None)
        if path is None:
            raise RuntimeError(f"asked to install snapshot {meta.index} that was not received")
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(self._pool, self.store.adopt, path, meta)
        _, header, batches = read_state(info.path)
        await loop.run_in_executor(self._pool, srv.fsm.restore_stream, header, batches)
        node = srv.node
        if node.log.last_index > meta.index:
            await srv.on_disk(srv.storage.compact, meta.index, meta.term)
        else:
            await srv.on_disk(srv.storage.reset, meta.index, meta.term)
        self.bytes_since = 0
        srv._event("snapshot", f"installed snapshot {meta.index} from the leader "
                               f"({info.size} bytes)")
