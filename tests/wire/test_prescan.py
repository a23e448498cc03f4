"""raftd.wire.prescan: the structure check agrees with msgpack on what a body holds, and
refuses bodies over its limits quickly (issue 19 §9)."""
from __future__ import annotations

import struct
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.wire.prescan import StructureError, check_structure

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=8),
    max_leaves=60)


def _count(v, depth=0) -> tuple[int, int]:
    """(objects, depth of non-empty containers) of a decoded value."""
    if isinstance(v, (list, dict)) and not v:
        return 1, depth
    if isinstance(v, list):
        parts = [_count(x, depth + 1) for x in v]
    elif isinstance(v, dict):
        parts = [_count(x, depth + 1) for kv in v.items() for x in kv]
    else:
        return 1, depth
    return 1 + sum(n for n, _ in parts), max([depth + 1] + [d for _, d in parts])


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_agrees_with_msgpack_on_objects_and_depth(value):
    body = msgpack.packb(value, use_bin_type=True)
    items, depth = _count(value)
    check_structure(body, items, depth)  # exactly at the limits: accepted
    with pytest.raises(StructureError):
        check_structure(body, items - 1, depth)
    if depth > 0:
        with pytest.raises(StructureError):
            check_structure(body, items, depth - 1)


@pytest.mark.parametrize("body", [b"", b"\x92\x01", b"\xc4\x05ab", b"\xc1", b"\x01\x02",
                                  b"\xdd\xff\xff\xff\xff", b"\xa5ab"])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(StructureError):
        check_structure(body, 1000, 10)


def test_a_16_mib_bomb_is_refused_in_milliseconds():
    n = 16 << 20
    body = b"\xdd" + struct.pack(">I", n) + b"\x90" * n
    t0 = time.perf_counter()
    with pytest.raises(StructureError, match="more than 4096"):
        check_structure(body, 4096, 4)
    assert time.perf_counter() - t0 < 0.5
