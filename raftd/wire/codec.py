"""Message layer of the raftd wire protocol: raft messages and client maps <-> frame bodies.

Raft messages: the body is a msgpack array of the dataclass fields in declaration order;
an ``Entry`` is the array ``[term, index, kind, data]``.  The codec is driven by
``MESSAGE_TYPES`` and ``dataclasses.fields``: a new message type whose fields are
int/str/bool/bytes (optionally ``| None``) or ``tuple[Entry, ...]`` needs no change here.
A field of any other type makes the first raft message encoded or decoded fail, naming the field.

Decoding never trusts the peer: any malformed body raises ``UndecodableBody`` (a
``RemoteProtocolError``), never another exception.  Types are checked against a schema
computed once per class, on the first raft message encoded or decoded (``_schemas``): a client
uses only the client frames, and building the tables (and importing the Raft core for them)
cost every `raftctl kv get` about 30 ms (issue 16 §6).

Client frames (CLIENT_REQUEST, CLIENT_RESPONSE, ERROR, HELLO) carry a msgpack map with str
keys; see docs/PROTOCOL.md for the ops and their arguments.
"""
from __future__ import annotations

import enum
import functools
import types
import typing
from itertools import repeat
from operator import attrgetter, contains
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from raftd.validate import node_id_problem

from .prescan import StructureError, check_structure
from .framing import (
    FrameType,
    UndecodableBody,
    check_raft_frame_types,
    UnknownFrameType,
    encode_frame,
)

if TYPE_CHECKING:
    from raftd.core.messages import Message
    from raftd.core.types import Entry

__all__ = [
    "ErrorCode",
    "encode_message",
    "decode_message",
    "encode_client_request",
    "encode_client_response",
    "encode_error",
    "encode_hello",
    "decode_body",
    "decode_hello",
]


class ErrorCode(enum.StrEnum):
    """Every ``error.code`` in CLIENT_RESPONSE and ``code`` in ERROR frames: the one list
    (docs/PROTOCOL.md §6.4; tests/wire/test_error_codes.py checks both against the code)."""

    NOT_LEADER = "not_leader"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    TOO_LARGE = "too_large"
    VERSION_MISMATCH = "version_mismatch"
    INTERNAL = "internal"
    # sessions (thesis §6.3)
    SESSION_EXPIRED = "session_expired"
    STALE_SEQUENCE = "stale_sequence"
    TOO_MANY_SESSIONS = "too_many_sessions"
    # limits and access (docs/SECURITY.md)
    RATE_LIMITED = "rate_limited"
    PERMISSION_DENIED = "permission_denied"
    FRAME_TOO_LARGE = "frame_too_large"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    WRONG_CLUSTER = "wrong_cluster"
    # membership changes (thesis §4)
    CHANGE_IN_PROGRESS = "change_in_progress"
    LEADERSHIP_LOST = "leadership_lost"
    NO_QUORUM = "no_quorum"
    CATCH_UP_FAILED = "catch_up_failed"
    UNREACHABLE = "unreachable"
    NOT_JOINABLE = "not_joinable"
    ID_REMOVED = "id_removed"


# --------------------------------------------------------------------------- msgpack

# One Packer reused for raft messages (measurably cheaper than packb, which builds a Packer
# per call).  Safe to share between threads: it only ever packs a message's fields (int, str,
# bool, bytes, None, tuples of Entry), for which no Python code runs inside pack(), so no
# thread switch can happen half-way.  Client maps may be dict subclasses (whose items() is
# Python code), so they go through packb.
_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not used by this protocol")


