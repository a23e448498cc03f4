"""Snapshot install is crash-safe at every step and never stops the node (issue 14 §2-§3,
issue 21 §5).  Three RaftServers in one event loop on 127.0.0.1 with real WALs and snapshot
stores; a "crash" is an exception raised at a named install step (INSTALL_STEPS): nothing runs
after it but the stop, which writes nothing, so the data dir is left as kill -9 leaves it.

The follower that installs is a deposed leader: it holds `stale` uncommitted entries of its
old term, so with stale > 0 its WAL has another term at the snapshot index (Figure 13 step 7),
and with stale = 0 its WAL ends before the snapshot.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from raftd.client import AsyncClient
from raftd.config import parse_config
from raftd.core import AppendEntries
from raftd.kv.commands import Command, Op, encode_command
from raftd.runtime.server import RaftServer
from raftd.runtime.snapshotting import INSTALL_STEPS
from tests.e2e.harness import _new_host, free_port

# No rerun: the flake (a restarted follower committing instead of installing) came from a peer
# link that held messages through its reconnect back-off (issue 14, transport.py); with that
# fixed, 20 runs in a row of this file and test_snapshot_install_mutants.py passed without
# reruns on a loaded machine.
pytestmark = [pytest.mark.timeout(120)]


class InjectedCrash(Exception):
    """Stands for kill -9 at an install step."""


@dataclass
class Scene:
    tmp_path: object
    peers: dict[str, str]
    victim: str = ""
    servers: dict[str, RaftServer] = field(default_factory=dict)
    snap_index: int = 0
    snap_term: int = 0

    def server(self, nid: str) -> RaftServer:
        cfg = parse_config({"id": nid, "listen": self.peers[nid],
                            "data_dir": str(self.tmp_path / nid), "peers": self.peers,
                            "tick_ms": 10, "election_timeout_ms": 150,
                            "heartbeat_interval_ms": 30, "check_quorum": False,
                            "snapshot_entries": 100_000, "snapshot_trailing": 0}, "test")
        return RaftServer(cfg, rng_seed=int(nid[1:]))

    async def start(self, nid: str, fault=None) -> RaftServer:
        srv = self.servers[nid] = self.server(nid)
        srv.install_fault = fault  # before start(): its awaits may already run an install
        await srv.start()
        return srv

    def leader(self) -> RaftServer | None:
        return next((s for s in self.servers.values()
                     if not s.stopped.is_set() and s.node.role.name == "LEADER"), None)

    def client(self) -> AsyncClient:
        return AsyncClient([self.peers[n] for n in self.servers if n != self.victim], timeout=10)

    def diag(self) -> str:
        def progress(s: RaftServer) -> str:
            return " ".join(f"{p}:{pr.state.name}/m{pr.match_index}/n{pr.next_index}"
                            f"/snap{pr.pending_snapshot}" for p, pr in s.node.progress.items())

        return "; ".join(f"{n}: {s.node.role.name} t{s.node.term} c{s.node.commit_index} "
                         f"first{s.node.log.first_index} [{progress(s)}] "
                         f"{s.snapshots.transfers} {[e['text'] for e in s.events[-5:]]}"
                         for n, s in self.servers.items())

    async def stop_all(self) -> None:
        for srv in self.servers.values():
            await srv.stop(transfer=False)


async def _until(cond, timeout: float, what: str, diag=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {diag()}")
        await asyncio.sleep(0.01)


async def _prepare(tmp_path, stale: int) -> Scene:
    """A deposed leader (the victim, stopped) and a new leader with a snapshot at S that the
    victim's WAL does not continue; the new leader's log starts at S + 1 and goes on."""
    # Each node on a loopback address of its own: scenes run side by side, and a port freed
    # by a stopped victim must not be taken by another scene's server (its leader then
    # talked to a stranger that answered for the victim), nor by the source port of a
    # peer's outgoing connection (raftd binds those to its own address: CI, stop 25).
    hosts = {f"n{i}": _new_host() for i in (1, 2, 3)}
    sc = Scene(tmp_path, {nid: f"{h}:{free_port(h)}" for nid, h in hosts.items()})
    for nid in sc.peers:
        await sc.start(nid)
    await _until(lambda: sc.leader() is not None, 5, "a leader")
    async with AsyncClient(list(sc.peers.values()), timeout=10) as c:
        for i in range(5):
            await c.put(f"k{i}", b"old")
    old = sc.leader()
    sc.victim = old.node_id
    for nid, srv in sc.servers.items():
        if nid != sc.victim:
            await srv.stop(transfer=False)
    for i in range(stale):  # appended and fsynced by the old leader, never committed
        old.node.propose(encode_command(Command(Op.PUT, f"stale{i}", b"lost")))
    old.wake()
    target = old.node.log.last_index
    await _until(lambda: old.storage.last_index == target, 5, "the stale entries on disk")
    await old.stop(transfer=False)
    del sc.servers[sc.victim]
    for nid in sc.peers:
        if nid != sc.victim:
            await sc.start(nid)
    await _until(lambda: sc.leader() is not None, 5, "a new leader")
    async with sc.client() as c:
        for i in range(4):
            await c.put(f"a{i}", b"new")
        leader = sc.leader()
        # Both live servers compact at the same index, so whichever leads when the victim
        # comes back must send it the snapshot (a leader with the whole log would just
        # replicate, and no install step would ever run).
        done = leader.fsm.applied_index
        live = [s for n, s in sc.servers.items() if n != sc.victim]
        await _until(lambda: all(s.fsm.applied_index >= done for s in live), 5, "apply")
        taken = await leader.snapshots.take()
        for srv in live:
            if srv is not leader:
                await srv.snapshots.take()
        sc.snap_index, sc.snap_term = taken["index"], taken["term"]
        for srv in live:  # the victim needs the snapshot
            assert srv.node.log.first_index == sc.snap_index + 1, srv.node.log.first_index
        for i in range(3):
            await c.put(f"b{i}", b"after")
    assert sc.snap_term > 1
    if stale:
        assert sc.snap_index <= target, "the snapshot must cover the victim's stale entries"
    else:
        assert sc.snap_index > target
    return sc


async def _converged(sc: Scene, timeout: float = 20.0) -> None:
    """The victim holds what the leader holds and keeps serving (it is not wedged)."""
    victim = sc.servers[sc.victim]
    async with sc.client() as c:
        last = await c.put("final", b"1")
    def caught_up() -> bool:
        if victim.stopped.is_set():
            raise AssertionError(f"the victim stopped: {sc.diag()}")
        return victim.fsm.applied_index >= last

    await _until(caught_up, timeout, "the victim to catch up", sc.diag)
    assert not victim.stopped.is_set()
    leader = sc.leader()
    assert victim.fsm.digest() == leader.fsm.digest()
    assert victim.fsm.get("stale0") is None and victim.fsm.get("b2") == b"after"
    assert victim.storage.snapshot_index >= sc.snap_index


def _crash_at(step: str, seen: list):
    def fault(at: str) -> None:
        seen.append(at)
        if at == step:
            raise InjectedCrash(at)
    return fault


async def _crash_then_restart(tmp_path, stale: int, step: str) -> None:
    tmp_path.mkdir()
    sc = await _prepare(tmp_path, stale)
    try:
        seen: list[str] = []
        victim = await sc.start(sc.victim, _crash_at(step, seen))
        await _until(victim.stopped.is_set, 30, f"the crash at {step!r}", lambda: sc.diag())
        assert seen[-1] == step and victim.exit_code == 1
        await sc.start(sc.victim)  # the restart: recovery alone must make it consistent
        await _converged(sc)
    finally:
        await sc.stop_all()


async def _every_step(tmp_path, stale: int, steps=INSTALL_STEPS) -> dict[str, str]:
    """All steps at once, each on a cluster of its own (and its own addresses): the restarted
    follower waits for the leader to give up the unanswered transfer (30 election timeouts),
    and these waits overlap.  Returns {step: failure} for the steps that did not converge."""
    results = await asyncio.gather(*(_crash_then_restart(tmp_path / step, stale, step)
                                     for step in steps), return_exceptions=True)
    return {step: repr(r) for step, r in zip(steps, results, strict=True) if r is not None}


@pytest.mark.parametrize("stale", [8, 0], ids=["wal-conflicts", "wal-behind"])
def test_crash_at_every_install_step_restarts_and_catches_up(tmp_path, stale):
    failed = asyncio.run(_every_step(tmp_path, stale))
    assert not failed, failed


async def _append_during_install(tmp_path) -> bool:
    """Steps the leader's next AppendEntries into the victim while its install is between
    awaits (what a socket reader does), then checks the victim carries on."""
    sc = await _prepare(tmp_path, stale=8)
    injected = []
    try:
        def fault(at: str) -> None:
            if at != "restored":
                return
            injected.append(at)
            leader = sc.leader()
            s = sc.snap_index
            victim.node.step(AppendEntries(
                leader.node_id, sc.victim, leader.node.term, s, sc.snap_term,
                tuple(leader.node.log.slice(s + 1, s + 3)), leader.node.commit_index))
            assert victim.node.log.last_index > s  # the core's log grew during the install

        victim = await sc.start(sc.victim, fault)
        await _until(lambda: injected, 20, "the install")
        await _converged(sc)
        return True
    finally:
        await sc.stop_all()


def test_append_during_install_does_not_stop_the_node(tmp_path):
    """Issue 14 §3: compact or reset is chosen by the stored term at the snapshot index."""
    assert asyncio.run(_append_during_install(tmp_path))
