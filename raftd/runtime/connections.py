"""Incoming connections: admission (per-address limit, TLS), the frame loop, and what a peer
must show before its Raft messages reach the core: HELLO (cluster name and id, a removed id,
its certificate) and, over TLS, membership (thesis §4.1).  A client connection's requests go
to requests.py.  A part of RaftServer (mixed in), split from server.py by responsibility
(issue 17 §2).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace

from raftd.core import InstallSnapshot, LogCorruptionError
from raftd.core.messages import (AppendEntries, AppendEntriesResponse, Message, PreVote,
                                 RequestVote)
from raftd.tls import ROLE_NODE, Identity, handshake_error
from raftd.wire.codec import (ErrorCode, decode_hello, decode_message, decode_request,
                              encode_error)
from raftd.wire.framing import (FrameDecoder, FrameTooLarge, FrameType, RemoteProtocolError,
                                UnsupportedVersion)

from .clientconn import ClientConn
from .connguard import Watch
from .serverstate import ServerState
from .transport import PeerIdentityError

log = logging.getLogger("raftd")

# What a server outside our configuration may send us (see _from_member_or_allowed).
_NON_MEMBER_OK = (AppendEntries, InstallSnapshot, PreVote, RequestVote)
_MAX_HELLO_ADDRESSES = 16  # join mode: addresses announced in HELLO that we keep


@dataclass(slots=True)
class _Incoming:
    """One accepted connection: a client's, or a peer's once it said HELLO."""
    writer: asyncio.StreamWriter
    host: str
    decoder: FrameDecoder
    conn: ClientConn
    watch: Watch
    identity: Identity | None  # the TLS certificate's, None in plaintext
    peer_id: str | None = None  # set by HELLO
    snap_state: dict = field(default_factory=dict)  # an InstallSnapshot being received


class Connections(ServerState):
    """RaftServer's incoming connections (see the module docstring)."""

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        self._conns[writer] = None
        task = asyncio.current_task()
        assert task is not None  # asyncio.start_server runs each handler in a task
        self._conn_tasks[task] = None
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else "?"
        self._conns_per_host[host] = self._conns_per_host.get(host, 0) + 1
        inc: _Incoming | None = None
        try:
            inc = await self._admit(writer, host)
            if inc is not None:
                await self._read_frames(reader, inc)
        except PeerIdentityError as e:
            self.counters["peers_refused"] += 1
            self._log_refusal(host, str(e))
        except FrameTooLarge as e:
            self.counters["bad_frames"] += 1
            self.limit_rejections["frame_size"] += 1
            log.warning("closing connection from %s: %s", peer, e)
            writer.write(encode_error(ErrorCode.FRAME_TOO_LARGE, str(e)))
        except UnsupportedVersion as e:
            self.counters["bad_frames"] += 1
            log.warning("closing connection from %s: %s", peer, e)
            writer.write(encode_error(ErrorCode.VERSION_MISMATCH, str(e)))
        except RemoteProtocolError as e:
            self.counters["bad_frames"] += 1
            log.warning("closing connection from %s: %s", peer, e)
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns_per_host[host] -= 1
            if not self._conns_per_host[host]:
                del self._conns_per_host[host]
            if inc is not None:
                self.snapshots.abort_incoming(inc.snap_state)
                inc.conn.closed = True
                self.guard.untrack(inc.watch)
            self._conns.pop(writer, None)
            self._conn_tasks.pop(task, None)
            writer.close()

    async def _admit(self, writer: asyncio.StreamWriter, host: str) -> _Incoming | None:
        """The per-address limit, then the TLS handshake: None if the connection is refused."""
        cfg = self.cfg
        if self._conns_per_host[host] > cfg.max_connections_per_address:
            self.limit_rejections["connections_per_address"] += 1
            log.warning("refusing a connection from %s: %d open from that address "
                        "(max_connections_per_address)", host, self._conns_per_host[host] - 1)
            if self.tls is None:  # over TLS the client could not read this before a handshake
                writer.write(encode_error(ErrorCode.TOO_MANY_CONNECTIONS,
                                          f"more than {cfg.max_connections_per_address}"
                                          f" connections from {host}"))
            return None
        identity = None
        if self.tls is not None:
            # First thing on the connection, before any read: see raftd/tls.py.
            try:
                await writer.start_tls(self.tls.server_context, ssl_handshake_timeout=10)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                self.counters["tls_handshake_failures"] += 1
                log.warning("refused connection from %s: TLS handshake failed: %s",
                            host, handshake_error(e))
                return None
            identity = self.tls.identity(writer.get_extra_info("ssl_object"))
        conn = ClientConn(writer, identity, cfg.max_requests_per_second, cfg.max_unsent_bytes,
                          self._unsent_overflow, monotonic=self.sysclock.monotonic)
        watch = self.guard.track(host, writer.transport.abort, self.sysclock.monotonic())
        return _Incoming(writer, host, FrameDecoder(cfg.max_frame_size), conn, watch, identity)

    async def _read_frames(self, reader: asyncio.StreamReader, inc: _Incoming) -> None:
        writer = inc.writer
        while True:
            if writer.transport.get_write_buffer_size() > self.cfg.max_unsent_bytes // 4:
                await writer.drain()  # stop reading requests until the replies are read
            data = await reader.read(1 << 18)
            if not data:
                return
            frames = inc.decoder.feed(data)
            inc.watch.read(self.sysclock.monotonic(), inc.decoder.buffered > 0)
            for ftype, body in frames:
                if ftype == FrameType.CLIENT_REQUEST:
                    if inc.peer_id is not None:
                        raise RemoteProtocolError("client request on a peer connection")
                    req = decode_request(body)
                    if type(req.get("id")) is not int:
                        raise RemoteProtocolError("client request without an integer id")
                    self._handle_request(inc.conn, req)
                elif ftype == FrameType.HELLO:
                    inc.peer_id = self._on_hello(inc, body)
                    inc.watch.is_peer = True
                elif ftype < 32:
                    if not self._on_peer_message(inc, ftype, body):
                        return  # the node is stopping (fatal)
                else:
                    raise RemoteProtocolError(f"unexpected frame type {ftype}")

    def _on_hello(self, inc: _Incoming, body: bytes) -> str:
        """Who the peer says it is, checked (raises PeerIdentityError or RemoteProtocolError)."""
        peer_id, cluster = decode_hello(body)
        if inc.identity is not None:
            self._check_peer(inc.identity, peer_id)
        hello = decode_request(body)
        self._check_cluster_id(peer_id, hello.get("cluster_id"))
        self._check_not_removed(peer_id)
        announced = hello.get("address")
        if isinstance(announced, str) and len(announced) <= 256:
            self._note_hello_address(peer_id, announced)
        if cluster is not None and cluster != self.cfg.cluster:
            raise RemoteProtocolError(f"peer {peer_id} belongs to cluster {cluster!r}, "
                                      f"not {self.cfg.cluster!r}")
        return peer_id

    def _on_peer_message(self, inc: _Incoming, ftype: int, body: bytes) -> bool:
        """Hand one Raft message from a peer to the core; False if the node must stop."""
        if inc.peer_id is None:
            raise RemoteProtocolError("raft message before HELLO")
        msg = decode_message(ftype, body)
        if self.tls is not None and not self._from_member_or_allowed(msg):
            return True
        if isinstance(msg, InstallSnapshot):
            try:
                whole = self.snapshots.receive_chunk(inc.snap_state, msg)
            except (ValueError, OSError) as e:
                raise RemoteProtocolError(f"bad snapshot transfer: {e}") from None
            # A chunk (done=False) still tells the core the leader is alive, so a long
            # transfer does not fire the election timer (issue 14 §8).
            msg = whole if whole is not None else replace(msg, data=b"")
        if msg.dst != self.node_id or msg.src != inc.peer_id:
            log.warning("dropping %s for %s from %s on %s's link",
                        type(msg).__name__, msg.dst, msg.src, inc.peer_id)
            return True
        node = self.core
        now = self.sysclock.monotonic()
        self.peer_last_heard[msg.src] = now
        if isinstance(msg, AppendEntries) and msg.src == node.leader_id:
            self.last_leader_contact = now
        if (self.metrics is not None and isinstance(msg, AppendEntriesResponse)
                and msg.success):
            self._observe_append_rtt(msg)
        try:
            node.step(msg)
        except LogCorruptionError as e:
            self.fatal(str(e), e)
            return False
        if isinstance(msg, InstallSnapshot):
            self.snapshots.discard_unused(msg)
        self._wake.set()
        return True

    def _unsent_overflow(self, conn: ClientConn) -> None:
        self.limit_rejections["unsent_bytes"] += 1
        peer = conn.writer.get_extra_info("peername")
        log.warning("closing client connection from %s: over %d bytes of replies not read "
                    "(max_unsent_bytes)", peer[0] if peer else "?", conn.max_unsent)

    def _observe_append_rtt(self, msg: AppendEntriesResponse) -> None:
        sent = self._append_sent.get(msg.src)
        if sent and self.metrics is not None:
            t = sent.pop(msg.match_index, None)
            if t is not None:
                self.metrics.observe_append_rtt(msg.src, self.sysclock.perf() - t)
            for k in [k for k in sent if k < msg.match_index]:
                del sent[k]

    # ------------------------------------------------------------- peer checks --
    def _note_hello_address(self, peer_id: str, address: str) -> None:
        """Remember where a peer outside our configuration listens, the most recent few only;
        the link to one forgotten (and not a known server) is closed with it."""
        if self.core.config.address_of(peer_id) or peer_id in self.cfg.peers:
            return  # a server we know: its address comes from the cluster, not from HELLO
        self.hello_addresses.pop(peer_id, None)
        self.hello_addresses[peer_id] = address
        while len(self.hello_addresses) > _MAX_HELLO_ADDRESSES:
            gone = next(iter(self.hello_addresses))
            del self.hello_addresses[gone]
            link = self.peers.pop(gone, None)
            if link is not None:
                asyncio.get_running_loop().create_task(link.close())

    def _log_refusal(self, host: str, why: str) -> None:
        """A refused peer retries (backing off, transport.py): log each reason from each host
        once per 10 s, with how many were refused meanwhile, not once per attempt."""
        now = self.sysclock.monotonic()
        key = f"{host} {why}"
        last, quiet = self._refusals_logged.get(key, (float("-inf"), 0))
        if now - last < 10:
            self._refusals_logged[key] = (last, quiet + 1)
            return
        while len(self._refusals_logged) >= 64:  # bounded: a scan may bring many reasons
            del self._refusals_logged[next(iter(self._refusals_logged))]
        self._refusals_logged[key] = (now, 0)
        more = f" ({quiet} more since the last report)" if quiet else ""
        log.warning("refused peer connection from %s: %s%s", host, why, more)

    def _check_not_removed(self, peer_id: str) -> None:
        """A removed server's id is refused for good (issue 19 §2): with TLS this is how its
        certificate stops working.  Unless a configuration we hold names it: then the
        removal has not reached us the way it reached the server that recorded it."""
        if peer_id in self.removed.ids and peer_id not in self.core.config.members:
            self.counters["removed_refused"] += 1
            raise PeerIdentityError(f"{peer_id} was removed from this cluster")

    def _check_cluster_id(self, peer_id: str, theirs: object) -> None:
        """A peer of another cluster is refused (issue 14 §9); a server in join mode takes the
        id of the first peer that says hello, the leader adding it."""
        why = self.identity.refuses(theirs)
        if why is not None:
            self.counters["cluster_id_refused"] += 1
            raise PeerIdentityError(f"{peer_id}: {why}")
        if isinstance(theirs, str) and self.identity.adopt(theirs):
            self._event("cluster", f"joined cluster {theirs} (said by {peer_id})")

    def _check_peer(self, identity: Identity, peer_id: str) -> None:
        """Mutual TLS for peers: a node certificate of our CA, for the id the peer claims.
        Membership is checked on every message (_from_member_or_allowed), not here."""
        if identity.role != ROLE_NODE or not identity.cluster_ca:
            raise PeerIdentityError(f"certificate {identity.describe()} is not a node "
                                    f"certificate of this cluster's CA")
        if identity.name != peer_id:
            raise PeerIdentityError(f"certificate is for {identity.name!r} but the peer says "
                                    f"it is {peer_id!r}")

    def _from_member_or_allowed(self, msg: Message) -> bool:
        """Over TLS, a peer outside our configuration (the newest in our log, §6) may send what
        the thesis (§4.1) says a server must accept from servers it does not know, because its
        own log may be behind: AppendEntries and InstallSnapshot from a leader, and (pre-)vote
        requests from a candidate (pre-vote and vote withholding, §4.2.3, keep those from
        disrupting a live cluster).  Dropped: responses, TimeoutNow, and vote requests flagged
        as a leadership transfer (those bypass vote withholding; a real leader only hands
        leadership to a server in its configuration, which then knows us).  A node with no
        configuration yet (join: true) hears everyone: the leader adding it."""
        members = self.core.config.members
        if not members or msg.src in members or (isinstance(msg, _NON_MEMBER_OK)
                                                 and not getattr(msg, "transfer", False)):
            return True
        self.counters["peer_messages_dropped"] += 1
        if self._dropped_logged.get(msg.src, 0) < self.sysclock.monotonic() - 10:  # once per 10 s
            self._dropped_logged[msg.src] = self.sysclock.monotonic()
            log.warning("dropping %s from %s: not a member of the configuration (%s)",
                        type(msg).__name__, msg.src, ", ".join(sorted(members)))
        return False
