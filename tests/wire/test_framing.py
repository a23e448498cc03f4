"""Frame layer: header layout, incremental decoding, and rejection of bad peers."""
from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core.messages import MessageType
from raftd.wire import (
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    BadMagic,
    FrameDecoder,
    FrameTooLarge,
    FrameType,
    RemoteProtocolError,
    UndecodableBody,
    UnknownFrameType,
    UnsupportedVersion,
    encode_frame,
)


def header(frame_type: int, length: int, *, magic: bytes = MAGIC,
           version: int = PROTOCOL_VERSION) -> bytes:
    return struct.pack(">2sBBI", magic, version, frame_type, length)


# A stream mixing frame types and sizes, including an empty body.
FRAMES = [
    (FrameType.HELLO, b"\x82\xa7node_id\xa2n1\xa7cluster\xc0"),
    (FrameType.APPEND_ENTRIES, bytes(range(256)) * 3),
    (FrameType.TIMEOUT_NOW, b""),
    (FrameType.CLIENT_REQUEST, b"x"),
    (FrameType.ERROR, b"\x00" * 9),
]
STREAM = b"".join(encode_frame(t, b) for t, b in FRAMES)


# ----------------------------------------------------------------------------- encoding

def test_header_layout() -> None:
    frame = encode_frame(FrameType.CLIENT_REQUEST, b"abc")
    assert frame == b"RD" + bytes([1, 32]) + (3).to_bytes(4, "big") + b"abc"
    assert len(frame) == HEADER_SIZE + 3
    assert PROTOCOL_VERSION == 1


def test_frame_type_numbers_are_pinned() -> None:
    # Wire tags: never renumber.
    assert {t.name: t.value for t in FrameType} == {
        "APPEND_ENTRIES": 1, "APPEND_ENTRIES_RESPONSE": 2, "REQUEST_VOTE": 3,
        "REQUEST_VOTE_RESPONSE": 4, "PRE_VOTE": 5, "PRE_VOTE_RESPONSE": 6, "TIMEOUT_NOW": 7,
        "INSTALL_SNAPSHOT": 8,
        "CLIENT_REQUEST": 32, "CLIENT_RESPONSE": 33, "ERROR": 34, "HELLO": 35,
    }
    for mt in MessageType:
        assert FrameType[mt.name] == mt.value and 1 <= mt.value <= 31


@pytest.mark.parametrize("bad", [0, 9, 31, 36, 255, 256, -1])
def test_encode_frame_rejects_unknown_type(bad: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(bad, b"")


# ----------------------------------------------------------------------------- decoding

def test_single_frame_and_types() -> None:
    [(ftype, body)] = FrameDecoder().feed(encode_frame(FrameType.ERROR, b"hello"))
    assert ftype == FrameType.ERROR and isinstance(ftype, FrameType)
    assert body == b"hello" and type(body) is bytes


def test_whole_stream_in_one_chunk() -> None:
    dec = FrameDecoder()
    assert dec.feed(STREAM) == FRAMES
    assert dec.buffered == 0 and dec.error is None


def test_split_at_every_byte_boundary() -> None:
    for i in range(len(STREAM) + 1):
        dec = FrameDecoder()
        got = dec.feed(STREAM[:i]) + dec.feed(STREAM[i:])
        assert got == FRAMES, i
        assert dec.buffered == 0


def test_split_at_every_pair_of_boundaries() -> None:
    stream = STREAM[:60] + encode_frame(FrameType.PRE_VOTE, b"abc")  # keep it small: O(n^2)
    expected = FrameDecoder().feed(stream)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            dec = FrameDecoder()
            assert dec.feed(stream[:i]) + dec.feed(stream[i:j]) + dec.feed(stream[j:]) == expected


def test_byte_at_a_time() -> None:
    dec = FrameDecoder()
    got = []
    for k in range(len(STREAM)):
        got += dec.feed(STREAM[k:k + 1])
    assert got == FRAMES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_random_chunking(cuts: list[int]) -> None:
    dec = FrameDecoder()
    got = []
    prev = 0
    for cut in sorted(cuts) + [len(STREAM)]:
        got += dec.feed(STREAM[prev:cut])
        prev = cut
    assert got == FRAMES


def test_partial_header_is_buffered() -> None:
    dec = FrameDecoder()
    frame = encode_frame(FrameType.HELLO, b"12345")
    assert dec.feed(frame[:5]) == []
    assert dec.buffered == 5
    assert dec.feed(frame[5:10]) == []
    assert dec.feed(frame[10:]) == [(FrameType.HELLO, b"12345")]
    assert dec.buffered == 0


def test_many_small_frames_in_one_chunk_is_linear() -> None:
    n = 50_000
    frame = encode_frame(FrameType.CLIENT_REQUEST, b"0123456789")
    dec = FrameDecoder()
    t0 = time.perf_counter()
    frames = dec.feed(frame * n)
    elapsed = time.perf_counter() - t0
    assert len(frames) == n and frames[-1] == (FrameType.CLIENT_REQUEST, b"0123456789")
    # A copy of the remaining buffer per frame would move ~n^2/2 * 18 bytes (22 GB) here.
    assert elapsed < 2.0, elapsed
    # ... and the same with a partial frame left over, delivered in a second feed
    dec = FrameDecoder()
    stream = frame * 1000
    assert len(dec.feed(stream[:-3])) == 999
    assert dec.feed(stream[-3:]) == [(FrameType.CLIENT_REQUEST, b"0123456789")]


def test_large_body_in_small_chunks() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_frame(FrameType.APPEND_ENTRIES, body)
    dec = FrameDecoder()
    got = []
    for k in range(0, len(stream), 4096):
        got += dec.feed(stream[k:k + 4096])
    assert got == [(FrameType.APPEND_ENTRIES, body)]


def test_empty_feed() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(encode_frame(FrameType.HELLO, b"")) == [(FrameType.HELLO, b"")]


def test_accepts_bytearray_and_memoryview_input() -> None:
    frame = encode_frame(FrameType.HELLO, b"abc")
    assert FrameDecoder().feed(bytearray(frame)) == [(FrameType.HELLO, b"abc")]
    assert FrameDecoder().feed(memoryview(frame)) == [(FrameType.HELLO, b"abc")]


# ----------------------------------------------------------------------------- bad peers

def test_oversized_rejected_from_header_alone() -> None:
    dec = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(header(FrameType.APPEND_ENTRIES, 1025))  # no body at all
    assert info.value.length == 1025 and info.value.limit == 1024
    assert info.value.reason == "frame_too_large"


def test_default_limit_is_16_mib() -> None:
    dec = FrameDecoder()
    assert dec.max_frame_size == 16 << 20
    assert dec.feed(header(FrameType.APPEND_ENTRIES, 16 << 20)) == []  # at the limit: waits
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header(FrameType.APPEND_ENTRIES, (16 << 20) + 1))
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(header(FrameType.APPEND_ENTRIES, 0xFFFFFFFF))


