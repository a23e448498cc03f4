"""raftd.client: the client library (asyncio ``AsyncClient`` and its blocking twin ``Client``).

    from raftd.client import Client
    with Client(["127.0.0.1:7001", "127.0.0.1:7002"], timeout=5) as c:
        index = c.put("config/flag", b"on")
        c.get("config/flag")            # b"on", a linearizable read (ReadIndex on the leader)
        c.cas("lock", None, b"me")      # True if the key was absent and is now b"me"

Finds the leader (following the hints followers give), keeps many requests in flight on one
connection (matched by request id), and retries across leader changes until ``timeout``.

TLS: pass ``tls=TLSFiles(ca, cert, key)`` (or an ``ssl.SSLContext``); by default the client
reads RAFTCTL_CACERT, RAFTCTL_CERT and RAFTCTL_KEY from the environment and speaks plaintext
when they are not set (``tls=False`` forces plaintext).  See docs/SECURITY.md.

Exactly-once writes (thesis §6.3): every write carries (client_id, seq).  A retry reuses the
same pair, so the state machine answers it from its session table instead of applying it twice.
The state machine remembers only the latest seq per client_id, so concurrent writes each use
their own session from a small pool (a session is never used by two writes at once).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Sequence

from .client_errors import (ClientError, ClosedBeforeAnswer, RequestError, Timeout, TLSError,
                            Unavailable, as_bytes as _as_bytes, bad_magic_error,
                            closed_unanswered)
from .client_routing import (CLUSTER_ID_ENV, WRITE_OPS, LeaderRouting, Retry, Session)
from .tls import TLSFiles, client_context, files_from_env, handshake_error
from .wire.codec import decode_body, encode_client_request
from .wire.framing import BadMagic, FrameDecoder, FrameType, RemoteProtocolError

__all__ = ["CLUSTER_ID_ENV", "WRITE_OPS", "AsyncClient", "Client", "ClientError",
           "ClosedBeforeAnswer", "RequestError", "TLSError", "Timeout", "Unavailable"]


class _Connection:
    """One TCP connection to one node; many requests in flight, matched by id."""

    def __init__(self, address: str, max_frame_size: int, ssl_context=None):
        self.address = address
        self._ssl = ssl_context
        self._answered = False
        self._reason: Exception | None = None  # why the connection closed
        self._deadlines: dict[int, float] = {}  # request id -> loop time it expires
        self._sweeper: asyncio.TimerHandle | None = None
        self._max = max_frame_size
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None
        self._out: list[bytes] = []
        self.closed = False

    async def connect(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            reader, self._writer = await asyncio.wait_for(self._open(), timeout)
        except ssl.SSLError as e:
            raise TLSError(f"TLS with {self.address} failed: {handshake_error(e)}") from None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))

    async def _open(self):
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            # Nobody listening on a local port in the ephemeral range: the kernel may connect
            # the socket to itself (TCP simultaneous open).  That is "refused", not a server.
            if sock.getsockname() == sock.getpeername():
                raise ConnectionRefusedError(f"connection to {self.address} refused")
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, ssl=self._ssl,
                                             server_hostname="" if self._ssl else None)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(self._max)
        reason: Exception = ConnectionResetError(f"connection to {self.address} closed")
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for ftype, body in decoder.feed(data):
                    msg = decode_body(body)
                    if ftype == FrameType.ERROR:
                        reason = RequestError(str(msg.get("code")), str(msg.get("message")))
                        return
                    if ftype != FrameType.CLIENT_RESPONSE:
                        continue
                    self._answered = True
                    rid = msg.get("id")
                    if not isinstance(rid, int):
                        continue  # not an answer to any request of ours
                    fut = self._pending.pop(rid, None)
                    if fut is not None:
                        del self._deadlines[rid]
                        if not fut.done():
                            fut.set_result(msg)
        except ssl.SSLError as e:  # TLS 1.3: a refused client certificate shows up here
            reason = TLSError(f"{self.address} refused the TLS connection: "
                              f"{handshake_error(e)}")
        except BadMagic as e:
            reason = bad_magic_error(self.address, e.magic)
        except (OSError, RemoteProtocolError) as e:
            reason = ConnectionResetError(f"connection to {self.address} failed: {e}")
        finally:
            if not self._answered:
                reason = closed_unanswered(reason, self._ssl is not None, bool(self._pending))
            self._fail_all(reason)

    def _fail_all(self, exc: Exception) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._reason = self._reason or exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        self._deadlines.clear()
        if self._writer is not None:
            self._writer.close()

    async def call(self, op: str, args: dict, timeout: float) -> dict:
        return await self.send(op, args, timeout)

    def send(self, op: str, args: dict, timeout: float) -> asyncio.Future:
        """Queue one request; the future gets its response map, or TimeoutError after
        ``timeout`` s, or the connection's error.  A plain function returning a future, not a
        coroutine: one frame less to create and resume per request on the hot path."""
        if self.closed or self._writer is None:
            if isinstance(self._reason, ClientError):
                raise self._reason
            raise ConnectionResetError(str(self._reason or
                                           f"connection to {self.address} is closed"))
        rid = next(self._ids)
        loop = self._loop
        fut = loop.create_future()
        args["id"] = rid
        args["op"] = op
        # Requests made in one pass of the event loop leave in one write (one syscall).
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(encode_client_request(args))
        self._pending[rid] = fut
        # Deadlines are checked by one periodic sweep per connection, not one timer per
        # request (a timer costs a heap push and a cancel on every request).  The answer, the
        # sweep or the connection's end removes both entries.
        self._deadlines[rid] = loop.time() + timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP, self._sweep)
        return fut

    def _sweep(self) -> None:
        loop = self._loop
        now = loop.time()
        for rid, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[rid]
                fut = self._pending.pop(rid, None)
                if fut is not None:
                    _expire(fut)
        self._sweeper = loop.call_later(_SWEEP, self._sweep) if self._deadlines else None

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed and self._writer is not None:
            self._writer.write(b"".join(out))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._fail_all(ConnectionResetError("client closed"))


_SWEEP = 0.02  # seconds between deadline sweeps: how late a timeout may fire


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


class AsyncClient(LeaderRouting):
    def __init__(self, endpoints: Sequence[str] | str, timeout: float = 5.0,
                 max_frame_size: int = 16 << 20,
                 tls: TLSFiles | ssl.SSLContext | bool | None = None,
                 refused_grace: float | None = None, cluster_id: str | None = None):
        """``refused_grace``: give up (Unavailable, "no raftd at ...") once every endpoint has
        refused the connection for this many seconds, instead of retrying until ``timeout``:
        nothing listens there, so nothing was sent.  None (the default) retries until
        ``timeout``, for callers that start nodes and talk to them at once.
        ``cluster_id`` (default: $RAFTCTL_CLUSTER_ID): every request names it, and a node of
        another cluster refuses it (RequestError ``wrong_cluster``) instead of serving it."""
        super().__init__(endpoints, timeout, refused_grace)
        self._max = max_frame_size
        self._conns: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Future] = {}
        self.cluster_id = cluster_id or os.environ.get(CLUSTER_ID_ENV) or None
        if tls is None:
            tls = files_from_env()
        self._ssl = client_context(tls) if isinstance(tls, TLSFiles) else (tls or None)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for c in list(self._conns.values()):
            await c.close()
        self._conns.clear()

    # ------------------------------------------------------------------ public API --
    async def put(self, key: str, value: bytes | str) -> int:
        r = await self.request("put", {"key": key, "value": _as_bytes(value)}, write=True)
        return r["index"]

    async def get(self, key: str, linearizable: bool = True) -> bytes | None:
        r = await self.request("get", {"key": key, "linearizable": linearizable})
        return r["value"]

    async def delete(self, key: str) -> bool:
        r = await self.request("delete", {"key": key}, write=True)
        return r["deleted"]

    async def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        r = await self.request("cas", {"key": key, "expected": _as_bytes(expected),
                                       "value": _as_bytes(new)}, write=True)
        return r["swapped"]

    async def list(self, prefix: str = "", linearizable: bool = True,
                   page_size: int = 1000) -> dict[str, bytes]:
        """Keys starting with ``prefix`` and their values, in key order, fetched a page at a
        time (each page is linearizable on its own; the whole listing is not one snapshot)."""
        items: dict[str, bytes] = {}
        start_after = None
        while True:
            r = await self.request("list", {"prefix": prefix, "linearizable": linearizable,
                                            "limit": page_size, "start_after": start_after})
            items.update(r["items"])
            if not r.get("more") or not r["items"]:
                return items
            start_after = next(reversed(r["items"]))

    async def status(self, endpoint: str, timeout: float | None = None,
                     digest: bool = False) -> dict:
        """Status of one node (no leader redirection); ``digest`` adds a hash of its state."""
        t = timeout or self.timeout
        conn = await self._connection(endpoint, t)
        r = await conn.call("status", {"digest": digest}, t)
        if not r.get("ok"):
            err = r.get("error") or {}
            raise RequestError(err.get("code", "error"), err.get("message", "status failed"))
        return r["result"]

    async def admin(self, op: str, args: dict | None = None) -> dict:
        """An operator request to the leader (transfer_leader, change_config).  Not cut into
        short attempts: a membership change may take a while and must not be sent twice."""
        return await self.request(op, args or {}, attempt_timeout=self.timeout)

    # ------------------------------------------------------------------- machinery --
    async def _connection(self, address: str, timeout: float) -> _Connection:
        conn = self._conns.get(address)
        if conn is not None and not conn.closed:
            return conn
        # Many requests starting at once share one connection attempt instead of each
        # opening a connection of its own (and all but one leaking).
        pending = self._connecting.get(address)
        if pending is None:
            pending = self._connecting[address] = asyncio.ensure_future(
                self._connect(address, timeout))
        try:
            result = await asyncio.shield(pending)
        finally:
            if pending.done() and self._connecting.get(address) is pending:
                del self._connecting[address]
        if isinstance(result, Exception):
            raise result
        return result

    async def _connect(self, address: str, timeout: float) -> _Connection | Exception:
        """The connection, or why it failed, returned rather than raised: when every waiter
        gave up first (cancelled by its own deadline), an exception left in the task was
        printed at exit as "Task exception was never retrieved" with a traceback, after the
        command's one-line error (a node whose host drops connection attempts)."""
        conn = _Connection(address, self._max, self._ssl)
        try:
            await conn.connect(timeout)
        except Exception as e:  # noqa: BLE001 - handed to the waiters, who raise it
            return e
        self._conns[address] = conn
        return conn

    async def request(self, op: str, args: dict, attempt_timeout: float | None = None,
                      write: bool = False) -> dict:
        """Send ``op`` to the leader, following hints and retrying until ``timeout``.  A
        ``write`` carries a session (client_id, seq) from the pool, the same on every retry.
        (One coroutine for all of it: every await layer costs a frame per request.)"""
        args = dict(args)
        if self.cluster_id is not None:
            args["cluster_id"] = self.cluster_id
        session = None
        if write:
            session = self._free_sessions.pop() if self._free_sessions else None
            if session is None:
                session = await self._open_session(op, attempt_timeout)
            session.seq += 1
            args["client_id"] = session.client_id
            args["seq"] = session.seq
        try:
            st = Retry(asyncio.get_running_loop().time, self.timeout)
            # One attempt may not use the whole budget: a paused or partitioned node must not
            # keep us from trying the others (a retried write is safe: same session, same seq).
            per_attempt = attempt_timeout or max(0.5, self.timeout / 4)
            while (remaining := st.remaining()) > 0:
                address = self._next_endpoint()
                st.attempts += 1
                conn = self._conns.get(address)
                try:
                    if conn is None or conn.closed:
                        conn = await self._connection(address, min(remaining, 1.0))
                except (OSError, asyncio.TimeoutError) as e:
                    self._failed(op, st, address, e, sent=False)
                    await asyncio.sleep(st.pause())
                    continue
                try:
                    resp = await conn.send(op, args, min(remaining, per_attempt))
                except asyncio.TimeoutError:
                    self._unanswered(st, address)
                    continue
                except (OSError, ConnectionError) as e:
                    self._failed(op, st, address, e, sent=True)
                    await asyncio.sleep(st.pause())
                    continue
                result = self._settle(st, address, resp, session)
                if result is not None:
                    return result
                if not self._leader:
                    await asyncio.sleep(st.pause())
            raise self._gave_up(op, args, st)
        finally:
            self._release(session)

    async def _open_session(self, op: str, attempt_timeout: float | None) -> Session:
        """Register a new session (thesis §6.3: RegisterClient); its writes use seq 2, 3...
        Registering first is what lets the server answer ``session_expired`` (instead of
        applying again) when a write arrives for a session it no longer holds."""
        client_id = uuid.uuid4().hex
        try:
            await self.request("open_session", {"client_id": client_id, "seq": 1},
                               attempt_timeout)
        except (RequestError, Unavailable) as e:
            return self._session_refused(op, client_id, e)
        return Session(client_id, 1)


