"""inline_fsync: auto (the default) saves on the event loop, and after an fsync slower than a
quarter of the heartbeat interval moves the saves to the disk thread for a while, so a slow
disk cannot keep blocking heartbeats, reads and status (raftd/runtime/server.py)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raftd.client import AsyncClient
from raftd.config import parse_config
from raftd.runtime.server import RaftServer
from tests.e2e.harness import free_port


@pytest.mark.timeout(60)
def test_auto_moves_saves_off_the_loop_after_a_slow_fsync(tmp_path):
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path):
    ports = {f"n{i}": free_port("127.0.0.1") for i in (1, 2, 3)}
    peers = {nid: f"127.0.0.1:{p}" for nid, p in ports.items()}
    servers = []
    calls: dict[str, list[tuple[str, bool]]] = {}  # node -> [(thread name, slowed)]
    slow = {"node": None}
    for nid, addr in peers.items():
        cfg = parse_config({"id": nid, "listen": addr, "data_dir": str(tmp_path / nid),
                            "peers": peers, "tick_ms": 10, "election_timeout_ms": 400,
                            "heartbeat_interval_ms": 40}, "test")
        assert cfg.inline_fsync == "auto"
        srv = RaftServer(cfg, rng_seed=int(nid[1:]))
        servers.append(srv)
        await srv.start()
        real = srv.storage.save_many
        log = calls.setdefault(nid, [])

        def save_many(batch, _real=real, _log=log, _nid=nid):
            slowed = slow["node"] == _nid
            if slowed:
                slow["node"] = None
                time.sleep(0.05)  # > 40 ms / 4: a slow disk, once
            _log.append((threading.current_thread().name, slowed))
            return _real(batch)

        srv.storage.save_many = save_many
    try:
        async with AsyncClient(list(peers.values()), timeout=10) as c:
            for i in range(20):
                await c.put(f"a{i}", b"v")
            leader = next(s for s in servers if s.node.role.name == "LEADER")
            lid = leader.node_id
            assert all(t == "MainThread" for t, _ in calls[lid]), calls[lid]  # inline so far
            slow["node"] = lid
            n_before = len(calls[lid])
            for i in range(20):
                await c.put(f"b{i}", b"v")
            after = calls[lid][n_before:]
            assert after[0] == ("MainThread", True), after[:3]  # the slow one, on the loop
            assert after[1:] and all(t.startswith("raftd-disk") for t, _ in after[1:]), after
            assert leader.counters["inline_fsync_backoffs"] == 1
            assert await c.get("b19") == b"v"
    finally:
        for srv in servers:
            await srv.stop()
