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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from random import Random

from raftd.config import NodeConfig, split_address
from raftd.core import (Configuration, ConfChangeInProgressError, EntryKind, InstallSnapshot,
                        InvalidConfChangeError, LogCorruptionError, NotLeaderError,
                        ProposalDroppedError, RaftConfig,
                        RaftNode, Ready, Role)
from raftd.core.messages import AppendEntries, AppendEntriesResponse, PreVote, RequestVote
from raftd.core.ready import may_send_early
from raftd.kv.commands import Command, Op, encode_command, encode_limits, session_put
from raftd.kv.fsm import KVStateMachine
from raftd.storage.durable import mkdir_durable
from raftd.storage.lock import DataDirInUse, DataDirLock
from raftd.storage.wal import DurableLog
from raftd.tls import ROLE_NODE, NodeTLS, TLSConfigError, handshake_error, may
from raftd.wire.codec import (decode_hello, decode_message, decode_request, encode_client_response,
                              encode_error)
from raftd.wire.framing import (FrameDecoder, FrameTooLarge, FrameType, RemoteProtocolError,
                                 UnsupportedVersion)

from .clock import SYSTEM_CLOCK, Clock, ExecutorFactory, thread_executor
from .clusterclock import ClusterClock
from .connguard import ConnectionGuard
from .metrics import RaftMetrics
from .identity import ClusterIdentity, ClusterIdError
from .removed import RemovedIds
from .reconfig import ChangeError, ChangeRequest, Reconfigurator, describe_configuration
from .snapshotting import Snapshotter
from .statemachine import StateMachine
from .transport import PeerIdentityError, PeerLink

log = logging.getLogger("raftd")

_WRITE_OPS = {"put": Op.PUT, "delete": Op.DELETE, "cas": Op.CAS,
              "open_session": Op.OPEN_SESSION}
# Errors of the state machine that the client must see by name (not as bad_request).
_FSM_ERRORS = ("session_expired", "stale_sequence")
# What a server outside our configuration may send us (see _from_member_or_allowed).
_NON_MEMBER_OK = (AppendEntries, InstallSnapshot, PreVote, RequestVote)
_MAX_EVENTS = 200
_MAX_HELLO_ADDRESSES = 16  # join mode: addresses announced in HELLO that we keep
_INLINE_BACKOFF_S = 30.0  # inline_fsync auto: how long a slow fsync sends saves to the thread


@dataclass(slots=True)
class _PendingWrite:
    term: int
    conn: "_ClientConn"
    rid: int
    cmd: Command  # what was proposed: applied without decoding the entry again


@dataclass(slots=True)
class _Save:
    """A Ready whose remaining steps wait for the disk: its own save (persist) or one before it."""
    rd: Ready
    late: list  # messages that may leave only after the save (votes, acks, ...)
    persist: bool


class _ClientConn:
    """A client connection: responses are written as requests complete, in any order.
    Responses produced in one pass of the event loop leave in one write (one syscall for a
    whole batch of commits instead of one per request)."""

    def __init__(self, writer: asyncio.StreamWriter, identity=None, rate: int = 0,
                 max_unsent: int = 64 << 20, on_overflow=None, monotonic=time.monotonic):
        self.writer = writer
        self._monotonic = monotonic
        self.closed = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        # Replies the client does not read pile up here and in the transport: past
        # max_unsent bytes the connection is closed (issue 19 §10), memory stays bounded.
        self.max_unsent = max_unsent
        self._on_overflow = on_overflow
        self.identity = identity  # raftd.tls.Identity over TLS, None in plaintext
        # Token bucket: ``rate`` requests per second, bursts of up to one second's worth.
        self.rate = rate
        self._tokens = float(rate)
        self._refilled = monotonic()
        self.client_ids: set[str] = set()  # sessions this connection opened (a cap, see §12)

    def take_token(self) -> bool:
        if self._tokens < 1:
            now = self._monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens < 1:
                return False
        self._tokens -= 1
        return True

    def reply(self, rid, result=None, error: dict | None = None) -> None:
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        frame = encode_client_response(
            {"id": rid, "ok": error is None, "result": result if error is None else None,
             "error": error})
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes + self.writer.transport.get_write_buffer_size() > self.max_unsent:
            self.closed = True
            self._out, self._out_bytes = [], 0
            if self._on_overflow is not None:
                self._on_overflow(self)
            self.writer.transport.abort()

    def _flush(self) -> None:
        out, self._out = self._out, []
        self._out_bytes = 0
        # A client that reset its connection: uvloop raises on writes to a closed transport.
        if not self.closed and out and not self.writer.transport.is_closing():
            self.writer.write(b"".join(out))


