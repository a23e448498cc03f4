"""Outgoing peer links: one long-lived TCP connection per peer, bounded queue, reconnect.

Each node sends its Raft messages to a peer over its own outgoing connection and receives that
peer's messages over the peer's outgoing connection, so links are independent: a slow or dead
peer fills only its own bounded buffer (messages beyond the limit are dropped and counted; Raft
retransmits what matters) and never blocks the node or its other peers.

Outgoing connections are bound to the node's own listen address, so a firewall rule on source
and destination addresses can cut one node off from another even when all run on one machine.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftd.core import Message
from raftd.tls import ROLE_NODE, NodeTLS
from raftd.wire.codec import encode_hello, encode_message

log = logging.getLogger("raftd.transport")

_MAX_WAITING_BYTES = 4 << 20  # held for a connection being made (PeerLink.send)
_MAX_BACKOFF = 1.0  # seconds between attempts to reach a peer that is down
# A connection the peer closes this soon after our HELLO was refused (we were removed, we are of
# another cluster, our certificate is wrong: the peer's log says which).  Such a link backs off
# further and logs rarely: retrying at once changes nothing and floods both logs.
_REFUSED_WITHIN = 1.0
_REFUSED_AFTER = 3  # such closes in a row; fewer may be a peer that was restarting
_MAX_REFUSED_BACKOFF = 5.0


class PeerIdentityError(ConnectionError):
    """The node at an address presented a certificate for another node (or no node at all)."""


async def open_peer_connection(tls: NodeTLS | None, address: str, bind_host: str | None,
                               expect_id: str | None, timeout: float):
    """Connect to a peer's listen address, over mutual TLS when the node has TLS: we present
    our node certificate and check that the other end is node ``expect_id`` of our CA."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        host.strip("[]"), int(port), local_addr=(bind_host, 0) if bind_host else None,
        ssl=tls.client_context if tls else None), timeout)
    if tls is not None:
        who = tls.identity(writer.get_extra_info("ssl_object"))
        if not who.cluster_ca or who.role != ROLE_NODE or (expect_id and who.name != expect_id):
            writer.close()
            raise PeerIdentityError(f"{address} presented certificate {who.describe()}, "
                                    f"expected node {expect_id or '(any)'} of this cluster's CA")
    return reader, writer


