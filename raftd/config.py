"""Node configuration: YAML file -> frozen NodeConfig, validated.

Every error names the file and the key, so an operator can fix it without reading code:
``node.yaml: key 'peers.n2': bad address '127.0.0.1' (expected host:port)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from raftd.tls import TLSFiles
from raftd.validate import Validator, node_id_problem, split_address

# The state machine's table size (raftd.kv.fsm.DEFAULT_MAX_SESSIONS; a test checks they are
# equal): not imported from there, which would load the whole core into `raftctl kv get`.
DEFAULT_MAX_SESSIONS = 100_000


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class NodeConfig:
    id: str
    listen: str  # host:port, serves peers and clients
    data_dir: str
    peers: dict[str, str] = field(default_factory=dict)  # id -> host:port, itself included
    join: bool = False  # start empty and wait to be added by a membership change
    cluster: str = "raftd"
    # The cluster's identity (raftd/runtime/identity.py): written by the tools that create a
    # cluster; a server whose data dir holds another refuses to start.
    cluster_id: str | None = None
    # Refuse to start where the data dir cannot be locked (issue 21 §7); false runs anyway.
    data_dir_lock: bool = True
    # --- tuning (times in milliseconds) ---
    tick_ms: int = 50
    election_timeout_ms: int = 1000  # minimum; the actual timeout is drawn in [t, 2t)
    heartbeat_interval_ms: int = 100
    fsync: bool = True
    # Where the WAL write + fsync runs: true = on the event loop (no thread hand-off, about
    # 10% more writes/s and 0.2 ms less per write here), false = on the disk thread (the loop
    # keeps serving during a slow fsync), auto = on the loop, but on the disk thread for a
    # while after an fsync took longer than a quarter of heartbeat_interval_ms.
    inline_fsync: bool | str = "auto"
    # Extend WAL segment files with this many zero bytes ahead of the writes, so most fsyncs
    # commit no file size or block allocation (raftd/storage/wal.py).  Off by default: here it
    # took 0.3 ms off an average save but the extensions put p99 up by 2-3 ms, and writes/s did
    # not move (docs/PERFORMANCE.md).  0 = plain appends.
    wal_preallocate_bytes: int = 0
    # auto: uvloop when installed (pip install 'raftd[fast]') and TLS is off, else asyncio
    event_loop: str = "auto"
    max_append_entries: int = 512
    max_append_bytes: int = 1 << 20
    max_inflight_msgs: int = 64
    max_frame_size: int = 16 << 20
    peer_queue_limit: int = 4096  # messages queued per peer before dropping (Raft retries)
    # Session limits are replicated (a leader proposes these when the cluster's differ).
    session_ttl_ms: int = 3_600_000
    snapshot_entries: int = 20_000  # take a snapshot after this many entries since the last
    snapshot_bytes: int = 64 << 20  # ... or this many bytes of entries
    snapshot_keep: int = 2  # snapshots kept on disk
    snapshot_trailing: int = 5_000  # entries kept in the log below the snapshot for slow followers
    catchup_rounds: int = 10  # membership: rounds to catch a new server up (thesis §4.2.1)
    catchup_round_timeout_ms: int = 10_000  # a round that takes longer aborts the change
    pre_vote: bool = True
    check_quorum: bool = True
    log_level: str = "info"
    metrics_listen: str | None = None
    # --- security (docs/SECURITY.md) ---
    tls: TLSFiles | None = None  # {ca, cert, key, client_ca}: mutual TLS on every connection
    max_connections_per_address: int = 256  # open connections from one remote IP address
    max_requests_per_second: int = 100_000  # per client connection (token bucket, 1 s burst)
    max_key_size: int = 4096  # bytes
    max_value_size: int = 1 << 20  # bytes
    max_sessions: int = 100_000  # client sessions (exactly-once table); LRU evicted beyond
    max_sessions_per_connection: int = 1024  # new client ids one connection may open
    max_unsent_bytes: int = 64 << 20  # replies a client has not read: then it is closed
    client_idle_timeout_ms: int = 300_000  # close a client connection silent this long (0: never)
    frame_timeout_ms: int = 30_000  # close any connection that leaves a frame unfinished this long

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]

    @property
    def election_ticks(self) -> int:
        return max(2, self.election_timeout_ms // self.tick_ms)

    @property
    def heartbeat_ticks(self) -> int:
        return max(1, self.heartbeat_interval_ms // self.tick_ms)


# Every key of raftd.yaml and its type; raftctl's inventory takes its tuning keys from here.
KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "listen": str, "data_dir": str, "peers": dict, "join": bool, "cluster": str,
    "cluster_id": (str, type(None)), "data_dir_lock": bool,
    "tick_ms": int, "election_timeout_ms": int, "heartbeat_interval_ms": int, "fsync": bool,
    "inline_fsync": (bool, str), "event_loop": str, "wal_preallocate_bytes": int,
    "max_append_entries": int, "max_append_bytes": int, "max_inflight_msgs": int,
    "max_frame_size": int, "peer_queue_limit": int,
    "session_ttl_ms": int, "snapshot_entries": int,
    "snapshot_bytes": int, "snapshot_keep": int, "snapshot_trailing": int,
    "catchup_rounds": int, "catchup_round_timeout_ms": int,
    "pre_vote": bool, "check_quorum": bool,
    "log_level": str, "metrics_listen": (str, type(None)),
    "tls": (dict, type(None)), "max_connections_per_address": int,
    "max_requests_per_second": int, "max_key_size": int, "max_value_size": int,
    "max_sessions": int, "max_sessions_per_connection": int, "max_unsent_bytes": int,
    "client_idle_timeout_ms": int, "frame_timeout_ms": int,
}
_TLS_KEYS = {"ca", "cert", "key", "client_ca"}
_REQUIRED = ("id", "listen", "data_dir")
assert set(KEY_TYPES) == {f.name for f in fields(NodeConfig)}

# Keys that must be positive numbers.
_POSITIVE = ("tick_ms", "election_timeout_ms", "heartbeat_interval_ms", "max_append_entries",
             "max_append_bytes", "max_inflight_msgs", "max_frame_size", "peer_queue_limit",
             "session_ttl_ms", "snapshot_entries", "snapshot_bytes", "snapshot_keep",
             "catchup_rounds", "catchup_round_timeout_ms", "max_connections_per_address",
             "max_requests_per_second", "max_key_size", "max_value_size", "max_sessions",
             "max_sessions_per_connection", "max_unsent_bytes", "frame_timeout_ms")
# Keys with a fixed set of values, and how the error names them.
_CHOICES: dict[str, tuple[tuple[object, ...], str]] = {
    "inline_fsync": ((True, False, "auto"), "expected true, false or auto"),
    "event_loop": (("auto", "asyncio", "uvloop"), "expected auto, asyncio or uvloop"),
    "log_level": (("debug", "info", "warning", "error"),
                  "expected one of debug, info, warning, error"),
}


def parse_config(raw: Any, source: str = "<config>") -> NodeConfig:
    """Validate a node's YAML (already parsed) into a NodeConfig; ConfigError names the file
    and the key.  The checks are raftd.validate's, shared with raftctl's inventory."""
    v = Validator(source, ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    v.check_keys(raw, KEY_TYPES)
    for key in _REQUIRED:
        if key not in raw:
            raise v.err("", key, "missing (required)")
    values = {key: v.typed(raw, key, KEY_TYPES[key]) for key in raw}
    _check_ids_and_addresses(v, values)
    _check_limits(v, values)
    if values.get("tls") is not None:
        values["tls"] = _parse_tls(v, values["tls"])
    if not values.get("join", False):
        _check_initial_members(v, values)
    cfg = NodeConfig(**values)
    if cfg.heartbeat_interval_ms * 2 > cfg.election_timeout_ms:
        raise v.err("", "heartbeat_interval_ms", "must be at most half of election_timeout_ms")
    for key, (allowed, why) in _CHOICES.items():
        if key in values and values[key] not in allowed:
            raise v.err("", key, why)
    if values.get("event_loop") == "uvloop" and values.get("tls") is not None:
        # The server upgrades each connection with start_tls before reading it (raftd/tls.py);
        # under uvloop that loses the client's first bytes.
        raise v.err("", "event_loop", "uvloop cannot be used with tls (use auto or asyncio)")
    return cfg


def _check_ids_and_addresses(v: Validator, values: dict[str, Any]) -> None:
    """The node's id and address, the peers' and the metrics address; cluster_id's form."""
    v.address("", "listen", values["listen"])
    why = node_id_problem(values["id"])
    if why is not None:
        raise v.err("", "id", why)
    cid = values.get("cluster_id")
    if cid is not None and (not cid or len(cid) > 64
                            or not all(c.isalnum() or c in "-_." for c in cid)):
        raise v.err("", "cluster_id", "expected 1-64 letters, digits, '-', '_' or '.'")
    peers = values.get("peers", {})
    for pid, paddr in peers.items():
        why = node_id_problem(pid)
        if why is not None:
            raise v.err("", f"peers.{pid}", why)
        v.address("", f"peers.{pid}", paddr)
    values["peers"] = dict(peers)
    if values.get("metrics_listen"):
        v.address("", "metrics_listen", values["metrics_listen"])