class Client:
    """Blocking twin of AsyncClient; runs a private event loop in a background thread."""

    def __init__(self, endpoints: Sequence[str] | str, timeout: float = 5.0, **kw):
        self._async = AsyncClient(endpoints, timeout, **kw)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftd-client",
                                        daemon=True)
        self._thread.start()

    def _run(self, coro):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # Ctrl-C: stop the request on the loop too, not just stop waiting
            raise

    def put(self, key: str, value: bytes | str) -> int:
        return self._run(self._async.put(key, value))

    def get(self, key: str, linearizable: bool = True) -> bytes | None:
        return self._run(self._async.get(key, linearizable))

    def delete(self, key: str) -> bool:
        return self._run(self._async.delete(key))

    def cas(self, key: str, expected: bytes | str | None, new: bytes | str) -> bool:
        return self._run(self._async.cas(key, expected, new))

    def list(self, prefix: str = "", linearizable: bool = True,
             page_size: int = 1000) -> dict[str, bytes]:
        return self._run(self._async.list(prefix, linearizable, page_size))

    def status(self, endpoint: str, timeout: float | None = None, digest: bool = False) -> dict:
        return self._run(self._async.status(endpoint, timeout, digest))

    def admin(self, op: str, args: dict | None = None) -> dict:
        return self._run(self._async.admin(op, args))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    async def _shutdown(self) -> None:
        # Requests interrupted by the caller (Ctrl-C) end before the loop does: a task still
        # pending when the loop closes is reported as "Task was destroyed but it is pending!".
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._async.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
