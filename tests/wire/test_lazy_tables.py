"""Issue 16 §6: the codec builds its raft-message tables on first use, so a client (which
only sends client frames) imports neither the Raft core nor dataclasses/inspect."""
from __future__ import annotations

import subprocess
import sys

from raftd.wire.framing import check_raft_frame_types


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_importing_the_wire_package_leaves_the_core_unimported():
    loaded = eval(_run(  # noqa: S307 - our own printed list
        "import sys, raftd.wire, raftd.wire.codec as c\n"
        "c.decode_body(c.encode_client_request({'id': 1, 'op': 'get'})[8:])\n"
        "print(sorted(m for m in sys.modules if m.startswith('raftd.core') or m in "
        "('dataclasses', 'inspect')))"))
    assert loaded == [], loaded


def test_the_tables_are_built_on_the_first_raft_message():
    out = _run(
        "import sys, raftd.wire.codec as c\n"
        "from raftd.wire.framing import FrameDecoder\n"
        "before = 'raftd.core.messages' in sys.modules\n"
        "from raftd.core.messages import TimeoutNow\n"
        "m = TimeoutNow('n1', 'n2', 3)\n"
        "[(t, body)] = FrameDecoder().feed(c.encode_message(m))\n"
        "print(before, c.decode_message(t, body) == m, c._schemas() is c._schemas())")
    assert out == "False True True", out


def test_frame_types_match_the_cores_message_types():
    check_raft_frame_types()  # raises ImportError when they differ