def _check_limits(v: Validator, values: dict[str, Any]) -> None:
    for key in _POSITIVE:
        if key in values and values[key] <= 0:
            raise v.err("", key, "must be positive")
    if values.get("client_idle_timeout_ms", 0) < 0:
        raise v.err("", "client_idle_timeout_ms", "must be >= 0 (0: never)")
    if values.get("max_sessions", 0) > DEFAULT_MAX_SESSIONS:
        raise v.err("", "max_sessions",
                    f"at most {DEFAULT_MAX_SESSIONS} (the state machine's table)")
    if values.get("wal_preallocate_bytes", 0) < 0:
        raise v.err("", "wal_preallocate_bytes", "must be 0 or more")


def _check_initial_members(v: Validator, values: dict[str, Any]) -> None:
    """A node that is not joining lists every initial member, itself included, at the address
    it listens on."""
    peers = values["peers"]
    if not peers:
        raise v.err("", "peers",
                    "required unless join: true (every initial member, itself included)")
    if values["id"] not in peers:
        raise v.err("", "peers", f"must include this node's own id {values['id']!r}")
    why = _own_address_problem(values["listen"], peers[values["id"]])
    if why is not None:
        # Peers would reach this node at one address while it listens at another: the
        # cluster never forms (issue 14 §9, issue 16 §10).
        raise v.err("", f"peers.{values['id']}", why)


