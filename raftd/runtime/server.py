"""The raftd runtime: the only place that turns sockets, timers and the disk into core calls.

One asyncio loop owns the RaftNode.  Socket readers, the ticker and client handlers call into
the node directly (they run on the same loop, one at a time) and wake the driver, which hands
each Ready to the disk and then to the network and the state machine, in the order ready.py
prescribes.  Saves are pipelined: while one fsync runs, new proposals and messages keep reaching
the node and new Readies are taken; their early messages leave, the rest queues behind the save,
and everything queued shares the next write and fsync (group commit).

    client put ──> propose() ──> Ready.entries ──> WAL.save + fdatasync ──> persisted()
                                  Ready.messages ──> peers (AppendEntries)  <── acks: step()
                       commit ──> Ready.committed_entries ──> KVStateMachine.apply ──> reply
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any
from random import Random

from raftd.config import NodeConfig, split_address
from raftd.core import (Configuration, Entry, EntryKind, InstallSnapshot,
                        InvalidConfChangeError, NotLeaderError, ProposalDroppedError, RaftConfig,
                        RaftNode, Ready, Role, SoftState)
from raftd.core.messages import AppendEntries, Message
from raftd.kv.commands import Command, Op, encode_command, encode_limits
from raftd.kv.fsm import KVStateMachine
from raftd.storage.install import log_gap
from raftd.storage.lock import DataDirLock
from raftd.storage.wal import DurableLog
from raftd.tls import NodeTLS, TLSConfigError
from raftd.wire.codec import ErrorCode, error_reply

from .clock import SYSTEM_CLOCK, Clock, ExecutorFactory, thread_executor
from .clusterclock import ClusterClock
from .connections import Connections
from .connguard import ConnectionGuard
from .identity import ClusterIdentity, ClusterIdError
from .metrics import RaftMetrics
from .reconfig import Reconfigurator, describe_configuration
from .removed import RemovedIds
from .requests import ClientRequests
from .savepipeline import SavePipeline
from .snapshotting import Snapshotter
from .startup import StartupError, prepare_data_dir
from .transport import PeerLink

log = logging.getLogger("raftd")

# Errors of the state machine that the client must see by name (not as bad_request).
_FSM_ERRORS = ("session_expired", "stale_sequence")
_MAX_EVENTS = 200


class RaftServer(SavePipeline, ClientRequests, Connections):
    def __init__(self, cfg: NodeConfig, *, rng_seed: int | None = None,
                 clock: Clock = SYSTEM_CLOCK, executor: ExecutorFactory = thread_executor,
                 state_machine: KVStateMachine | None = None) -> None:
        """``clock``, ``executor`` and ``state_machine`` are the parts the simulator replaces
        (raftd.simrt): the daemon passes nothing and gets the system clock, worker threads
        and the KV state machine.  The runtime serves sessions and reads, which only
        KVStateMachine has, so that is the type (the snapshot code needs only
        statemachine.StateMachine)."""
        self.cfg = cfg
        self.node_id = cfg.id
        self.sysclock = clock
        self.new_executor = executor
        self.started_at = clock.wall()
        self._rng = Random(rng_seed if rng_seed is not None else int.from_bytes(os.urandom(8)))
        self.storage = None
        # Failpoint (tests): called with each snapshot-install step's name, set before start().
        self.install_fault: Callable[[str], None] | None = None
        self._dir_lock = DataDirLock(cfg.data_dir)
        self.node = None
        # Session limits start at the state machine's defaults on every node: they are
        # replicated state, changed only through the log (_propose_session_limits).
        self.fsm = state_machine if state_machine is not None else KVStateMachine()
        self.clock = ClusterClock(clock.monotonic)
        self._limits_term = -1
        self.peers = {}
        self._wake = asyncio.Event()
        self._disk = executor("raftd-disk")
        self._disk_jobs = 0
        self._saves = []  # Readies waiting for the disk writer, in order
        self._disk_writer = None
        self._saves_idle = None
        self._hs_unsaved = 0  # queued or in-flight saves that carry a new term or vote
        self._disk_failed = False  # a save failed: nothing may be finished or sent any more
        # inline_fsync auto: saves go to the disk thread until then (monotonic seconds)
        self._inline_until = 0.0
        self._inline_limit_s = cfg.heartbeat_interval_ms / 4000
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.metrics = None
        # peer -> {match_index an AppendEntries will produce: send time}, for the RTT histogram
        self._append_sent = {}
        self._server: asyncio.base_events.Server | None = None
        self._pending_writes = {}  # log index -> requests.PendingWrite
        self._read_ids = 0
        self._pending_reads = {}
        self._reads_waiting_apply = []
        self._conns = {}  # (ordered: see ServerState)
        self._conn_tasks = {}  # their handlers, awaited by stop()
        self._conns_per_host = {}
        self.tls = None
        self.stopped = asyncio.Event()
        self._stopping = False
        self.exit_code = 0
        self.reconfig = Reconfigurator(self)
        self.peer_last_heard = {}
        # Listen addresses peers announced in HELLO: how a node that joined with an empty
        # configuration reaches the leader before the log tells it where everyone is.
        self.hello_addresses = {}  # peer -> its listen address (the newest few)
        self.last_leader_contact = None  # monotonic time of the last AppendEntries
        self._last_term = -1
        self.events: list[dict[str, object]] = []  # recent events ring (status)
        self.counters = {"proposals": 0, "fsyncs": 0, "fsync_seconds": 0.0,
                         "leader_changes": 0, "bad_frames": 0, "client_requests": 0,
                         "tls_handshake_failures": 0, "peers_refused": 0,
                         "cluster_id_refused": 0, "removed_refused": 0,
                         "peer_messages_dropped": 0, "permission_denied": 0,
                         "inline_fsync_backoffs": 0}
        self._dropped_logged = {}  # peer -> when we last logged a drop
        self._refusals_logged = {}  # host and reason -> (when last logged, refused since)
        # Requests refused by a limit (docs/SECURITY.md), by limit name.
        self.limit_rejections = {"frame_size": 0, "connections_per_address": 0,
                                 "request_rate": 0, "key_size": 0, "value_size": 0,
                                 "sessions": 0, "unsent_bytes": 0, "idle_connections": 0,
                                 "slow_frame_connections": 0}
        # A list reply stays well under a frame (issue 19 §13: 17.8 MB replies were refused
        # by every client, which then retried for ever).
        self._page_bytes = min(4 << 20, cfg.max_frame_size // 2)
        self.guard = ConnectionGuard(cfg.client_idle_timeout_ms / 1000,
                                     cfg.frame_timeout_ms / 1000, self._connection_timed_out)

    # ------------------------------------------------------------------ lifecycle --
    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # Refused or failed to start: leave the port and the directory free for the next
            # attempt (in-process restarts in tests; the process exits otherwise).
            try:
                if self._server is not None:
                    self._server.close()
                if self.storage is not None:
                    self.storage.close()
            finally:
                self._dir_lock.release()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        prepare_data_dir(cfg, self._dir_lock)
        try:
            self.identity = ClusterIdentity(cfg)
        except ClusterIdError as e:
            raise StartupError(str(e)) from None
        if cfg.tls is not None:
            try:
                self.tls = NodeTLS(cfg.tls)
            except TLSConfigError as e:
                raise StartupError(str(e)) from None
            self._log_tls(self.tls, "TLS on")
        self._recover()
        self._server = await asyncio.start_server(self._on_connection, cfg.host, cfg.port,
                                                  reuse_address=True)
        if cfg.metrics_listen:
            metrics = self.metrics = RaftMetrics(self.status)
            metrics.update(self.status())
            mhost, mport = split_address(cfg.metrics_listen)
            log.info("metrics on http://%s:%d/metrics", mhost, metrics.start(mhost, mport))
        self._write_pid()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drive(), name="drive"),
                       loop.create_task(self._ticker(), name="ticker"),
                       loop.create_task(self._guard_connections(), name="guard")]
        for t in self._tasks:
            t.add_done_callback(self._on_task_done)
        log.info("listening on %s", cfg.listen)

    def _recover(self) -> None:
        """Open the WAL and the newest valid snapshot and rebuild the node from them."""
        cfg = self.cfg
        st = self.storage = DurableLog.open(os.path.join(cfg.data_dir, "wal"), fsync=cfg.fsync,
                                            preallocate=cfg.wal_preallocate_bytes)
        self.snapshots = Snapshotter(self)
        snap = self.snapshots.recover()
        self.snapshots.reconcile(snap)  # a crash cut an install short (issue 14 §2, 21 §5)
        gap = log_gap(st, snap)
        if gap is not None:
            raise StartupError(f"the log in {cfg.data_dir}/wal {gap}; "
                               f"restore this node from a backup or another node")
        base = (Configuration(frozenset()) if cfg.join else
                Configuration.make(cfg.peers, addresses=cfg.peers))
        node = self.node = RaftNode(
            cfg.id,
            RaftConfig(election_ticks=cfg.election_ticks, heartbeat_ticks=cfg.heartbeat_ticks,
                       max_append_entries=cfg.max_append_entries,
                       max_append_bytes=cfg.max_append_bytes,
                       max_inflight_msgs=cfg.max_inflight_msgs, pre_vote=cfg.pre_vote,
                       check_quorum=cfg.check_quorum),
            self._rng, hard_state=st.hard_state, entries=st.all_entries(),
            snapshot_index=st.snapshot_index, snapshot_term=st.snapshot_term,
            base_configuration=base, snapshot=snap.meta if snap else None)
        try:
            # Removals are learned from committed configurations as they are applied; those
            # already applied (in the restored snapshot) are in the file.
            self.removed = RemovedIds(
                cfg.data_dir, node.configuration_at(self.fsm.applied_index).members)
        except ValueError as e:
            raise StartupError(str(e)) from None
        self._event("start", f"started with term {st.hard_state.term}, "
                             f"log {st.first_index}..{st.last_index}")
        log.info("recovered term=%d voted_for=%s log=[%d..%d] configuration: %s",
                 st.hard_state.term, st.hard_state.voted_for, st.first_index, st.last_index,
                 node.config.describe())

    def _log_tls(self, tls: NodeTLS, what: str) -> None:
        info = tls.info()
        log.info("%s: certificate %s (role %s), valid until %s (%s days)", what, info["name"],
                 info["role"], info["not_after"], info["days_left"])
        if info["warning"]:
            log.warning("%s", info["warning"])
        if info["name"] != self.node_id:
            log.warning("the TLS certificate is for %r but this node is %r: peers will refuse "
                        "it", info["name"], self.node_id)

    def reload_tls(self) -> None:
        """SIGHUP: load the certificate files again.  New connections (and peer links as they
        reconnect) use them; a failed reload keeps the running certificates."""
        if self.tls is None:
            log.info("SIGHUP: TLS is not configured; nothing to reload")
            return
        try:
            self.tls.load()
        except TLSConfigError as e:
            log.error("SIGHUP: certificate reload failed, keeping the current ones: %s", e)
            self._event("tls", f"certificate reload failed: {e}")
            return
        self._log_tls(self.tls, "SIGHUP: certificates reloaded")
        self._event("tls", f"certificates reloaded; valid until {self.tls.info()['not_after']}")

    async def _transfer_before_stop(self) -> None:
        target = self._best_transfer_target()
        if target is None:
            return
        try:
            self.core.transfer_leadership(target)
        except (InvalidConfChangeError, NotLeaderError) as e:
            log.info("no leadership transfer before stopping: %s", e)
            return
        log.info("stopping: transferring leadership to %s first", target)
        self.wake()
        deadline = self.sysclock.monotonic() + self.cfg.election_timeout_ms / 1000
        while self.core.role == Role.LEADER and self.sysclock.monotonic() < deadline:
            await asyncio.sleep(self.cfg.tick_ms / 1000)
        if self.core.role == Role.LEADER:
            log.warning("leadership transfer to %s did not finish in time", target)
        else:
            log.info("leadership transferred to %s", target)

    def _best_transfer_target(self) -> str | None:
        node = self.core
        voters = [p for p in node.progress if node.config.is_voter(p)]
        return max(voters, key=lambda p: node.progress[p].match_index, default=None)

    def _on_task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A failed fsync or a broken Raft invariant: stop rather than serve wrong answers.
        self.fatal(f"{task.get_name()} failed: {task.exception()!r}", task.exception())

    def fatal(self, reason: str, exc: BaseException | None = None) -> None:
        log.critical("stopping the node: %s", reason, exc_info=exc)
        self.exit_code = 1
        asyncio.get_running_loop().create_task(self.stop(transfer=False))

    def _write_pid(self) -> None:
        path = os.path.join(self.cfg.data_dir, "raftd.pid")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)

    async def stop(self, transfer: bool = True) -> None:
        """Stop cleanly.  A leader first hands leadership to the most up-to-date follower
        (thesis §3.10), so a planned restart costs clients no election timeout."""
        if self.stopped.is_set() or self._stopping:
            return
        self._stopping = True
        if transfer and self.node is not None and self.node.role == Role.LEADER:
            await self._transfer_before_stop()
        log.info("stopping")
        if self._server is not None:
            self._server.close()
        tasks = self._tasks + ([self._disk_writer] if self._disk_writer is not None else [])
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        for link in self.peers.values():
            await link.close()
        for w in list(self._conns):
            w.close()
        if self._conn_tasks:
            # Let the handlers see their closed connections and end on their own: cancelled
            # by asyncio.run instead, each logged a CancelledError traceback (Python 3.11's
            # StreamReaderProtocol callback), an ERROR in the log of every clean stop.
            await asyncio.wait(list(self._conn_tasks), timeout=2.0)
        if self.metrics is not None:
            self.metrics.stop()
        self._disk.shutdown(wait=True)
        try:
            if getattr(self, "snapshots", None) is not None:
                self.snapshots.close()
            if self.storage is not None:
                self.storage.close()
            try:
                os.unlink(os.path.join(self.cfg.data_dir, "raftd.pid"))
            except OSError:
                pass
        finally:
            self._dir_lock.release()
            self.stopped.set()

    # --------------------------------------------------------------- driver loop --
    async def _ticker(self) -> None:
        interval = self.cfg.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            if loop.time() - next_at > 10 * interval:
                next_at = loop.time() + interval  # we were paused (SIGSTOP): do not replay
            self.core.tick()
            if self.core.has_ready():  # else the driver would wake up to find nothing to do
                self._wake.set()
            if self.metrics is not None:
                self.metrics.maybe_refresh()

    async def _guard_connections(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.guard.sweep(self.sysclock.monotonic())

    def _connection_timed_out(self, reason: str) -> None:
        self.limit_rejections[f"{reason}_connections"] += 1

    async def _drive(self) -> None:
        node = self.core
        while True:
            await self._wake.wait()
            # Let every socket that is readable now deliver its requests and messages first,
            # so they share this Ready: one fsync and one AppendEntries for all of them.
            await asyncio.sleep(0)
            self._wake.clear()
            while node.has_ready():
                await self._handle_ready(node.ready())


    def _send(self, msg: Message) -> None:
        if isinstance(msg, InstallSnapshot):
            self.snapshots.send(msg, self._address_of(msg.dst))
            return
        link = self.peers.get(msg.dst)
        if link is None:
            address = self._address_of(msg.dst)
            if address is None:
                return  # not a server we know: no link to an address a stranger gave us
            link = PeerLink(self.node_id, msg.dst, address, self.cfg.host, self.cfg.cluster,
                            self.cfg.peer_queue_limit, own_address=self.cfg.listen,
                            tls=self.tls, cluster_id=lambda: self.identity.cluster_id)
            link.start()
            self.peers[msg.dst] = link
        if self.metrics is not None and isinstance(msg, AppendEntries):
            sent = self._append_sent.setdefault(msg.dst, {})
            if len(sent) < 4096:
                sent.setdefault(msg.prev_log_index + len(msg.entries), self.sysclock.perf())
        link.send(msg)

    def _address_of(self, nid: str) -> str | None:
        """Where ``nid`` listens: from the configuration, else the config file's peers, else
        the address it announced in HELLO.  The last is how a joining node answers the leader
        adding it, and a lagging one a leader its log does not name yet (thesis §4.1); at most
        _MAX_HELLO_ADDRESSES such ids are kept, so strangers cannot make this node hold links
        to any number of addresses (issue 19 §8)."""
        return (self.core.config.address_of(nid) or self.cfg.peers.get(nid)
                or self.hello_addresses.get(nid))

    def _on_soft_state(self, ss: SoftState) -> None:
        if ss.term != self._last_term:
            if self._last_term >= 0:
                self._event("term", f"term {self._last_term} -> {ss.term}")
            self._last_term = ss.term
        if ss.role != getattr(self, "_last_role", None):
            self._last_role = ss.role
            self._event("role", f"{self.node_id} became {ss.role} at term {ss.term}")
        prev_leader = getattr(self, "_last_leader", None)
        if ss.leader_id != prev_leader:
            self._last_leader = ss.leader_id
            if ss.leader_id is not None:
                self.counters["leader_changes"] += 1
                self._event("leader", f"leader is {ss.leader_id} (term {ss.term})")
        if ss.role == Role.LEADER:
            log.info("became leader at term %d", ss.term)
        else:
            log.info("%s at term %d (leader %s)", ss.role, ss.term, ss.leader_id or "unknown")
            self._fail_pending_writes()

    def _fail_pending_writes(self) -> None:
        """Leadership lost: the outcome of pending writes is unknown here.  Tell the clients
        to retry; their session (client_id, seq) makes a retry apply at most once."""
        pending, self._pending_writes = self._pending_writes, {}
        hint = self._leader_error("leadership changed before the write was confirmed; retry")
        for pw in pending.values():
            pw.conn.reply(pw.rid, error=hint)

    def _apply(self, rd: Ready) -> None:
        fsm = self.fsm
        pending = self._pending_writes
        snaps = self.snapshots
        normal = EntryKind.NORMAL
        for e in rd.committed_entries:
            snaps.bytes_since += len(e.data)
            if e.kind == EntryKind.CONFIG:
                self._config_committed(e)
            pw = pending.pop(e.index, None) if pending else None
            if pw is None:
                fsm.apply_entry(e)
                continue
            if pw.term != e.term:
                # Our proposal at this index was replaced by another leader's entry.
                fsm.apply_entry(e)
                pw.conn.reply(pw.rid, error=error_reply(ErrorCode.UNAVAILABLE, "write lost in "
                                                        "a leader change; retry"))
                continue
            # Same index and term: the entry is the one we proposed (Log Matching, §5.3).
            result = fsm.apply_command(e.index, pw.cmd) if e.kind == normal else \
                fsm.apply_entry(e)
            if result is not None and "error" in result:
                code = (ErrorCode(result["error"]) if result["error"] in _FSM_ERRORS
                        else ErrorCode.BAD_REQUEST)
                message = f"{result['error']}: {result.get('message', '')}".strip()
                pw.conn.reply(pw.rid, error=error_reply(code, message))
            else:
                pw.conn.reply(pw.rid, result)
        last = rd.committed_entries[-1]
        self.core.applied(last.index)
        if last.term > self._limits_term:
            self._propose_session_limits(last.term)

    def _config_committed(self, e: Entry) -> None:
        gone = self.removed.committed(Configuration.decode(e.data))
        for nid in sorted(gone):
            self._event("membership", f"{nid} removed: its id is refused from now on")

    def _propose_session_limits(self, applied_term: int) -> None:
        """Session limits are replicated state (see raftd.kv.fsm): once per term, after the
        leader has applied an entry of its own term (so the state machine reflects every
        earlier entry, §5.4.2), it proposes its configured limits if the cluster's differ."""
        node, fsm, cfg = self.core, self.fsm, self.cfg
        if node.role != Role.LEADER or applied_term != node.term:
            return
        self._limits_term = node.term
        wanted = (cfg.session_ttl_ms, cfg.max_sessions)
        if wanted == (fsm.session_ttl_ms, fsm.max_sessions):
            return
        cmd = Command(Op.SESSION_LIMITS, "", value=encode_limits(*wanted),
                      timestamp_ms=self.clock.now_ms(node.term, fsm.now_ms))
        try:
            node.propose(encode_command(cmd))
        except (NotLeaderError, ProposalDroppedError):
            return
        log.info("proposed session limits session_ttl_ms=%d max_sessions=%d (the cluster had "
                 "%d, %d)", *wanted, fsm.session_ttl_ms, fsm.max_sessions)
        self._wake.set()


    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def wake(self) -> None:
        self._wake.set()

    # -------------------------------------------------------------------- status --
    def _event(self, kind: str, text: str) -> None:
        self.events.append({"time": self.sysclock.wall(), "kind": kind, "text": text})
        if len(self.events) > _MAX_EVENTS:
            del self.events[:len(self.events) - _MAX_EVENTS]

    def status(self) -> dict:
        node = self.core
        cfg = node.config
        addresses = {**self.cfg.peers, **cfg.address_map()}
        st = node.status()
        st.update({
            "address": self.cfg.listen,
            "cluster_id": self.identity.cluster_id,
            "join": self.cfg.join,
            "removed_ids": sorted(self.removed.ids),
            "pid": os.getpid(),
            "applied_index": self.fsm.applied_index,
            "leader_address": addresses.get(node.leader_id) if node.leader_id else None,
            "configuration": {**describe_configuration(cfg),
                              "addresses": {k: v for k, v in addresses.items()
                                            if k in cfg.members or not cfg.members}},
            "last_leader_contact_ms": (0 if node.role == Role.LEADER else
                                       None if self.last_leader_contact is None else
                                       round((self.sysclock.monotonic()
                                              - self.last_leader_contact) * 1000)),
            "tick_ms": self.cfg.tick_ms,
            "election_timeout_ms": self.cfg.election_timeout_ms,
            "keys": len(self.fsm),
            "snapshots": {"count": self.snapshots.count, "last": self.snapshots.last,
                          "transfers": dict(self.snapshots.transfers),
                          "in_progress": self.snapshots.in_progress is not None},
            "fsm": dict(self.fsm.stats),
            # Replicated (identical on every node that applied as far): see raftd.kv.fsm.
            "sessions": {"count": len(self.fsm.sessions),
                         "session_ttl_ms": self.fsm.session_ttl_ms,
                         "max_sessions": self.fsm.max_sessions,
                         "cluster_time_ms": self.fsm.now_ms},
            "uptime_s": round(self.sysclock.wall() - self.started_at, 3),
            "counters": dict(self.counters),
            "limit_rejections": dict(self.limit_rejections),
            "tls": self.tls.info() if self.tls is not None else {"enabled": False},
            "storage": dict(self.wal.stats),
            "peers": {pid: {"connected": link.connected, "dropped": link.dropped,
                            "sent": link.sent}
                      for pid, link in sorted(self.peers.items())},
            "events": self.events[-50:],
        })
        return st