class PeerLink:
    def __init__(self, node_id: str, peer_id: str, address: str, bind_host: str,
                 cluster: str, queue_limit: int = 4096, own_address: str | None = None,
                 max_buffer: int = 16 << 20, tls: NodeTLS | None = None,
                 cluster_id: Callable[[], str | None] = lambda: None):
        self.node_id = node_id
        self._cluster_id = cluster_id  # read at each connect: a joining server adopts one
        self.peer_id = peer_id
        self.address = address
        self._bind_host = bind_host
        self._cluster = cluster
        self._own_address = own_address
        self._limit = queue_limit  # frames waiting for this loop pass's write
        self._max_buffer = max_buffer  # bytes the kernel has not taken yet
        self._writer: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []
        self._waiting: list[bytes] = []  # sent while the connection is being made
        self._waiting_bytes = 0
        # True while a connection attempt is in flight (and before the first): only then do
        # messages wait.  During the back-off after a failed attempt they are dropped: held
        # there, they reached a restarted peer up to a second late, after the leader had moved
        # on (the snapshot-install flake of issue 14).
        self._connecting = True
        self._task: asyncio.Task | None = None
        self.connected = False
        self.dropped = 0
        self.sent = 0
        self.reconnects = 0
        self.refusals = 0  # connections in a row closed by the peer right after HELLO
        self._closing = False
        self._tls = tls

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name=f"peer-{self.peer_id}")

    def send(self, msg: Message) -> None:
        """Encode now, write at the end of this loop pass together with everything else sent
        to this peer meanwhile (one syscall), with no task switch on the way.  While the link
        is being (re)connected, messages wait for that attempt (bounded); while it is down, or
        the peer does not read fast enough, they are dropped and counted: bounded memory, and
        Raft resends what matters."""
        w = self._writer
        if w is None and not self._connecting:
            self.dropped += 1  # down, waiting out the back-off: Raft resends what matters
            return
        if w is None:
            # Connecting: hold what is sent meanwhile (bounded) for the connection being made,
            # so the first messages to a peer (a one-shot transfer election's RequestVote,
            # say) are not lost to the connection set-up.  Dropped if that attempt fails.
            frame = encode_message(msg)
            if len(self._waiting) < self._limit and \
                    self._waiting_bytes + len(frame) <= _MAX_WAITING_BYTES:
                self._waiting.append(frame)
                self._waiting_bytes += len(frame)
            else:
                self.dropped += 1
            return
        if len(self._out) >= self._limit or w.transport.is_closing() or \
                w.transport.get_write_buffer_size() > self._max_buffer:
            self.dropped += 1  # full, or reset by the peer before our task noticed
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(encode_message(msg))

    def flush_now(self) -> None:
        """Hand what is queued to the kernel now (the loop is about to block on the disk)."""
        if self._out:
            self._flush()

    def _flush(self) -> None:
        out, self._out = self._out, []
        w = self._writer
        if w is None or not out:
            return
        # A reset (the peer was killed) closes the transport at once, before our _run task
        # wakes to clear _writer; uvloop raises on writes to a closed transport, and this runs
        # inside the Raft drive loop (flush_now), so a dead peer must never raise here.
        if w.transport.is_closing():
            self.dropped += len(out)
            return
        try:
            w.write(b"".join(out))
        except (OSError, RuntimeError) as e:
            self.dropped += len(out)
            log.debug("link to %s: write failed: %s", self.peer_id, e)
            return
        self.sent += len(out)

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
        loop = asyncio.get_running_loop()
        while not self._closing:
            writer = None
            up_since: float | None = None
            self._connecting = True
            try:
                # Source address = our own listen host (see module docstring).
                reader, writer = await open_peer_connection(
                    self._tls, self.address, self._bind_host, self.peer_id, 2.0)
                writer.write(encode_hello(self.node_id, self._cluster, self._own_address,
                                          self._cluster_id()))
                if self._waiting:
                    self.sent += len(self._waiting)
                    writer.write(b"".join(self._waiting))
                    self._waiting, self._waiting_bytes = [], 0
                self._writer = writer
                self._connecting = False
                self.connected = True
                up_since = loop.time()
                if self.reconnects and self.refusals < _REFUSED_AFTER:
                    log.info("link to %s (%s) is up", self.peer_id, self.address)
                # The peer never writes on this connection; EOF means it went away.
                await reader.read(1)
            except asyncio.CancelledError:
                raise
            except PeerIdentityError as e:
                if self.reconnects % 50 == 0:  # loud, but not on every retry
                    log.warning("link to %s refused: %s", self.peer_id, e)
            except (OSError, asyncio.TimeoutError, ConnectionError, RuntimeError) as e:
                # (RuntimeError: uvloop's write on a transport the peer already reset; the
                # link must retry, never end: it is the only way to that peer.)
                if self.connected or self.reconnects == 0:
                    log.debug("link to %s (%s) down: %s", self.peer_id, self.address, e)
            finally:
                self.connected = self._connecting = False
                self._writer = None
                self.dropped += len(self._out) + len(self._waiting)
                self._out = []
                self._waiting, self._waiting_bytes = [], 0
                if writer is not None:
                    writer.close()
            self.reconnects += 1
            if up_since is not None:
                backoff = self._after_connection(backoff, loop.time() - up_since)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_REFUSED_BACKOFF if self.refusals >= _REFUSED_AFTER
                          else _MAX_BACKOFF)

    def _after_connection(self, backoff: float, lived: float) -> float:
        """The wait before reconnecting after a connection that lived ``lived`` seconds: 20 ms
        after one that lived; after one the peer closed right after our HELLO (a refusal), the
        wait goes on growing (up to _MAX_REFUSED_BACKOFF) and this is logged rarely."""
        if lived >= _REFUSED_WITHIN:
            self.refusals = 0
            return 0.02
        self.refusals += 1
        if self.refusals < _REFUSED_AFTER:
            return 0.02
        if self.refusals == _REFUSED_AFTER or self.refusals % 100 == 0:
            log.warning("link to %s (%s) closed by the peer right after HELLO (%d times in a "
                        "row): it refuses this server; its log says why", self.peer_id,
                        self.address, self.refusals)
        return backoff
