"""The replicated key-value state machine.

Deterministic by construction: no clock, no randomness, no I/O.  Its state is a pure function
of the sequence of committed entries applied to it (plus the two constructor parameters,
which must therefore be identical on every node of a cluster), so all nodes agree on the
data, the session table, every result and ``digest()``.

Time.  The only time the state machine knows is ``now_ms``: the largest ``timestamp_ms`` of
any command applied so far.  Commands carry the cluster time of the leader that proposed
them (raftd/runtime/clusterclock.py); taking the max keeps ``now_ms`` monotonic across
leader changes.

Exactly-once (Raft thesis §6.3).  A command with a ``client_id`` and ``seq > 0`` belongs to a
client session.  The table keeps, per client, the last sequence number applied, its result
and the log time it was last active.  A retry of the last request returns the saved result
without applying again; an even older request gets a ``stale_sequence`` error, because its
response is no longer kept (a client has one request outstanding at a time, so it has
already seen that response).

Sessions are opened by OPEN_SESSION (seq 1); the client's writes then use seq 2, 3, ...  A
write with seq >= 2 from a client_id the table does not hold gets ``session_expired`` and is
not applied: its session expired or was evicted, so a retry could otherwise apply twice.
(A write with seq 1 from an unknown client opens its session implicitly, as clients of
earlier versions expect.)  The session limits (``session_ttl_ms`` of log time without
activity, ``max_sessions`` with least-recently-used eviction) are replicated state, set by
SESSION_LIMITS commands and kept in snapshots: per-node settings would let two replicas
expire different sessions and then apply one retry a different number of times.

Expiry and eviction are both driven by an ordering on (last_active_ms, client_id), kept in a
heap with lazy deletion: it depends only on the table's contents, not on the order in which
things happened, so a node restored from a snapshot evicts exactly like one that replayed
the log.
"""
from __future__ import annotations

import builtins
import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import msgpack
from sortedcontainers import SortedList

from raftd.core.types import Entry, EntryKind

from .commands import Command, Op, decode_command, decode_limits

SNAPSHOT_VERSION = 1
DEFAULT_SESSION_TTL_MS = 60 * 60 * 1000
DEFAULT_MAX_SESSIONS = 100_000


class AppliedIndexError(RuntimeError):
    """An entry was applied out of order (index not above applied_index): a runtime bug."""


@dataclass(frozen=True, slots=True)
class Session:
    last_seq: int
    last_result: dict[str, Any]
    last_active_ms: int


def _canonical_result(result: Mapping[str, Any]) -> list[list[Any]]:
    return [[k, result[k]] for k in sorted(result)]


_MISSING = object()
_TOMBSTONE = object()


