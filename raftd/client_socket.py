"""raftd.client_socket: a blocking client on plain sockets, one request at a time.

For short-lived callers such as `raftctl kv`: no event loop and no thread, so neither asyncio
nor ssl is imported (together about 40 ms of every `raftctl kv get`, issue 16 §6).  It finds
the leader, retries, gives up on refused connections, uses sessions for writes (thesis §6.3)
and words its errors exactly as ``raftd.client.AsyncClient`` does: both follow
``raftd.client_routing``.  Plaintext only: a caller with TLS settings uses raftd.client.

    from raftd.client_socket import SocketClient
    with SocketClient(["127.0.0.1:7001"], timeout=5) as c:
        c.put("config/flag", b"on"); c.get("config/flag")
"""
from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .client_errors import (RequestError, Unavailable, as_bytes, bad_magic_error,
                            closed_unanswered)
from .client_routing import CLUSTER_ID_ENV, LeaderRouting, Retry, Session
from .wire.codec import decode_body, encode_client_request
from .wire.framing import BadMagic, FrameDecoder, FrameType, RemoteProtocolError

# The variable that turns TLS on for the client library (raftd.tls.ENV["ca"]; a test checks
# they agree): this client is for plaintext clusters only.
TLS_CA_ENV = "RAFTCTL_CACERT"


def tls_configured(environ: Any = os.environ) -> bool:
    """Whether the environment asks the client library for TLS (then use raftd.client)."""
    return bool(environ.get(TLS_CA_ENV))


class _Link:
    """One TCP connection to one node, carrying one request at a time."""

    def __init__(self, address: str, max_frame_size: int):
        self.address = address
        self.closed = False
        self._answered = False  # has this node answered anything on this connection?
        self._decoder = FrameDecoder(max_frame_size)
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None

    def connect(self, timeout: float) -> None:
        host, _, port = self.address.rpartition(":")
        family, type_, proto, _, addr = socket.getaddrinfo(host.strip("[]"), int(port),
                                                           type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(addr)
            # Nobody listening on a local port in the ephemeral range: the kernel may connect
            # the socket to itself (TCP simultaneous open).  That is "refused", not a server.
            if sock.getsockname() == sock.getpeername():
                raise ConnectionRefusedError(f"connection to {self.address} refused")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def call(self, request: dict, timeout: float) -> dict:
        """Send one request and wait for its answer: TimeoutError after ``timeout`` seconds
        (the connection stays open; a late answer is skipped by its id), or the connection's
        error (it is then closed)."""
        if self._sock is None or self.closed:
            raise ConnectionResetError(f"connection to {self.address} is closed")
        rid = request["id"] = next(self._ids)
        deadline = time.monotonic() + timeout
        try:
            self._sock.sendall(encode_client_request(request))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.address} did not answer in time")
                self._sock.settimeout(left)
                data = self._sock.recv(1 << 16)
                if not data:
                    raise self._close(ConnectionResetError(
                        f"connection to {self.address} closed"))
                for ftype, body in self._decoder.feed(data):
                    msg = decode_body(body)
                    if ftype == FrameType.ERROR:
                        raise self._close(RequestError(str(msg.get("code")),
                                                       str(msg.get("message"))))
                    if ftype != FrameType.CLIENT_RESPONSE:
                        continue
                    self._answered = True
                    if msg.get("id") == rid:
                        return msg
        except TimeoutError:
            raise
        except BadMagic as e:
            raise self._close(bad_magic_error(self.address, e.magic)) from None
        except (OSError, RemoteProtocolError) as e:
            if self.closed:
                raise
            raise self._close(ConnectionResetError(
                f"connection to {self.address} failed: {e}")) from None

    def _close(self, reason: Exception) -> Exception:
        """Close the connection; the error the pending request fails with (with a TLS hint
        when the node never answered anything: see closed_unanswered)."""
        self.close()
        return reason if self._answered else closed_unanswered(reason, False, True)

    def close(self) -> None:
        self.closed = True
        if self._sock is not None:
            self._sock.close()


