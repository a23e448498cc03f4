"""Frame layer of the raftd wire protocol (sans-I/O, in the style of h11).

Nothing here touches a socket: the asyncio runtime feeds whatever bytes arrived into a
``FrameDecoder`` and gets complete ``(frame_type, body)`` pairs back, and writes the bytes
returned by ``encode_frame``.  See docs/PROTOCOL.md for the normative description.

Every frame is an 8-byte big-endian header followed by the body::

    offset  0      2        3      4                 8
           +------+--------+------+-----------------+---------------------+
           | "RD" | version| type | body length u32 | body (length bytes) |
           +------+--------+------+-----------------+---------------------+
"""
from __future__ import annotations

import enum
import struct

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameType",
    "RemoteProtocolError",
    "BadMagic",
    "UnsupportedVersion",
    "UnknownFrameType",
    "FrameTooLarge",
    "UndecodableBody",
    "encode_frame",
    "FrameDecoder",
    "check_raft_frame_types",
]

MAGIC = b"RD"
PROTOCOL_VERSION = 1
HEADER_SIZE = 8
DEFAULT_MAX_FRAME_SIZE = 16 << 20  # 16 MiB

# ">HBBI": magic as one u16 (compared as an int: no bytes object per frame), version u8,
# frame type u8, body length u32.
_HEADER = struct.Struct(">HBBI")
_MAGIC_U16 = int.from_bytes(MAGIC, "big")
_MAX_BODY = (1 << 32) - 1


class FrameType(enum.IntEnum):
    """Wire frame types; never renumber.

    1..31 are the raft messages (same names and values as MessageType, checked below);
    CLIENT_REQUEST=32, CLIENT_RESPONSE=33, ERROR=34, HELLO=35."""

    APPEND_ENTRIES = 1
    APPEND_ENTRIES_RESPONSE = 2
    REQUEST_VOTE = 3
    REQUEST_VOTE_RESPONSE = 4
    PRE_VOTE = 5
    PRE_VOTE_RESPONSE = 6
    TIMEOUT_NOW = 7
    INSTALL_SNAPSHOT = 8
    CLIENT_REQUEST = 32
    CLIENT_RESPONSE = 33
    ERROR = 34
    HELLO = 35


# Raft message tags occupy 1..31 and are the MessageType values themselves: a message type
# added in raftd.core.messages must be added above.
_RAFT_TAGS = range(1, 32)


def check_raft_frame_types() -> None:
    """Raise ImportError if FrameType's raft frames differ from the core's MessageType.  Run
    by the codec when it builds its tables, the first time a raft message is encoded or
    decoded (not at import: a client needs neither the core nor this check)."""
    from raftd.core.messages import MessageType  # noqa: PLC0415 - see the docstring

    if {(t.name, t.value) for t in MessageType} != {
            (t.name, t.value) for t in FrameType if t.value in _RAFT_TAGS}:
        raise ImportError("FrameType's raft frames differ from raftd.core.messages.MessageType")

# int -> member; doubles as the "is this a known frame type" test on the hot path.
_FRAME_TYPES: dict[int, FrameType] = {int(t): t for t in FrameType}


class RemoteProtocolError(Exception):
    """The peer sent bytes that violate the protocol.  The runtime logs ``reason`` (and the
    message) and closes that connection; nothing else is affected.

    Subclasses tell the cases apart; ``reason`` is a stable, loggable token."""

    reason = "protocol_error"


class BadMagic(RemoteProtocolError):
    reason = "bad_magic"

    def __init__(self, magic: bytes):
        self.magic = magic
        super().__init__(f"bad magic {magic!r} (expected {MAGIC!r})")


class UnsupportedVersion(RemoteProtocolError):
    """``version`` is what the peer announced; the server answers with an ERROR frame
    (code ``version_mismatch``) before closing."""

    reason = "unsupported_version"

    def __init__(self, version: int):
        self.version = version
        super().__init__(f"unsupported protocol version {version} "
                         f"(this node speaks {PROTOCOL_VERSION})")


class UnknownFrameType(RemoteProtocolError):
    reason = "unknown_frame_type"

    def __init__(self, frame_type: int):
        self.frame_type = frame_type
        super().__init__(f"unknown frame type {frame_type}")


class FrameTooLarge(RemoteProtocolError):
    reason = "frame_too_large"

    def __init__(self, length: int, limit: int):
        self.length = length
        self.limit = limit
        super().__init__(f"frame body of {length} bytes exceeds the limit of {limit}")


class UndecodableBody(RemoteProtocolError):
    reason = "undecodable_body"

    def __init__(self, detail: str = ""):
        super().__init__(f"undecodable body: {detail}" if detail else "undecodable body")


def encode_frame(frame_type: int, body: bytes) -> bytes:
    """Header + body.  ``frame_type`` must be a known FrameType (catches programming errors
    here rather than as a closed connection on the other side)."""
    if frame_type not in _FRAME_TYPES:
        raise ValueError(f"unknown frame type {frame_type!r}")
    if len(body) > _MAX_BODY:
        raise ValueError(f"frame body of {len(body)} bytes does not fit a u32 length")
    return _HEADER.pack(_MAGIC_U16, PROTOCOL_VERSION, frame_type, len(body)) + body


class FrameDecoder:
    """Incremental frame decoder for one connection.

    ``feed(data)`` appends ``data`` and returns every frame completed by it, in order, as
    ``(FrameType, body)`` tuples.  The header (magic, version, type, length) is validated as
    soon as its 8 bytes are buffered, so an oversized frame is refused before any of its body
    is buffered.  On a violation ``feed`` raises a ``RemoteProtocolError`` subclass; frames
    completed earlier in that same call are dropped with the connection, and the decoder is
    dead: every later ``feed`` raises the same error again.

    Cost is linear in the bytes fed: frames are sliced out of a bytearray at a moving offset
    and the consumed prefix is dropped once per ``feed`` call, not once per frame.
    """

    __slots__ = ("_buf", "_max", "_error")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE):
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self._buf = bytearray()
        self._max = max_frame_size
        self._error: RemoteProtocolError | None = None

    @property
    def max_frame_size(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (non-zero at EOF means the peer hung up mid-frame)."""
        return len(self._buf)

    @property
    def error(self) -> RemoteProtocolError | None:
        """The error that killed this decoder, or None while it is healthy."""
        return self._error

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._error is not None:
            raise self._error.with_traceback(None)
        buf = self._buf
        buf += data
        end = len(buf)
        if end < HEADER_SIZE:
            return []
        frames: list[tuple[int, bytes]] = []
        append = frames.append
        unpack_from = _HEADER.unpack_from
        limit = self._max
        pos = 0
        try:
            with memoryview(buf) as view:
                while end - pos >= HEADER_SIZE:
                    magic, version, ftype, length = unpack_from(buf, pos)
                    if magic != _MAGIC_U16:
                        raise BadMagic(bytes(buf[pos:pos + 2]))
                    if version != PROTOCOL_VERSION:
                        raise UnsupportedVersion(version)
                    frame_type = _FRAME_TYPES.get(ftype)
                    if frame_type is None:
                        raise UnknownFrameType(ftype)
                    if length > limit:
                        raise FrameTooLarge(length, limit)
                    start = pos + HEADER_SIZE
                    stop = start + length
                    if stop > end:
                        break  # body incomplete; the header is re-read (cheaply) next time
                    append((frame_type, view[start:stop].tobytes()))
                    pos = stop
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf = bytearray()  # nothing more will be read from this peer
            raise
        if pos:
            del buf[:pos]
        return frames
