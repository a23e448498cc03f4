"""One seed of the simulation: raftd's own runtime (RaftServer, WAL, snapshot store, KV state
machine, client library) on a virtual loop, a simulated network and a simulated disk.

A run: start the nodes (and spares in join mode), the clients and an operator; a faulty phase
(crashes and restarts, crashes at snapshot-install steps, process pauses, partitions, a leader
cut off mid-change, connection resets, slow disks and links; membership changes and snapshots
asked through the admin requests, see membership.py); then the network heals, every node
restarts and the cluster must serve a write and converge.  Checked throughout: Raft's safety
invariants, the configuration invariant included (raftd.sim.checker, looking at each live
node's RaftNode every millisecond of virtual time); at the end: linearizability of the
clients' history (reads included), one state on every member of the final configuration, and
that no node stopped on a fatal error.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from random import Random

import raftd.client as rclient
from raftd.config import NodeConfig
from raftd.core import Configuration, Role
from raftd.core.node import RaftNode
from raftd.core.messages import AppendEntriesResponse, RequestVoteResponse
from raftd.runtime.clock import Clock
from raftd.runtime.server import RaftServer
from raftd.runtime.snapshotting import INSTALL_STEPS
from raftd.runtime.transport import PeerLink
from raftd.sim.checker import SafetyChecker, SafetyViolation

from .disk import ModelDisk, SimDisk
from .lincheck import History, check_linearizable
from .loop import HOST, VirtualLoop
from .membership import MembershipDriver
from .net import NetParams, SimNet

_PORT = 7100  # virtual: nothing listens on a real port
_WALL0 = 1_800_000_000.0


@dataclass
class SimParams:
    nodes: int = 5
    clients: int = 3
    keys: int = 3
    faulty_s: float = 2.0  # virtual seconds of faults
    settle_s: float = 4.0  # after healing: a write must succeed and the nodes converge
    crash_p: float = 0.35  # per fault event
    partition_p: float = 0.3
    # The WAL and snapshot store on raftd.storage.fsmodel (power-loss rules per sector and
    # per directory fsync; the default), or (False: --memory-disk) on real files truncated to
    # their fsynced length at a crash.
    disk_model: bool = True
    pause_p: float = 0.2  # a process stops for a while and resumes (SIGSTOP, GC, VM stall)
    # Membership changes (Raft §6) through the operator's request path; the spares start
    # empty in join mode and are the only servers a change may add (ids are never reused).
    membership: bool = True
    spares: int = 3


class SimFailure(AssertionError):
    pass


class _Observed:
    """What the safety checker looks at: a node id and its RaftNode."""
    __slots__ = ("id", "raft")

    def __init__(self, nid: str, raft) -> None:
        self.id, self.raft = nid, raft


class SimNode:
    def __init__(self, nid: str, host: str, cfg: NodeConfig):
        self.id, self.host, self.cfg = nid, host, cfg
        self.server: RaftServer | None = None
        self.incarnation = 0


def _server(n: SimNode) -> RaftServer:
    """The server of a node the caller knows is up."""
    assert n.server is not None, f"{n.id} is down"
    return n.server


def _raft(n: SimNode) -> RaftNode:
    """The core of a node the caller knows is up and started."""
    raft = _server(n).node
    assert raft is not None, f"{n.id} has not started"
    return raft


class SimCluster:
    def __init__(self, seed: int, params: SimParams | None = None, trace: bool = False):
        self.seed = seed
        self.p = params or SimParams()
        self.rng = Random(seed)
        self.trace_on = trace
        self.trace: list[str] = []
        self.loop = VirtualLoop()
        self.net = SimNet(self.loop, Random(self.rng.getrandbits(64)), self._net_params())
        self.disk = SimDisk(Random(self.rng.getrandbits(64)))
        self.model_disk = (ModelDisk(Random(self.rng.getrandbits(64))) if self.p.disk_model
                           else None)
        self.dir = tempfile.mkdtemp(prefix=f"raftd-simrt-{seed}-")
        spares = self.p.spares if self.p.membership else 0
        ids = [f"n{i + 1}" for i in range(self.p.nodes + spares)]
        listen = {nid: f"10.0.0.{i + 1}:{_PORT}" for i, nid in enumerate(ids)}
        peers = {nid: listen[nid] for nid in ids[:self.p.nodes]}
        inline = self.rng.choice([False, False, True])  # saves on the disk thread or the loop
        append_limit = self.rng.choice([1, 4, 512])  # entries per AppendEntries
        # How long a disk job (write + fsync) takes: SSDs to cloud volumes.
        self.fsync_time = self.rng.choice([(0.0005, 0.004), (0.002, 0.02)])
        # Snapshots often and logs compacted close behind them, or rarely.
        snap_every = self.rng.choice([10, 20, 50, 200])
        snap_trailing, snap_keep = self.rng.choice([(5, 2), (0, 1), (2, 1)])
        self.install_crash_p = self.rng.choice([0.0, 0.2, 0.5])  # per snapshot install
        self._install_crash_at: dict[str, str | None] = {}
        self._faults_on = True  # the faulty phase (crash points fire only then)
        self.nodes = {nid: SimNode(nid, f"10.0.0.{i + 1}", NodeConfig(
            id=nid, listen=listen[nid], data_dir=f"{self.dir}/{nid}",
            peers=peers if nid in peers else {}, join=nid not in peers,
            tick_ms=10, election_timeout_ms=150, heartbeat_interval_ms=30, inline_fsync=inline,
            snapshot_entries=snap_every, snapshot_trailing=snap_trailing, snapshot_keep=snap_keep,
            client_idle_timeout_ms=0, catchup_round_timeout_ms=2000,
            max_append_entries=append_limit))
            for i, nid in enumerate(ids)}
        self.members = MembershipDriver(self, Random(self.rng.getrandbits(64)),
                                        ids[self.p.nodes:])
        self.checker = SafetyChecker(ids, Configuration.make(peers, addresses=peers),
                                     self.members.on_committed)
        self.loop.set_exception_handler(self._loop_error)
        self.history = History(clock=self.loop.time)
        self.failure: BaseException | None = None
        self.stats = {"crashes": 0, "restarts": 0, "partitions": 0, "ops": 0, "ok_ops": 0,
                      "fatal": 0, "pauses": 0, "bursts": 0, "operator_snapshots": 0,
                      "install_crashes": 0, "conf_attempts": 0, "conf_changed": 0,
                      "conf_refused": 0, "joint_committed": 0}
        self._main: asyncio.Task | None = None
        self._clients_run = True
        self._ids = Random(self.rng.getrandbits(64))
        self._leader_commits: dict[str, tuple[int, int] | None] = {}
        self._dup = (self.rng.choice([0.0, 0.01, 0.05]), self.rng.choice([0.0, 0.03, 0.1]))

    def _net_params(self) -> NetParams:
        # Swarm testing: each seed draws its own fault mix (TigerBeetle's VOPR does the same).
        r = self.rng
        return NetParams(connect_fail_p=r.choice([0.0, 0.02, 0.1]),
                         reset_p=r.choice([0.0, 0.0005, 0.003]),
                         slow_p=r.choice([0.0, 0.02, 0.1]))

    def _loop_error(self, loop, context: dict) -> None:
        # Tasks of a crashed node end cancelled mid-flight; asyncio reports some of them.
        self.log(f"[{HOST.get()}] loop: {context.get('message')} {context.get('exception')!r}")

    def log(self, text: str) -> None:
        if self.trace_on:
            self.trace.append(f"{self.loop.time() - 1000:9.4f} {text}")

    # ------------------------------------------------------------------ nodes --
    def start(self, n: SimNode) -> None:
        n.incarnation += 1
        clock = Clock(monotonic=self.loop.time, wall=lambda: _WALL0 + self.loop.time(),
                      perf=self.loop.time)
        srv = RaftServer(n.cfg, rng_seed=self.rng.getrandbits(64), clock=clock,
                         executor=self.disk.executor(self.loop, n.host, self.fsync_time))
        apply = srv.fsm.apply_entry

        def observed_apply(entry, _nid=n.id):
            self.checker.applied(_nid, entry)
            return apply(entry)
        srv.fsm.apply_entry = observed_apply  # type: ignore[method-assign]  # observation only: the state machine is real
        send = srv._send  # noqa: SLF001

        def observed_send(msg, _nid=n.id, _srv=srv):
            self._check_persisted_before_send(_nid, _srv, msg)
            return send(msg)
        srv._send = observed_send  # type: ignore[method-assign]  # noqa: SLF001 - observation only
        handle_ready = srv._handle_ready  # noqa: SLF001

        async def observed_ready(rd, _nid=n.id, _srv=srv):
            self._check_leader_commit(_nid, _srv.node)
            return await handle_ready(rd)
        srv._handle_ready = observed_ready  # type: ignore[method-assign]  # noqa: SLF001 - observation only
        srv.install_fault = lambda step, _n=n, _srv=srv: self._install_step(_n, _srv, step)
        n.server = srv
        self.checker.node_started(n.id)
        self.net.restart(n.host)
        ctx = contextvars.copy_context()
        ctx.run(HOST.set, n.host)
        self.loop.create_task(self._start(n, srv), context=ctx)
        self.log(f"{n.id} start (incarnation {n.incarnation})")

    async def _start(self, n: SimNode, srv: RaftServer) -> None:
        try:
            await srv.start()
        except Exception as e:  # noqa: BLE001 - a node that cannot recover is a finding
            self._fail(SimFailure(f"{n.id} failed to restart: {e!r}"))

    def crash(self, n: SimNode, power_loss: bool = True) -> None:
        srv, n.server = n.server, None
        if srv is None:
            return
        self.stats["crashes"] += 1
        self.log(f"{n.id} crash")
        self.net.crash(n.host)
        self.loop.forget(n.host)  # if it was paused: what it was held from never runs
        for t in list(self.loop.tasks_by_host.get(n.host, ())):
            t.cancel()
        if srv.storage is not None:
            srv.storage.close()  # the process's descriptors go with it
        self.disk.crash(n.host, n.cfg.data_dir)
        if self.model_disk is not None:
            self.model_disk.crash(n.host, power_loss)
        srv._dir_lock.release()  # noqa: SLF001 - the kernel drops a dead process's flock

    def _schedule_disk_errors(self) -> None:
        """With the disk model: a few disk errors during the faulty phase (drawn from the
        disk's own generator, so the other faults of a seed stay as they are)."""
        assert self.model_disk is not None
        rng = self.model_disk.rng
        for _ in range(rng.randrange(0, 3)):
            n = rng.choice(list(self.nodes.values()))
            self.loop.call_later(rng.uniform(0.1, self.p.faulty_s), self._disk_error, n)

    def _disk_error(self, n: SimNode) -> None:
        disk = self.model_disk
        assert disk is not None
        if n.server is None or not self._faults_on or n.host in disk.injected:
            return
        what = disk.inject(n.host)
        self.log(f"{n.id}: {what}")

    def _pause(self, nodes: list[SimNode]) -> None:
        """Stop a process (the leader, mostly) for a while without crashing it: its timers,
        socket reads and disk jobs wait; its clock does not (it jumps on resume).  A deposed
        leader that resumes must not serve a read the new leader's writes made stale (thesis
        §6.4: the ReadIndex heartbeat round).  Now and then its peers' links stay cut a while
        after it resumes (their keepalives gave up on it), while clients still reach it."""
        up = [n for n in nodes if n.server is not None and n.server.node is not None]
        if not up:
            return
        leaders = [n for n in up if _raft(n).role == Role.LEADER]
        n = self.rng.choice(leaders if leaders and self.rng.random() < 0.7 else up)
        inc = n.incarnation
        length = self.rng.uniform(0.1, 0.8)
        self.loop.pause(n.host)
        self.stats["pauses"] += 1
        self.log(f"{n.id} paused for {length * 1000:.0f} ms")
        isolated = self.rng.random() < 0.5
        if isolated:
            self.net.isolate(n.host, {m.host for m in nodes if m is not n})
            self.log(f"{n.id} cut off from the other servers (clients still reach it)")

        def resume() -> None:
            if n.incarnation == inc and n.server is not None:
                self.loop.resume(n.host)
                self.log(f"{n.id} resumed")
            if isolated:
                self.loop.call_later(self.rng.uniform(0.05, 0.4), rejoin)

        def rejoin() -> None:
            self.net.rejoin(n.host)
            self.log(f"{n.id} reachable again")
        self.loop.call_later(length, resume)

    async def _burst_to(self, n: SimNode, k: int) -> None:
        async with rclient.AsyncClient([n.cfg.listen], timeout=0.3, tls=False) as c:
            await self._burst(c, None, k)

    def isolate_leader(self, length: float, burst: bool = False,
                       voters_only: bool = False) -> None:
        """Cut the leader off from the other servers (``voters_only``: from the other voters;
        learners and spares stay with it) for ``length`` seconds (clients still reach it):
        aimed at a membership change in flight, this leaves configuration entries that never
        commit in its log, for a later leader's log or snapshot to overwrite."""
        up = [n for n in self.nodes.values() if n.server is not None and n.server.node
              and n.server.node.role == Role.LEADER]
        if not up or not self._faults_on:
            return
        n = max(up, key=lambda m: _raft(m).term)
        cut = [m for m in self.nodes.values() if m is not n
               and (not voters_only or _raft(n).config.is_voter(m.id))]
        self.net.isolate(n.host, {m.host for m in cut})
        self.log(f"{n.id} (leader) cut off from {', '.join(m.id for m in cut)} for "
                 f"{length * 1000:.0f} ms")
        if burst:
            # Clients that still see it as the leader: a tail of writes that never commit.
            ctx = contextvars.copy_context()
            ctx.run(HOST.set, "burst")
            self.loop.create_task(self._burst_to(n, self.rng.randrange(4, 24)), context=ctx)

        def rejoin() -> None:
            self.net.rejoin(n.host)
            self.log(f"{n.id} reachable again")
        self.loop.call_later(length, rejoin)

    def _install_step(self, n: SimNode, srv: RaftServer, step: str) -> None:
        """The runtime's failpoint at each step of a snapshot install (snapshotting.py): a
        crash there, now and then (what FoundationDB calls buggify), and a restart soon after.
        Every step must leave a node that recovers."""
        if n.server is not srv or not self._faults_on:
            return
        if step == INSTALL_STEPS[0]:  # one crash point per install at most, drawn at its start
            self._install_crash_at[n.id] = (self.rng.choice(INSTALL_STEPS)
                                            if self.rng.random() < self.install_crash_p
                                            else None)
        if self._install_crash_at.get(n.id) != step:
            return
        self.stats["install_crashes"] += 1
        self.log(f"{n.id} crashes during a snapshot install, at step {step!r}")
        self.crash(n)
        self.loop.call_later(self.rng.uniform(0.001, 0.1), self._restart, n)
        raise asyncio.CancelledError  # the process is gone: the install goes no further

    def _restart(self, n: SimNode) -> None:
        if n.server is None and self.failure is None:
            self.stats["restarts"] += 1
            self.start(n)

    # ------------------------------------------------------------------ checks --
    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            if self._main is not None:
                self._main.cancel()

    def _check_persisted_before_send(self, nid: str, srv: RaftServer, msg) -> None:
        """Raft Figure 2: persistent state is on stable storage before responding.  The WAL's
        in-memory view changes only once a save is written and fsynced."""
        st = srv.storage
        assert st is not None  # messages are sent only once the WAL is open
        if isinstance(msg, AppendEntriesResponse) and msg.success:
            if st.last_index < msg.match_index:
                self._fail(SafetyViolation(f"{nid} acknowledged entries up to "
                                           f"{msg.match_index} with only {st.last_index} on disk"))
        elif isinstance(msg, RequestVoteResponse) and msg.granted:
            # The vote, or a later term (saves of two Readies may share one write: then the
            # vote itself never reached the disk, but no vote in its term can follow).
            hs = st.hard_state
            if hs.term < msg.term or (hs.term == msg.term and hs.voted_for != msg.dst):
                self._fail(SafetyViolation(f"{nid} granted its vote to {msg.dst} in term "
                                           f"{msg.term} with term {hs.term}, vote "
                                           f"{hs.voted_for} on disk"))

    def _check_leader_commit(self, nid: str, raft) -> None:
        """Raft §5.4.2: a leader advances its commit index by counting replicas only to an
        entry of its own term (earlier ones commit with it, never alone)."""
        seen = self._leader_commits.get(nid)
        now = (raft.term, raft.commit_index) if raft.role == Role.LEADER else None
        self._leader_commits[nid] = now
        if now and seen and seen[0] == now[0] and now[1] > seen[1] and \
                raft.log.term_at(now[1]) not in (None, raft.term):
            self._fail(SafetyViolation(
                f"leader {nid} (term {raft.term}) committed index {now[1]} of term "
                f"{raft.log.term_at(now[1])} by counting replicas"))

    def _check_log_keeps_committed(self, nid: str, raft) -> None:
        """A log never loses an entry at or below its own commit index."""
        log = raft.log
        if raft.commit_index > log.last_index:
            raise SafetyViolation(f"{nid}: commit index {raft.commit_index} is past the end "
                                  f"of its log ({log.last_index}): committed entries removed")

    def _observe(self) -> None:
        try:
            for n in self.nodes.values():
                srv = n.server
                if srv is None or srv.node is None:
                    continue
                if srv.exit_code and self.model_disk is not None and \
                        self.model_disk.injected.pop(n.host, ""):
                    # Expected: a node fail-stops on a disk error (EIO, ENOSPC) and is
                    # restarted; nothing it acknowledged may be lost (issue 15 §2).
                    self.model_disk.fail_stops += 1
                    self.log(f"{n.id} stopped on the injected disk error; restarting it")
                    self.crash(n, power_loss=False)
                    self.loop.call_later(self.rng.uniform(0.05, 0.3), self._restart, n)
                    continue
                if srv.exit_code:
                    raise SimFailure(f"{n.id} stopped on a fatal error (exit code "
                                     f"{srv.exit_code}); see --trace")
                if self.checker.observe(_Observed(n.id, srv.node), 0):  # (False: unchanged)
                    self._check_log_keeps_committed(n.id, srv.node)
        except (SafetyViolation, SimFailure) as e:
            self._fail(e)
            return
        self.loop.call_later(0.001, self._observe)

    # ------------------------------------------------------------------ clients --
    async def _client(self, cid: str) -> None:
        endpoints = [n.cfg.listen for n in self.nodes.values()]
        rng = Random(self.rng.getrandbits(64))
        async with rclient.AsyncClient(endpoints, timeout=1.0, tls=False) as c:
            while self._clients_run:
                if rng.random() < 0.05:
                    await self._burst(c, rng)
                else:
                    await self._one_op(c, cid, rng)
                await asyncio.sleep(rng.uniform(0, 0.02))

    async def _burst(self, c, rng: Random | None, k: int = 0) -> None:
        """Many writes in flight at once on one connection (pipelined requests, group
        commit, long uncommitted tails on a leader about to be deposed).  Keys of their own,
        outside the checked history: load, not evidence."""
        async def put(j: int) -> None:
            try:
                await c.put(f"load{j % 4}", f"burst-{self.stats['ops']}-{j}")
            except (rclient.ClientError, OSError, asyncio.TimeoutError):
                pass
        self.stats["bursts"] += 1
        if not k:
            assert rng is not None, "a burst of a random size needs a generator"
            k = rng.randrange(4, 16)
        await asyncio.gather(*(put(j) for j in range(k)))

    async def _one_shot_get(self, key: str, rng: Random) -> bytes | None:
        """A read from a client that starts, asks one server it picked (like raftctl get
        against one endpoint), follows its redirect and exits: unlike a long-lived client, it
        may land on a deposed leader that does not know it yet."""
        endpoints = [n.cfg.listen for n in self.nodes.values()]
        first = rng.randrange(len(endpoints))
        async with rclient.AsyncClient(endpoints[first:] + endpoints[:first], timeout=1.0,
                                       tls=False) as c:
            c._rr = -1  # noqa: SLF001 - start at the endpoint picked (the client rotates first)
            return await c.get(key)

    async def _one_op(self, c, cid: str, rng: Random) -> None:
        key = f"k{rng.randrange(self.p.keys)}"
        kind = rng.choice(["put", "put", "get", "get", "cas", "delete"])
        value = f"{cid}-{self.stats['ops']}"
        self.stats["ops"] += 1
        expected = None
        if kind == "cas":
            expected = rng.choice([None] + [o.value for o in self.history.ops[-8:]
                                           if o.key == key and o.value])
        op = self.history.invoke(cid, kind, key, value if kind in ("put", "cas") else None,
                                 expected)
        try:
            if kind == "put":
                await c.put(key, value)
                self.history.ok(op, None)
            elif kind == "get":
                if rng.random() < 0.25:
                    v = await self._one_shot_get(key, rng)
                else:
                    v = await c.get(key)
                self.history.ok(op, v.decode() if v is not None else None)
            elif kind == "delete":
                self.history.ok(op, await c.delete(key))
            else:
                self.history.ok(op, await c.cas(key, expected, value))
            self.stats["ok_ops"] += 1
        except rclient.RequestError:
            if kind == "get":
                self.history.fail(op)
            else:
                self.history.unknown(op)
        except (rclient.ClientError, OSError, asyncio.TimeoutError):
            if kind == "get":
                self.history.fail(op)
            else:
                self.history.unknown(op)  # may or may not have been applied

    # ------------------------------------------------------------------ the run --
    async def _scenario(self) -> None:
        for n in self.nodes.values():
            self.start(n)
        self._observe()
        clients = []
        for i in range(self.p.clients):
            ctx = contextvars.copy_context()
            ctx.run(HOST.set, f"client{i}")
            clients.append(self.loop.create_task(self._client(f"c{i}"), context=ctx))
        if self.model_disk is not None:
            self._schedule_disk_errors()
        if self.p.membership:
            ctx = contextvars.copy_context()
            ctx.run(HOST.set, "admin")
            clients.append(self.loop.create_task(
                self.members.run([n.cfg.listen for n in self.nodes.values()]), context=ctx))
        end = self.loop.time() + self.p.faulty_s
        hosts = [n.host for n in self.nodes.values()]
        nodes = list(self.nodes.values())
        while self.loop.time() < end:
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
            r = self.rng.random()
            down = [n for n in nodes if n.server is None]
            if r < self.p.crash_p:
                # One process, or several at once (a power failure): only fsynced bytes
                # survive, which is what acknowledgements and votes must rest on.
                k = 1 if self.rng.random() < 0.5 else self.rng.randrange(2, len(nodes) + 1)
                bounce = self.rng.random() < 0.5  # a supervisor restarts it at once
                for victim in self.rng.sample(nodes, k):
                    if victim.server is not None:
                        self.crash(victim)
                        if bounce:
                            self.loop.call_later(self.rng.uniform(0.001, 0.05),
                                                 self._restart, victim)
            elif r < self.p.crash_p + self.p.partition_p:
                self.rng.shuffle(hosts)
                cut = self.rng.randrange(1, len(hosts))
                self.net.partition([set(hosts[:cut]), set(hosts[cut:])], sorted(hosts))
                self.stats["partitions"] += 1
                self.log(f"partition {sorted(hosts[:cut])} | {sorted(hosts[cut:])}")
            elif r < self.p.crash_p + self.p.partition_p + self.p.pause_p:
                self._pause(nodes)
            else:
                self.net.heal()
                self.log("heal")
            for n in down:
                if self.rng.random() < 0.5:
                    self._restart(n)
        # Heal everything: the cluster must serve again and converge (liveness).
        self.net.heal()
        for n in nodes:
            self.loop.resume(n.host)
            self.net.rejoin(n.host)
        self._faults_on = False
        if self.model_disk is not None:
            self.model_disk.make_room()
        self.log("heal all, resume all, restart all")
        self.members.run_flag = False
        for n in nodes:
            if n.server is None:
                self.start(n)
        await asyncio.sleep(self.p.settle_s / 2)
        self._clients_run = False
        await asyncio.wait(clients, timeout=5.0)
        await self._final_write()
        await self._converged()

    async def _final_write(self) -> None:
        ctx = contextvars.copy_context()
        ctx.run(HOST.set, "checker")

        async def write() -> None:
            async with rclient.AsyncClient([n.cfg.listen for n in self.nodes.values()],
                                           timeout=self.p.settle_s, tls=False) as c:
                op = self.history.invoke("final", "put", "k0", "final")
                await c.put("k0", "final")
                self.history.ok(op, None)
        try:
            await self.loop.create_task(write(), context=ctx)
        except rclient.ClientError as e:
            raise SimFailure(f"liveness: no write succeeded {self.p.settle_s}s after the "
                             f"network healed: {e}") from None

    async def _converged(self) -> None:
        """The members of the configuration in force apply the same state up to the commit
        index; servers outside it (removed, or never added) may lag for ever."""
        # A follower that crashed after installing a snapshot, before its answer left, gets
        # nothing from the leader until the leader gives the transfer up, 30 election
        # timeouts later (raftd/core node.py, _broadcast_heartbeat): allow for that.
        cfg = next(iter(self.nodes.values())).cfg
        give_up = 30 * cfg.election_timeout_ms / 1000
        deadline = self.loop.time() + self.p.settle_s + give_up
        while True:
            members = self.checker.latest_config()[1].members
            up = [n for n in self.nodes.values() if n.id in members and n.server is not None
                  and n.server.node]
            states = {n.id: (_server(n).fsm.applied_index, _server(n).fsm.digest()) for n in up}
            leader_commit = max(_raft(n).commit_index for n in up)
            if len(set(states.values())) == 1 and \
                    next(iter(states.values()))[0] >= leader_commit:
                return
            if self.loop.time() > deadline:
                raise SimFailure(f"the nodes did not converge {self.p.settle_s + give_up:g}s "
                                 f"after the network healed: (applied index, digest) {states}")
            await asyncio.sleep(0.05)

    def run(self) -> "SimCluster":
        with _patched_client(self._ids), _quiet(self.trace_on, self), \
                _duplicating_links(Random(self.rng.getrandbits(64)), *self._dup):
            self.disk.install()
            if self.model_disk is not None:
                self.model_disk.install()
            try:
                self.loop.time_limit = self.loop.time() + self.p.faulty_s + 4 * self.p.settle_s + 15
                self._main = self.loop.create_task(self._scenario())
                try:
                    self.loop.run_until_complete(self._main)
                except asyncio.CancelledError:
                    pass
                if self.failure is None:
                    res = check_linearizable(self.history.ops, timeout_s=60)
                    if not res.ok:
                        self.failure = SimFailure(f"linearizability: {res.explanation}")
            finally:
                if self.model_disk is not None:
                    self.model_disk.uninstall()
                self.disk.uninstall()
                self._teardown()
        if self.failure is not None:
            raise self.failure
        return self

    def _teardown(self) -> None:
        for n in self.nodes.values():
            if n.server is not None:
                self.crash(n)
        for tasks in self.loop.tasks_by_host.values():
            for t in tasks:
                t.cancel()
        for _ in range(3):
            try:
                self.loop.run_until_complete(asyncio.sleep(0))
            except Exception:  # noqa: BLE001 - a stuck run: its first error is reported
                break
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def _duplicating_links(rng: Random, dup_p: float, stale_p: float):
    """Raft messages duplicated, and old ones sent again later (reordered), as a network of
    retransmitting proxies would: what the connection-level network alone never does."""
    send = PeerLink.send
    held: list = []

    def faulty_send(self, msg) -> None:
        send(self, msg)
        r = rng.random()
        if r < dup_p:
            send(self, msg)
        elif r < dup_p + stale_p:
            if len(held) >= 64:
                held.pop(0)
            held.append((self, msg))
        if held and rng.random() < stale_p:
            link, old = held.pop(rng.randrange(len(held)))
            send(link, old)
    PeerLink.send = faulty_send  # type: ignore[method-assign]
    try:
        yield
    finally:
        PeerLink.send = send  # type: ignore[method-assign]


@contextlib.contextmanager
def _patched_client(ids: Random):
    """The real client library, connecting through the loop's simulated network (its own
    _open makes a real socket) and drawing session ids from the seed."""
    async def _open(self):
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host, int(port))

    class _Uuid:
        @staticmethod
        def uuid4():
            return uuid.UUID(int=ids.getrandbits(128))
    saved = (rclient._Connection._open, rclient.uuid)  # noqa: SLF001 - the simulator swaps the client's connection for its network
    rclient._Connection._open, rclient.uuid = _open, _Uuid  # type: ignore[method-assign, assignment]  # noqa: SLF001 - the simulator swaps the client's connection for its network
    try:
        yield
    finally:
        rclient._Connection._open, rclient.uuid = saved  # type: ignore[method-assign]  # noqa: SLF001 - the simulator swaps the client's connection for its network


@contextlib.contextmanager
def _quiet(trace: bool, cluster: SimCluster):
    log = logging.getLogger("raftd")
    handler = None
    saved = log.level, log.propagate
    if trace:
        handler = _TraceHandler(cluster)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.setLevel(logging.CRITICAL + 1)
    log.propagate = False
    try:
        yield
    finally:
        log.setLevel(saved[0])
        log.propagate = saved[1]
        if handler is not None:
            log.removeHandler(handler)


class _TraceHandler(logging.Handler):
    def __init__(self, cluster: SimCluster):
        super().__init__()
        self.cluster = cluster

    def emit(self, record: logging.LogRecord) -> None:
        self.cluster.log(f"[{HOST.get()}] {record.levelname.lower()}: {record.getMessage()}")
