"""Sessions decided by the replicated log (issue 14 §7, issue 19 §12): the limits are
replicated state, time is cluster time, and an evicted session is never applied twice."""
from __future__ import annotations

import msgpack

from raftd.kv.commands import Command, Op, encode_command, encode_limits
from raftd.kv.fsm import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL_MS, KVStateMachine
from raftd.runtime.clusterclock import ClusterClock


def open_session(cid, ts=0) -> bytes:
    return encode_command(Command(Op.OPEN_SESSION, "", client_id=cid, seq=1, timestamp_ms=ts))


def put(key, value, cid, seq, ts=0) -> bytes:
    return encode_command(Command(Op.PUT, key, value, client_id=cid, seq=seq, timestamp_ms=ts))


def limits(ttl, cap, ts=0) -> bytes:
    return encode_command(Command(Op.SESSION_LIMITS, "", encode_limits(ttl, cap),
                                  timestamp_ms=ts))


def test_limits_come_from_the_log_not_from_the_constructor_of_each_node():
    """Two nodes built with different per-node settings used to expire different sessions
    and apply one retry a different number of times; now both follow the log."""
    a = KVStateMachine(session_ttl_ms=1_000)
    b = KVStateMachine(session_ttl_ms=10_000_000)
    log = [limits(5_000, 10), open_session("c", ts=100), put("k", b"1", "c", 2, ts=100),
           put("x", b"-", None, 0, ts=7_000),  # 6.9 s later: c's session expires (ttl 5 s)
           put("k", b"1", "c", 2, ts=7_001)]  # c's retry
    ra = [a.apply(i, e) for i, e in enumerate(log, 1)]
    rb = [b.apply(i, e) for i, e in enumerate(log, 1)]
    assert ra == rb and a.digest() == b.digest()
    assert ra[-1]["error"] == "session_expired"  # refused, not applied a second time
    assert a.session_ttl_ms == 5_000 and a.max_sessions == 10


def test_limits_are_kept_in_snapshots_and_old_snapshots_get_the_defaults():
    a = KVStateMachine()
    a.apply(1, limits(5_000, 7))
    b = KVStateMachine()
    b.restore(a.snapshot())
    assert (b.session_ttl_ms, b.max_sessions) == (5_000, 7) and b.digest() == a.digest()
    old = msgpack.packb({"version": 1, "applied_index": 3, "now_ms": 0, "data": [],
                         "sessions": []}, use_bin_type=True)
    b.restore(old)
    assert (b.session_ttl_ms, b.max_sessions) == (DEFAULT_SESSION_TTL_MS, DEFAULT_MAX_SESSIONS)


def test_lower_max_sessions_evicts_least_recently_used_and_never_applies_twice():
    fsm = KVStateMachine()
    for i, cid in enumerate("abc", 1):
        fsm.apply(i, open_session(cid, ts=i))
    fsm.apply(4, put("k", b"a1", "a", 2, ts=10))  # a is now the most recently used
    fsm.apply(5, limits(DEFAULT_SESSION_TTL_MS, 2, ts=11))
    assert set(fsm.sessions) == {"a", "c"}
    r = fsm.apply(6, put("k", b"b1", "b", 2, ts=12))  # b was evicted
    assert r["error"] == "session_expired" and fsm.get("k") == b"a1"
    assert fsm.apply(7, put("k", b"a1", "a", 2, ts=13)) == {"index": 4}  # a retry: deduped


def test_a_first_write_with_seq_1_still_opens_a_session():
    """Clients of earlier versions never send OPEN_SESSION."""
    fsm = KVStateMachine()
    assert fsm.apply(1, put("k", b"v", "old", 1)) == {"index": 1}
    assert fsm.apply(2, put("k", b"v", "old", 1)) == {"index": 1}  # retry answered, not applied
    assert fsm.stats["puts"] == 1


def test_cluster_clock_moves_only_by_elapsed_time_and_continues_across_terms():
    now = [100.0]
    clock = ClusterClock(lambda: now[0])
    assert clock.now_ms(1, 5_000) == 5_000  # a leader continues from the log's time
    now[0] += 2.5
    assert clock.now_ms(1, 5_000) == 7_500  # + elapsed, whatever the wall clock says
    now[0] -= 50  # monotonic clocks do not go back, but even if the source did:
    assert clock.now_ms(1, 7_500) == 7_500  # never below what the log already holds
    now[0] = 1_000.0
    assert clock.now_ms(2, 9_000) == 9_000  # a new term starts from the applied time
    now[0] += 1
    assert clock.now_ms(2, 9_000) == 10_000


def test_a_leader_replicates_its_configured_limits(cluster_factory):
    """raftd's session_ttl_ms/max_sessions settings reach every node through the log."""
    import time

    c = cluster_factory(3, session_ttl_ms=5_000, max_sessions=1_000).start()
    c.wait_leader()
    with c.client() as cl:
        cl.put("k", b"v")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {nid: (c.status(nid) or {}).get("sessions") for nid in c.nodes}
        if all(s and (s["session_ttl_ms"], s["max_sessions"]) == (5_000, 1_000)
               for s in got.values()):
            break
        time.sleep(0.1)
    assert all((s["session_ttl_ms"], s["max_sessions"]) == (5_000, 1_000) for s in got.values())
