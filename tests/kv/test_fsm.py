"""Tests for the key-value state machine (raftd.kv.fsm) and its command encoding."""
from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftd.core.types import Entry, EntryKind
from raftd.kv import (AppliedIndexError, Command, KVStateMachine, Op, decode_command,
                      encode_command)
from raftd.kv.commands import decode_limits, encode_limits, session_put


# ---------------------------------------------------------------- helpers

def put(key, value, cid=None, seq=0, ts=0) -> bytes:
    return encode_command(Command(Op.PUT, key, value, client_id=cid, seq=seq, timestamp_ms=ts))


def delete(key, cid=None, seq=0, ts=0) -> bytes:
    return encode_command(Command(Op.DELETE, key, client_id=cid, seq=seq, timestamp_ms=ts))


def cas(key, expected, value, cid=None, seq=0, ts=0) -> bytes:
    return encode_command(Command(Op.CAS, key, value, expected, client_id=cid, seq=seq,
                                  timestamp_ms=ts))


class Log:
    """Feeds entries to one or more state machines with consecutive indexes."""

    def __init__(self, *fsms: KVStateMachine):
        self.fsms = fsms
        self.index = 0

    def apply(self, data: bytes) -> dict:
        self.index += 1
        results = [f.apply(self.index, data) for f in self.fsms]
        assert all(r == results[0] for r in results)
        return results[0]

    def noop(self) -> None:
        self.index += 1
        for f in self.fsms:
            f.apply_noop(self.index)


class ReferenceKV:
    """A deliberately naive model of the specified semantics (scans everything)."""

    def __init__(self, ttl: int, max_sessions: int):
        self.ttl, self.max_sessions = ttl, max_sessions
        self.data: dict[str, bytes] = {}
        self.sessions: dict[str, tuple[int, dict, int]] = {}  # cid -> (seq, result, active)
        self.now = 0

    def apply(self, index: int, cmd: Command) -> dict:
        self.now = max(self.now, cmd.timestamp_ms)
        self.sessions = {c: s for c, s in self.sessions.items() if s[2] >= self.now - self.ttl}
        cid, seq = cmd.client_id, cmd.seq
        tracked = cid is not None and seq > 0
        if tracked and cid not in self.sessions and seq > 1:
            return {"index": index, "error": "session_expired", "seq": seq,
                    "message": f"session {cid} expired or was evicted; "
                               f"request {seq} was not applied again"}
        if tracked and cid in self.sessions:
            last_seq, last_result, _ = self.sessions[cid]
            if seq <= last_seq:
                self.sessions[cid] = (last_seq, last_result, self.now)
                if seq == last_seq:
                    return dict(last_result)
                return {"index": index, "error": "stale_sequence", "seq": seq,
                        "last_seq": last_seq}
        if cmd.op is Op.OPEN_SESSION:
            result = {"index": index}
        elif cmd.op is Op.SESSION_LIMITS:
            self.ttl, self.max_sessions = decode_limits(cmd.value)
            self.sessions = {c: s for c, s in self.sessions.items()
                             if s[2] >= self.now - self.ttl}
            while len(self.sessions) > self.max_sessions:
                victim = min(self.sessions, key=lambda c: (self.sessions[c][2], c))
                del self.sessions[victim]
            result = {"index": index, "session_ttl_ms": self.ttl,
                      "max_sessions": self.max_sessions}
        elif cmd.op is Op.PUT:
            self.data[cmd.key] = cmd.value
            result = {"index": index}
        elif cmd.op is Op.DELETE:
            result = {"index": index, "deleted": self.data.pop(cmd.key, None) is not None}
        else:
            swapped = self.data.get(cmd.key) == cmd.expected
            if swapped:
                self.data[cmd.key] = cmd.value
            result = {"index": index, "swapped": swapped}
        if tracked:
            if cid not in self.sessions:
                while len(self.sessions) >= self.max_sessions:
                    victim = min(self.sessions, key=lambda c: (self.sessions[c][2], c))
                    del self.sessions[victim]
            self.sessions[cid] = (seq, dict(result), self.now)
        return result


