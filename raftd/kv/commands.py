"""Key-value commands and their encoding into the bytes of NORMAL Raft log entries.

A command is encoded as a msgpack array whose first element is a format version:

    [1, op, key, value, expected, client_id, seq, timestamp_ms]

The encoding is stored in the log forever (and replayed by nodes that join later), so
``Op`` values and the field order of format 1 must never change; a new layout gets a new
version number and ``decode_command`` keeps accepting the old ones.

``timestamp_ms`` is the cluster time when the leader proposed the command (see
raftd/runtime/clusterclock.py: it moves forward only by elapsed time and survives leader
changes).  It is the only notion of time the state machine has (session expiry, see fsm.py):
the state machine never reads a clock, so every node computes the same thing from the log.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

FORMAT_VERSION = 1
_V1_FIELDS = 8  # version + 7 Command fields


class Op(enum.IntEnum):
    # Stored in the Raft log: never renumber.
    PUT = 1  # set key to value
    DELETE = 2  # remove key (no error if absent)
    CAS = 3  # set key to value iff its current value == expected (None: key must be absent)
    OPEN_SESSION = 4  # register client_id (seq 1); later writes of it use seq >= 2 (§6.3)
    SESSION_LIMITS = 5  # value = msgpack [session_ttl_ms, max_sessions]: replicated settings


# Ops that are about the session table, not a key: their key is "".
_KEYLESS = (Op.OPEN_SESSION, Op.SESSION_LIMITS)


def encode_limits(session_ttl_ms: int, max_sessions: int) -> bytes:
    """The value of a SESSION_LIMITS command."""
    value: bytes = msgpack.packb([session_ttl_ms, max_sessions])
    return value


def decode_limits(value: bytes) -> tuple[int, int]:
    """Inverse of ``encode_limits``; ValueError on anything else."""
    try:
        ttl, cap = msgpack.unpackb(value, raw=False)
    except Exception:  # noqa: BLE001 - msgpack errors, unpacking mismatches
        raise ValueError("SESSION_LIMITS value must be msgpack [ttl_ms, max_sessions]") from None
    if not (_is_int(ttl) and _is_int(cap) and ttl >= 0 and cap >= 1):
        raise ValueError(f"bad session limits ttl={ttl!r} max_sessions={cap!r}")
    return ttl, cap


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True, slots=True)
class Command:
    """One state-machine command.  Validated on construction, so a Command that exists can
    always be encoded, and ``decode_command`` can only return valid commands.

    ``client_id``/``seq`` identify the request for exactly-once semantics (Raft thesis
    §6.3): a client numbers its requests 1, 2, 3, ... and retries with the same number.
    ``seq == 0`` (or no client_id) means "no session": the command is applied every time
    it appears in the log.
    """

    op: Op
    key: str
    value: bytes | None = None
    expected: bytes | None = None
    client_id: str | None = None
    seq: int = 0
    timestamp_ms: int = 0

    def __post_init__(self) -> None:
        try:
            op = Op(self.op)
        except ValueError:
            raise ValueError(f"unknown op {self.op!r}") from None
        object.__setattr__(self, "op", op)
        if op in _KEYLESS:
            self._check_keyless(op)
        elif not isinstance(self.key, str) or not self.key:
            raise ValueError(f"key must be a non-empty str, got {self.key!r}")
        for name in ("value", "expected"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bytes):
                raise ValueError(f"{name} must be bytes or None, got {type(v).__name__}")
        if op in (Op.PUT, Op.CAS) and self.value is None:
            raise ValueError(f"{op.name} needs a value")
        if op in (Op.PUT, Op.DELETE) and self.expected is not None:
            raise ValueError(f"{op.name} takes no expected value")
        if op is Op.DELETE and self.value is not None:
            raise ValueError("DELETE takes no value")
        if self.client_id is not None and (not isinstance(self.client_id, str)
                                           or not self.client_id):
            raise ValueError(f"client_id must be a non-empty str or None, got {self.client_id!r}")
        if not _is_int(self.seq) or self.seq < 0:
            raise ValueError(f"seq must be an int >= 0, got {self.seq!r}")
        if self.seq > 0 and self.client_id is None:
            raise ValueError("seq > 0 needs a client_id")
        if not _is_int(self.timestamp_ms) or self.timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be an int >= 0, got {self.timestamp_ms!r}")

    def _check_keyless(self, op: Op) -> None:
        if self.key != "" or self.expected is not None:
            raise ValueError(f"{op.name} takes no key and no expected value")
        if op is Op.OPEN_SESSION:
            if self.value is not None or self.client_id is None or self.seq != 1:
                raise ValueError("OPEN_SESSION needs a client_id and seq 1, and no value")
        elif not isinstance(self.value, bytes):
            raise ValueError("SESSION_LIMITS needs a value")
        else:
            decode_limits(self.value)

    @property
    def has_session(self) -> bool:
        """True if this command takes part in exactly-once deduplication."""
        return self.client_id is not None and self.seq > 0


_new_command = object.__new__
_set = object.__setattr__


def session_put(key: object, value: object, client_id: object, seq: object,
                timestamp_ms: object) -> Command | None:
    """A PUT with a session, built without the generic validation of ``Command(...)`` when its
    fields have exactly the types and ranges that validation demands (the common case on the
    hot paths: 1.5 instead of 7 us); None otherwise, and the caller uses ``Command(...)``."""
    if not (type(key) is str and key and type(value) is bytes and type(client_id) is str
            and client_id and type(seq) is int and seq > 0 and type(timestamp_ms) is int
            and timestamp_ms >= 0):
        return None
    cmd = _new_command(Command)
    _set(cmd, "op", Op.PUT)
    _set(cmd, "key", key)
    _set(cmd, "value", value)
    _set(cmd, "expected", None)
    _set(cmd, "client_id", client_id)
    _set(cmd, "seq", seq)
    _set(cmd, "timestamp_ms", timestamp_ms)
    return cmd


def encode_command(cmd: Command) -> bytes:
    """The bytes to put in a NORMAL log entry.  Deterministic for equal commands."""
    if not isinstance(cmd, Command):
        raise TypeError(f"expected a Command, got {type(cmd).__name__}")
    data: bytes = msgpack.packb(
        [FORMAT_VERSION, int(cmd.op), cmd.key, cmd.value, cmd.expected, cmd.client_id,
         cmd.seq, cmd.timestamp_ms],
        use_bin_type=True,
    )
    return data


def decode_command(data: bytes) -> Command:
    """Inverse of ``encode_command``.  Raises ValueError (never anything else) on bad data."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"command data must be bytes, got {type(data).__name__}")
    try:
        obj = msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # ExtraData, FormatError, StackError, UnicodeDecodeError, ...
        raise ValueError(f"command is not valid msgpack: {type(e).__name__}: {e}") from None
    if not isinstance(obj, list) or not obj:
        raise ValueError(f"command must be a non-empty msgpack array, got {type(obj).__name__}")
    version = obj[0]
    if version != FORMAT_VERSION or not _is_int(version):
        raise ValueError(f"unsupported command format version {version!r}")
    if len(obj) != _V1_FIELDS:
        raise ValueError(f"command format {FORMAT_VERSION} has {_V1_FIELDS} fields, got {len(obj)}")
    _, op, key, value, expected, client_id, seq, timestamp_ms = obj
    if not _is_int(op):
        raise ValueError(f"op must be an int, got {op!r}")
    # Fast path for what every write of a session-using client looks like (a PUT with a
    # client id).  Every node applies every entry, so this runs once per entry per node.
    if op == 1 and expected is None:
        cmd = session_put(key, value, client_id, seq, timestamp_ms)
        if cmd is not None:
            return cmd
    try:
        return Command(op=op, key=key, value=value, expected=expected, client_id=client_id,
                       seq=seq, timestamp_ms=timestamp_ms)
    except ValueError as e:
        raise ValueError(f"invalid command: {e}") from None
