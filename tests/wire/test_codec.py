"""Message layer: raft messages and client bodies, round trips and hostile input."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core.membership import Configuration
from raftd.core.messages import (MESSAGE_TYPES, TYPE_OF, AppendEntries, InstallSnapshot,
                                 RequestVote, TimeoutNow)
from raftd.core.types import Entry, EntryKind
from raftd.core.validate import problem
from raftd.wire import (
    HEADER_SIZE,
    ErrorCode,
    FrameDecoder,
    FrameType,
    RemoteProtocolError,
    UndecodableBody,
    UnknownFrameType,
    decode_body,
    decode_hello,
    decode_message,
    encode_client_request,
    encode_client_response,
    encode_error,
    encode_frame,
    encode_hello,
    encode_message,
)

# msgpack's integer range
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
ENTRIES = st.lists(
    st.builds(Entry, INTS, INTS, st.one_of(st.sampled_from(EntryKind), INTS),
              st.binary(max_size=64)),
    max_size=8,
).map(tuple)
_BY_HINT: dict[typing.Any, st.SearchStrategy] = {
    int: INTS,
    str: st.text(max_size=20),
    bool: st.booleans(),
    bytes: st.binary(max_size=32),
    str | None: st.none() | st.text(max_size=20),
    tuple[Entry, ...]: ENTRIES,
}


def message_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _BY_HINT[hints[f.name]] for f in dataclasses.fields(cls)})


ANY_MESSAGE = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES.values()])


def roundtrip(msg):
    [(ftype, body)] = FrameDecoder().feed(encode_message(msg))
    assert ftype == TYPE_OF[type(msg)]
    return decode_message(ftype, body)


def raw_body(msg) -> list:
    """The body array of an encoded message, as plain Python values."""
    return msgpack.unpackb(encode_message(msg)[HEADER_SIZE:], raw=False)


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode_any(ftype: int, body: bytes) -> None:
    """What the runtime does with a frame: decode it by type."""
    if ftype == FrameType.HELLO:
        decode_hello(body)
    elif ftype >= FrameType.CLIENT_REQUEST:
        decode_body(body)
    else:
        decode_message(ftype, body)


def _sample(cls: type):
    """A valid instance: defaults where declared, else node ids for src/dst and 1."""
    hints = typing.get_type_hints(cls)
    args = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            args[f.name] = f.default
        else:
            args[f.name] = {str: f"n-{f.name}", bool: True, bytes: b"b"}.get(hints[f.name], 1)
    return cls(**args)


SAMPLES = {cls: _sample(cls) for cls in MESSAGE_TYPES.values()}
SAMPLES[AppendEntries] = AppendEntries("n1", "n2", 5, 9, 4, (Entry(4, 10, 0, b"x"),
                                                               Entry(5, 11, 1)), 9, 3)
SAMPLES[InstallSnapshot] = InstallSnapshot("n1", "n2", 5, 10, 4,
                                           Configuration.make(["n1", "n2", "n3"]).encode())


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_round_trip_every_message_type(cls: type) -> None:
    @settings(max_examples=60, deadline=None)
    @given(message_strategy(cls))
    def check(msg) -> None:
        if problem(msg) is not None:
            # What no honest peer sends is refused at the codec (issue 19 §1, §4, §5).
            with pytest.raises(UndecodableBody, match=cls.__name__):
                roundtrip(msg)
            return
        out = roundtrip(msg)
        assert out == msg and type(out) is cls
        for f in dataclasses.fields(cls):
            a, b = getattr(out, f.name), getattr(msg, f.name)
            if f.name == "entries":
                assert type(a) is tuple and all(type(e) is Entry for e in a)
            else:
                assert type(a) is type(b) or isinstance(b, int)  # IntEnum kinds decode as int

    check()


@settings(max_examples=100, deadline=None)
@given(ENTRIES, INTS, INTS)
def test_append_entries_with_random_entries(entries, term, commit) -> None:
    msg = AppendEntries("leader", "follower", term, 7, 6, entries, commit, 1)
    if problem(msg) is not None:
        with pytest.raises(UndecodableBody):
            roundtrip(msg)
        return
    out = roundtrip(msg)
    assert out == msg and out.entries == entries
    assert [hash(e) for e in out.entries] == [hash(e) for e in entries]  # proper frozen Entries


def test_heartbeat_and_defaults() -> None:
    msg = AppendEntries("a", "b", 1, 0, 0, (), 0)
    assert roundtrip(msg) == msg and roundtrip(msg).entries == ()
    assert roundtrip(TimeoutNow("a", "b", 3)) == TimeoutNow("a", "b", 3)


def test_body_is_field_array_in_declaration_order() -> None:
    msg = SAMPLES[AppendEntries]
    assert raw_body(msg) == ["n1", "n2", 5, 9, 4, [[4, 10, 0, b"x"], [5, 11, 1, b""]], 9, 3]
    assert raw_body(RequestVote("a", "b", 2, 3, 1, True)) == ["a", "b", 2, 3, 1, True]
    # bytes are msgpack bin (0xc4..), strings msgpack str (0xa0..)
    assert encode_message(msg).endswith(bytes([0xc4, 0x00, 9, 3]))


def test_every_message_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES.values())
    for msg in SAMPLES.values():
        assert roundtrip(msg) == msg


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode_message({"term": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("ftype", [0, 9, 31, FrameType.CLIENT_REQUEST, FrameType.HELLO, 99])
def test_decode_message_rejects_non_raft_types(ftype: int) -> None:
    with pytest.raises(UnknownFrameType):
        decode_message(ftype, raw := pack(["a", "b", 1]))
    assert raw  # keep linters quiet


# ----------------------------------------------------------------------------- validation

WRONG_VALUES = [None, True, 1, -1, 2**64 - 1, 1.5, "s", b"b", [], {}, [1, 2, 3, 4]]


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_each_field_rejects_wrong_types(cls: type) -> None:
    tag = TYPE_OF[cls]
    good = raw_body(SAMPLES[cls])
    assert decode_message(tag, pack(good)) == SAMPLES[cls]
    hints = typing.get_type_hints(cls)
    for i, f in enumerate(dataclasses.fields(cls)):
        hint = hints[f.name]
        allowed = {hint} if isinstance(hint, type) else set(typing.get_args(hint))
        for value in WRONG_VALUES:
            if type(value) in allowed or (hint == tuple[Entry, ...] and value == []):
                continue
            bad = list(good)
            bad[i] = value
            with pytest.raises(UndecodableBody):
                decode_message(tag, pack(bad))


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_wrong_field_count_or_shape(cls: type) -> None:
    tag = TYPE_OF[cls]
    good = raw_body(SAMPLES[cls])
    for bad in (good[:-1], good + [0], [], good[0], {"src": "a"}, None, 7, b"\x90"):
        with pytest.raises(UndecodableBody):
            decode_message(tag, pack(bad))


@pytest.mark.parametrize("entries", [
    [[1, 2, 0]],                      # too short
    [[1, 2, 0, b"x", 5]],             # too long
    [[1, 2, 0, "x"]],                 # str data
    [[True, 2, 0, b"x"]],             # bool term
    [[1, None, 0, b"x"]],
    [[1, 2, 0.0, b"x"]],
    [[1, 2, 0, b"x"], 5],             # not an array
    [[1, 2, 0, b"x"], "abcd"],        # a 4-char string
    [[1, 2, 0, b"x"], b"abcd"],       # 4 bytes (iterates as ints)
    [[1, 2, 0, b"x"], {"a": 1, "b": 2, "c": 3, "d": b""}],
    [None],
    [[]],
])
def test_bad_entries_rejected(entries: list) -> None:
    body = pack(["a", "b", 1, 0, 0, entries, 0, 0])
    with pytest.raises(UndecodableBody):
        decode_message(FrameType.APPEND_ENTRIES, body)


GOOD_AE = pack(["a", "b", 1, 0, 0, [[1, 1, 0, b"x"]], 0, 0])


@pytest.mark.parametrize("body", [
    b"",
    GOOD_AE[:-1],                                  # truncated
    GOOD_AE + b"\x00",                             # ExtraData
    b"\xc1",                                       # never-used byte: FormatError
    b"\x91" * 100_000 + b"\xc0",                   # nesting: StackError
    b"\xdd\xff\xff\xff\xff",                       # array32 claiming 4G items
    b"\xc6\xff\xff\xff\xff",                       # bin32 claiming 4 GiB
    b"\xdf\xff\xff\xff\xff",                       # map32 claiming 4G pairs
    b"\x98\xa2\xff\xfe",                           # invalid UTF-8 in a str
    b"\x81\x01\x02",                               # int map key (strict_map_key)
    b"\x81\x90\x02",                               # array map key (unhashable)
    b"\xd4\x05\x00",                               # ext type
    b"\xd6\xff\x00\x00\x00\x01",                   # timestamp ext
    b"\x98" + b"\xa1a" * 2 + b"\xcb" + bytes(8) * 6,  # floats
])
def test_malformed_msgpack_raises_remote_protocol_error(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(FrameType.APPEND_ENTRIES, body)
    with pytest.raises(RemoteProtocolError):
        decode_body(body)


# ----------------------------------------------------------------------------- fuzzing

def _only_remote_protocol_errors(stream: bytes) -> None:
    dec = FrameDecoder(max_frame_size=1 << 16)
    try:
        for ftype, body in dec.feed(stream):
            try:
                decode_any(ftype, body)
            except RemoteProtocolError:
                pass
    except RemoteProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(FrameType)), st.binary(max_size=200))
def test_fuzz_random_bodies_after_valid_header(ftype: FrameType, body: bytes) -> None:
    _only_remote_protocol_errors(encode_frame(ftype, body))
    try:
        decode_any(ftype, body)
    except RemoteProtocolError:
        pass


# msgpack-shaped garbage: random values in the right kind of container
_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: (st.lists(inner, max_size=9)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(FrameType)), _VALUES)
def test_fuzz_structured_garbage(ftype: FrameType, value) -> None:
    _only_remote_protocol_errors(encode_frame(ftype, pack(value)))


def _valid_frames() -> list[bytes]:
    return [encode_message(m) for m in SAMPLES.values()] + [
        encode_client_request({"id": 1, "op": "put", "key": "k", "value": b"v",
                               "client_id": "c", "seq": 1}),
        encode_client_response({"id": 1, "ok": True, "result": {"index": 4}, "error": None}),
        encode_error("version_mismatch", "no"),
        encode_hello("n1", "c1"),
    ]


_MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(_valid_frames()) - 1),
       st.lists(_MUTATION, min_size=1, max_size=4))
def test_fuzz_mutated_valid_frames(which: int, mutations: list) -> None:
    frame = bytearray(_valid_frames()[which])
    for op, pos, byte in mutations:
        pos %= len(frame) + 1
        if op == "flip" and pos < len(frame):
            frame[pos] ^= 1 << (byte % 8)
        elif op == "set" and pos < len(frame):
            frame[pos] = byte
        elif op == "insert":
            frame[pos:pos] = bytes([byte])
        elif op == "delete" and pos < len(frame):
            del frame[pos]
        elif op == "truncate":
            del frame[pos:]
    _only_remote_protocol_errors(bytes(frame))
    # the body alone, decoded as every frame type, with the header bypassed
    body = bytes(frame[HEADER_SIZE:])
    for ftype in FrameType:
        try:
            decode_any(ftype, body)
        except RemoteProtocolError:
            pass


# ----------------------------------------------------------------------------- client frames

def one_frame(frame: bytes) -> tuple[int, bytes]:
    [(ftype, body)] = FrameDecoder().feed(frame)
    return ftype, body


def test_client_request_and_response_round_trip() -> None:
    req = {"id": 7, "op": "cas", "key": "k", "expected": None, "value": b"\x00\xff",
           "client_id": "c", "seq": 3}
    ftype, body = one_frame(encode_client_request(req))
    assert ftype == FrameType.CLIENT_REQUEST and decode_body(body) == req
    resp = {"id": 7, "ok": False, "result": None,
            "error": {"code": ErrorCode.NOT_LEADER, "message": "not the leader",
                      "leader": "n2", "leader_address": "10.0.0.2:7000"}}
    ftype, body = one_frame(encode_client_response(resp))
    assert ftype == FrameType.CLIENT_RESPONSE and decode_body(body) == resp
    assert type(decode_body(body)["error"]["code"]) is str


def test_error_frame() -> None:
    ftype, body = one_frame(encode_error(ErrorCode.VERSION_MISMATCH, "speak version 1"))
    assert ftype == FrameType.ERROR
    assert decode_body(body) == {"code": "version_mismatch", "message": "speak version 1"}


def test_hello() -> None:
    ftype, body = one_frame(encode_hello("n1"))
    assert ftype == FrameType.HELLO
    assert decode_body(body) == {"node_id": "n1", "cluster": None}
    assert decode_hello(body) == ("n1", None)
    assert decode_hello(one_frame(encode_hello("n2", "prod"))[1]) == ("n2", "prod")
    assert decode_hello(pack({"node_id": "n3", "cluster": None, "future": 1})) == ("n3", None)


@pytest.mark.parametrize("body", [
    pack({}), pack({"node_id": ""}), pack({"node_id": 5}), pack({"node_id": b"n1"}),
    pack({"node_id": "n1", "cluster": 3}), pack(["n1"]),
])
def test_bad_hello(body: bytes) -> None:
    with pytest.raises(UndecodableBody):
        decode_hello(body)


@pytest.mark.parametrize("body", [pack([1, 2]), pack("x"), pack(None), pack({b"id": 1}),
                                  pack({"a": 1, b"b": 2})])
def test_decode_body_requires_map_with_str_keys(body: bytes) -> None:
    with pytest.raises(UndecodableBody):
        decode_body(body)


def test_decode_body_allows_empty_map() -> None:
    assert decode_body(pack({})) == {}


def test_error_codes() -> None:
    # The first eight keep their order (clients may print them by position); more follow.
    assert [c.value for c in ErrorCode][:8] == ["not_leader", "timeout", "unavailable",
                                                "bad_request", "unknown_op", "too_large",
                                                "version_mismatch", "internal"]


# ----------------------------------------------------------------------------- docs stay in sync

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_protocol_md_matches_code() -> None:
    text = PROTOCOL_MD.read_text()
    # raft message table rows: | 1 | `AppendEntries` | `[src, dst, ...]` |
    rows = {int(tag): (name, [f.strip() for f in fields.split(",")])
            for tag, name, fields in re.findall(
                r"^\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|\s*`\[([^\]]*)\]`", text, re.M)}
    assert set(rows) == {int(t) for t in MESSAGE_TYPES}
    for tag, cls in MESSAGE_TYPES.items():
        name, fields = rows[int(tag)]
        assert name == cls.__name__
        assert fields == [f.name for f in dataclasses.fields(cls)], name
    for ft in FrameType:
        assert re.search(rf"^\|\s*{ft.value}\s*\|\s*`{ft.name}`", text, re.M), ft
    for code in ErrorCode:
        assert f"`{code.value}`" in text