# ---------------------------------------------------------------- strategies

keys = st.text(alphabet="ab/", min_size=1, max_size=4)
values = st.binary(max_size=3)
client_ids = st.one_of(st.none(), st.sampled_from(["c0", "c1", "c2", "c3", "c4"]))


@st.composite
def commands(draw, ts=st.integers(min_value=0, max_value=10**6)):
    op = draw(st.sampled_from(list(Op)))
    cid = draw(client_ids)
    seq = draw(st.integers(min_value=0, max_value=5)) if cid is not None else 0
    if op is Op.OPEN_SESSION:
        return Command(op, "", None, None, cid or "c0", 1, draw(ts))
    if op is Op.SESSION_LIMITS:
        limits = encode_limits(draw(st.integers(0, 10**6)), draw(st.integers(1, 5)))
        return Command(op, "", limits, None, cid, seq, draw(ts))
    key = draw(keys)
    value = None if op is Op.DELETE else draw(values)
    expected = draw(st.one_of(st.none(), values)) if op is Op.CAS else None
    return Command(op, key, value, expected, cid, seq, draw(ts))


@st.composite
def command_sequences(draw, max_size=40):
    """Commands with a log-time that mostly moves forward (sometimes backwards: a new
    leader with a slower clock), and occasional no-op entries (None)."""
    n = draw(st.integers(min_value=0, max_value=max_size))
    t = 0
    last_seq: dict[str, int] = {}
    out: list[Command | None] = []
    for _ in range(n):
        if draw(st.integers(0, 9)) == 0:
            out.append(None)
            continue
        t = max(0, t + draw(st.integers(min_value=-100, max_value=400)))
        cmd = draw(commands(ts=st.just(t)))
        if cmd.client_id is not None and cmd.seq > 0 and cmd.op is not Op.OPEN_SESSION:
            # Mostly well-behaved clients: next request, retry, or a late stale retry.
            prev = last_seq.get(cmd.client_id, 0)
            seq = draw(st.sampled_from([prev + 1, prev + 1, max(prev, 1), max(prev - 1, 1),
                                        cmd.seq]))
            last_seq[cmd.client_id] = max(prev, seq)
            cmd = Command(cmd.op, cmd.key, cmd.value, cmd.expected, cmd.client_id, seq,
                          cmd.timestamp_ms)
        out.append(cmd)
    return out


def feed(fsm: KVStateMachine, cmds, start_index: int = 1) -> list:
    results = []
    for i, c in enumerate(cmds, start=start_index):
        if c is None:
            fsm.apply_noop(i)
            results.append(None)
        else:
            results.append(fsm.apply(i, encode_command(c)))
    return results


# ---------------------------------------------------------------- commands / encoding

@given(commands())
def test_command_round_trip(cmd):
    data = encode_command(cmd)
    assert isinstance(data, bytes)
    assert decode_command(data) == cmd
    assert encode_command(decode_command(data)) == data  # deterministic


@given(commands())
def test_session_put_builds_the_same_command(cmd):
    built = session_put(cmd.key, cmd.value, cmd.client_id, cmd.seq, cmd.timestamp_ms)
    if cmd.op is Op.PUT and cmd.has_session:
        assert built == cmd and built.op is Op.PUT
    elif built is not None:  # e.g. a CAS's fields also make a valid session PUT
        assert built == Command(Op.PUT, cmd.key, cmd.value, None, cmd.client_id, cmd.seq,
                                cmd.timestamp_ms)


@pytest.mark.parametrize("args", [
    ("", b"v", "c", 1, 0), (b"k", b"v", "c", 1, 0), ("k", "v", "c", 1, 0), ("k", None, "c", 1, 0),
    ("k", b"v", "", 1, 0), ("k", b"v", None, 1, 0), ("k", b"v", "c", 0, 0),
    ("k", b"v", "c", True, 0),
    ("k", b"v", "c", 1, -1), ("k", b"v", "c", 1, True), ("k", bytearray(b"v"), "c", 1, 0),
])
def test_session_put_declines_what_command_would_check(args):
    assert session_put(*args) is None


