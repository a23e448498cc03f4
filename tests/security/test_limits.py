"""Each configurable limit refuses with a clear error, is counted, and the node keeps serving."""
from __future__ import annotations

import asyncio
import socket
import struct
import time
import urllib.request

import pytest

from raftd.client import AsyncClient, Client, RequestError
from raftd.wire.framing import FrameDecoder, FrameType
from tests.e2e.harness import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def limited(cluster_factory):
    c = cluster_factory(1, max_key_size=16, max_value_size=100, max_requests_per_second=50,
                        max_connections_per_address=4, max_sessions=3, max_frame_size=4096,
                        metrics_listen=f"127.0.0.1:{free_port('127.0.0.1')}").start()
    c.wait_leader()
    return c


def rejections(c) -> dict:
    return c.status("n1")["limit_rejections"]


def test_key_and_value_sizes(limited):
    c = limited
    with c.client() as cl:
        cl.put("k" * 16, b"v" * 100)  # exactly at the limits: fine
        with pytest.raises(RequestError) as e:
            cl.put("k" * 17, b"v")
        assert e.value.code == "too_large" and "max_key_size" in str(e.value)
        with pytest.raises(RequestError) as e:
            cl.put("k", b"v" * 101)
        assert e.value.code == "too_large" and "max_value_size" in str(e.value)
        with pytest.raises(RequestError):
            cl.cas("k", b"x" * 101, b"y")
        assert cl.get("k") is None
    r = rejections(c)
    assert r["key_size"] == 1 and r["value_size"] == 2


def test_request_rate_per_connection(limited):
    c = limited

    async def burst():
        async with AsyncClient(c.endpoints, timeout=5) as cl:
            out = await asyncio.gather(*(cl.get("a", linearizable=False) for _ in range(200)),
                                       return_exceptions=True)
            await asyncio.sleep(1.1)  # the bucket refills: served again
            return out, await cl.get("a", linearizable=False)

    results, later = asyncio.run(burst())
    limited_ = [r for r in results if isinstance(r, RequestError) and r.code == "rate_limited"]
    served = [r for r in results if r is None]
    assert 40 <= len(served) <= 60 and len(limited_) == 200 - len(served)
    assert "max_requests_per_second" in str(limited_[0])
    assert later is None
    assert rejections(c)["request_rate"] == len(limited_)


def test_client_sessions_are_evicted_lru_never_locked_out(limited):
    """Issue 19 §12: more client ids than max_sessions (3) evict the least recently used
    session instead of locking every new client out; a write on an evicted session gets
    session_expired and is not applied a second time."""
    c = limited
    clients = [Client(c.endpoints, timeout=5) for _ in range(4)]  # max 4 connections
    try:
        for i, cl in enumerate(clients):
            cl.put(f"s{i}", b"1")  # each client library instance opens one session
        assert clients[1].status(c.endpoints[0], 2.0, False)["sessions"]["count"] == 3
        with pytest.raises(RequestError) as e:
            clients[0].put("s0", b"2")  # its session was the least recently used: evicted
        assert e.value.code == "session_expired"
        assert clients[1].get("s0") == b"1"  # not applied
        clients[0].put("s0", b"3")  # a new session: served again
        clients[3].put("s3", b"2")  # a recent session keeps working
        assert clients[2].get("s0") == b"3" and clients[2].get("s3") == b"2"
    finally:
        for cl in clients:
            cl.close()


def test_sessions_per_connection_capped(cluster_factory):
    c = cluster_factory(1, max_sessions_per_connection=2).start()
    c.wait_leader()

    async def flood():
        async with AsyncClient(c.endpoints, timeout=5) as cl:
            for i in range(2):
                await cl.request("open_session", {"client_id": f"x{i}", "seq": 1})
            with pytest.raises(RequestError) as e:
                await cl.request("open_session", {"client_id": "x2", "seq": 1})
            assert e.value.code == "too_many_sessions"
            assert "max_sessions_per_connection" in str(e.value)
            await cl.request("put", {"key": "k", "value": b"v", "client_id": "x1", "seq": 2})
    asyncio.run(flood())
    with c.client() as cl:
        cl.put("other", b"v")  # another connection is served
        assert cl.get("k") == b"v"



def test_connections_per_address(limited):
    c = limited
    host, port = c.endpoints[0].rsplit(":", 1)
    socks = []
    try:
        for _ in range(4):
            socks.append(socket.create_connection((host, int(port)), 2))
        extra = socket.create_connection((host, int(port)), 2)
        extra.settimeout(5)
        data = extra.recv(4096)
        extra.close()
        frames = list(FrameDecoder(1 << 20).feed(data))
        assert frames and frames[0][0] == FrameType.ERROR
        assert b"too_many_connections" in frames[0][1]
    finally:
        for s in socks:
            s.close()
    with c.client() as cl:  # slots free again
        cl.put("after", b"1")
    assert rejections(c)["connections_per_address"] == 1


def test_oversized_frame_closes_only_that_connection(limited):
    c = limited
    host, port = c.endpoints[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), 2) as s:
        # A header announcing a 1 MiB frame (over max_frame_size=4096).
        s.sendall(_header(FrameType.CLIENT_REQUEST, 1 << 20))
        s.settimeout(5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert b"frame_too_large" in data
    with c.client() as cl:
        cl.put("still", b"serving")
    assert rejections(c)["frame_size"] == 1
    want = 'raftd_limit_rejections_total{limit="frame_size"} 1.0'
    deadline = time.monotonic() + 10
    while True:  # metrics are refreshed from the status every few ticks
        metrics = urllib.request.urlopen(
            f"http://{c._tuning['metrics_listen']}/metrics", timeout=5).read().decode()
        if want in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert want in metrics


def _header(ftype: int, length: int) -> bytes:
    """A frame header (docs/PROTOCOL.md): "RD", version 1, type, body length."""
    return struct.pack(">2sBBI", b"RD", 1, ftype, length)