def _own_address_problem(listen: str, announced: str) -> str | None:
    """Why this node's entry in ``peers`` cannot reach its ``listen`` address, or None.  A
    wildcard listen host (0.0.0.0, ::) serves every address, so only the port must agree."""
    lhost, lport = split_address(listen)
    phost, pport = split_address(announced)
    if lport != pport or (lhost not in ("0.0.0.0", "::", "") and lhost != phost):
        return (f"this node's own entry is {announced} but it listens on {listen} "
                f"(they must name the same address)")
    return None


def _parse_tls(v: Validator, raw: dict[str, Any]) -> TLSFiles:
    """tls: {ca, cert, key, client_ca}; relative paths are relative to the config file."""
    v.check_keys(raw, _TLS_KEYS, prefix="tls.")
    source = v.source
    base = Path(source).parent if source and not source.startswith("<") else Path(".")
    paths = {}
    for k in _TLS_KEYS:
        p = raw.get(k)
        if p is None:
            if k != "client_ca":
                raise v.err("", f"tls.{k}", "missing (tls needs ca, cert and key)")
            continue
        if not isinstance(p, str) or not p:
            raise v.err("", f"tls.{k}", f"expected a file path, got {p!r}")
        paths[k] = str(base / p) if not Path(p).is_absolute() else p
    return TLSFiles(paths["ca"], paths["cert"], paths["key"], paths.get("client_ca"))


def read_yaml(path: str | Path, error: type[Exception] = ConfigError):
    """Parse a YAML file; unreadable files and bad YAML raise ``error`` with one readable line
    naming the file (and the line and column for bad YAML)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise error(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{p}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None


def load_config(path: str | Path) -> NodeConfig:
    return parse_config(read_yaml(path), str(path))


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