def test_op_values_are_stable():
    assert (Op.PUT, Op.DELETE, Op.CAS) == (1, 2, 3)


def test_command_is_frozen_and_coerces_op():
    c = Command(1, "k", b"v")
    assert c.op is Op.PUT
    with pytest.raises(AttributeError):
        c.key = "other"  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [
    dict(op=9, key="k"),
    dict(op=Op.PUT, key="", value=b"v"),
    dict(op=Op.PUT, key=b"k", value=b"v"),
    dict(op=Op.PUT, key="k"),  # no value
    dict(op=Op.PUT, key="k", value="str"),
    dict(op=Op.PUT, key="k", value=b"v", expected=b"x"),
    dict(op=Op.DELETE, key="k", value=b"v"),
    dict(op=Op.CAS, key="k", expected=b"x"),  # no new value
    dict(op=Op.PUT, key="k", value=b"v", seq=1),  # seq without client
    dict(op=Op.PUT, key="k", value=b"v", client_id="c", seq=-1),
    dict(op=Op.PUT, key="k", value=b"v", client_id="c", seq=True),
    dict(op=Op.PUT, key="k", value=b"v", client_id=""),
    dict(op=Op.PUT, key="k", value=b"v", timestamp_ms=-5),
])
def test_invalid_commands_rejected(kwargs):
    with pytest.raises(ValueError):
        Command(**kwargs)


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("data", [
    b"",
    b"\xc1",  # never-used msgpack byte
    b"\x93\x01",  # truncated array
    _pack(None),
    _pack({"op": 1}),
    _pack([]),
    _pack([2, 1, "k", b"v", None, None, 0, 0]),  # unknown format version
    _pack([True, 1, "k", b"v", None, None, 0, 0]),
    _pack([1, 1, "k", b"v", None, None, 0]),  # too short
    _pack([1, 1, "k", b"v", None, None, 0, 0, 0]),  # too long
    _pack([1, 7, "k", b"v", None, None, 0, 0]),  # unknown op
    _pack([1, 1.0, "k", b"v", None, None, 0, 0]),
    _pack([1, 1, b"k", b"v", None, None, 0, 0]),  # key as bin
    _pack([1, 1, "k", "v", None, None, 0, 0]),  # value as str
    _pack([1, 1, "k", None, None, None, 0, 0]),  # put without value
    _pack([1, 1, "k", b"v", None, None, 1, 0]),  # seq without client
    _pack([1, 1, "k", b"v", None, "c", 1, -1]),
    # shaped like the fast path of a session PUT, but not valid
    _pack([1, 1, "", b"v", None, "c", 1, 0]),
    _pack([1, 1, "k", b"v", None, "", 1, 0]),
    _pack([1, 1, "k", b"v", None, "c", True, 0]),
    _pack([1, 1, "k", b"v", None, "c", 1, True]),
    _pack([1, 1, "k", b"v", b"x", "c", 1, 0]),
    _pack([1, True, "k", b"v", None, "c", 1, 0]),
    _pack([1, 1, "k", b"v", None, None, 0, 0]) + b"\x00",  # trailing bytes
    b"\x81\xa1k\xc4\x01v",  # a map, not an array
    bytes([0x91]) * 5000,  # deeply nested
])
def test_decode_garbage_raises_value_error(data):
    with pytest.raises(ValueError):
        decode_command(data)


def test_decode_non_bytes_raises_value_error():
    with pytest.raises(ValueError):
        decode_command("not bytes")  # type: ignore[arg-type]


@given(st.binary(max_size=64))
def test_decode_random_bytes_never_raises_anything_else(data):
    try:
        cmd = decode_command(data)
    except ValueError:
        return
    assert isinstance(cmd, Command)


# ---------------------------------------------------------------- basic operations