class SocketClient(LeaderRouting):
    """put/get/delete/cas/list as ``raftd.client.Client`` has them, without its event loop."""

    def __init__(self, endpoints: Sequence[str] | str, timeout: float = 5.0,
                 max_frame_size: int = 16 << 20, refused_grace: float | None = None,
                 cluster_id: str | None = None):
        super().__init__(endpoints, timeout, refused_grace)
        self._max = max_frame_size
        self._links: dict[str, _Link] = {}
        self.cluster_id = cluster_id or os.environ.get(CLUSTER_ID_ENV) or None

    def __enter__(self) -> "SocketClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()

    # ------------------------------------------------------------------ public API --
    def put(self, key: str, value: bytes | str) -> int:
        return self.request("put", {"key": key, "value": as_bytes(value)}, write=True)["index"]

    def get(self, key: str, linearizable: bool = True) -> bytes | None:
        return self.request("get", {"key": key, "linearizable": linearizable})["value"]

    def delete(self, key: str) -> bool:
        return self.request("delete", {"key": key}, write=True)["deleted"]

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self.request("cas", {"key": key, "expected": as_bytes(expected),
                                    "value": as_bytes(new)}, write=True)["swapped"]

    def list(self, prefix: str = "", linearizable: bool = True,
             page_size: int = 1000) -> dict[str, bytes]:
        """Keys starting with ``prefix`` and their values, a page at a time (as AsyncClient)."""
        items: dict[str, bytes] = {}
        start_after = None
        while True:
            r = self.request("list", {"prefix": prefix, "linearizable": linearizable,
                                      "limit": page_size, "start_after": start_after})
            items.update(r["items"])
            if not r.get("more") or not r["items"]:
                return items
            start_after = next(reversed(r["items"]))

    # ------------------------------------------------------------------- machinery --
    def request(self, op: str, args: dict, write: bool = False) -> dict:
        """Send ``op`` to the leader, following hints and retrying until ``timeout``
        (AsyncClient.request, step for step, with blocking I/O)."""
        args = dict(args, op=op)
        if self.cluster_id is not None:
            args["cluster_id"] = self.cluster_id
        session = None
        if write:
            session = self._free_sessions.pop() if self._free_sessions else None
            if session is None:
                session = self._open_session(op)
            session.seq += 1
            args["client_id"] = session.client_id
            args["seq"] = session.seq
        try:
            st = Retry(time.monotonic, self.timeout)
            per_attempt = max(0.5, self.timeout / 4)
            while (remaining := st.remaining()) > 0:
                address = self._next_endpoint()
                st.attempts += 1
                link = self._links.get(address)
                if link is None or link.closed:
                    link = _Link(address, self._max)
                    try:
                        link.connect(min(remaining, 1.0))
                    except OSError as e:  # refused, timed out (TimeoutError), unresolvable
                        self._failed(op, st, address, e, sent=False)
                        time.sleep(st.pause())
                        continue
                    self._links[address] = link
                try:
                    resp = link.call(args, min(remaining, per_attempt))
                except TimeoutError:
                    self._unanswered(st, address)
                    continue
                except OSError as e:
                    self._failed(op, st, address, e, sent=True)
                    time.sleep(st.pause())
                    continue
                result = self._settle(st, address, resp, session)
                if result is not None:
                    return result
                if not self._leader:
                    time.sleep(st.pause())
            raise self._gave_up(op, args, st)
        finally:
            self._release(session)

    def _open_session(self, op: str) -> Session:
        """Register a new session (thesis §6.3: RegisterClient), as AsyncClient does."""
        client_id = uuid.uuid4().hex
        try:
            self.request("open_session", {"client_id": client_id, "seq": 1})
        except (RequestError, Unavailable) as e:
            return self._session_refused(op, client_id, e)
        return Session(client_id, 1)
