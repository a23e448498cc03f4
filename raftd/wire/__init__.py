"""Sans-I/O wire protocol: framing (framing.py) and message/body encoding (codec.py).

See docs/PROTOCOL.md.  No sockets here: the asyncio runtime feeds received bytes into a
``FrameDecoder`` and writes the bytes the ``encode_*`` functions return.
"""
from .codec import (
    ErrorCode,
    decode_body,
    decode_hello,
    decode_message,
    encode_client_request,
    encode_client_response,
    encode_error,
    encode_hello,
    encode_message,
)
from .framing import (
    DEFAULT_MAX_FRAME_SIZE,
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

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "PROTOCOL_VERSION",
    "BadMagic",
    "ErrorCode",
    "FrameDecoder",
    "FrameTooLarge",
    "FrameType",
    "RemoteProtocolError",
    "UndecodableBody",
    "UnknownFrameType",
    "UnsupportedVersion",
    "decode_body",
    "decode_hello",
    "decode_message",
    "encode_client_request",
    "encode_client_response",
    "encode_error",
    "encode_frame",
    "encode_hello",
    "encode_message",
]