def test_put_get_overwrite():
    fsm = KVStateMachine()
    assert fsm.get("a") is None
    assert fsm.apply(1, put("a", b"1")) == {"index": 1}
    assert fsm.get("a") == b"1"
    assert fsm.apply(2, put("a", b"2")) == {"index": 2}
    assert fsm.get("a") == b"2"
    assert len(fsm) == 1 and "a" in fsm and "b" not in fsm
    assert fsm.applied_index == 2
    assert fsm.stats["puts"] == 2


def test_delete():
    fsm = KVStateMachine()
    fsm.apply(1, put("a", b"1"))
    assert fsm.apply(2, delete("a")) == {"index": 2, "deleted": True}
    assert fsm.get("a") is None and len(fsm) == 0
    assert fsm.apply(3, delete("a")) == {"index": 3, "deleted": False}
    assert fsm.list("") == {}
    assert fsm.stats["deletes"] == 2


def test_cas():
    fsm = KVStateMachine()
    fsm.apply(1, put("a", b"1"))
    assert fsm.apply(2, cas("a", b"x", b"2")) == {"index": 2, "swapped": False}
    assert fsm.get("a") == b"1"
    assert fsm.apply(3, cas("a", b"1", b"2")) == {"index": 3, "swapped": True}
    assert fsm.get("a") == b"2"
    assert fsm.stats["cas"] == 2


def test_cas_expected_none_means_absent():
    fsm = KVStateMachine()
    assert fsm.apply(1, cas("lock", None, b"me")) == {"index": 1, "swapped": True}
    assert fsm.get("lock") == b"me"
    assert fsm.apply(2, cas("lock", None, b"you")) == {"index": 2, "swapped": False}
    assert fsm.get("lock") == b"me"
    # An empty value is present, not absent.
    fsm.apply(3, put("empty", b""))
    assert fsm.apply(4, cas("empty", None, b"x"))["swapped"] is False
    assert fsm.apply(5, cas("empty", b"", b"x"))["swapped"] is True


def test_noop_and_apply_entry_advance_applied_index():
    fsm = KVStateMachine()
    fsm.apply_noop(1)
    assert fsm.applied_index == 1
    assert fsm.apply_entry(Entry(term=1, index=2, kind=EntryKind.CONFIG, data=b"{}")) is None
    assert fsm.apply_entry(Entry(term=1, index=3, data=put("k", b"v"))) == {"index": 3}
    assert fsm.apply_entry(Entry(term=1, index=4, kind=EntryKind.NOOP)) is None
    assert fsm.applied_index == 4 and fsm.get("k") == b"v"


@pytest.mark.parametrize("bad_index", [0, 5, 3, -1])
def test_applied_index_must_strictly_increase(bad_index):
    fsm = KVStateMachine()
    fsm.apply(1, put("a", b"1"))
    fsm.apply_noop(5)
    before = fsm.digest()
    with pytest.raises(AppliedIndexError):
        fsm.apply(bad_index, put("a", b"2"))
    with pytest.raises(AppliedIndexError):
        fsm.apply_noop(bad_index)
    assert fsm.digest() == before and fsm.get("a") == b"1" and fsm.applied_index == 5
    fsm.apply(7, put("a", b"3"))  # gaps are allowed
    assert fsm.applied_index == 7


def test_undecodable_entry_gives_error_result_and_is_skipped():
    a, b = KVStateMachine(), KVStateMachine()
    log = Log(a, b)
    log.apply(put("k", b"v"))
    before = a.digest()
    r = log.apply(b"\xc1garbage")
    assert r["index"] == 2 and r["error"] == "invalid_command"
    assert a.applied_index == 2 and a.get("k") == b"v" and a.stats["invalid"] == 1
    assert a.digest() != before  # applied_index moved...
    assert a.digest() == b.digest()  # ...identically everywhere


# ---------------------------------------------------------------- sessions

def test_duplicate_returns_saved_result_and_does_not_reapply():
    fsm = KVStateMachine()
    assert fsm.apply(1, put("k", b"A", cid="alice", seq=1)) == {"index": 1}
    assert fsm.apply(2, put("k", b"B", cid="bob", seq=1)) == {"index": 2}
    # Alice's retry of request 1 (e.g. the first response was lost) must not overwrite Bob.
    assert fsm.apply(3, put("k", b"A", cid="alice", seq=1)) == {"index": 1}
    assert fsm.get("k") == b"B"
    assert fsm.stats["duplicates"] == 1 and fsm.stats["puts"] == 2
    assert fsm.applied_index == 3


