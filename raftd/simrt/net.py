"""The simulated network, at the connection level (issue 15 §3).

Connecting takes time and can fail (refused, or unreachable across a partition); a connection
carries bytes in order with a random latency per write; it can be reset at any time (the
rest of its bytes are lost, both ends see ConnectionResetError); a partition resets the
connections across it and refuses new ones.  Everything is drawn from the run's seeded RNG
and scheduled on the virtual loop, so a seed replays exactly.  Messages lost, duplicated (by
the resends after a reset) and reordered (across connections) come from these faults, as on
a real network: TCP itself never reorders or duplicates within one connection.
"""
from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from random import Random

from .loop import HOST, VirtualLoop


@dataclass
class NetParams:
    latency: tuple[float, float] = (0.0002, 0.003)  # seconds, uniform per write
    slow_p: float = 0.02  # a write is slow (queueing, retransmission)
    slow: float = 0.05
    connect_fail_p: float = 0.02  # a connection attempt fails (refused)
    reset_p: float = 0.0005  # a write resets its connection


@dataclass(eq=False)
class _Conn:
    a: str  # client host
    b: str  # server host
    ends: list = field(default_factory=list)  # [client transport, server transport]
    open: bool = True


class SimTransport(asyncio.Transport):
    def __init__(self, net: "SimNet", conn: _Conn, side: int, host: str, peer: tuple,
                 sock: tuple, ctx: contextvars.Context):
        super().__init__()
        self._net, self._conn, self._side = net, conn, side
        self.host = host
        self._extra = {"peername": peer, "sockname": sock, "socket": None, "ssl_object": None}
        self._ctx = ctx
        self.protocol: asyncio.Protocol | None = None
        self._closing = False
        self._lost = False
        self._paused = False
        self._held: list = []  # deliveries while reading is paused
        self._next_at = 0.0  # FIFO: a write never overtakes an earlier one

    # -- asyncio.Transport --
    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data) -> None:
        if self._closing or not data:
            return
        self._net.carry(self, bytes(data))

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self):
        return (0, 0)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            held, self._held = self._held, []
            for item in held:
                self._receive(item)

    def is_reading(self) -> bool:
        return not self._paused

    def close(self) -> None:
        self._net.shutdown(self._conn, reset=False, origin=self._side)

    def abort(self) -> None:
        self._net.shutdown(self._conn, reset=True, origin=self._side)

    # -- network side --
    def _receive(self, item) -> None:
        if self._lost:
            return
        if self._paused and item is not None and not isinstance(item, BaseException):
            self._held.append(item)
            return
        if isinstance(item, bytes):
            assert self.protocol is not None  # set when the connection was made
            self.protocol.data_received(item)
        else:
            self._lose(item)

    def _lose(self, exc) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._held.clear()
        assert self.protocol is not None  # set when the connection was made
        if exc is None:
            try:
                self.protocol.eof_received()
            except Exception:  # noqa: BLE001 - the protocol's business
                pass
        self.protocol.connection_lost(exc)


class _Server(asyncio.AbstractServer):
    def __init__(self, net: "SimNet", key: tuple, factory, ctx):
        self._net, self.key, self.factory, self.ctx = net, key, factory, ctx
        self.sockets = ()

    def close(self) -> None:
        self._net.listeners.pop(self.key, None)

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return self._net.listeners.get(self.key) is self

    def get_loop(self):
        return self._net.loop

    async def start_serving(self) -> None:
        pass

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()