def _unpack(body: bytes) -> Any:
    """msgpack -> Python, with every limit bounded by the body size and every failure mapped
    to UndecodableBody (msgpack raises ValueError, its subclasses ExtraData, FormatError and
    StackError, TypeError, UnicodeDecodeError, ...)."""
    n = len(body)
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,  # map keys must be str (or bin)
            ext_hook=_reject_ext,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )
    except Exception as exc:  # peer input: any failure at all is the peer's fault
        raise UndecodableBody(f"{type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- entries
# The one hot path: AppendEntries with many entries.  Entry is a NamedTuple, which msgpack
# packs as an array as it stands, so encoding needs no per-entry work.  Decoding checks the
# types a column at a time with C-level map/set, then builds every Entry with tuple.__new__
# through map, so no Python-level code runs per entry (benchmarks/bench_codec.py compares
# this with a plain ``Entry(*e)`` loop).

_ENTRY_FIELDS = ("term", "index", "kind", "data")
_tuple_new = tuple.__new__
_ONLY_LIST = {list}
_ONLY_FOUR = {4}
_ONLY_INT = {int}
_ONLY_BYTES = {bytes}


def _decode_entries(entry: type[Entry], raw: list[Any]) -> tuple[Entry, ...]:
    """``raw`` (a list of 4-element arrays) -> Entry tuples (``entry`` is the Entry class,
    bound once by the schema, so this module does not import the core at import)."""
    if not raw:
        return ()
    if set(map(type, raw)) != _ONLY_LIST or set(map(len, raw)) != _ONLY_FOUR:
        raise UndecodableBody("an entry is not a 4-element array")
    terms, indexes, kinds, datas = zip(*raw, strict=True)  # every entry has 4 fields (above)
    # exact types: bool is an int subclass but not an int on this wire
    if set(map(type, terms + indexes + kinds)) != _ONLY_INT or set(map(type, datas)) != _ONLY_BYTES:
        raise UndecodableBody("entry field of the wrong type")
    return tuple(map(_tuple_new, repeat(entry), raw))


# --------------------------------------------------------------------------- schema

def _field_spec(cls: type, name: str, hint: Any,
                entry: type) -> tuple[frozenset[type], Callable[[Any], Any] | None]:
    """(the exact Python types msgpack may decode this field to, converter or None).

    Encoding needs no per-field work: every supported value (Entry included) is something
    msgpack packs natively."""
    primitives: dict[Any, type] = {int: int, str: str, bool: bool, bytes: bytes,
                                   None: types.NoneType, types.NoneType: types.NoneType}
    if hint == tuple[entry, ...]:  # type: ignore[valid-type]
        return frozenset({list}), functools.partial(_decode_entries, entry)
    if hint in primitives:
        return frozenset({primitives[hint]}), None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        if all(a in primitives for a in args):
            return frozenset(primitives[a] for a in args), None
    raise TypeError(
        f"raftd.wire.codec: {cls.__name__}.{name} has type {hint!r}, which the wire codec does "
        f"not know; supported: int, str, bool, bytes, X | None, tuple[Entry, ...]"
    )


class _Schema:
    """Everything needed to encode/decode one message class, computed once."""

    __slots__ = ("cls", "tag", "nfields", "getter", "allowed", "decoders", "problem")

    def __init__(self, tag: int, cls: type, entry: type,
                 problem: Callable[[Any], str | None]):
        import dataclasses  # noqa: PLC0415 - with the tables, on first use (it imports inspect)

        flds = dataclasses.fields(cls)
        hints = typing.get_type_hints(cls)
        specs = [_field_spec(cls, f.name, hints[f.name], entry) for f in flds]
        names = [f.name for f in flds]
        self.cls = cls
        self.tag = tag
        self.nfields = len(flds)
        getter = attrgetter(*names)
        # attrgetter with one name returns the value, not a 1-tuple
        self.getter = getter if len(names) > 1 else (lambda m, _g=getter: (_g(m),))
        self.allowed = tuple(s[0] for s in specs)
        self.decoders = tuple((i, s[1]) for i, s in enumerate(specs) if s[1] is not None)
        self.problem = problem  # what no honest peer sends (raftd.core.validate)


@functools.cache
def _schemas() -> tuple[dict[int, _Schema], dict[type, _Schema]]:
    """The schema of every raft message, by wire tag and by class: built once, on the first
    raft message encoded or decoded (the only state this module keeps).  Fails, naming the
    field, for a message field of a type the codec does not know."""
    from raftd.core.messages import MESSAGE_TYPES  # noqa: PLC0415 - see the module docstring
    from raftd.core.types import Entry  # noqa: PLC0415 - the same
    from raftd.core.validate import problem  # noqa: PLC0415 - the same

    if not (issubclass(Entry, tuple)
            and getattr(Entry, "_fields", None) == _ENTRY_FIELDS):  # pragma: no cover
        raise ImportError("raftd.core.types.Entry is no longer the NamedTuple (term, index, "
                          "kind, data); update _decode_entries in raftd.wire.codec and "
                          "docs/PROTOCOL.md")
    check_raft_frame_types()
    by_tag: dict[int, _Schema] = {}
    by_class: dict[type, _Schema] = {}
    for tag, cls in MESSAGE_TYPES.items():
        schema = _Schema(int(tag), cls, Entry, problem)
        by_tag[schema.tag] = by_class[cls] = schema
    return by_tag, by_class


# --------------------------------------------------------------------------- raft messages

def encode_message(msg: Message) -> bytes:
    """The complete frame (header + body) for a raft message."""
    try:
        schema = _schemas()[1][type(msg)]
    except KeyError:
        raise TypeError(f"not a raft message: {type(msg).__name__}") from None
    return encode_frame(schema.tag, _pack(schema.getter(msg)))


def decode_message(frame_type: int, body: bytes) -> Message:
    """Body of a raft frame -> message.  Raises UnknownFrameType if ``frame_type`` is not a
    raft message type, UndecodableBody if the body does not match the message's schema."""
    schema = _schemas()[0].get(frame_type)
    if schema is None:
        raise UnknownFrameType(frame_type)
    values = _unpack(body)
    if type(values) is not list or len(values) != schema.nfields:
        raise UndecodableBody(f"{schema.cls.__name__} must be an array of {schema.nfields} fields")
    # exact type of every field against the precomputed schema (C-level loop)
    if not all(map(contains, schema.allowed, map(type, values))):
        raise UndecodableBody(f"{schema.cls.__name__}: a field has the wrong type")
    for i, dec in schema.decoders:
        values[i] = dec(values[i])
    msg: Message = schema.cls(*values)
    # What no honest peer sends (terms and indexes near the 64-bit limit, entries out of
    # order, a CONFIG entry that does not decode...) is a protocol error of the connection,
    # before it reaches the core or the WAL (issue 19 §1, §4, §5; issue 14 §8).
    why = schema.problem(msg)
    if why is not None:
        raise UndecodableBody(f"{schema.cls.__name__}: {why}")
    return msg


# --------------------------------------------------------------------------- client frames

def _map_frame(frame_type: FrameType, body: dict[str, Any]) -> bytes:
    if not isinstance(body, dict):
        raise TypeError("client frame bodies are maps")
    return encode_frame(frame_type, msgpack.packb(body, use_bin_type=True))


def encode_client_request(req: dict[str, Any]) -> bytes:
    """CLIENT_REQUEST frame: ``{"id": int, "op": str, ...op arguments}``."""
    return _map_frame(FrameType.CLIENT_REQUEST, req)


# Responses are built by the server from plain dicts, lists and scalars, on its event loop
# only, so one Packer serves them all (no Packer set-up per response).
_response_pack = msgpack.Packer(use_bin_type=True).pack


def encode_client_response(resp: dict[str, Any]) -> bytes:
    """CLIENT_RESPONSE frame: ``{"id": int, "ok": bool, "result": ..., "error": {...}}``."""
    if type(resp) is not dict:
        return _map_frame(FrameType.CLIENT_RESPONSE, resp)
    return encode_frame(FrameType.CLIENT_RESPONSE, _response_pack(resp))


def error_reply(code: ErrorCode, message: str, **details: Any) -> dict[str, Any]:
    """The one builder of an error (issue 17 §3): ``error`` of a CLIENT_RESPONSE and the body
    of an ERROR frame, ``{"code", "message", **details}`` (not_leader adds ``leader`` and
    ``leader_address``)."""
    return {"code": ErrorCode(code).value, "message": message, **details}


def encode_error(code: ErrorCode, message: str) -> bytes:
    """ERROR frame (connection-level error, e.g. version_mismatch): ``{"code", "message"}``."""
    return _map_frame(FrameType.ERROR, error_reply(code, message))


def encode_hello(node_id: str, cluster: str | None = None, address: str | None = None,
                 cluster_id: str | None = None) -> bytes:
    """HELLO frame, the first frame a peer sends on a connection it opens.  ``address`` is the
    sender's listen address, so a node that joined with no configuration can answer it;
    ``cluster_id`` its cluster's identity (absent: a server in join mode, or an older one)."""
    body = {"node_id": node_id, "cluster": cluster}
    if address is not None:
        body["address"] = address
    if cluster_id is not None:
        body["cluster_id"] = cluster_id
    return _map_frame(FrameType.HELLO, body)


def decode_body(body: bytes) -> dict[str, Any]:
    """Body of a CLIENT_REQUEST / CLIENT_RESPONSE / ERROR / HELLO frame -> dict.

    Only checks that it is a msgpack map with str keys; the caller validates the contents."""
    obj = _unpack(body)
    if type(obj) is not dict:
        raise UndecodableBody("expected a map")
    if obj and set(map(type, obj)) != {str}:
        raise UndecodableBody("map keys must be strings")
    return obj


# What a client request or HELLO may hold (raftd.wire.prescan): a legitimate one has a few
# keys and scalars, a membership change a map of ids; nothing comes near these.
REQUEST_MAX_ITEMS = 4096
REQUEST_MAX_DEPTH = 4


def decode_request(body: bytes) -> dict[str, Any]:
    """A body from anyone who can connect (CLIENT_REQUEST, HELLO) -> dict, its structure
    checked before msgpack builds objects from it (decode amplification, issue 19 §9)."""
    try:
        check_structure(body, REQUEST_MAX_ITEMS, REQUEST_MAX_DEPTH)
    except StructureError as e:
        raise UndecodableBody(str(e)) from None
    return decode_body(body)


def decode_hello(body: bytes) -> tuple[str, str | None]:
    """HELLO body -> (node_id, cluster).  Unknown keys are ignored."""
    obj = decode_request(body)
    node_id = obj.get("node_id")
    cluster = obj.get("cluster")
    why = node_id_problem(node_id)
    if why is not None:  # bounded: a peer cannot make a node keep megabytes of ids (§8)
        raise UndecodableBody(f"HELLO node_id: {why}")
    if cluster is not None and type(cluster) is not str:
        raise UndecodableBody("HELLO cluster must be a str or nil")
    assert isinstance(node_id, str)  # node_id_problem checked it
    return node_id, cluster