def test_frame_exactly_at_limit_accepted() -> None:
    dec = FrameDecoder(max_frame_size=4)
    assert dec.feed(encode_frame(FrameType.HELLO, b"abcd")) == [(FrameType.HELLO, b"abcd")]
    empty_hello = encode_frame(FrameType.HELLO, b"")
    assert FrameDecoder(max_frame_size=0).feed(empty_hello) == [(FrameType.HELLO, b"")]


@pytest.mark.parametrize("magic", [b"XX", b"rd", b"DR", b"\x00\x00"])
def test_bad_magic(magic: bytes) -> None:
    with pytest.raises(BadMagic) as info:
        FrameDecoder().feed(header(FrameType.HELLO, 0, magic=magic))
    assert info.value.reason == "bad_magic" and info.value.magic == magic


def test_http_request_is_bad_magic() -> None:
    with pytest.raises(BadMagic):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


@pytest.mark.parametrize("ftype", [0, 9, 31, 36, 200, 255])
def test_unknown_frame_type(ftype: int) -> None:
    with pytest.raises(UnknownFrameType) as info:
        FrameDecoder().feed(header(ftype, 0))
    assert info.value.frame_type == ftype and info.value.reason == "unknown_frame_type"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_version_mismatch_exposes_version(version: int) -> None:
    with pytest.raises(UnsupportedVersion) as info:
        FrameDecoder().feed(header(FrameType.HELLO, 3, version=version))  # body not sent yet
    assert info.value.version == version
    assert info.value.reason == "unsupported_version"


def test_error_after_good_frames_in_same_chunk() -> None:
    dec = FrameDecoder()
    with pytest.raises(BadMagic):
        dec.feed(encode_frame(FrameType.HELLO, b"ok") + b"XX" + bytes(6))


def test_decoder_is_dead_after_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(UnsupportedVersion):
        dec.feed(header(FrameType.HELLO, 0, version=9))
    assert isinstance(dec.error, UnsupportedVersion)
    for _ in range(2):
        with pytest.raises(UnsupportedVersion):
            dec.feed(encode_frame(FrameType.HELLO, b""))  # valid input no longer helps
        with pytest.raises(RemoteProtocolError):
            dec.feed(b"")
    assert dec.buffered == 0


def test_error_hierarchy_and_reasons() -> None:
    classes = [BadMagic, UnsupportedVersion, UnknownFrameType, FrameTooLarge, UndecodableBody]
    assert all(issubclass(c, RemoteProtocolError) for c in classes)
    reasons = {c.reason for c in classes}
    assert reasons == {"bad_magic", "unsupported_version", "unknown_frame_type",
                       "frame_too_large", "undecodable_body"}
    assert str(UndecodableBody()) == "undecodable body"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.lists(st.integers(min_value=0, max_value=64), max_size=4))
def test_random_bytes_only_raise_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder(max_frame_size=32)
    prev = 0
    try:
        for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
            for ftype, body in dec.feed(data[prev:cut]):
                assert ftype in set(FrameType) and len(body) <= 32
            prev = cut
    except RemoteProtocolError:
        pass