class KVStateMachine:
    """See the module docstring.  Writes come only through ``apply``/``apply_noop``; reads
    (``get``, ``list``, ``len``) are served by the runtime after ReadIndex."""

    def __init__(self, session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
                 max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if session_ttl_ms < 0:
            raise ValueError("session_ttl_ms must be >= 0")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.session_ttl_ms = session_ttl_ms
        self.max_sessions = max_sessions
        self.applied_index = 0
        self.now_ms = 0
        self._data: dict[str, bytes] = {}
        # While a snapshot is being written from ``_data`` by another thread, writes go to
        # this overlay (None otherwise; _TOMBSTONE marks a delete) and thaw() merges them back.
        # Taking a snapshot therefore costs O(1) on the event loop, whatever the state size.
        self._overlay: dict[str, object] | None = None
        self._keys = SortedList()  # the live keys in order: O(log n) insert, prefix scans
        self._sessions: dict[str, Session] = {}
        # (last_active_ms, client_id); an item is live iff it matches the session's current
        # last_active_ms.  Stale items are skipped when popped and purged when too many.
        self._heap: list[tuple[int, str]] = []
        # Node-local counters for monitoring: not replicated state, not in digest/snapshot.
        self.stats: dict[str, int] = {"puts": 0, "deletes": 0, "cas": 0, "duplicates": 0,
                                      "stale": 0, "invalid": 0, "expired": 0}

    # ------------------------------------------------------------------ writes (the log)

    def apply(self, index: int, data: bytes) -> dict[str, Any]:
        """Apply the committed NORMAL entry at ``index`` and return its result."""
        self._advance(index)
        try:
            cmd = decode_command(data)
        except ValueError as e:
            # Every node sees the same bytes and reaches the same verdict, so answering with
            # an error keeps the replicas identical, while raising would halt every node on
            # the same poisoned entry forever.  (The leader validates before proposing.)
            self.stats["invalid"] += 1
            return {"index": index, "error": "invalid_command", "message": str(e)}
        return self._apply_command(index, cmd)

    def apply_command(self, index: int, cmd: Command) -> dict[str, Any]:
        """``apply`` for a command the caller already holds decoded: the leader keeps the
        Command it proposed, and the entry at (index, term) is that one (Log Matching)."""
        self._advance(index)
        return self._apply_command(index, cmd)

    def apply_noop(self, index: int) -> None:
        """Account for an entry that is not a command (leader no-op, configuration change)."""
        self._advance(index)

    def apply_entry(self, entry: Entry) -> dict[str, Any] | None:
        """Convenience for the runtime: dispatch on the entry kind.  None for non-commands."""
        if entry.kind == EntryKind.NORMAL:
            return self.apply(entry.index, entry.data)
        self.apply_noop(entry.index)
        return None

    def _advance(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index <= self.applied_index:
            raise AppliedIndexError(
                f"entry {index!r} applied after entry {self.applied_index}: "
                "applied indexes must strictly increase")
        self.applied_index = index

    def _apply_command(self, index: int, cmd: Command) -> dict[str, Any]:
        if cmd.timestamp_ms > self.now_ms:
            self.now_ms = cmd.timestamp_ms
            self._expire_sessions()

        session = None
        if cmd.has_session:
            assert cmd.client_id is not None
            session = self._sessions.get(cmd.client_id)
            if session is None and cmd.seq > 1:
                self.stats["expired"] += 1
                return {"index": index, "error": "session_expired", "seq": cmd.seq,
                        "message": f"session {cmd.client_id} expired or was evicted; "
                                   f"request {cmd.seq} was not applied again"}
            if session is not None and cmd.seq <= session.last_seq:
                self._touch(cmd.client_id, session.last_seq, session.last_result)
                if cmd.seq == session.last_seq:
                    self.stats["duplicates"] += 1
                    return dict(session.last_result)
                self.stats["stale"] += 1
                return {"index": index, "error": "stale_sequence", "seq": cmd.seq,
                        "last_seq": session.last_seq}

        result = self._execute(index, cmd)

        if cmd.has_session:
            assert cmd.client_id is not None
            if cmd.client_id not in self._sessions:
                # Make room first, so that the session just opened is never the one evicted
                # (its result must survive for the client's retry).  Checked after execute: a
                # SESSION_LIMITS command may have evicted this very session.
                while len(self._sessions) >= self.max_sessions:
                    self._pop_oldest_session()
            self._touch(cmd.client_id, cmd.seq, dict(result))
        return result

    def _execute(self, index: int, cmd: Command) -> dict[str, Any]:
        key = cmd.key
        if cmd.op is Op.OPEN_SESSION:
            return {"index": index}
        if cmd.op is Op.SESSION_LIMITS:
            assert cmd.value is not None
            self.set_limits(*decode_limits(cmd.value))
            return {"index": index, "session_ttl_ms": self.session_ttl_ms,
                    "max_sessions": self.max_sessions}
        if cmd.op is Op.PUT:
            assert cmd.value is not None
            self._set(key, cmd.value)
            self.stats["puts"] += 1
            return {"index": index}
        if cmd.op is Op.DELETE:
            deleted = self._delete(key)
            self.stats["deletes"] += 1
            return {"index": index, "deleted": deleted}
        if cmd.op is Op.CAS:
            assert cmd.value is not None
            swapped = self._lookup(key) == cmd.expected  # expected None: must be absent
            if swapped:
                self._set(key, cmd.value)
            self.stats["cas"] += 1
            return {"index": index, "swapped": swapped}
        raise AssertionError(f"unhandled op {cmd.op!r}")  # Command validates op

    def _value(self, key: str) -> bytes:
        """The value of a key known to be live (one of ``_keys``)."""
        v = self._lookup(key)
        assert v is not None
        return v

    def _lookup(self, key: str) -> bytes | None:
        ov = self._overlay
        if ov is not None:
            v = ov.get(key, _MISSING)
            if v is not _MISSING:
                return None if v is _TOMBSTONE else v  # type: ignore[return-value]
        return self._data.get(key)

    def _set(self, key: str, value: bytes) -> None:
        if self._lookup(key) is None:
            self._keys.add(key)
        if self._overlay is not None:
            self._overlay[key] = value
        else:
            self._data[key] = value

    def _delete(self, key: str) -> bool:
        if self._lookup(key) is None:
            return False
        if self._overlay is not None:
            self._overlay[key] = _TOMBSTONE
        else:
            del self._data[key]
        self._keys.remove(key)
        return True

    # ------------------------------------------------------------------ sessions

    def _touch(self, client_id: str, seq: int, result: dict[str, Any]) -> None:
        old = self._sessions.get(client_id)
        self._sessions[client_id] = Session(seq, result, self.now_ms)
        if old is None or old.last_active_ms != self.now_ms:
            heapq.heappush(self._heap, (self.now_ms, client_id))
            if len(self._heap) > 2 * len(self._sessions) + 64:
                self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(s.last_active_ms, cid) for cid, s in self._sessions.items()]
        heapq.heapify(self._heap)

    def _peek_oldest(self) -> tuple[int, str] | None:
        """The live (last_active_ms, client_id) minimum, dropping stale heap items."""
        heap = self._heap
        while heap:
            active, cid = heap[0]
            s = self._sessions.get(cid)
            if s is not None and s.last_active_ms == active:
                return active, cid
            heapq.heappop(heap)
        return None

    def _pop_oldest_session(self) -> None:
        oldest = self._peek_oldest()
        assert oldest is not None
        heapq.heappop(self._heap)
        del self._sessions[oldest[1]]

    def set_limits(self, session_ttl_ms: int, max_sessions: int) -> None:
        """Apply new session limits (from a committed SESSION_LIMITS command)."""
        self.session_ttl_ms, self.max_sessions = session_ttl_ms, max_sessions
        self._expire_sessions()
        while len(self._sessions) > self.max_sessions:
            self._pop_oldest_session()

    def _expire_sessions(self) -> None:
        """Drop sessions with last_active_ms < now_ms - session_ttl_ms.  O(log n) per
        expired session, O(1) when nothing expires (only the heap minimum is looked at)."""
        cutoff = self.now_ms - self.session_ttl_ms
        while (oldest := self._peek_oldest()) is not None and oldest[0] < cutoff:
            heapq.heappop(self._heap)
            del self._sessions[oldest[1]]

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Read-only view of the session table (client_id -> Session)."""
        return MappingProxyType(self._sessions)

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> bytes | None:
        return self._lookup(key)

    def list(self, prefix: str = "", limit: int | None = None) -> dict[str, bytes]:
        """Keys starting with ``prefix`` and their values, in key order (at most ``limit``).
        O(log n + k): a bisect into the sorted key list, then the k matches."""
        out: dict[str, bytes] = {}
        for k in self._keys.irange(minimum=prefix):
            if not k.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out[k] = self._value(k)
        return out

    def page(self, prefix: str, start_after: str | None, limit: int,
             max_bytes: int) -> tuple[dict[str, bytes], bool]:
        """One page of ``list``: keys with ``prefix`` after ``start_after``, at most ``limit``
        of them and about ``max_bytes`` of keys and values (always at least one item).
        Returns (items, more): ``more`` is True when keys remain after the last one."""
        out: dict[str, bytes] = {}
        size = 0
        after = start_after is not None and start_after >= prefix
        lo = start_after if after else prefix
        for k in self._keys.irange(minimum=lo, inclusive=(not after, True)):
            if not k.startswith(prefix):
                break
            v = self._value(k)
            size += len(k) + len(v) + 16  # + msgpack overhead, roughly
            if out and (len(out) >= limit or size > max_bytes):
                return out, True
            out[k] = v
        return out, False

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._lookup(key) is not None

    def digest(self) -> str:
        """SHA-256 (hex) of the full replicated state: applied_index, now_ms, data and
        sessions.  Equal on two nodes iff they hold the same state."""
        h = hashlib.sha256()
        packer = msgpack.Packer(use_bin_type=True)
        h.update(packer.pack(["kv-digest", SNAPSHOT_VERSION, self.applied_index, self.now_ms,
                              len(self._keys), len(self._sessions), self.session_ttl_ms,
                              self.max_sessions]))
        for k in self._keys:
            h.update(packer.pack([k, self._lookup(k)]))
        for cid in sorted(self._sessions):
            s = self._sessions[cid]
            h.update(packer.pack([cid, s.last_seq, s.last_active_ms,
                                  _canonical_result(s.last_result)]))
        return h.hexdigest()

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """Serialise the replicated state (not ``stats``)."""
        blob: bytes = msgpack.packb(
            {
                "version": SNAPSHOT_VERSION,
                "applied_index": self.applied_index,
                "now_ms": self.now_ms,
                "session_ttl_ms": self.session_ttl_ms,
                "max_sessions": self.max_sessions,
                "data": [[k, self._lookup(k)] for k in self._keys],
                "sessions": [[cid, s.last_seq, s.last_active_ms, s.last_result]
                             for cid, s in sorted(self._sessions.items())],
            },
            use_bin_type=True,
        )
        return blob

    # --- streaming snapshots (large states): freeze in the event loop, write elsewhere ------

    def freeze(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """A consistent copy of the replicated state, cheap enough to take on the event loop
        (a shallow dict copy: values are immutable bytes), to be serialised by another thread
        while this state machine keeps applying.  Returns (header, data)."""
        if self._overlay is not None:
            raise RuntimeError("a snapshot is already being taken (call thaw() first)")
        header = {"version": SNAPSHOT_VERSION, "applied_index": self.applied_index,
                  "now_ms": self.now_ms, "session_ttl_ms": self.session_ttl_ms,
                  "max_sessions": self.max_sessions,
                  "sessions": [[cid, s.last_seq, s.last_active_ms, s.last_result]
                               for cid, s in self._sessions.items()]}
        self._overlay = {}
        return header, self._data

    def thaw(self) -> None:
        """The snapshot of freeze() is written: fold the writes made meanwhile back in."""
        ov, self._overlay = self._overlay, None
        if ov:
            data = self._data
            for k, v in ov.items():
                if v is _TOMBSTONE:
                    data.pop(k, None)
                else:
                    data[k] = v  # type: ignore[assignment]

    def restore_stream(self, header: dict[str, Any],
                       batches: Iterable[builtins.list[builtins.list[Any]]]) -> None:
        """Replace the whole state from a frozen header and an iterable of [[key, value], ...]
        batches (see raftd.storage.snapshots).  ValueError on bad data, state untouched."""
        try:
            if header.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"not a version-{SNAPSHOT_VERSION} kv snapshot")
            applied_index, now_ms = header["applied_index"], header["now_ms"]
            if not (isinstance(applied_index, int) and isinstance(now_ms, int)):
                raise ValueError("applied_index and now_ms must be ints")
            # Snapshots of earlier versions hold no limits: they ran with the defaults.
            ttl = header.get("session_ttl_ms", DEFAULT_SESSION_TTL_MS)
            cap = header.get("max_sessions", DEFAULT_MAX_SESSIONS)
            if not (type(ttl) is int and type(cap) is int and ttl >= 0 and cap >= 1):
                raise ValueError(f"bad session limits {ttl!r}, {cap!r}")
            kv: dict[str, bytes] = {}
            for batch in batches:
                for k, v in batch:
                    if type(k) is not str or type(v) is not bytes:
                        raise ValueError(f"bad data item {k!r}")
                    kv[k] = v
            sessions: dict[str, Session] = {}
            for cid, seq, active, result in header["sessions"]:
                if not (isinstance(cid, str) and isinstance(seq, int) and isinstance(active, int)
                        and isinstance(result, dict)):
                    raise ValueError(f"bad session item {cid!r}")
                sessions[cid] = Session(seq, result, active)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - unpacking mismatches and the like
            raise ValueError(f"bad kv snapshot: {type(e).__name__}: {e}") from None
        self.applied_index = applied_index
        self.now_ms = now_ms
        self.session_ttl_ms, self.max_sessions = ttl, cap
        self._data = kv
        self._overlay = None  # a snapshot being written keeps its own reference to the old dict
        self._keys = SortedList(kv)
        self._sessions = sessions
        self._rebuild_heap()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot() blob.  On bad data raise ValueError and
        leave the current state untouched.  ``stats`` are node-local and are kept."""
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
            if not isinstance(obj, dict):
                raise ValueError(f"not a version-{SNAPSHOT_VERSION} kv snapshot")
            batches = [obj["data"]]
        except ValueError:
            raise
        except Exception as e:  # msgpack errors, KeyError
            raise ValueError(f"bad kv snapshot: {type(e).__name__}: {e}") from None
        self.restore_stream(obj, batches)