class RaftServer:
    def __init__(self, cfg: NodeConfig, *, rng_seed: int | None = None,
                 clock: Clock = SYSTEM_CLOCK, executor: ExecutorFactory = thread_executor,
                 state_machine: StateMachine | None = None):
        """``clock``, ``executor`` and ``state_machine`` are the parts the simulator replaces
        (raftd.simrt): the daemon passes nothing and gets the system clock, worker threads
        and the KV state machine."""
        self.cfg = cfg
        self.node_id = cfg.id
        self.sysclock = clock
        self.new_executor = executor
        self.started_at = clock.wall()
        self._rng = Random(rng_seed if rng_seed is not None else int.from_bytes(os.urandom(8)))
        self.storage: DurableLog | None = None
        # Failpoint (tests): called with each snapshot-install step's name, set before start().
        self.install_fault: Callable[[str], None] | None = None
        self._dir_lock = DataDirLock(cfg.data_dir)
        self.node: RaftNode | None = None
        # Session limits start at the state machine's defaults on every node: they are
        # replicated state, changed only through the log (_propose_session_limits).
        self.fsm = state_machine if state_machine is not None else KVStateMachine()
        self.clock = ClusterClock(clock.monotonic)
        self._limits_term = -1
        self.peers: dict[str, PeerLink] = {}
        self._wake = asyncio.Event()
        self._disk = executor("raftd-disk")
        self._disk_jobs = 0
        self._saves: list[_Save] = []  # Readies waiting for the disk writer, in order
        self._disk_writer: asyncio.Task | None = None
        self._saves_idle: asyncio.Event | None = None
        self._hs_unsaved = 0  # queued or in-flight saves that carry a new term or vote
        self._disk_failed = False  # a save failed: nothing may be finished or sent any more
        # inline_fsync auto: saves go to the disk thread until then (monotonic seconds)
        self._inline_until = 0.0
        self._inline_limit_s = cfg.heartbeat_interval_ms / 4000
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.metrics: RaftMetrics | None = None
        # peer -> {match_index an AppendEntries will produce: send time}, for the RTT histogram
        self._append_sent: dict[str, dict[int, float]] = {}
        self._server: asyncio.base_events.Server | None = None
        self._pending_writes: dict[int, _PendingWrite] = {}
        self._read_ids = 0
        self._pending_reads: dict[int, tuple[_ClientConn, int, dict]] = {}
        self._reads_waiting_apply: list[tuple[int, _ClientConn, int, dict]] = []
        self._conns: set[asyncio.StreamWriter] = set()
        self._conn_tasks: set[asyncio.Task] = set()  # their handlers, awaited by stop()
        self._conns_per_host: dict[str, int] = {}
        self.tls: NodeTLS | None = None
        self.stopped = asyncio.Event()
        self._stopping = False
        self.exit_code = 0
        self.reconfig = Reconfigurator(self)
        self.peer_last_heard: dict[str, float] = {}
        # Listen addresses peers announced in HELLO: how a node that joined with an empty
        # configuration reaches the leader before the log tells it where everyone is.
        self.hello_addresses: dict[str, str] = {}  # peer -> monotonic time of its last message
        self.last_leader_contact: float | None = None  # monotonic time of the last AppendEntries
        self._last_term = -1
        self.events: list[dict] = []  # recent events ring (status)
        self.counters = {"proposals": 0, "fsyncs": 0, "fsync_seconds": 0.0,
                         "leader_changes": 0, "bad_frames": 0, "client_requests": 0,
                         "tls_handshake_failures": 0, "peers_refused": 0,
                         "cluster_id_refused": 0, "removed_refused": 0,
                         "peer_messages_dropped": 0, "permission_denied": 0,
                         "inline_fsync_backoffs": 0}
        self._dropped_logged: dict[str, float] = {}  # peer -> when we last logged a drop
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
        if cfg.fsync:
            # Synced into its parent: a power loss must not drop the directory (and every
            # acknowledged write in it) that a crash would have kept (issue 21 §6).
            mkdir_durable(cfg.data_dir)
        else:
            os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
        mode = os.stat(cfg.data_dir).st_mode & 0o777
        if mode & 0o022:
            raise StartupError(f"data_dir {cfg.data_dir} is writable by group or others "
                               f"(mode {mode:o}): anyone could rewrite the log; run "
                               f"`chmod 700 {cfg.data_dir}`")
        try:
            locked = self._dir_lock.acquire()  # before anything reads or writes the WAL
        except DataDirInUse as e:
            raise StartupError(str(e)) from None
        if not locked:
            # Two daemons on one data dir write the same WAL at their own offsets (issue 21
            # §7): without the lock, refuse unless the operator opted out knowingly.
            why = self._dir_lock.failure or "no lock"
            if cfg.data_dir_lock:
                raise StartupError(
                    f"cannot lock {cfg.data_dir}/LOCK ({why}), so nothing stops a second raftd "
                    f"on this data dir; use a filesystem with locks, or set data_dir_lock: "
                    f"false and make sure yourself that only one raftd uses it")
            log.warning("data_dir_lock: false: running without the data dir lock (%s); make "
                        "sure no other raftd uses %s", why, cfg.data_dir)
        try:
            self.identity = ClusterIdentity(cfg)
        except ClusterIdError as e:
            raise StartupError(str(e)) from None
        if cfg.tls is not None:
            try:
                self.tls = NodeTLS(cfg.tls)
            except TLSConfigError as e:
                raise StartupError(str(e)) from None
            self._log_tls("TLS on")
        self.storage = DurableLog.open(os.path.join(cfg.data_dir, "wal"), fsync=cfg.fsync,
                                       preallocate=cfg.wal_preallocate_bytes)
        st = self.storage
        self.snapshots = Snapshotter(self)
        snap = self.snapshots.recover()
        self.snapshots.reconcile(snap)  # a crash cut an install short (issue 14 §2, 21 §5)
        if st.snapshot_index and (snap is None or snap.meta.index < st.snapshot_index):
            have = f"the newest valid snapshot is at {snap.meta.index}" if snap else \
                "there is no valid snapshot"
            raise StartupError(f"the log in {cfg.data_dir}/wal starts after index "
                               f"{st.snapshot_index} but {have}: entries in between are lost; "
                               f"restore this node from a backup or another node")
        base = (Configuration(frozenset()) if cfg.join else
                Configuration.make(cfg.peers, addresses=cfg.peers))
        self.node = RaftNode(
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
                cfg.data_dir, self.node.configuration_at(self.fsm.applied_index).members)
        except ValueError as e:
            raise StartupError(str(e)) from None
        self._event("start", f"started with term {st.hard_state.term}, "
                             f"log {st.first_index}..{st.last_index}")
        log.info("recovered term=%d voted_for=%s log=[%d..%d] configuration: %s",
                 st.hard_state.term, st.hard_state.voted_for, st.first_index, st.last_index,
                 self.node.config.describe())
        self._server = await asyncio.start_server(self._on_connection, cfg.host, cfg.port,
                                                  reuse_address=True)
        if cfg.metrics_listen:
            self.metrics = RaftMetrics(self.status)
            self.metrics.update(self.status())
            mhost, mport = split_address(cfg.metrics_listen)
            log.info("metrics on http://%s:%d/metrics", mhost, self.metrics.start(mhost, mport))
        self._write_pid()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drive(), name="drive"),
                       loop.create_task(self._ticker(), name="ticker"),
                       loop.create_task(self._guard_connections(), name="guard")]
        for t in self._tasks:
            t.add_done_callback(self._on_task_done)
        log.info("listening on %s", cfg.listen)

    def _log_tls(self, what: str) -> None:
        info = self.tls.info()
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
        self._log_tls("SIGHUP: certificates reloaded")
        self._event("tls", f"certificates reloaded; valid until {self.tls.info()['not_after']}")

    async def _transfer_before_stop(self) -> None:
        target = self._best_transfer_target()
        if target is None:
            return
        try:
            self.node.transfer_leadership(target)
        except (InvalidConfChangeError, NotLeaderError) as e:
            log.info("no leadership transfer before stopping: %s", e)
            return
        log.info("stopping: transferring leadership to %s first", target)
        self.wake()
        deadline = self.sysclock.monotonic() + self.cfg.election_timeout_ms / 1000
        while self.node.role == Role.LEADER and self.sysclock.monotonic() < deadline:
            await asyncio.sleep(self.cfg.tick_ms / 1000)
        if self.node.role == Role.LEADER:
            log.warning("leadership transfer to %s did not finish in time", target)
        else:
            log.info("leadership transferred to %s", target)

    def _best_transfer_target(self) -> str | None:
        node = self.node
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
            self.node.tick()
            self._wake.set()
            if self.metrics is not None:
                self.metrics.maybe_refresh()

    async def _guard_connections(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.guard.sweep(self.sysclock.monotonic())

    def _connection_timed_out(self, reason: str) -> None:
        self.limit_rejections[f"{reason}_connections"] += 1

    def _unsent_overflow(self, conn: _ClientConn) -> None:
        self.limit_rejections["unsent_bytes"] += 1
        peer = conn.writer.get_extra_info("peername")
        log.warning("closing client connection from %s: over %d bytes of replies not read "
                    "(max_unsent_bytes)", peer[0] if peer else "?", conn.max_unsent)

    async def _drive(self) -> None:
        node = self.node
        while True:
            await self._wake.wait()
            # Let every socket that is readable now deliver its requests and messages first,
            # so they share this Ready: one fsync and one AppendEntries for all of them.
            await asyncio.sleep(0)
            self._wake.clear()
            while node.has_ready():
                await self._handle_ready(node.ready())

    async def _handle_ready(self, rd: Ready) -> None:
        """Start one Ready on its way (ready.py's contract).  Saves are pipelined: the loop
        does not wait for the disk.  What may leave early (the leader's AppendEntries, thesis
        §10.2.1) leaves now; the rest of the Ready waits, in order, behind its own save and
        every save before it (see _Save); Readies that queue up while an fsync runs share
        the next one (group commit across Readies)."""
        if rd.snapshot is not None:
            # Contract step 0 replaces the log: every save queued before it lands first.
            await self._saves_drained()
            if rd.soft_state is not None:
                self._on_soft_state(rd)
            await self.snapshots.install(rd.snapshot)  # contract step 0
            rd = replace(rd, soft_state=None, snapshot=None)
        self._process_ready(rd)

    def _process_ready(self, rd: Ready) -> None:
        if self._disk_failed:
            return  # the node is stopping (fatal): an ack now could promise what is not on disk
        persist = rd.hard_state is not None or bool(rd.entries)
        late = rd.messages
        if persist:
            late = []
            early = False
            # Early AppendEntries promise nothing about our disk only if our term is already
            # durable (ready.py step 2): a leader elected alone (one voter) has its new term in
            # this very Ready, and with pipelined saves an earlier one may still be queued.
            hold = rd.hard_state is not None or self._hs_unsaved > 0
            for msg in rd.messages:
                if not hold and may_send_early(msg):
                    self._send(msg)
                    early = True
                else:
                    late.append(msg)
            if self._disk_writer is None and not self._disk_jobs and self._save_inline():
                # On the loop: no thread hand-off and wake-up per batch; while it runs, new
                # requests and acks queue in the kernel and form the next batch.  What may
                # leave early goes to the kernel first, so followers write in parallel.
                if early:
                    for link in self.peers.values():
                        link.flush_now()
                t0 = self.sysclock.perf()
                try:
                    self.storage.save(rd.hard_state, rd.entries)
                except BaseException:
                    self._disk_failed = True  # see _write_saves
                    raise
                dt = self.sysclock.perf() - t0
                self._count_fsync(dt)
                if dt > self._inline_limit_s and self.cfg.inline_fsync == "auto":
                    # The loop was blocked that long: heartbeats, reads and status waited.
                    # Let the disk thread take the saves for a while.
                    self._inline_until = self.sysclock.monotonic() + _INLINE_BACKOFF_S
                    self.counters["inline_fsync_backoffs"] += 1
                    log.warning("an fsync took %.0f ms; saves run on the disk thread for the "
                                "next %.0f s (inline_fsync: auto)", dt * 1000,
                                _INLINE_BACKOFF_S)
                if rd.entries:
                    self.node.persisted(rd.entries[-1].index, rd.entries[-1].term)
                self._finish(rd, late)
                return
        elif self._disk_writer is None:
            self._finish(rd, late)  # nothing to persist and no save before it in flight
            return
        if rd.hard_state is not None:
            self._hs_unsaved += 1
        self._saves.append(_Save(rd, late, persist))
        if self._disk_writer is None:
            self._disk_writer = asyncio.get_running_loop().create_task(
                self._write_saves(), name="disk-writer")
            self._disk_writer.add_done_callback(self._on_task_done)

    def _save_inline(self) -> bool:
        mode = self.cfg.inline_fsync
        if mode == "auto":
            return self.sysclock.monotonic() >= self._inline_until
        return bool(mode)

    async def _write_saves(self) -> None:
        """Drain the save queue: everything queued goes to the disk thread as one batch (one
        write, one fdatasync); then each Ready of the batch finishes in order."""
        node = self.node
        try:
            while self._saves:
                batch, self._saves = self._saves, []
                to_disk = [(s.rd.hard_state, s.rd.entries) for s in batch if s.persist]
                if to_disk:
                    t0 = self.sysclock.perf()
                    await self.on_disk(self.storage.save_many, to_disk)
                    self._count_fsync(self.sysclock.perf() - t0)
                for s in batch:
                    if s.persist and s.rd.entries:
                        node.persisted(s.rd.entries[-1].index, s.rd.entries[-1].term)
                    if s.rd.hard_state is not None:
                        self._hs_unsaved -= 1
                    self._finish(s.rd, s.late)
                self._wake.set()
        except BaseException:
            # The batch's state is unknown (a failed fsync may have lost pages), or we are
            # stopping: finish nothing more, or an ack could promise what is not on disk.
            self._disk_failed = True
            raise
        finally:
            self._disk_writer = None
            if self._saves_idle is not None:
                self._saves_idle.set()

    async def _saves_drained(self) -> None:
        while self._disk_writer is not None:
            self._saves_idle = asyncio.Event()
            await self._saves_idle.wait()
        self._saves_idle = None

    def _count_fsync(self, dt: float) -> None:
        self.counters["fsyncs"] += 1
        self.counters["fsync_seconds"] += dt
        if self.metrics is not None:
            self.metrics.observe_fsync(dt)

    def _finish(self, rd: Ready, late: list) -> None:
        """Everything of a Ready that comes after its save (contract steps 2-4), in order."""
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        if rd.committed_entries:
            # Before the messages: the replies are queued first and so leave first (the
            # commit-index AppendEntries to followers can wait a few microseconds).
            self._apply(rd)
        for msg in late:
            self._send(msg)
        if rd.committed_entries:
            self.snapshots.maybe_take()
        for rs in rd.read_states:
            self._on_read_state(rs.request_id, rs.index)
        if self._reads_waiting_apply:
            self._serve_waiting_reads()

    async def on_disk(self, fn, *args):
        """Run ``fn`` on the disk thread (one at a time, in order).  While any such job is
        outstanding, saves go there too, never beside it on the loop (inline_fsync)."""
        self._disk_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)
        finally:
            self._disk_jobs -= 1

    def _send(self, msg) -> None:
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
        return (self.node.config.address_of(nid) or self.cfg.peers.get(nid)
                or self.hello_addresses.get(nid))

    def _note_hello_address(self, peer_id: str, address: str) -> None:
        """Remember where a peer outside our configuration listens, the most recent few only;
        the link to one forgotten (and not a known server) is closed with it."""
        if self.node.config.address_of(peer_id) or peer_id in self.cfg.peers:
            return  # a server we know: its address comes from the cluster, not from HELLO
        self.hello_addresses.pop(peer_id, None)
        self.hello_addresses[peer_id] = address
        while len(self.hello_addresses) > _MAX_HELLO_ADDRESSES:
            gone = next(iter(self.hello_addresses))
            del self.hello_addresses[gone]
            link = self.peers.pop(gone, None)
            if link is not None:
                asyncio.get_running_loop().create_task(link.close())

    def _on_soft_state(self, rd: Ready) -> None:
        ss = rd.soft_state
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
                pw.conn.reply(pw.rid, error={"code": "unavailable",
                                             "message": "write lost in a leader change; retry"})
                continue
            # Same index and term: the entry is the one we proposed (Log Matching, §5.3).
            result = fsm.apply_command(e.index, pw.cmd) if e.kind == normal else \
                fsm.apply_entry(e)
            if result is not None and "error" in result:
                code = result["error"] if result["error"] in _FSM_ERRORS else "bad_request"
                pw.conn.reply(pw.rid, error={"code": code,
                                             "message": f"{result['error']}: "
                                                        f"{result.get('message', '')}".strip()})
            else:
                pw.conn.reply(pw.rid, result)
        last = rd.committed_entries[-1]
        self.node.applied(last.index)
        if last.term > self._limits_term:
            self._propose_session_limits(last.term)

    def _config_committed(self, e) -> None:
        gone = self.removed.committed(Configuration.decode(e.data))
        for nid in sorted(gone):
            self._event("membership", f"{nid} removed: its id is refused from now on")

    def _propose_session_limits(self, applied_term: int) -> None:
        """Session limits are replicated state (see raftd.kv.fsm): once per term, after the
        leader has applied an entry of its own term (so the state machine reflects every
        earlier entry, §5.4.2), it proposes its configured limits if the cluster's differ."""
        node, fsm, cfg = self.node, self.fsm, self.cfg
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

    # --------------------------------------------------------------- reads (§6.4) --
    def _on_read_state(self, rid: int, index: int | None) -> None:
        entry = self._pending_reads.pop(rid, None)
        if entry is None:
            return
        conn, crid, req = entry
        if index is None:
            conn.reply(crid, error=self._leader_error("lost leadership during the read; retry"))
        elif self.fsm.applied_index >= index:
            self._answer_read(conn, crid, req)
        else:
            self._reads_waiting_apply.append((index, conn, crid, req))

    def _serve_waiting_reads(self) -> None:
        applied = self.fsm.applied_index
        still = []
        for index, conn, crid, req in self._reads_waiting_apply:
            if applied >= index:
                self._answer_read(conn, crid, req)
            else:
                still.append((index, conn, crid, req))
        self._reads_waiting_apply = still

    def _answer_read(self, conn: _ClientConn, rid, req: dict) -> None:
        if req["op"] == "get":
            conn.reply(rid, {"value": self.fsm.get(req["key"]), "index": self.fsm.applied_index})
        elif "limit" in req:  # paged (issue 19 §13): raftctl and the client page through
            items, more = self.fsm.page(req.get("prefix", ""), req.get("start_after"),
                                        req["limit"], self._page_bytes)
            conn.reply(rid, {"items": items, "more": more, "index": self.fsm.applied_index})
        else:  # clients of earlier versions: everything, unless that exceeds a page
            items, more = self.fsm.page(req.get("prefix", ""), None, 1 << 62, self._page_bytes)
            if more:
                conn.reply(rid, error={"code": "too_large", "message":
                                       "the listing is larger than one reply; this client "
                                       "must page (send limit and start_after)"})
                return
            conn.reply(rid, {"items": items, "index": self.fsm.applied_index})

    # ------------------------------------------------------------ client requests --
    def _leader_error(self, message: str | None = None) -> dict:
        leader = self.node.leader_id
        if leader == self.node_id and self.node.role == Role.LEADER:
            leader = None
        addr = ((self.node.config.address_of(leader) or self.cfg.peers.get(leader))
                if leader else None)
        return {"code": "not_leader",
                "message": message or f"{self.node_id} is not the leader "
                                      f"(leader: {leader or 'unknown'})",
                "leader": leader, "leader_address": addr}

    def _handle_request(self, conn: _ClientConn, req: dict) -> None:
        self.counters["client_requests"] += 1
        rid = req.get("id")
        op = req.get("op")
        if type(op) is not str:  # e.g. ["put"]: unhashable, and no op of ours (issue 19 §14)
            conn.reply(rid, error={"code": "bad_request", "message": "op must be a string"})
            return
        wanted = req.get("cluster_id")
        if wanted is not None and wanted != self.identity.cluster_id:
            # The client was told which cluster it talks to (raftctl --cluster-id): two
            # clusters behind the same endpoints must not be mixed up (issue 14 §9).
            conn.reply(rid, error={"code": "wrong_cluster", "message":
                                   f"{self.cfg.listen} belongs to cluster "
                                   f"{self.identity.cluster_id}, not {wanted}"})
            return
        if conn.rate and not conn.take_token():
            self.limit_rejections["request_rate"] += 1
            conn.reply(rid, error={"code": "rate_limited", "message":
                                   f"more than {conn.rate} requests/s on one connection "
                                   f"(max_requests_per_second); slow down and retry"})
            return
        if not may(conn.identity, op):
            self.counters["permission_denied"] += 1
            peer = conn.writer.get_extra_info("peername")
            log.warning("refused %r from %s at %s: needs the admin role", op,
                        conn.identity.describe(), peer[0] if peer else "?")
            conn.reply(rid, error={"code": "permission_denied", "message":
                                   f"{conn.identity.describe()} may not {op}: "
                                   f"it needs an admin certificate"})
            return
        try:
            if op in _WRITE_OPS:
                self._handle_write(conn, rid, op, req)
            elif op in ("get", "list"):
                self._handle_read(conn, rid, op, req)
            elif op == "status":
                st = self.status()
                if req.get("digest"):
                    st["digest"] = self.fsm.digest()  # O(state): only when asked (tests)
                conn.reply(rid, st)
            elif op == "transfer_leader":
                self._handle_transfer(conn, rid, req)
            elif op == "change_config":
                self._handle_change(conn, rid, req)
            elif op == "snapshot":
                self._handle_snapshot(conn, rid)
            elif op == "snapshot_list":
                conn.reply(rid, {"snapshots": [i.describe() for i in self.snapshots.store.list()]})
            elif op == "snapshot_read":
                self._handle_snapshot_read(conn, rid, req)
            else:
                conn.reply(rid, error={"code": "unknown_op", "message": f"unknown op {op!r}"})
        except _BadRequest as e:
            conn.reply(rid, error={"code": "bad_request", "message": str(e)})
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # A field of a shape no check above foresaw: refuse the request, keep serving.
            log.warning("bad %r request: %s: %s", op, type(e).__name__, e)
            conn.reply(rid, error={"code": "bad_request",
                                   "message": f"malformed {op} request: {e}"})

    def _handle_write(self, conn: _ClientConn, rid, op: str, req: dict) -> None:
        node = self.node
        if node.role != Role.LEADER:
            conn.reply(rid, error=self._leader_error())
            return
        key = "" if op == "open_session" else _field(req, "key", str)
        if not key and op != "open_session":
            raise _BadRequest("key must be a non-empty string")
        client_id = req.get("client_id")
        seq = req.get("seq", 0)
        if client_id is not None and not isinstance(client_id, str) \
                or type(seq) is not int or seq < 0:
            raise _BadRequest("client_id must be a string and seq an integer >= 0")
        cfg = self.cfg
        value, expected = req.get("value"), req.get("expected")
        # (A str of n characters is at most 4n bytes of UTF-8: most keys skip the encode.)
        if 4 * len(key) > cfg.max_key_size and len(key.encode()) > cfg.max_key_size:
            return self._too_large(conn, rid, "key", len(key.encode()), cfg.max_key_size)
        for data in (value, expected):
            if type(data) is bytes and len(data) > cfg.max_value_size:
                return self._too_large(conn, rid, "value", len(data), cfg.max_value_size)
        if client_id and client_id not in conn.client_ids:
            # The state machine evicts the least recently used sessions beyond max_sessions;
            # this cap keeps one connection from evicting everybody else's (issue 19 §12).
            if len(conn.client_ids) >= cfg.max_sessions_per_connection:
                self.limit_rejections["sessions"] += 1
                conn.reply(rid, error={"code": "too_many_sessions", "message":
                                       f"this connection opened {len(conn.client_ids)} client "
                                       f"sessions (max_sessions_per_connection)"})
                return
            conn.client_ids.add(client_id)
        now_ms = self.clock.now_ms(node.term, self.fsm.now_ms)
        cmd = session_put(key, value, client_id, seq, now_ms) if op == "put" else None
        if cmd is None:
            try:
                cmd = Command(_WRITE_OPS[op], key,
                              value=_field(req, "value", bytes) if op in ("put", "cas") else None,
                              expected=req.get("expected") if op == "cas" else None,
                              client_id=client_id, seq=seq if client_id else 0,
                              timestamp_ms=now_ms)
            except (TypeError, ValueError) as e:
                raise _BadRequest(str(e)) from None
        try:
            index = node.propose(encode_command(cmd))
        except NotLeaderError:
            conn.reply(rid, error=self._leader_error())
            return
        except ProposalDroppedError as e:
            conn.reply(rid, error={"code": "unavailable", "message": str(e)})
            return
        self.counters["proposals"] += 1
        self._pending_writes[index] = _PendingWrite(node.term, conn, rid, cmd)
        self._wake.set()

    def _too_large(self, conn: _ClientConn, rid, name: str, size: int, limit: int) -> None:
        self.limit_rejections[f"{name}_size"] += 1
        conn.reply(rid, error={"code": "too_large", "message": f"{name} of {size} bytes is over "
                                                               f"the limit of {limit} "
                                                               f"(max_{name}_size)"})

    def _handle_read(self, conn: _ClientConn, rid, op: str, req: dict) -> None:
        if op == "get":
            _field(req, "key", str)
        elif not isinstance(req.get("prefix", ""), str):
            raise _BadRequest("prefix must be a string")
        elif not isinstance(req.get("start_after"), (str, type(None))):
            raise _BadRequest("start_after must be a string")
        elif "limit" in req and not (type(req["limit"]) is int and 1 <= req["limit"] <= 100_000):
            raise _BadRequest("limit must be an integer from 1 to 100000")
        if not req.get("linearizable", True):
            self._answer_read(conn, rid, req)  # local, possibly stale read: the caller asked
            return
        self._read_ids += 1
        try:
            self.node.read_index(self._read_ids)
        except NotLeaderError:
            conn.reply(rid, error=self._leader_error())
            return
        self._pending_reads[self._read_ids] = (conn, rid, req)
        self._wake.set()

    def _handle_transfer(self, conn: _ClientConn, rid, req: dict) -> None:
        node = self.node
        if node.role != Role.LEADER:
            conn.reply(rid, error=self._leader_error())
            return
        target = req.get("target") or self._best_transfer_target()
        if not isinstance(target, str):
            raise _BadRequest("target must be a server id")
        try:
            node.transfer_leadership(target)
        except (InvalidConfChangeError, ConfChangeInProgressError) as e:
            conn.reply(rid, error={"code": "bad_request", "message": str(e)})
            return
        self._event("transfer", f"leadership transfer to {target} started")
        conn.reply(rid, {"target": target})
        self._wake.set()

    def _handle_change(self, conn: _ClientConn, rid, req: dict) -> None:
        add = req.get("add") or {}
        remove = req.get("remove") or []
        promote = req.get("promote") or []
        # A str is iterable: "n9" must not become the ids "n" and "9" (issue 19 §14).
        if (not isinstance(add, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in add.items())
                or type(remove) is not list or type(promote) is not list
                or not all(isinstance(x, str) for x in [*remove, *promote])):
            raise _BadRequest("add is {id: address}; remove and promote are lists of ids")
        if not (add or remove or promote):
            raise _BadRequest("nothing to change")
        creq = ChangeRequest(dict(add), list(remove), list(promote), bool(req.get("learner")))

        async def run() -> None:
            try:
                result = await self.reconfig.change(creq)
            except NotLeaderError:
                conn.reply(rid, error=self._leader_error())
            except ChangeError as e:
                conn.reply(rid, error={"code": e.code, "message": str(e)})
            else:
                conn.reply(rid, result)

        self._spawn(run())

    def _handle_snapshot(self, conn: _ClientConn, rid) -> None:
        async def run() -> None:
            try:
                result = await asyncio.shield(self.snapshots.take())
            except Exception as e:  # noqa: BLE001 - reported to the operator
                conn.reply(rid, error={"code": "internal", "message": f"snapshot failed: {e}"})
            else:
                conn.reply(rid, {**result, "node": self.node_id})
        self._spawn(run())

    def _handle_snapshot_read(self, conn: _ClientConn, rid, req: dict) -> None:
        """Read part of a snapshot file (backups: raftctl snapshot save)."""
        index, offset = req.get("index"), req.get("offset", 0)
        length = req.get("length", 1 << 20)
        if type(length) is not int or not 0 < length <= 4 << 20:
            raise _BadRequest("length must be an integer from 1 to 4194304")
        if type(offset) is not int or offset < 0:
            raise _BadRequest("offset must be an integer >= 0")
        info = next((i for i in self.snapshots.store.list() if i.meta.index == index), None)
        if info is None:
            raise _BadRequest(f"no snapshot at index {index!r} on {self.node_id}")
        with open(info.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        conn.reply(rid, {"data": data, "size": info.size, "eof": offset + len(data) >= info.size})

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe_append_rtt(self, msg: AppendEntriesResponse) -> None:
        sent = self._append_sent.get(msg.src)
        if sent:
            t = sent.pop(msg.match_index, None)
            if t is not None:
                self.metrics.observe_append_rtt(msg.src, self.sysclock.perf() - t)
            for k in [k for k in sent if k < msg.match_index]:
                del sent[k]

    def wake(self) -> None:
        self._wake.set()

    # -------------------------------------------------------------------- status --
    def _event(self, kind: str, text: str) -> None:
        self.events.append({"time": self.sysclock.wall(), "kind": kind, "text": text})
        if len(self.events) > _MAX_EVENTS:
            del self.events[:len(self.events) - _MAX_EVENTS]

    def status(self) -> dict:
        node = self.node
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
            "storage": dict(self.storage.stats),
            "peers": {pid: {"connected": link.connected, "dropped": link.dropped,
                            "sent": link.sent}
                      for pid, link in sorted(self.peers.items())},
            "events": self.events[-50:],
        })
        return st

    # --------------------------------------------------------------- connections --
    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        task = asyncio.current_task()
        self._conn_tasks.add(task)
        peer = writer.get_extra_info("peername")
        host = peer[0] if peer else "?"
        decoder = FrameDecoder(self.cfg.max_frame_size)
        peer_id = None
        conn = None
        snap_state: dict = {}
        self._conns_per_host[host] = self._conns_per_host.get(host, 0) + 1
        try:
            if self._conns_per_host[host] > self.cfg.max_connections_per_address:
                self.limit_rejections["connections_per_address"] += 1
                log.warning("refusing a connection from %s: %d open from that address "
                            "(max_connections_per_address)", host, self._conns_per_host[host] - 1)
                if self.tls is None:  # over TLS the client could not read this before a handshake
                    writer.write(encode_error("too_many_connections",
                                              f"more than {self.cfg.max_connections_per_address}"
                                              f" connections from {host}"))
                return
            identity = None
            if self.tls is not None:
                # First thing on the connection, before any read: see raftd/tls.py.
                try:
                    await writer.start_tls(self.tls.server_context, ssl_handshake_timeout=10)
                except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                    self.counters["tls_handshake_failures"] += 1
                    log.warning("refused connection from %s: TLS handshake failed: %s",
                                host, handshake_error(e))
                    return
                identity = self.tls.identity(writer.get_extra_info("ssl_object"))
            conn = _ClientConn(writer, identity, self.cfg.max_requests_per_second,
                               self.cfg.max_unsent_bytes, self._unsent_overflow,
                               monotonic=self.sysclock.monotonic)
            watch = self.guard.track(host, writer.transport.abort, self.sysclock.monotonic())
            while True:
                if writer.transport.get_write_buffer_size() > self.cfg.max_unsent_bytes // 4:
                    await writer.drain()  # stop reading requests until the replies are read
                data = await reader.read(1 << 18)
                if not data:
                    break
                frames = decoder.feed(data)
                watch.read(self.sysclock.monotonic(), decoder.buffered > 0)
                for ftype, body in frames:
                    if ftype == FrameType.CLIENT_REQUEST:
                        if peer_id is not None:
                            raise RemoteProtocolError("client request on a peer connection")
                        req = decode_request(body)
                        if type(req.get("id")) is not int:
                            raise RemoteProtocolError("client request without an integer id")
                        self._handle_request(conn, req)
                    elif ftype == FrameType.HELLO:
                        peer_id, cluster = decode_hello(body)
                        watch.is_peer = True
                        if self.tls is not None:
                            self._check_peer(identity, peer_id, host)
                        hello = decode_request(body)
                        self._check_cluster_id(peer_id, hello.get("cluster_id"))
                        self._check_not_removed(peer_id)
                        announced = hello.get("address")
                        if isinstance(announced, str) and len(announced) <= 256:
                            self._note_hello_address(peer_id, announced)
                        if cluster is not None and cluster != self.cfg.cluster:
                            raise RemoteProtocolError(
                                f"peer {peer_id} belongs to cluster {cluster!r}, "
                                f"not {self.cfg.cluster!r}")
                    elif ftype < 32:
                        if peer_id is None:
                            raise RemoteProtocolError("raft message before HELLO")
                        msg = decode_message(ftype, body)
                        if self.tls is not None and not self._from_member_or_allowed(msg):
                            continue
                        if isinstance(msg, InstallSnapshot):
                            try:
                                whole = self.snapshots.receive_chunk(snap_state, msg)
                            except (ValueError, OSError) as e:
                                raise RemoteProtocolError(f"bad snapshot transfer: {e}") from None
                            # A chunk (done=False) still tells the core the leader is alive, so
                            # a long transfer does not fire the election timer (issue 14 §8).
                            msg = whole if whole is not None else replace(msg, data=b"")
                        if msg.dst != self.node_id or msg.src != peer_id:
                            log.warning("dropping %s for %s from %s on %s's link",
                                        type(msg).__name__, msg.dst, msg.src, peer_id)
                            continue
                        now = self.sysclock.monotonic()
                        self.peer_last_heard[msg.src] = now
                        if ftype == 1 and msg.src == self.node.leader_id:  # AppendEntries
                            self.last_leader_contact = now
                        if (self.metrics is not None and isinstance(msg, AppendEntriesResponse)
                                and msg.success):
                            self._observe_append_rtt(msg)
                        try:
                            self.node.step(msg)
                        except LogCorruptionError as e:
                            self.fatal(str(e), e)
                            return
                        if isinstance(msg, InstallSnapshot):
                            self.snapshots.discard_unused(msg)
                        self._wake.set()
                    else:
                        raise RemoteProtocolError(f"unexpected frame type {ftype}")
        except PeerIdentityError as e:
            self.counters["peers_refused"] += 1
            log.warning("refused peer connection from %s: %s", host, e)
        except FrameTooLarge as e:
            self.counters["bad_frames"] += 1
            self.limit_rejections["frame_size"] += 1
            log.warning("closing connection from %s: %s", peer, e)
            writer.write(encode_error("frame_too_large", str(e)))
        except UnsupportedVersion as e:
            self.counters["bad_frames"] += 1
            log.warning("closing connection from %s: %s", peer, e)
            writer.write(encode_error("version_mismatch", str(e)))
        except RemoteProtocolError as e:
            self.counters["bad_frames"] += 1
            log.warning("closing connection from %s: %s", peer, e)
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns_per_host[host] -= 1
            if not self._conns_per_host[host]:
                del self._conns_per_host[host]
            self.snapshots.abort_incoming(snap_state)
            if conn is not None:
                conn.closed = True
                self.guard.untrack(watch)
            self._conns.discard(writer)
            self._conn_tasks.discard(task)
            writer.close()

    def _check_not_removed(self, peer_id: str) -> None:
        """A removed server's id is refused for good (issue 19 §2): with TLS this is how its
        certificate stops working.  Unless a configuration we hold names it: then the
        removal has not reached us the way it reached the server that recorded it."""
        if peer_id in self.removed.ids and peer_id not in self.node.config.members:
            self.counters["removed_refused"] += 1
            raise PeerIdentityError(f"{peer_id} was removed from this cluster")

    def _check_cluster_id(self, peer_id: str, theirs: object) -> None:
        """A peer of another cluster is refused (issue 14 §9); a server in join mode takes the
        id of the first peer that says hello, the leader adding it."""
        why = self.identity.refuses(theirs)
        if why is not None:
            self.counters["cluster_id_refused"] += 1
            raise PeerIdentityError(f"{peer_id}: {why}")
        if isinstance(theirs, str) and self.identity.adopt(theirs):
            self._event("cluster", f"joined cluster {theirs} (said by {peer_id})")

    def _check_peer(self, identity, peer_id: str, host: str) -> None:
        """Mutual TLS for peers: a node certificate of our CA, for the id the peer claims.
        Membership is checked on every message (_from_member_or_allowed), not here."""
        if identity.role != ROLE_NODE or not identity.cluster_ca:
            raise PeerIdentityError(f"certificate {identity.describe()} is not a node "
                                    f"certificate of this cluster's CA")
        if identity.name != peer_id:
            raise PeerIdentityError(f"certificate is for {identity.name!r} but the peer says "
                                    f"it is {peer_id!r}")

    def _from_member_or_allowed(self, msg) -> bool:
        """Over TLS, a peer outside our configuration (the newest in our log, §6) may send what
        the thesis (§4.1) says a server must accept from servers it does not know, because its
        own log may be behind: AppendEntries and InstallSnapshot from a leader, and (pre-)vote
        requests from a candidate (pre-vote and vote withholding, §4.2.3, keep those from
        disrupting a live cluster).  Dropped: responses, TimeoutNow, and vote requests flagged
        as a leadership transfer (those bypass vote withholding; a real leader only hands
        leadership to a server in its configuration, which then knows us).  A node with no
        configuration yet (join: true) hears everyone: the leader adding it."""
        members = self.node.config.members
        if not members or msg.src in members or (isinstance(msg, _NON_MEMBER_OK)
                                                 and not getattr(msg, "transfer", False)):
            return True
        self.counters["peer_messages_dropped"] += 1
        if self._dropped_logged.get(msg.src, 0) < self.sysclock.monotonic() - 10:  # once per 10 s
            self._dropped_logged[msg.src] = self.sysclock.monotonic()
            log.warning("dropping %s from %s: not a member of the configuration (%s)",
                        type(msg).__name__, msg.src, ", ".join(sorted(members)))
        return False


class _BadRequest(Exception):
    pass


class StartupError(Exception):
    """The node cannot start safely (a message for the operator)."""


def _field(req: dict, name: str, typ: type):
    v = req.get(name)
    if not isinstance(v, typ):
        raise _BadRequest(f"field {name!r} must be {typ.__name__}")
    return v
