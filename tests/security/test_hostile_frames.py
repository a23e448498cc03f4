"""One hostile frame over a real connection to a real raftd never stops a node, loses data
or blocks other clients (issue 19 §1, §4, §5, §9).  Plaintext: anyone who connects may send
HELLO with a member's id (docs/SECURITY.md), so these are sent as n2 to the leader and to a
follower.  Each is a protocol error of its connection: closed, counted in bad_frames."""
from __future__ import annotations

import socket
import struct
import time

import msgpack
import pytest

from raftd.core import AppendEntries, Entry, EntryKind, RequestVote
from raftd.core.messages import TYPE_OF
from raftd.wire.codec import encode_hello
from raftd.wire.framing import HEADER_SIZE, FrameType, encode_frame

pytestmark = pytest.mark.timeout(120)


def _raw_message(msg) -> bytes:
    """The frame of ``msg`` packed as is, bypassing the codec's own checks (a hostile peer
    writes bytes, not messages)."""
    fields = [getattr(msg, f) for f in msg.__dataclass_fields__]
    fields = [list(map(list, v)) if isinstance(v, tuple) else v for v in fields]
    return encode_frame(TYPE_OF[type(msg)], msgpack.packb(fields, use_bin_type=True))


def _send(address: str, frames: list[bytes], timeout: float = 5.0) -> bytes:
    """Send the frames, then read until the node closes the connection."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        for f in frames:
            s.sendall(f)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return got
            if not chunk:
                return got
            got += chunk
        raise AssertionError("the node kept the connection open")


def _hostile(term: int, last: int) -> dict[str, bytes]:
    big = 2**64 - 1
    return {
        # §1: a term at the 64-bit limit (it used to be adopted, then term + 1 overflowed)
        "term 2**64-1": _raw_message(RequestVote("n2", "n1", big, 2**63, big, True)),
        # §4: entries not contiguous, negative indexes, an entry term above the message's
        "gap": _raw_message(AppendEntries("n2", "n1", term, last, term,
                                          (Entry(term, last + 2, 0, b"x"),), last)),
        "negative": _raw_message(AppendEntries("n2", "n1", term, -5, term, (), -1)),
        "future term": _raw_message(AppendEntries("n2", "n1", term, last, term,
                                                  (Entry(term + 9, last + 1, 0, b"x"),), last)),
        # §5: a CONFIG entry that does not decode (it used to enter the log and stop every
        # restart at replay)
        "bad config": _raw_message(AppendEntries(
            "n2", "n1", term, last, term, (Entry(term, last + 1, EntryKind.CONFIG, b"{no"),),
            last)),
    }


def _client_bomb() -> bytes:
    """§9: a 16 MiB client request holding 16.7 million empty arrays."""
    n = (16 << 20) - HEADER_SIZE - 64
    body = b"\x81\xa2op\xdd" + struct.pack(">I", n) + b"\x90" * n
    return encode_frame(FrameType.CLIENT_REQUEST, body)


def test_hostile_frames_close_their_connection_and_nothing_else(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    with c.client() as cl:
        for i in range(20):
            cl.put(f"k{i}", b"v%d" % i)
    targets = [leader, next(n for n in c.nodes if n != leader)]
    for nid in targets:
        st = c.status(nid)
        before = st["counters"]["bad_frames"]
        term, last = st["term"], st["last_log_index"]
        frames = _hostile(term, last)
        for frame in frames.values():
            hello = encode_hello("n2" if nid != "n2" else "n3", "raftd")
            _send(c.nodes[nid].address, [hello, frame.replace(b"n1", nid.encode(), 1)
                                         if nid != "n1" else frame])
        t0 = time.monotonic()
        _send(c.nodes[nid].address, [_client_bomb()], timeout=10)
        bomb_s = time.monotonic() - t0
        st = c.status(nid)
        assert st is not None, f"{nid} stopped: {c.logs_tail()}"
        assert st["counters"]["bad_frames"] >= before + len(frames) + 1, st["counters"]
        assert st["term"] < 2**32, st["term"]
        assert bomb_s < 5, f"the 16 MiB bomb took {bomb_s:.1f} s"
    # The cluster keeps its leader, its data, and serves other clients.
    assert c.wait_leader() == leader
    with c.client() as cl:
        assert cl.get("k7") == b"v7"
        cl.put("after", b"ok")
        assert cl.get("after") == b"ok"
    for node in c.nodes.values():
        assert node.running


def test_hello_from_strangers_opens_no_links_and_keeps_no_memory(cluster_factory):
    """Issue 19 §8: 200 HELLOs with made-up ids and addresses, each followed by a vote
    request the node answers, used to leave 200 peer links retrying for ever; HELLOs with
    1 MiB ids were kept.  Now: links to strangers are the most recent 16 at most (a lagging
    node must answer a leader its log does not name yet), ids are bounded."""
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    target = next(n for n in c.nodes if n != leader)
    addr = c.nodes[target].address
    st = c.status(target)
    before = st["counters"]["bad_frames"]
    for i in range(200):
        fake = f"stranger{i}"
        hello = encode_hello(fake, "raftd", f"127.0.0.1:{20000 + i}")
        # A stale AppendEntries: the node answers it (Figure 2), to the stranger's address.
        stale = _raw_message(AppendEntries(fake, target, st["term"] - 1, 0, 0, (), 0))
        _send_and_go(addr, [hello, stale])
    huge = msgpack.packb({"node_id": "x" * (1 << 20), "cluster": "raftd"})
    for _ in range(50):
        _send(addr, [encode_frame(FrameType.HELLO, huge)], timeout=1)
    time.sleep(0.5)
    st = c.status(target)
    strangers = set(st["peers"]) - set(c.nodes)
    assert len(strangers) <= 16, sorted(strangers)  # the most recent few, to answer them
    assert st["counters"]["bad_frames"] >= before + 50
    with c.client() as cl:
        cl.put("still", b"serving")
    assert c.wait_leader() == leader


def _send_and_go(address: str, frames: list[bytes]) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        for f in frames:
            s.sendall(f)
