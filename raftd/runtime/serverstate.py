"""RaftServer's state, declared once for its parts.

RaftServer is one object assembled from parts in their own modules, one job each (issue 17
§2): the save pipeline (savepipeline.py), client requests (requests.py) and incoming
connections (connections.py).  Each part is a base class of RaftServer and uses the server's
state; this class declares that state and the calls between parts, so the type checker sees
every part against the same names and types.  The values are set in RaftServer.__init__
(``node``, ``storage``, ``snapshots``, ``identity`` and ``removed`` in start()).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Coroutine

if TYPE_CHECKING:
    from raftd.config import NodeConfig
    from raftd.core import RaftNode, Ready, SoftState
    from raftd.core.messages import Message
    from raftd.kv.fsm import KVStateMachine
    from raftd.storage.wal import DurableLog
    from raftd.tls import NodeTLS

    from .clientconn import ClientConn
    from .clock import Clock
    from .clusterclock import ClusterClock
    from .connguard import ConnectionGuard
    from .identity import ClusterIdentity
    from .metrics import RaftMetrics
    from .reconfig import Reconfigurator
    from .removed import RemovedIds
    from .requests import PendingWrite
    from .snapshotting import Snapshotter
    from .transport import PeerLink


class NotStartedError(RuntimeError):
    """A call that needs the node before RaftServer.start() created it."""


class ServerState:
    cfg: NodeConfig
    node_id: str
    sysclock: Clock
    node: RaftNode | None  # None until start() recovered it from the data dir
    storage: DurableLog | None  # None until start() opened the WAL
    snapshots: Snapshotter
    identity: ClusterIdentity
    removed: RemovedIds
    fsm: KVStateMachine
    clock: ClusterClock
    reconfig: Reconfigurator
    tls: NodeTLS | None
    metrics: RaftMetrics | None
    guard: ConnectionGuard
    peers: dict[str, PeerLink]
    counters: dict[str, int | float]
    limit_rejections: dict[str, int]
    peer_last_heard: dict[str, float]
    hello_addresses: dict[str, str]
    last_leader_contact: float | None
    # the save pipeline
    _wake: asyncio.Event
    _disk: Executor
    _disk_jobs: int
    _disk_writer: asyncio.Task[None] | None
    _disk_failed: bool
    _hs_unsaved: int
    _inline_until: float
    _inline_limit_s: float
    _saves_idle: asyncio.Event | None
    _append_sent: dict[str, dict[int, float]]
    # client requests
    _pending_writes: dict[int, PendingWrite]
    _read_ids: int
    _pending_reads: dict[int, tuple[ClientConn, int, dict[str, Any]]]
    _reads_waiting_apply: list[tuple[int, ClientConn, int, dict[str, Any]]]
    _page_bytes: int
    # connections
    # Dicts, not sets: stop() closes them in the order they came (a set of objects iterates
    # in address order, which differs from run to run, and the simulator replays a seed only
    # if the daemon does the same things in the same order).
    _conns: dict[asyncio.StreamWriter, None]
    _conn_tasks: dict[asyncio.Task[Any], None]
    _conns_per_host: dict[str, int]
    _dropped_logged: dict[str, float]
    _refusals_logged: dict[str, tuple[float, int]]

    @property
    def core(self) -> RaftNode:
        """The Raft node (raftd.core), which exists from start() on."""
        node = self.node
        if node is None:
            raise NotStartedError("the server has not started")
        return node

    @property
    def wal(self) -> DurableLog:
        """The write-ahead log, open from start() on."""
        storage = self.storage
        if storage is None:
            raise NotStartedError("the server has not started")
        return storage

    if TYPE_CHECKING:
        # Calls between parts (defined in RaftServer or in another part).
        def _event(self, kind: str, text: str) -> None: ...
        def fatal(self, reason: str, exc: BaseException | None = None) -> None: ...
        def status(self) -> dict[str, Any]: ...
        def _send(self, msg: Message) -> None: ...
        def _on_soft_state(self, ss: SoftState) -> None: ...
        def _apply(self, rd: Ready) -> None: ...
        def _on_task_done(self, task: asyncio.Task[Any]) -> None: ...
        def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
        def _best_transfer_target(self) -> str | None: ...
        def _handle_request(self, conn: ClientConn, req: dict[str, Any]) -> None: ...
        def _on_read_state(self, rid: object, index: int | None) -> None: ...
        def _serve_waiting_reads(self) -> None: ...