def test_duplicate_cas_and_delete_return_original_results():
    fsm = KVStateMachine()
    assert fsm.apply(1, cas("k", None, b"1", cid="c", seq=1)) == {"index": 1, "swapped": True}
    assert fsm.apply(2, cas("k", None, b"1", cid="c", seq=1)) == {"index": 1, "swapped": True}
    assert fsm.apply(3, delete("k", cid="c", seq=2)) == {"index": 3, "deleted": True}
    fsm.apply(4, put("k", b"again"))
    assert fsm.apply(5, delete("k", cid="c", seq=2)) == {"index": 3, "deleted": True}
    assert fsm.get("k") == b"again"
    assert fsm.stats["duplicates"] == 2


def test_returned_result_cannot_corrupt_saved_result():
    fsm = KVStateMachine()
    r = fsm.apply(1, put("k", b"v", cid="c", seq=1))
    r["index"] = 999
    again = fsm.apply(2, put("k", b"v", cid="c", seq=1))
    assert again == {"index": 1}
    again["index"] = 998
    assert fsm.apply(3, put("k", b"v", cid="c", seq=1)) == {"index": 1}


def test_stale_sequence():
    fsm = KVStateMachine()
    fsm.apply(1, put("k", b"1", cid="c", seq=1))
    fsm.apply(2, put("k", b"2", cid="c", seq=2))
    before = fsm.list("")
    r = fsm.apply(3, put("k", b"1", cid="c", seq=1))
    assert r["error"] == "stale_sequence" and r["index"] == 3
    assert r["seq"] == 1 and r["last_seq"] == 2
    assert fsm.list("") == before
    assert fsm.sessions["c"].last_seq == 2
    assert fsm.stats["stale"] == 1


def test_sequence_gaps_are_fine_and_seq_zero_is_not_deduplicated():
    fsm = KVStateMachine()
    fsm.apply(1, put("k", b"1", cid="c", seq=1))
    assert fsm.apply(2, put("k", b"5", cid="c", seq=5)) == {"index": 2}
    assert fsm.get("k") == b"5"
    # seq 0: no session, applied every time, session untouched.
    fsm.apply(3, put("n", b"x", cid="c", seq=0))
    fsm.apply(4, delete("n", cid="c", seq=0))
    fsm.apply(5, put("n", b"y", cid="c", seq=0))
    assert fsm.get("n") == b"y" and fsm.sessions["c"].last_seq == 5
    assert fsm.stats["duplicates"] == 0


def test_sessions_expire_exactly_at_the_right_log_time():
    fsm = KVStateMachine(session_ttl_ms=1000)
    fsm.apply(1, put("k", b"A1", cid="alice", seq=1, ts=10_000))
    # 1000 ms of log time later alice is still there (not strictly older than the TTL)...
    fsm.apply(2, put("x", b"", cid="bob", seq=1, ts=11_000))
    assert "alice" in fsm.sessions
    assert fsm.apply(3, put("k", b"A1", cid="alice", seq=1, ts=11_000)) == {"index": 1}
    assert fsm.sessions["alice"].last_active_ms == 11_000  # a retry counts as activity
    # ...no-ops carry no time and expire nothing...
    fsm.apply_noop(4)
    assert "alice" in fsm.sessions
    fsm.apply(5, put("x", b"", cid="bob", seq=2, ts=12_000))
    assert "alice" in fsm.sessions
    # ...and one millisecond later she is gone.
    fsm.apply(6, put("x", b"", cid="bob", seq=3, ts=12_001))
    assert "alice" not in fsm.sessions and "bob" in fsm.sessions
    # A late retry from the expired session is applied again (implicit registration).
    fsm.apply(7, put("k", b"other", ts=12_001))
    assert fsm.apply(8, put("k", b"A1", cid="alice", seq=1, ts=12_002)) == {"index": 8}
    assert fsm.get("k") == b"A1"


