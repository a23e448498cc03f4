"""Tests for the linearizability checker in raftd/simrt/lincheck.py."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raftd.simrt.lincheck import CheckResult, History, Op, check_linearizable

NEVER = b"never-written"


# --------------------------------------------------------------------------
# helpers


def put(c, k, v, call, ret):
    return Op(c, "put", k, value=v, call=call, ret=ret)


def get(c, k, v, call, ret):
    return Op(c, "get", k, result=v, call=call, ret=ret)


def delete(c, k, res, call, ret):
    return Op(c, "delete", k, result=res, call=call, ret=ret)


def cas(c, k, exp, new, res, call, ret):
    return Op(c, "cas", k, value=new, expected=exp, result=res, call=call, ret=ret)


def linearizable(ops) -> bool:
    r = check_linearizable(ops)
    assert not r.timed_out
    return r.ok


def brute_force(ops) -> bool:
    """Reference: try every subset of unknown ops and every order."""
    ops = [o for o in ops if not (o.kind == "get" and o.ret is None)]
    by_key: dict = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    return all(_brute_key(kops) for kops in by_key.values())


def _brute_key(ops) -> bool:
    known = [o for o in ops if o.ret is not None]
    unknown = [o for o in ops if o.ret is None]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            for perm in itertools.permutations(known + list(extra)):
                if _valid_seq(perm):
                    return True
    return False


def _valid_seq(seq) -> bool:
    for a_i, a in enumerate(seq):
        for b in seq[a_i + 1:]:
            if b.ret is not None and b.ret < a.call:
                return False  # b completed before a was invoked, yet follows it
    state = None
    for o in seq:
        unknown = o.ret is None
        if o.kind == "put":
            state = o.value
        elif o.kind == "get":
            if state != o.result:
                return False
        elif o.kind == "delete":
            if not unknown and o.result is not None and o.result != (state is not None):
                return False
            state = None
        else:
            swapped = state == o.expected
            if not unknown and o.result is not None and o.result != swapped:
                return False
            if swapped:
                state = o.value
    return True


# --------------------------------------------------------------------------
# history generator: a real sequential execution, with each op's interval
# randomly stretched around its true linearization point


def generate_history(plan, n_clients, spread, pool=4, unique=False):
    """plan: list of (client, kind, key, val, exp_choice, call_frac, ret_frac, outcome)
    with outcome in {"ok", "unknown_applied", "unknown_lost"}.  Op j takes effect at
    time j (or never, if unknown_lost); its [call, ret] contains that point and the
    ops of one client never overlap.  Values come from a pool of `pool` values, or
    are unique per op if `unique`."""
    store: dict[str, bytes] = {}
    points: dict = {}
    for j, p in enumerate(plan):
        points.setdefault(p[0] % n_clients, []).append(j)
    next_point = {}
    for js in points.values():
        for a, b in zip(js, js[1:], strict=False):
            next_point[a] = b
    last_ret: dict = {}
    ops = []
    for j, (client, kind, key, val, exp_choice, call_frac, ret_frac, outcome) in enumerate(plan):
        client %= n_clients
        t = float(j)
        key = f"k{key}"
        prev = last_ret.get(client)
        room_before = spread if prev is None else min(spread, t - prev)
        call = t - call_frac * room_before
        room_after = min(spread, next_point.get(j, t + spread) - t)
        ret = t + ret_frac * 0.99 * room_after
        applied = outcome != "unknown_lost"
        cur = store.get(key)
        value = expected = result = None
        new_value = b"u%d" % j if unique else b"v%d" % (val % pool)
        if kind == "put":
            value = new_value
            if applied:
                store[key] = value
        elif kind == "get":
            result = cur
        elif kind == "delete":
            result = cur is not None
            if applied:
                store.pop(key, None)
        else:
            value = new_value
            if exp_choice == 0:
                expected = cur
            elif exp_choice == 1:
                expected = None
            else:
                expected = b"u%d" % (j - exp_choice) if unique else b"v%d" % (exp_choice % pool)
            result = cur == expected
            if result and applied:
                store[key] = value
        op = Op(client, kind, key, value=value, expected=expected, call=call, ret=ret)
        if kind != "put":
            op.result = result
        if outcome != "ok":
            op.ret = None
            op.result = None
        last_ret[client] = ret
        ops.append(op)
    return ops


plan_item = st.tuples(
    st.integers(0, 15),                                   # client
    st.sampled_from(["put", "get", "get", "delete", "cas"]),
    st.integers(0, 2),                                    # key
    st.integers(0, 7),                                    # value
    st.integers(0, 4),                                    # cas expected choice
    st.floats(0, 1),                                      # call stretch
    st.floats(0, 1),                                      # ret stretch
    st.sampled_from(["ok"] * 8 + ["unknown_applied", "unknown_lost"]),
)
history_params = dict(
    plan=st.lists(plan_item, min_size=1, max_size=40),
    n_clients=st.integers(1, 6),
    n_keys=st.integers(1, 3),
    spread=st.floats(0.1, 6.0),
)


def _plan_keys(plan, n_keys):
    return [(c, k, key % n_keys, *rest) for (c, k, key, *rest) in plan]


def random_plan(rng, n_ops, n_clients, n_keys, unknown_rate=0.01):
    kinds = ["put", "get", "get", "delete", "cas"]
    plan = []
    for _ in range(n_ops):
        u = rng.random()
        outcome = "ok" if u >= unknown_rate else rng.choice(["unknown_applied", "unknown_lost"])
        plan.append((rng.randrange(n_clients), rng.choice(kinds), rng.randrange(n_keys),
                     rng.randrange(8), rng.randrange(5), rng.random(), rng.random(), outcome))
    return plan


# --------------------------------------------------------------------------
# basic cases


def test_empty_history():
    r = check_linearizable([])
    assert r.ok and r.checked_keys == 0 and not r.timed_out


def test_sequential_history_passes():
    ops = [
        put(1, "a", b"1", 0, 1),
        get(2, "a", b"1", 2, 3),
        put(1, "b", b"x", 3.5, 3.7),
        delete(2, "a", True, 4, 5),
        get(1, "a", None, 6, 7),
        delete(1, "a", False, 8, 9),
        cas(2, "a", None, b"2", True, 10, 11),
        get(1, "a", b"2", 12, 13),
        get(3, "b", b"x", 14, 15),
    ]
    r = check_linearizable(ops)
    assert r.ok, r.explanation
    assert r.checked_keys == 2
    assert r.key is None


def test_stale_read_after_completed_write_fails():
    ops = [
        put(1, "x", b"old", 0, 1),
        put(1, "x", b"new", 2, 3),
        get(2, "x", b"old", 4, 5),
        put(3, "other", b"o", 0, 10),
    ]
    r = check_linearizable(ops)
    assert not r.ok and not r.timed_out
    assert r.key == "x"
    assert "'x'" in r.explanation
    assert "b'old'" in r.explanation


def test_read_of_initial_absent_after_write_fails():
    assert not linearizable([put(1, "x", b"1", 0, 1), get(2, "x", None, 2, 3)])
    assert linearizable([get(2, "x", None, 0, 1), put(1, "x", b"1", 2, 3)])


@pytest.mark.parametrize("read", [None, b"new"])
def test_concurrent_write_and_read_either_order_passes(read):
    ops = [put(1, "x", b"new", 0, 10), get(2, "x", read, 2, 3)]
    assert linearizable(ops)


def test_concurrent_read_of_value_never_written_fails():
    ops = [put(1, "x", b"new", 0, 10), get(2, "x", b"other", 2, 3)]
    assert not linearizable(ops)


def test_read_new_then_later_read_old_fails():
    # classic: the write overlaps both reads, but once a read observed the new
    # value, a read that starts after it finished must not see the old one.
    ops = [
        put(0, "x", b"0", 0, 1),
        put(1, "x", b"1", 2, 20),
        get(2, "x", b"1", 3, 4),
        get(3, "x", b"0", 5, 6),
    ]
    r = check_linearizable(ops)
    assert not r.ok and r.key == "x"
    # reordered reads (old first, then new) are fine
    ops[2].result, ops[3].result = b"0", b"1"
    assert linearizable(ops)


def test_touching_intervals_are_concurrent():
    # equal timestamps: calls sort before returns, so the ops overlap
    assert linearizable([put(1, "x", b"1", 0, 1), get(2, "x", None, 1, 2)])
    assert not linearizable([put(1, "x", b"1", 0, 1), get(2, "x", None, 1.0001, 2)])


def test_lost_acknowledged_write_fails():
    ops = [
        put(1, "x", b"a", 0, 1),
        put(1, "x", b"b", 2, 3),   # acknowledged
        get(2, "x", b"b", 3.5, 3.9),
        get(2, "x", b"a", 4, 5),   # ... but later lost (e.g. after leader failover)
    ]
    r = check_linearizable(ops)
    assert not r.ok and r.key == "x"
    # even without the intermediate read
    del ops[2]
    assert not linearizable(ops)


def test_unknown_put_observed_later_passes():
    ops = [
        put(1, "x", b"a", 0, 1),
        Op(2, "put", "x", value=b"b", call=2, ret=None),   # timed out
        get(3, "x", b"a", 3, 4),
        get(3, "x", b"b", 50, 51),                        # took effect late
        get(3, "x", b"b", 52, 53),
    ]
    assert linearizable(ops)


def test_unknown_put_never_observed_passes():
    ops = [
        put(1, "x", b"a", 0, 1),
        Op(2, "put", "x", value=b"b", call=2, ret=None),
        get(3, "x", b"a", 3, 4),
        get(3, "x", b"a", 50, 51),
    ]
    assert linearizable(ops)


def test_unknown_put_cannot_take_effect_before_its_call():
    ops = [
        get(3, "x", b"b", 0, 1),
        Op(2, "put", "x", value=b"b", call=2, ret=None),
    ]
    assert not linearizable(ops)


def test_unknown_put_cannot_be_undone():
    # once observed, an unknown put's effect stays (it happens at most once)
    ops = [
        put(1, "x", b"a", 0, 1),
        Op(2, "put", "x", value=b"b", call=2, ret=None),
        get(3, "x", b"b", 3, 4),
        get(3, "x", b"a", 5, 6),
    ]
    assert not linearizable(ops)


def test_unknown_ops_order_among_themselves():
    # two unknown puts: the read of the first one's value forces the order b, a
    ops = [
        Op(1, "put", "x", value=b"a", call=0, ret=None),
        Op(2, "put", "x", value=b"b", call=0, ret=None),
        get(3, "x", b"b", 1, 2),
        get(3, "x", b"a", 3, 4),
    ]
    assert linearizable(ops)
    ops.append(get(3, "x", b"b", 5, 6))
    assert not linearizable(ops)


def test_unknown_cas_chain():
    ops = [
        Op(1, "cas", "x", expected=None, value=b"1", call=0, ret=None),
        Op(2, "cas", "x", expected=b"1", value=b"2", call=0, ret=None),
        get(3, "x", b"2", 1, 2),
    ]
    assert linearizable(ops)
    ops[1].expected = b"9"
    assert not linearizable(ops)


def test_unknown_cas_observed_through_cas_with_unreported_result():
    # the completed cas (response lost its result) only swaps if the unknown
    # cas took effect before it; the final read proves both happened
    ops = [
        put(1, "x", b"a", 0, 1),
        Op(2, "cas", "x", expected=b"a", value=b"b", call=2, ret=None),
        cas(3, "x", b"b", b"c", None, 3, 4),
        get(4, "x", b"c", 5, 6),
    ]
    assert linearizable(ops)
    ops[1].ret, ops[1].result = None, None
    ops[1].expected = b"z"  # now the unknown cas can never swap
    assert not linearizable(ops)


def test_unknown_get_is_ignored():
    ops = [put(1, "x", b"a", 0, 1), Op(2, "get", "x", result=b"zzz", call=2, ret=None)]
    assert linearizable(ops)


def test_unknown_delete():
    ops = [
        put(1, "x", b"a", 0, 1),
        Op(2, "delete", "x", call=2, ret=None),
        get(3, "x", b"a", 3, 4),
        get(3, "x", None, 5, 6),
    ]
    assert linearizable(ops)
    ops.append(get(3, "x", b"a", 7, 8))
    assert not linearizable(ops)


# --------------------------------------------------------------------------
# cas / delete semantics


def test_cas_success_semantics():
    ok = [put(1, "x", b"a", 0, 1), cas(1, "x", b"a", b"b", True, 2, 3), get(1, "x", b"b", 4, 5)]
    assert linearizable(ok)
    # claimed success although the value did not match
    bad = [put(1, "x", b"a", 0, 1), cas(1, "x", b"z", b"b", True, 2, 3)]
    assert not linearizable(bad)
    # success reported but the new value never became visible
    lost = [put(1, "x", b"a", 0, 1), cas(1, "x", b"a", b"b", True, 2, 3), get(1, "x", b"a", 4, 5)]
    assert not linearizable(lost)


def test_cas_failure_semantics():
    ok = [put(1, "x", b"a", 0, 1), cas(1, "x", b"z", b"b", False, 2, 3), get(1, "x", b"a", 4, 5)]
    assert linearizable(ok)
    # claimed failure although the value matched
    bad = [put(1, "x", b"a", 0, 1), cas(1, "x", b"a", b"b", False, 2, 3)]
    assert not linearizable(bad)
    # failed cas must not have written
    wrote = [put(1, "x", b"a", 0, 1), cas(1, "x", b"z", b"b", False, 2, 3), get(1, "x", b"b", 4, 5)]
    assert not linearizable(wrote)


def test_cas_expected_none_means_absent():
    assert linearizable([cas(1, "x", None, b"a", True, 0, 1), get(1, "x", b"a", 2, 3)])
    assert not linearizable([put(1, "x", b"a", 0, 1), cas(1, "x", None, b"b", True, 2, 3)])
    assert linearizable([put(1, "x", b"a", 0, 1), cas(1, "x", None, b"b", False, 2, 3)])


def test_cas_concurrent_with_put():
    # cas overlapping a put may see either value
    ops = [put(1, "x", b"a", 0, 1), put(2, "x", b"b", 2, 10), cas(3, "x", b"a", b"c", True, 3, 4)]
    assert linearizable(ops)
    ops.append(get(3, "x", b"c", 11, 12))  # so the put came first ... impossible
    assert not linearizable(ops)
    ops[-1].result = b"b"
    assert linearizable(ops)


def test_delete_semantics():
    assert linearizable([delete(1, "x", False, 0, 1)])
    assert not linearizable([delete(1, "x", True, 0, 1)])
    assert not linearizable([put(1, "x", b"a", 0, 1), delete(1, "x", False, 2, 3)])
    assert not linearizable([put(1, "x", b"a", 0, 1), delete(1, "x", True, 2, 3),
                             get(1, "x", b"a", 4, 5)])
    # completed delete with unreported result still takes effect
    assert not linearizable([put(1, "x", b"a", 0, 1), delete(1, "x", None, 2, 3),
                             get(1, "x", b"a", 4, 5)])


# --------------------------------------------------------------------------
# multi-key, result shape, recorder, timeout


def test_failure_reports_first_bad_key_and_counts():
    ops = [
        put(1, "a", b"1", 0, 1), get(1, "a", b"1", 2, 3),
        put(1, "b", b"1", 0, 1), get(1, "b", b"2", 2, 3),    # bad
        put(1, "c", b"1", 0, 1), get(1, "c", b"1", 2, 3),
    ]
    r = check_linearizable(ops)
    assert isinstance(r, CheckResult)
    assert not r.ok and r.key == "b" and r.checked_keys == 1 and not r.timed_out
    assert "'b'" in r.explanation and "b'2'" in r.explanation


def test_keys_are_independent():
    # per key fine; cross-key "ordering anomalies" are not a linearizability
    # violation for independent registers ... but real-time order still binds
    # within each key.
    ops = [
        put(1, "a", b"1", 0, 5), put(2, "b", b"1", 0, 5),
        get(3, "a", b"1", 1, 2), get(3, "b", None, 3, 4),
        get(4, "b", b"1", 1, 2), get(4, "a", None, 3, 4),
    ]
    r = check_linearizable(ops)
    assert not r.ok and r.key == "a"   # 'a' read new then a later read saw absent
    ops = [
        put(1, "a", b"1", 0, 5), put(2, "b", b"1", 0, 5),
        get(3, "a", b"1", 1, 2), get(3, "b", None, 3, 4),
        get(4, "b", b"1", 3.5, 4.5), get(4, "a", b"1", 4.6, 4.7),
    ]
    assert linearizable(ops)


def test_history_recorder():
    clock = iter(range(100))
    h = History(clock=lambda: float(next(clock)))
    a = h.invoke(1, "put", "x", b"a")
    h.ok(a)
    b = h.invoke(2, "put", "x", b"b")
    h.fail(b)                                  # certainly not applied: dropped
    c = h.invoke(3, "cas", "x", value=b"c", expected=b"a")
    h.unknown(c)
    g = h.invoke(4, "get", "x")
    h.ok(g, b"a")
    assert [o.kind for o in h.ops] == ["put", "cas", "get"]
    assert c.ret is None and g.value == b"a" and g.result == b"a" and a.ret == 1.0
    assert check_linearizable(h.ops).ok
    assert h.check().ok
    # a dropped put cannot explain a read
    g2 = h.invoke(4, "get", "x")
    h.ok(g2, b"b")
    assert not check_linearizable(h.ops).ok


def test_history_recorder_threads():
    h = History()
    store = {}
    lock = threading.Lock()

    def client(cid):
        rng = random.Random(cid)
        for n in range(200):
            key = f"k{rng.randrange(3)}"
            if rng.random() < 0.5:
                op = h.invoke(cid, "put", key, b"%d-%d" % (cid, n))
                with lock:
                    store[key] = op.value
                h.ok(op)
            else:
                op = h.invoke(cid, "get", key)
                with lock:
                    v = store.get(key)
                h.ok(op, v)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h.ops) == 1600
    r = check_linearizable(h.ops)
    assert r.ok, r.explanation


def test_invalid_ops_rejected():
    with pytest.raises(ValueError):
        check_linearizable([Op(1, "incr", "x", call=0, ret=1)])
    with pytest.raises(ValueError):
        check_linearizable([put(1, "x", b"a", 2, 1)])


def test_timeout_is_inconclusive():
    # many concurrent writes of the same value and a read that cannot be
    # explained: exhaustive search is exponential in the number of overlapping ops
    ops = [put(i, "x", b"%d" % (i % 2), 0, 100) for i in range(40)]
    ops += [get(i, "x", b"%d" % (i % 2), 1 + i, 1.5 + i) for i in range(40, 80)]
    ops.append(get(99, "x", b"nope", 200, 201))
    t0 = time.monotonic()
    r = check_linearizable(ops, timeout_s=0.3)
    assert time.monotonic() - t0 < 5
    assert r.timed_out and not r.ok and r.key == "x"
    assert "inconclusive" in r.explanation


# --------------------------------------------------------------------------
# property tests


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**history_params)
def test_generated_histories_pass(plan, n_clients, n_keys, spread):
    ops = generate_history(_plan_keys(plan, n_keys), n_clients, spread)
    r = check_linearizable(ops)
    assert r.ok, r.explanation
    assert r.checked_keys == len({o.key for o in ops})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.filter_too_much])
@given(**history_params, which=st.integers(0, 10**6))
def test_generated_histories_with_corrupted_read_fail(plan, n_clients, n_keys, spread, which):
    ops = generate_history(_plan_keys(plan, n_keys), n_clients, spread)
    gets = [o for o in ops if o.kind == "get" and o.ret is not None]
    assume(gets)
    victim = gets[which % len(gets)]
    victim.result = NEVER
    r = check_linearizable(ops)
    assert not r.ok and not r.timed_out
    assert r.key == victim.key
    assert repr(NEVER) in r.explanation


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**history_params, which=st.integers(0, 10**6))
def test_generated_unique_value_histories_with_stale_read_fail(plan, n_clients, n_keys, spread,
                                                               which):
    # unique values: a get returning the value of put p although another
    # completed write q happened strictly between p and the get is stale
    ops = generate_history(_plan_keys(plan, n_keys), n_clients, spread, unique=True)
    done = [o for o in ops if o.ret is not None]
    changes = [o for o in done if o.kind == "put" or (o.kind in ("cas", "delete") and o.result)]
    pairs = [(g, p) for g in done if g.kind == "get"
             for p in done if p.kind == "put" and p.key == g.key
             if any(q.key == g.key and q.call > p.ret and q.ret < g.call for q in changes)]
    if not pairs:  # make one: put p, put q, get by a fresh client after everything
        t = max(max(o.call, o.ret or 0) for o in ops) + 1
        ops += [put("z", "k0", b"p", t, t + 1), put("z", "k0", b"q", t + 2, t + 3),
                get("z", "k0", b"q", t + 4, t + 5)]
        pairs = [(ops[-1], ops[-3])]
    g, p = pairs[which % len(pairs)]
    g.result = p.value
    r = check_linearizable(ops)
    assert not r.ok and not r.timed_out
    assert r.key == g.key


@settings(max_examples=150, deadline=None)
@given(plan=st.lists(plan_item, min_size=1, max_size=7), n_clients=st.integers(1, 4),
       n_keys=st.integers(1, 2), spread=st.floats(0.1, 5.0), pool=st.integers(1, 3),
       corrupt=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=2))
def test_matches_brute_force_on_generated_histories(plan, n_clients, n_keys, spread, pool,
                                                     corrupt):
    ops = generate_history(_plan_keys(plan, n_keys), n_clients, spread, pool=pool)
    for idx, choice in corrupt:
        o = ops[idx % len(ops)]
        if o.ret is None:                 # an unknown op that did complete after all
            o.ret = o.call + choice
            if o.kind in ("cas", "delete"):
                o.result = bool(choice % 2)
        elif o.kind == "get":
            o.result = [None, b"v0", b"v1", b"v2"][choice]
        elif o.kind in ("cas", "delete"):
            o.result = [True, False, None, not o.result][choice]
        else:
            o.value = b"v%d" % choice
    assert check_linearizable(ops).ok == brute_force(ops)


small_op = st.tuples(
    st.integers(0, 2),                                      # client
    st.sampled_from(["put", "get", "delete", "cas"]),
    st.sampled_from([None, b"a", b"b"]),                    # value / read
    st.sampled_from([None, b"a", b"b"]),                    # cas expected
    st.booleans(),                                          # bool result
    st.integers(0, 6), st.integers(0, 4),                   # call, duration
    st.sampled_from([True, True, True, False]),             # known outcome
)


@settings(max_examples=150, deadline=None)
@given(st.lists(small_op, min_size=1, max_size=6))
def test_matches_brute_force_on_arbitrary_small_histories(items):
    ops = []
    for c, kind, v, e, b, call, dur, known in items:
        ret = float(call + dur) if known else None
        if kind == "put":
            ops.append(Op(c, kind, "x", value=v or b"a", call=call, ret=ret))
        elif kind == "get":
            ops.append(Op(c, kind, "x", result=v, call=call, ret=ret))
        elif kind == "delete":
            ops.append(Op(c, kind, "x", result=b if known else None, call=call, ret=ret))
        else:
            ops.append(Op(c, kind, "x", value=v or b"b", expected=e,
                          result=b if known else None, call=call, ret=ret))
    assert check_linearizable(ops).ok == brute_force(ops)


# --------------------------------------------------------------------------
# performance


def test_performance_20k_ops():
    rng = random.Random(20240601)
    plan = random_plan(rng, 20_000, n_clients=16, n_keys=50)
    ops = generate_history(plan, n_clients=16, spread=16.0, pool=8)
    assert len({o.key for o in ops}) == 50
    t0 = time.monotonic()
    r = check_linearizable(ops)
    elapsed = time.monotonic() - t0
    print(f"\nlincheck: 20000 ops / 50 keys / 16 clients checked in {elapsed:.2f}s")
    assert r.ok, r.explanation
    assert r.checked_keys == 50
    assert elapsed < 10.0
    # the same history with one corrupted read is rejected, also quickly
    victim = next(o for o in reversed(ops) if o.kind == "get" and o.ret is not None)
    victim.result = NEVER
    t0 = time.monotonic()
    r = check_linearizable(ops)
    assert not r.ok and not r.timed_out and r.key == victim.key
    assert time.monotonic() - t0 < 10.0
