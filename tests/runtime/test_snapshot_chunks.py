"""Snapshot transfer frames at a real RaftServer on 127.0.0.1 (issue 14 §8, issue 19 §4).

We play the leader n1 by hand over a real connection: HELLO, then InstallSnapshot frames."""
from __future__ import annotations

import asyncio
import time

import pytest

from raftd.config import parse_config
from raftd.core import Configuration, InstallSnapshot, Role
from raftd.runtime.server import RaftServer
from raftd.wire.codec import encode_hello, encode_message
from tests.e2e.harness import free_port

pytestmark = pytest.mark.timeout(60)
ELECTION_MS = 150


async def _follower(tmp_path) -> tuple[RaftServer, dict[str, str]]:
    peers = {f"n{i}": f"127.0.0.1:{free_port('127.0.0.1')}" for i in (1, 2, 3)}
    cfg = parse_config({"id": "n2", "listen": peers["n2"], "data_dir": str(tmp_path / "n2"),
                        "peers": peers, "tick_ms": 10, "election_timeout_ms": ELECTION_MS,
                        "heartbeat_interval_ms": 30}, "test")
    srv = RaftServer(cfg, rng_seed=2)
    await srv.start()
    return srv, peers


def _chunk(peers, offset: int, data: bytes = b"", done: bool = False, index: int = 50):
    conf = Configuration.make(sorted(peers)).encode()
    return encode_message(InstallSnapshot("n1", "n2", 1, index, 1, conf, offset, data, done))


async def _connect_as_leader(srv: RaftServer, peers) -> tuple:
    host, port = peers["n2"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode_hello("n1", srv.cfg.cluster, peers["n1"]))
    return reader, writer


def test_a_long_transfer_keeps_the_follower_from_campaigning(tmp_path):
    """Chunks arriving from the leader are contact: with no heartbeat during a transfer of
    five election timeouts, the follower stays a follower of n1 (it used to campaign)."""
    async def run():
        srv, peers = await _follower(tmp_path)
        try:
            reader, writer = await _connect_as_leader(srv, peers)
            offset, roles = 0, set()
            deadline = time.monotonic() + 5 * ELECTION_MS / 1000
            while time.monotonic() < deadline:
                writer.write(_chunk(peers, offset, b"x" * 100))
                await writer.drain()
                offset += 100
                await asyncio.sleep(0.03)
                roles.add(srv.node.role)
            writer.close()
            return roles, srv.node.term, srv.node.leader_id
        finally:
            await srv.stop(transfer=False)

    roles, term, leader = asyncio.run(run())
    assert roles == {Role.FOLLOWER} and term == 1 and leader == "n1", (roles, term, leader)


def test_snapshot_end_without_chunks_is_refused_and_the_node_keeps_running(tmp_path):
    """Issue 19 §4: a done=True InstallSnapshot with no chunks before it made the core ask the
    runtime to install a file that did not exist, which stopped the node."""
    async def run():
        srv, peers = await _follower(tmp_path)
        try:
            reader, writer = await _connect_as_leader(srv, peers)
            before = srv.counters["bad_frames"]
            writer.write(_chunk(peers, 0, done=True, index=100))
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 5) == b""
            await asyncio.sleep(0.3)
            return closed, srv.counters["bad_frames"] - before, srv.stopped.is_set()
        finally:
            await srv.stop(transfer=False)

    closed, refused, stopped = asyncio.run(run())
    assert closed and refused == 1 and not stopped
