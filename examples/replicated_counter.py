"""A replicated counter: a state machine of this program's own, replicated by raftd's runtime.

    python examples/replicated_counter.py

starts three servers in this process (on free ports of 127.0.0.1, data in a temporary
directory), adds to the counter through the client, reads it back linearizably from the leader
and checks that every replica applied the same state.  The state machine is ``Counter`` below:
``apply`` a command, answer a ``query``, ``snapshot`` and ``restore``; raftd does the rest
(log replication, elections, snapshots, client sessions so a retried command counts once).
"""
from __future__ import annotations

import asyncio
import socket
import sys
import tempfile

from raftd.client import AsyncClient
from raftd.config import NodeConfig
from raftd.runtime.server import RaftServer
from raftd.runtime.statemachine import ApplicationStateMachine, query, submit


class Counter:
    """The application: one integer.  Commands are b"add N"; the query "value" reads it."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, command: bytes) -> int:
        verb, _, amount = command.decode().partition(" ")
        if verb == "add":
            self.value += int(amount)
        return self.value

    def query(self, q: str) -> bytes | None:
        return str(self.value).encode() if q == "value" else None

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(data_dir: str, adds: list[int]) -> tuple[int, list[int]]:
    """Start three servers, submit ``adds``, and return (the value read, each replica's value)."""
    peers = {f"n{i}": f"127.0.0.1:{_free_port()}" for i in (1, 2, 3)}
    counters = {nid: Counter() for nid in peers}
    servers = [RaftServer(NodeConfig(id=nid, listen=addr, data_dir=f"{data_dir}/{nid}",
                                     peers=peers, tick_ms=20, election_timeout_ms=300,
                                     heartbeat_interval_ms=60, snapshot_entries=5,
                                     snapshot_trailing=2),
                          state_machine=ApplicationStateMachine(counters[nid]))
               for nid, addr in peers.items()]
    for s in servers:
        await s.start()
    try:
        async with AsyncClient(list(peers.values()), timeout=10.0, tls=False) as c:
            for n in adds:
                await submit(c, f"add {n}".encode())
            value = int(await query(c, "value"))
        # Every replica applies the same commands: wait until all have caught up.
        for _ in range(200):
            if all(c.value == value for c in counters.values()):
                break
            await asyncio.sleep(0.02)
        return value, [c.value for c in counters.values()]
    finally:
        for s in servers:
            await s.stop(transfer=False)


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        value, replicas = asyncio.run(run(d, [1, 2, 3, 4, 5, 6, 7]))
    print(f"counter = {value}; replicas: {replicas}")
    return 0 if value == 28 and replicas == [28, 28, 28] else 1


if __name__ == "__main__":
    sys.exit(main())
