"""A structure check of a msgpack body before it is decoded (issue 19 §9).

msgpack turns every byte of input into up to one Python object: a 16 MiB body of empty arrays
(one byte each) decodes to 16.7 million lists, about 1.2 GB and seconds of a blocked event
loop, whatever per-container limits say (nesting spreads them over many small arrays).  The
bodies that reach a server from anyone (client requests, HELLO) hold a few keys and scalars,
so they are walked first, header by header, skipping string and binary payloads by their
length (O(1) each), and refused once they hold more items or nest deeper than any legitimate
one.  A hostile body is refused after at most ``max_items`` steps; an ordinary one costs a few
microseconds.
"""
from __future__ import annotations

import struct

# First byte -> (extra header bytes holding a payload length, fixed payload size).  Scalars
# with a fixed size, and str/bin/ext whose length follows the type byte.
_FIXED = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
          0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
_SIZED = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}  # bin8/16/32, str8/16/32
_EXT = {0xc7: 1, 0xc8: 2, 0xc9: 4}  # ext8/16/32: length, then a type byte
_ARRAY = {0xdc: 2, 0xdd: 4}
_MAP = {0xde: 2, 0xdf: 4}
_UINT = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}


class StructureError(ValueError):
    """The body holds more items or deeper nesting than the limits allow, or is malformed."""


def check_structure(body: bytes, max_items: int, max_depth: int) -> None:
    """Raise StructureError unless ``body`` is one msgpack object with at most ``max_items``
    objects in all and containers nested at most ``max_depth`` deep."""
    pos, end, items = 0, len(body), 0
    pending = [1]  # objects still expected at each open nesting level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            raise StructureError("truncated msgpack body")
        items += 1
        if items > max_items:
            raise StructureError(f"more than {max_items} objects in one body")
        b = body[pos]
        pos += 1
        count = -1  # elements of a container opened here
        if b <= 0x7f or b >= 0xe0:
            continue  # fixint
        if b <= 0x8f:
            count = 2 * (b & 0x0f)  # fixmap
        elif b <= 0x9f:
            count = b & 0x0f  # fixarray
        elif b <= 0xbf:
            pos += b & 0x1f  # fixstr
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED or b in _EXT:
            width = _SIZED.get(b) or _EXT[b]
            if pos + width > end:
                raise StructureError("truncated msgpack body")
            pos += width + _UINT[width].unpack_from(body, pos)[0] + (1 if b in _EXT else 0)
        elif b in _ARRAY or b in _MAP:
            width = _ARRAY.get(b) or _MAP[b]
            if pos + width > end:
                raise StructureError("truncated msgpack body")
            count = _UINT[width].unpack_from(body, pos)[0] * (2 if b in _MAP else 1)
            pos += width
        else:
            raise StructureError(f"byte 0x{b:02x} is not msgpack")
        if count > 0:
            if len(pending) > max_depth:
                raise StructureError(f"containers nested deeper than {max_depth}")
            if count > end - pos:  # every element takes at least one byte
                raise StructureError("a container claims more elements than the body holds")
            pending.append(count)
    if pos != end:
        raise StructureError("extra bytes after the msgpack object" if pos < end
                             else "truncated msgpack body")
