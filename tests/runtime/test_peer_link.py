"""A peer link whose connection was reset must drop what it is given, never raise.

Found by CI: a leader wrote to a follower that had just been killed (kill -9 resets the TCP
connection).  uvloop had already closed the transport while the link's reader task had not yet
run, and ``write`` on a closed uvloop transport raises RuntimeError; it came out of
``flush_now`` inside the Raft drive loop and stopped the leader.
"""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from raftd.core import AppendEntriesResponse
from raftd.runtime.transport import PeerLink

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency, but keep the asyncio case
    uvloop = None

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


def _run(kind, coro):
    if kind == "uvloop":
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _msg():
    return AppendEntriesResponse(term=1, src="n1", dst="n2", success=True, match_index=3)


async def _listener_and_link():
    """A listening socket we control and a started PeerLink to it; returns (server, link,
    accepted, got_one): ``accepted`` collects the server side of every connection the link
    makes, ``got_one`` is set at the first."""
    accepted: list = []
    got_one = asyncio.Event()

    async def on_conn(reader, writer):
        accepted.append(writer)
        got_one.set()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = PeerLink("n1", "n2", f"127.0.0.1:{port}", "127.0.0.1", "test")
    link.start()
    return server, link, accepted, got_one


async def _linked_pair():
    """A PeerLink connected to a listening socket we control; returns (link, server_conn)."""
    server, link, accepted, got_one = await _listener_and_link()
    await asyncio.wait_for(got_one.wait(), 5)
    conn = accepted[0]
    for _ in range(500):
        if link.connected:
            break
        await asyncio.sleep(0.01)
    assert link.connected
    return server, link, conn


@pytest.mark.parametrize("kind", LOOPS)
def test_send_and_flush_on_a_reset_connection_drop_instead_of_raising(kind):
    async def main():
        server, link, conn = await _linked_pair()
        try:
            # What a kill -9 of the peer does to our side: the transport is gone at once,
            # while the link's own task has not run yet to notice it.
            link._writer.transport.abort()
            before = link.dropped
            link.send(_msg())
            link.flush_now()  # must neither raise nor count the frame as sent
            link.send(_msg())
            await asyncio.sleep(0)  # the call_soon flush runs too
            assert link.dropped >= before + 1
        finally:
            await link.close()
            conn.close()
            server.close()
            await server.wait_closed()

    _run(kind, main())


@pytest.mark.parametrize("kind", LOOPS)
def test_peer_reset_by_the_other_end_keeps_the_link_usable(kind):
    """The other end resets the connection (SO_LINGER 0, as a killed process with unread data
    does); sending through the link in every loop pass meanwhile never raises, and the link
    reconnects to a new listener."""
    async def main():
        server, link, conn = await _linked_pair()
        try:
            sock = conn.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.transport.abort()
            for _ in range(200):
                link.send(_msg())
                link.flush_now()
                await asyncio.sleep(0)
            for _ in range(500):
                if link.connected and link.reconnects >= 1:
                    break
                await asyncio.sleep(0.01)
            assert link.reconnects >= 1 and link.connected
        finally:
            await link.close()
            server.close()
            await server.wait_closed()

    _run(kind, main())


@pytest.mark.parametrize("kind", LOOPS)
def test_a_reset_before_the_hello_is_written_makes_the_link_retry(kind, monkeypatch):
    """The peer resets the connection between connect and our HELLO: uvloop's write raises
    RuntimeError inside the link's task, which must retry rather than end (it is the only
    way to that peer)."""
    import raftd.runtime.transport as transport

    real_open = transport.open_peer_connection
    resets = {"n": 0}

    async def open_then_reset(*args, **kwargs):
        reader, writer = await real_open(*args, **kwargs)
        if resets["n"] < 2:  # the first two attempts meet a peer that resets at once
            resets["n"] += 1
            writer.transport.abort()
            await asyncio.sleep(0.05)  # the loop finishes closing the handle
        return reader, writer

    monkeypatch.setattr(transport, "open_peer_connection", open_then_reset)

    async def main():
        server, link, accepted, _ = await _listener_and_link()
        try:
            for _ in range(500):
                if link.connected and resets["n"] == 2:
                    break
                await asyncio.sleep(0.01)
            assert resets["n"] == 2 and link.connected, (resets, link.reconnects)
            assert not link._task.done()
        finally:
            await link.close()
            for w in accepted:
                w.close()
            server.close()
            await server.wait_closed()

    _run(kind, main())


def test_messages_wait_only_for_a_connection_attempt_not_for_the_back_off():
    """Messages sent while the link waits out its back-off after a failed attempt are dropped;
    held, they reached a restarted peer up to a second late, after the leader had compacted
    past them (the snapshot-install flake of issue 14).  Messages sent before the first
    attempt still wait for it."""
    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there: every attempt is refused
        link = PeerLink("n1", "n2", f"127.0.0.1:{port}", "127.0.0.1", "test")
        link.send(_msg())  # before the first attempt: held for it
        assert len(link._waiting) == 1
        link.start()
        for _ in range(200):
            if link.reconnects:
                break
            await asyncio.sleep(0.005)
        assert link.reconnects >= 1 and not link.connected  # now in the back-off
        dropped = link.dropped
        link.send(_msg())
        assert link._waiting == [] and link.dropped == dropped + 1
        await link.close()
    _run("asyncio", main())
