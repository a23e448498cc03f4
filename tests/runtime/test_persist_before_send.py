"""The runtime honours the Ready contract: nothing that depends on state leaves before that
state is on disk (Raft Figure 2; raftd/core/ready.py).  Three RaftServers in one event loop on
127.0.0.1, with their real WALs wrapped to record what was durable when each message left."""
from __future__ import annotations

import asyncio

import pytest

from raftd.client import AsyncClient
from raftd.config import parse_config
from raftd.core import AppendEntries, AppendEntriesResponse, RequestVoteResponse
from raftd.runtime.server import RaftServer
from tests.e2e.harness import free_port


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inline_fsync", [False, True, "auto"],
                         ids=["disk-thread", "inline", "auto"])
def test_acks_and_votes_leave_only_after_fsync(tmp_path, inline_fsync):
    asyncio.run(_scenario(tmp_path, inline_fsync))


async def _scenario(tmp_path, inline_fsync=False):
    ports = {f"n{i}": free_port("127.0.0.1") for i in (1, 2, 3)}
    peers = {nid: f"127.0.0.1:{p}" for nid, p in ports.items()}
    servers = []
    violations = []
    checked = {"acks": 0, "votes": 0, "appends": 0}
    for nid, addr in peers.items():
        cfg = parse_config({"id": nid, "listen": addr, "data_dir": str(tmp_path / nid),
                            "peers": peers, "tick_ms": 10, "election_timeout_ms": 200,
                            "heartbeat_interval_ms": 40, "inline_fsync": inline_fsync}, "test")
        servers.append(RaftServer(cfg, rng_seed=int(nid[1:])))
    for srv in servers:
        await srv.start()
        durable = {"index": 0, "hs": None}
        real_save_many = srv.storage.save_many

        def save_many(batch, _real=real_save_many, _d=durable):
            _real(batch)  # returns after fdatasync
            for hs, entries in batch:
                if entries:
                    _d["index"] = entries[-1].index
                if hs is not None:
                    _d["hs"] = hs

        srv.storage.save_many = save_many
        real_send = srv._send

        def send(msg, _real=real_send, _d=durable, _srv=srv):
            if isinstance(msg, AppendEntriesResponse) and msg.success:
                checked["acks"] += 1
                if _d["index"] < msg.match_index and _srv.storage.last_index < msg.match_index:
                    violations.append(f"{_srv.node_id} acked {msg.match_index} with "
                                      f"{_d['index']} durable")
            if isinstance(msg, AppendEntries):
                checked["appends"] += 1
                hs = _d["hs"] or _srv.storage.hard_state
                if hs.term < msg.term:  # ready.py step 2: early only once the term is durable
                    violations.append(f"{_srv.node_id} sent AppendEntries in term {msg.term} "
                                      f"with term {hs.term} durable")
            if isinstance(msg, RequestVoteResponse) and msg.granted:
                checked["votes"] += 1
                hs = _d["hs"]
                if hs is None or hs.voted_for != msg.dst or hs.term != msg.term:
                    violations.append(f"{_srv.node_id} granted a vote before persisting it: {hs}")
            _real(msg)

        srv._send = send
    try:
        async with AsyncClient(list(peers.values()), timeout=10) as c:
            await asyncio.gather(*(c.put(f"k{i}", b"v") for i in range(200)))
            assert await c.get("k199") == b"v"
    finally:
        for srv in servers:
            await srv.stop()
    assert not violations, violations[:5]
    assert checked["acks"] > 20 and checked["votes"] >= 1, checked
