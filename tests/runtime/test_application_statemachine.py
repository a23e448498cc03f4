"""A program's own state machine on raftd's runtime (issue 15 §1): the example runs, commands
are applied once per session sequence number, and snapshots carry the application's state."""
from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from raftd.core import Entry, EntryKind
from raftd.kv.commands import Command, Op, encode_command
from raftd.runtime.statemachine import ApplicationStateMachine

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replicated_counter.py"


def _example():
    spec = importlib.util.spec_from_file_location("replicated_counter", _EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_example_replicates_a_counter(tmp_path):
    ex = _example()
    value, replicas = asyncio.run(asyncio.wait_for(ex.run(str(tmp_path), [5, 10, -3]), 60))
    assert value == 12 and replicas == [12, 12, 12]


def _put(index: int, command: bytes, seq: int) -> Entry:
    cmd = Command(Op.PUT, "app", value=command, client_id="c1", seq=seq, timestamp_ms=index)
    return Entry(1, index, EntryKind.NORMAL, encode_command(cmd))


def test_a_retried_command_is_applied_once_and_snapshots_carry_the_state():
    ex = _example()
    counter = ex.Counter()
    sm = ApplicationStateMachine(counter)
    open_session = Command(Op.OPEN_SESSION, "", client_id="c1", seq=1, timestamp_ms=1)
    sm.apply_entry(Entry(1, 1, EntryKind.NORMAL, encode_command(open_session)))  # term 1, index 1
    assert sm.apply_entry(_put(2, b"add 4", 2)) == {"index": 2, "result": 4}
    # The client's retry of seq 2 (its answer was lost): the session answers, no new apply.
    assert sm.apply_entry(_put(3, b"add 4", 2))["result"] == 4
    assert counter.value == 4
    assert sm.get("value") == b"4"
    assert sm.apply_entry(_put(4, b"add 1", 3))["result"] == 5
    assert sm.apply_entry(_put(5, b"x", 4)) is not None  # unknown verbs change nothing

    header, data = sm.freeze()
    sm.thaw()
    other = ApplicationStateMachine(ex.Counter())
    other.restore_stream(header, [list(data.items())])
    assert other.app.value == 5 and other.applied_index == 5
    assert other.digest() == sm.digest()
    # The session came along: the retry is still answered, not applied again.
    assert other.apply_entry(_put(6, b"add 1", 4))["result"] == 5
    assert other.app.value == 5
