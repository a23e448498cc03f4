"""Outgoing peer links: one long-lived TCP connection per peer, bounded queue, reconnect.

Each node sends its Raft messages to a peer over its own outgoing connection and receives that
peer's messages over the peer's outgoing connection, so links are independent: a slow or dead
peer fills only its own bounded queue (messages beyond the limit are dropped and counted; Raft
retransmits what matters) and never blocks the node or its other peers.

Outgoing connections are bound to the node's own listen address, so a firewall rule on source
and destination addresses can cut one node off from another even when all run on one machine.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from raftd.core import Message
from raftd.wire.codec import encode_hello, encode_message

log = logging.getLogger("raftd.transport")


class PeerLink:
    def __init__(self, node_id: str, peer_id: str, address: str, bind_host: str,
                 cluster: str, queue_limit: int = 4096, own_address: str | None = None):
        self.node_id = node_id
        self.peer_id = peer_id
        self.address = address
        self._bind_host = bind_host
        self._cluster = cluster
        self._own_address = own_address
        self._queue: deque[Message] = deque()
        self._limit = queue_limit
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.connected = False
        self.dropped = 0
        self.sent = 0
        self.reconnects = 0
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name=f"peer-{self.peer_id}")

    def send(self, msg: Message) -> None:
        if len(self._queue) >= self._limit:
            self.dropped += 1  # bounded: drop rather than grow; Raft will resend
            return
        self._queue.append(msg)
        self._wake.set()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    async def _run(self) -> None:
        backoff = 0.02
        host, _, port = self.address.rpartition(":")
        while not self._closing:
            writer = None
            try:
                # Source address = our own listen host (see module docstring).
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    host.strip("[]"), int(port), local_addr=(self._bind_host, 0)), 2.0)
                writer.write(encode_hello(self.node_id, self._cluster, self._own_address))
                self.connected = True
                if self.reconnects:
                    log.info("link to %s (%s) is up", self.peer_id, self.address)
                backoff = 0.02
                drain_reader = asyncio.get_running_loop().create_task(self._watch(reader))
                try:
                    await self._pump(writer, drain_reader)
                finally:
                    drain_reader.cancel()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                if self.connected or self.reconnects == 0:
                    log.debug("link to %s (%s) down: %s", self.peer_id, self.address, e)
            finally:
                self.connected = False
                if writer is not None:
                    writer.close()
            self.reconnects += 1
            # Messages queued while the link is down are stale by the time it is back.
            self.dropped += len(self._queue)
            self._queue.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        # The peer never writes on this connection; EOF means it went away.
        await reader.read(1)
        raise ConnectionResetError("peer closed the connection")

    async def _pump(self, writer: asyncio.StreamWriter, watcher: asyncio.Task) -> None:
        q = self._queue
        while True:
            if not q:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    waiter.cancel()
                    watcher.result()  # raises ConnectionResetError
                continue
            # Batch everything queued into one write (one syscall for many frames).
            frames = []
            while q and len(frames) < 1024:
                frames.append(encode_message(q.popleft()))
            self.sent += len(frames)
            writer.write(b"".join(frames))
            await writer.drain()