def test_expiry_is_driven_only_by_command_timestamps():
    fsm = KVStateMachine(session_ttl_ms=1000)
    fsm.apply(1, put("k", b"v", cid="c", seq=1, ts=5000))
    # Real time passing changes nothing.
    time.sleep(0.01)
    fsm.apply(2, put("k", b"v", ts=0))
    assert "c" in fsm.sessions
    # A leader whose clock is behind cannot move time backwards.
    fsm.apply(3, put("k", b"v", ts=100))
    assert fsm.now_ms == 5000
    fsm.apply(4, put("k", b"v", ts=6001))
    assert fsm.now_ms == 6001 and "c" not in fsm.sessions


def test_session_activity_uses_fsm_time_not_command_time():
    fsm = KVStateMachine(session_ttl_ms=1000)
    fsm.apply(1, put("k", b"v", ts=9000))
    fsm.apply(2, put("k", b"v", cid="c", seq=1, ts=100))  # stale leader clock
    assert fsm.sessions["c"].last_active_ms == 9000
    fsm.apply(3, put("k", b"v", ts=9500))
    assert "c" in fsm.sessions


def test_two_fsms_fed_the_same_commands_agree():
    a = KVStateMachine(session_ttl_ms=500, max_sessions=3)
    b = KVStateMachine(session_ttl_ms=500, max_sessions=3)
    log = Log(a, b)
    for i in range(300):
        cid = f"c{i % 7}"
        log.apply(put(f"k{i % 11}", bytes([i % 256]), cid=cid, seq=i // 7 + 1, ts=i * 37))
        if i % 5 == 0:
            log.apply(put(f"k{i % 11}", bytes([i % 256]), cid=cid, seq=i // 7 + 1, ts=i * 37))
        if i % 13 == 0:
            log.noop()
    assert a.digest() == b.digest()
    assert a.list("") == b.list("") and dict(a.sessions) == dict(b.sessions)


def test_max_sessions_evicts_least_recently_active():
    fsm = KVStateMachine(max_sessions=2)
    fsm.apply(1, put("k", b"", cid="a", seq=1, ts=1))
    fsm.apply(2, put("k", b"", cid="b", seq=1, ts=2))
    fsm.apply(3, put("k", b"", cid="a", seq=2, ts=3))  # a is now more recent than b
    fsm.apply(4, put("k", b"", cid="c", seq=1, ts=4))
    assert set(fsm.sessions) == {"a", "c"}
    # Eviction forgets b: its retry is applied again.
    fsm.apply(5, put("k", b"other", ts=5))
    assert fsm.apply(6, put("k", b"", cid="b", seq=1, ts=6)) == {"index": 6}
    assert fsm.get("k") == b""
    assert set(fsm.sessions) == {"c", "b"}


def test_max_sessions_tie_break_by_client_id():
    fsm = KVStateMachine(max_sessions=3)
    for i, cid in enumerate(["z", "b", "m"], start=1):
        fsm.apply(i, put("k", b"", cid=cid, seq=1, ts=100))
    fsm.apply(4, put("k", b"", cid="q", seq=1, ts=100))
    assert set(fsm.sessions) == {"m", "q", "z"}  # "b" is the smallest id among equals
    fsm.apply(5, put("k", b"", cid="c", seq=1, ts=100))
    assert set(fsm.sessions) == {"c", "q", "z"}  # "m"; never the session just opened


def test_new_session_is_never_evicted_immediately():
    fsm = KVStateMachine(max_sessions=1)
    fsm.apply(1, put("k", b"", cid="z", seq=1, ts=7))
    fsm.apply(2, put("k", b"1", cid="a", seq=1, ts=7))  # "a" < "z" at the same time
    assert set(fsm.sessions) == {"a"}
    assert fsm.apply(3, put("k", b"1", cid="a", seq=1, ts=7)) == {"index": 2}


def test_many_sessions_stay_bounded_and_fast():
    fsm = KVStateMachine(session_ttl_ms=10_000, max_sessions=500)
    start = time.perf_counter()
    for i in range(1, 20_001):
        # each client sends 2 requests; a few clients are retried much later
        cid = f"client-{i // 2}"
        fsm.apply(i, put(f"k{i % 100}", b"v", cid=cid, seq=i % 2 + 1, ts=i * 3))
        assert len(fsm.sessions) <= 500
    assert time.perf_counter() - start < 5
    assert len(fsm._heap) <= 2 * len(fsm.sessions) + 64


# ---------------------------------------------------------------- reads

@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), keys, values), max_size=80),
       st.text(alphabet="ab/", max_size=3),
       st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
def test_list_by_prefix_matches_naive_model(ops, prefix, limit):
    fsm = KVStateMachine()
    model: dict[str, bytes] = {}
    for i, (is_put, k, v) in enumerate(ops, start=1):
        if is_put:
            fsm.apply(i, put(k, v))
            model[k] = v
        else:
            fsm.apply(i, delete(k))
            model.pop(k, None)
    expected = {k: model[k] for k in sorted(model) if k.startswith(prefix)}
    if limit is not None:
        expected = dict(list(expected.items())[:limit])
    got = fsm.list(prefix, limit=limit)
    assert got == expected
    assert list(got) == list(expected)  # sorted by key
    assert len(fsm) == len(model)
    for k in model:
        assert fsm.get(k) == model[k]


def test_prefix_listing_does_not_scan_all_keys():
    fsm = KVStateMachine()
    n = 100_000
    # Build a big store quickly through a snapshot rather than 200k applies.
    fsm.restore(_pack({"version": 1, "applied_index": 0, "now_ms": 0, "sessions": [],
                       "data": [[f"bulk/{i:07d}", b""] for i in range(n)]}))
    for i in range(3):
        fsm.apply(i + 1, put(f"users/{i}", b"u"))
    fsm.apply(4, put("zzz", b""))
    start = time.perf_counter()
    for _ in range(2000):
        assert fsm.list("users/") == {"users/0": b"u", "users/1": b"u", "users/2": b"u"}
    # 2000 full scans of 100k keys would take about 20 s.
    assert time.perf_counter() - start < 1.0
    assert list(fsm.list("bulk/000012")) == [f"bulk/{i:07d}" for i in range(120, 130)]
    assert len(fsm) == n + 4


# ---------------------------------------------------------------- model, digest, snapshots

@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(command_sequences(), st.integers(min_value=0, max_value=600),
       st.integers(min_value=1, max_value=4))
def test_matches_reference_model(cmds, ttl, max_sessions):
    fsm = KVStateMachine(session_ttl_ms=ttl, max_sessions=max_sessions)
    ref = ReferenceKV(ttl, max_sessions)
    for i, c in enumerate(cmds, start=1):
        if c is None:
            fsm.apply_noop(i)
            continue
        assert fsm.apply(i, encode_command(c)) == ref.apply(i, c)
        assert fsm.list("") == ref.data
        assert {cid: (s.last_seq, s.last_result, s.last_active_ms)
                for cid, s in fsm.sessions.items()} == ref.sessions
    assert fsm.now_ms == ref.now


def test_digest_depends_on_state_not_history():
    a, b = KVStateMachine(), KVStateMachine()
    assert a.digest() == b.digest()
    a.apply(1, put("x", b"1"))
    a.apply(2, put("y", b"2"))
    b.apply(1, put("y", b"2"))
    b.apply(2, put("x", b"1"))
    assert a.digest() == b.digest()
    a.apply(3, put("x", b"1", cid="c", seq=1))
    b.apply(3, put("x", b"1"))
    assert a.list("") == b.list("")
    assert a.digest() != b.digest()  # sessions are part of the state


def test_snapshot_restore_basic_and_stats_kept():
    a = KVStateMachine(session_ttl_ms=1000)
    a.apply(1, put("k", b"v", cid="c", seq=1, ts=500))
    a.apply(2, cas("l", None, b"x", cid="d", seq=3, ts=600))
    b = KVStateMachine(session_ttl_ms=1000)
    b.apply(1, put("junk", b"will be replaced"))
    stats_before = dict(b.stats)
    b.restore(a.snapshot())
    assert b.digest() == a.digest()
    assert b.applied_index == 2 and b.now_ms == 600 and b.list("") == a.list("")
    assert b.stats == stats_before
    assert b.apply(3, put("k", b"v", cid="c", seq=1, ts=700)) == {"index": 1}  # dedup kept


@pytest.mark.parametrize("data", [
    b"", b"\xc1", _pack([1, 2]), _pack({"version": 99}),
    _pack({"version": 1, "applied_index": 1, "now_ms": 0, "data": [["k"]], "sessions": []}),
    _pack({"version": 1, "applied_index": 1, "now_ms": 0, "data": [["k", "str"]],
           "sessions": []}),
    _pack({"version": 1, "applied_index": 1, "now_ms": 0, "data": []}),
])
def test_restore_garbage_raises_and_keeps_state(data):
    fsm = KVStateMachine()
    fsm.apply(1, put("k", b"v", cid="c", seq=1))
    before = fsm.digest()
    with pytest.raises(ValueError):
        fsm.restore(data)
    assert fsm.digest() == before and fsm.get("k") == b"v"


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(command_sequences(), st.integers(min_value=0, max_value=40),
       st.integers(min_value=0, max_value=600), st.integers(min_value=1, max_value=4))
def test_snapshot_restore_round_trip(cmds, cut, ttl, max_sessions):
    cut = min(cut, len(cmds))
    original = KVStateMachine(session_ttl_ms=ttl, max_sessions=max_sessions)
    feed(original, cmds[:cut])
    snap = original.snapshot()

    restored = KVStateMachine(session_ttl_ms=ttl, max_sessions=max_sessions)
    restored.restore(snap)
    assert restored.digest() == original.digest()
    assert restored.applied_index == original.applied_index == cut
    assert restored.now_ms == original.now_ms
    assert restored.list("") == original.list("")
    assert dict(restored.sessions) == dict(original.sessions)
    assert restored.snapshot() == snap

    # Replaying the rest gives the same results and state as the node that never restarted,
    # and as a node that replayed the whole log from the start.
    replayed = KVStateMachine(session_ttl_ms=ttl, max_sessions=max_sessions)
    feed(replayed, cmds[:cut])
    rest = cmds[cut:]
    r1 = feed(original, rest, start_index=cut + 1)
    r2 = feed(restored, rest, start_index=cut + 1)
    r3 = feed(replayed, rest, start_index=cut + 1)
    assert r1 == r2 == r3
    assert original.digest() == restored.digest() == replayed.digest()


def test_freeze_keeps_the_snapshot_stable_while_writes_continue():
    """freeze() hands out the live dict without copying; writes made until thaw() go to an
    overlay, so the snapshot sees exactly the frozen state and readers see every write."""
    from raftd.kv.commands import Command, Op, encode_command

    def put(fsm, i, k, v):
        return fsm.apply(i, encode_command(Command(Op.PUT, k, v)))

    def delete(fsm, i, k):
        return fsm.apply(i, encode_command(Command(Op.DELETE, k)))

    a, b = KVStateMachine(), KVStateMachine()
    for fsm in (a, b):
        put(fsm, 1, "x", b"1")
        put(fsm, 2, "y", b"2")
    header, frozen = a.freeze()
    for fsm in (a, b):
        put(fsm, 3, "x", b"changed")
        delete(fsm, 4, "y")
        put(fsm, 5, "z", b"new")
    assert frozen == {"x": b"1", "y": b"2"} and header["applied_index"] == 2
    assert a.get("x") == b"changed" and a.get("y") is None and "y" not in a
    assert a.list("") == {"x": b"changed", "z": b"new"} and len(a) == 2
    assert a.digest() == b.digest()
    a.thaw()
    assert a.digest() == b.digest() and a.snapshot() == b.snapshot()
    header, frozen = a.freeze()  # a second snapshot after thaw works
    a.thaw()