class SimNet:
    def __init__(self, loop: VirtualLoop, rng: Random, params: NetParams | None = None):
        self.loop = loop
        loop.net = self
        self.rng = rng
        self.p = params or NetParams()
        self.listeners: dict[tuple, _Server] = {}
        self.conns: list[_Conn] = []
        self.down: set[str] = set()  # crashed hosts
        self.cut: set[frozenset] = set()  # partitioned host pairs
        self.isolated: dict[str, frozenset[str]] = {}  # host -> hosts cut from it, apart
        self._ports = 40000
        self.stats = {"connects": 0, "refused": 0, "resets": 0, "bytes": 0}

    def reachable(self, a: str, b: str) -> bool:
        return (a not in self.down and b not in self.down and frozenset((a, b)) not in self.cut
                and b not in self.isolated.get(a, ()) and a not in self.isolated.get(b, ()))

    # -- faults --
    def partition(self, groups: list[set[str]], hosts: list[str]) -> None:
        """Cut every pair of hosts in different groups (hosts in no group are cut off from all)."""
        side = {h: i for i, g in enumerate(groups) for h in g}
        self.cut = {frozenset((a, b)) for a in hosts for b in hosts
                    if a < b
                    and side.get(a, -1 - hosts.index(a)) != side.get(b, -2 - hosts.index(b))}
        for c in list(self.conns):
            if not self.reachable(c.a, c.b):
                self.shutdown(c, reset=True, origin=None)

    def heal(self) -> None:
        self.cut = set()

    def isolate(self, host: str, others: set[str]) -> None:
        """Cut ``host`` from ``others`` until ``rejoin``, whatever partitions come and go."""
        self.isolated[host] = frozenset(others)
        for c in list(self.conns):
            if not self.reachable(c.a, c.b):
                self.shutdown(c, reset=True, origin=None)

    def rejoin(self, host: str) -> None:
        self.isolated.pop(host, None)

    def crash(self, host: str) -> None:
        self.down.add(host)
        for key in [k for k, s in self.listeners.items() if k[0] == host]:
            del self.listeners[key]
        for c in list(self.conns):
            if host in (c.a, c.b):
                self.shutdown(c, reset=True, origin=None, silent=host)

    def restart(self, host: str) -> None:
        self.down.discard(host)

    # -- the loop's create_server / create_connection --
    def listen(self, factory, host, port) -> _Server:
        key = (host, int(port))
        if key in self.listeners:
            raise OSError(98, f"address {host}:{port} already in use")
        srv = _Server(self, key, factory, contextvars.copy_context())
        self.listeners[key] = srv
        return srv

    async def connect(self, factory, host, port, *, local_addr=None, ssl=None, **kw):
        if ssl:
            raise OSError("no TLS in the simulation")
        src = local_addr[0] if local_addr else HOST.get()
        self.stats["connects"] += 1
        await asyncio.sleep(self._latency())
        key = (host, int(port))
        srv = self.listeners.get(key)
        if not self.reachable(src, host):
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))
            raise OSError(113, f"no route to host {host}")
        if srv is None or self.rng.random() < self.p.connect_fail_p:
            self.stats["refused"] += 1
            raise ConnectionRefusedError(111, f"connection to {host}:{port} refused")
        self._ports += 1
        conn = _Conn(src, host)
        mine = (src, self._ports)
        ta = SimTransport(self, conn, 0, src, key, mine, contextvars.copy_context())
        tb = SimTransport(self, conn, 1, host, mine, key, srv.ctx)
        conn.ends = [ta, tb]
        self.conns.append(conn)
        proto_b = srv.ctx.run(srv.factory)
        tb.protocol = proto_b
        srv.ctx.run(proto_b.connection_made, tb)
        proto_a = factory()
        ta.protocol = proto_a
        proto_a.connection_made(ta)
        return ta, proto_a

    # -- carrying bytes --
    def _latency(self) -> float:
        if self.rng.random() < self.p.slow_p:
            return self.rng.uniform(self.p.slow / 2, self.p.slow)
        return self.rng.uniform(*self.p.latency)

    def _schedule(self, dst: SimTransport, item) -> None:
        # Strictly later than the previous delivery: the loop's timer heap does not keep the
        # order of equal times, and a byte stream must arrive in order.
        at = max(self.loop.time() + self._latency(), dst._next_at + 1e-7)
        dst._next_at = at
        self.loop.call_at(at, dst._receive, item, context=dst._ctx)

    def carry(self, src: SimTransport, data: bytes) -> None:
        conn = src._conn
        if not conn.open:
            return
        if self.rng.random() < self.p.reset_p:
            self.shutdown(conn, reset=True, origin=None)
            return
        self.stats["bytes"] += len(data)
        self._schedule(conn.ends[1 - src._side], data)

    def shutdown(self, conn: _Conn, reset: bool, origin: int | None,
                 silent: str | None = None) -> None:
        """close() (origin side, reset False): the peer reads the rest, then EOF.  abort() or
        a network fault (reset): both ends lose the connection, bytes in flight are lost."""
        if not conn.open:
            return
        conn.open = False
        self.conns.remove(conn)
        if reset:
            self.stats["resets"] += 1
        for side, t in enumerate(conn.ends):
            t._closing = True
            if t.host == silent:
                t._lost = True  # a crashed host runs nothing more
                continue
            if side == origin:
                self.loop.call_soon(t._lose, None, context=t._ctx)
            elif reset:
                t._next_at = float("inf")  # what was in flight is gone
                self.loop.call_soon(t._lose, ConnectionResetError(104, "connection reset"),
                                    context=t._ctx)
            else:
                self._schedule(t, None)
