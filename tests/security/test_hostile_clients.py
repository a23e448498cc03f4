"""Hostile and buggy clients (issue 19 §10, §11, §13, §14), each over a real connection to a
real raftd: the node stays up, the data stays intact and other clients are served."""
from __future__ import annotations

import socket
import time

import pytest

from raftd.client import AsyncClient
from raftd.wire.codec import decode_body, encode_client_request
from raftd.wire.framing import FrameDecoder, FrameType

pytestmark = pytest.mark.e2e


def _connect(c) -> socket.socket:
    host, port = c.endpoints[0].rsplit(":", 1)
    return socket.create_connection((host, int(port)), 5)


def ask(sock: socket.socket, req: dict) -> dict:
    """Send one client request and read its response (raw: no client-side validation)."""
    sock.sendall(encode_client_request(req))
    dec = FrameDecoder(32 << 20)
    sock.settimeout(5)
    while True:
        data = sock.recv(1 << 16)
        assert data, "the server closed the connection"
        for ftype, body in dec.feed(data):
            assert ftype == FrameType.CLIENT_RESPONSE
            return decode_body(body)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("req, words", [
    ({"op": ["put"], "key": "k", "value": b"x"}, "op must be a string"),
    ({"op": "snapshot_read", "index": 1, "length": "abc"}, "length"),
    ({"op": "snapshot_read", "index": 1, "length": -1}, "length"),
    ({"op": "change_config", "remove": 5}, "remove"),
    ({"op": "change_config", "remove": "n9"}, "remove"),
    ({"op": "transfer_leader", "target": [1]}, "target"),
    ({"op": "put", "key": "k", "value": b"x", "client_id": "c", "seq": "1"}, "seq"),
    ({"op": "put", "key": "k", "value": "not bytes"}, "value"),
    ({"op": "list", "prefix": "", "limit": 0}, "limit"),
    ({"op": "list", "prefix": "", "start_after": 5, "limit": 1}, "start_after"),
])
def test_malformed_requests_get_bad_request_and_no_traceback(cluster_factory, req, words):
    c = cluster_factory(1).start()
    c.wait_leader()
    with c.client() as cl:
        cl.put("k", b"intact")
    with _connect(c) as s:
        resp = ask(s, {"id": 7, **req})
        assert resp["ok"] is False and resp["error"]["code"] == "bad_request", resp
        assert words in resp["error"]["message"]
        assert ask(s, {"id": 8, "op": "get", "key": "k"})["result"]["value"] == b"intact"
    assert "Traceback" not in c.nodes["n1"].log_text()
    with c.client() as cl:
        assert cl.get("k") == b"intact" and cl.list("") == {"k": b"intact"}


def test_unread_replies_close_that_connection_and_memory_stays_bounded(cluster_factory):
    """400 reads of a 1 MiB value, replies never read: was RSS 60 -> 876 MB and lost
    leadership; now the connection is closed past max_unsent_bytes."""
    c = cluster_factory(1, max_unsent_bytes=8 << 20).start()
    c.wait_leader()
    with c.client() as cl:
        cl.put("big", b"x" * (1 << 20))
    pid = c.nodes["n1"].proc.pid
    before = rss_mb(pid)
    s = _connect(c)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"".join(encode_client_request({"id": i, "op": "get", "key": "big",
                                              "linearizable": False}) for i in range(400)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = c.status("n1")
        if st and st["limit_rejections"]["unsent_bytes"] >= 1:
            break
        time.sleep(0.1)
    assert st["limit_rejections"]["unsent_bytes"] == 1
    assert rss_mb(pid) - before < 150
    s.close()
    with c.client() as cl:  # others are served, the node still leads
        cl.put("after", b"1")
        assert cl.get("big") == b"x" * (1 << 20)
    assert c.status("n1")["role"] == "leader"


def test_idle_and_trickling_connections_are_closed(cluster_factory):
    c = cluster_factory(1, client_idle_timeout_ms=1500, frame_timeout_ms=1500).start()
    c.wait_leader()
    idle = _connect(c)
    trickle = _connect(c)
    frame = encode_client_request({"id": 1, "op": "get", "key": "k"})
    t0 = time.monotonic()
    try:
        for b in frame[:-1]:  # one byte every 0.2 s: a frame that never completes
            trickle.send(bytes([b]))
            time.sleep(0.2)
        closed = closed_within(trickle, 3)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    assert closed and time.monotonic() - t0 < 6.5
    assert closed_within(idle, 3)
    busy = _connect(c)  # a client that talks now and then stays connected
    for i in range(4):
        assert ask(busy, {"id": i, "op": "get", "key": "k"})["ok"]
        time.sleep(0.6)
    busy.close()
    r = c.status("n1")["limit_rejections"]
    assert r["slow_frame_connections"] == 1 and r["idle_connections"] == 1


def test_a_listing_larger_than_a_frame_is_paged(cluster_factory):
    """kv list over the frame size: the server used to send one oversized frame that every
    client refused, and the client retried 72 times.  Now it pages."""
    import asyncio

    c = cluster_factory(1, max_frame_size=64 << 10).start()
    c.wait_leader()
    keys = {f"p/{i:04d}": bytes([i % 251]) * 1000 for i in range(200)}  # ~200 KB
    c.fill(keys)
    with c.client() as cl:
        assert cl.list("p/") == keys
        assert cl.list("p/", linearizable=False) == keys
        assert list(cl.list("p/", page_size=7)) == sorted(keys)

    async def old_client():  # no limit: refused at once with a clear error, not retried
        async with AsyncClient(c.endpoints, timeout=5) as cl:
            return await cl.request("list", {"prefix": "p/"})
    with pytest.raises(Exception) as e:
        asyncio.run(old_client())
    assert "page" in str(e.value)
