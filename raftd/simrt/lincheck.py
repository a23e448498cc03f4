"""Linearizability checker for client histories of the raftd key-value store.

The store is a map of independent registers, so a history is linearizable iff
the sub-history of every key is (P-compositionality, Horn & Kroening).  Each
key is checked with Wing & Gong's backtracking search plus Lowe's memoisation
(a cache of (set of linearized ops, register value) states), the same
algorithm as Porcupine / Knossos:

* the call and return events of the key's ops are sorted by time (calls
  before returns at equal times, so ops that merely touch are concurrent) and
  kept in a doubly linked list;
* the search (iterative, explicit stack) repeatedly linearizes a pending call
  (a call that precedes the first not-yet-linearized return) whose model
  step is consistent, removing the op's events from the list; when nothing
  pending can be linearized it backtracks; a state already in the cache is
  never explored twice.

Operations with an unknown outcome (``ret is None``: timeout, crash, ...) may
have taken effect at any time after their call, or never: their return is at
+infinity and their result unconstrained.  They are kept outside the linked
list (they never block the search) and the search succeeds as soon as every
op with a known return is linearized, which implements "never".  Unknown gets
constrain nothing and are dropped.

Exact reductions on top of the textbook search (each only skips states or
orders for which an equivalent one is explored; tests/test_lincheck.py
cross-checks the checker against brute-force enumeration):

* the linearized set is a bitset int compressed to (frontier f, window bits
  above f, packed per-class counts of used unknown ops), so memo keys stay
  small on long histories;
* a pending read-only op that is valid now (a get of the current value, a
  cas/delete known to have failed) commutes to the front of any completion,
  so it is linearized without trying alternatives;
* written values that no get reads and no cas expects are indistinguishable
  to the model and are abstracted to a single value;
* unknown ops with the same effect are interchangeable, so only the earliest
  unused one of each class is tried; an unknown op that would change nothing
  is not linearized; and after an unknown op, an op that would be equally
  valid with the same result without it (e.g. a put) is not linearized next,
  since the unknown op could as well never have happened (the memo key
  includes the value before that unknown op);
* completed ops are tried before unknown ones, so unknown ops are only
  linearized when something needs their effect.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

__all__ = ["Op", "History", "CheckResult", "check_linearizable", "format_op"]

KINDS = ("put", "get", "delete", "cas")
_PUT, _GET, _DELETE, _CAS = 0, 1, 2, 3
_KIND_CODE = {"put": _PUT, "get": _GET, "delete": _DELETE, "cas": _CAS}


@dataclass(eq=False)
class Op:
    client: int | str
    kind: str  # "put" | "get" | "delete" | "cas"
    key: str
    value: bytes | None = None  # put: value written; cas: new value; get: value read
    expected: bytes | None = None  # cas only (None = key must be absent)
    result: object = None  # get: bytes|None; cas: bool swapped; delete: bool deleted; put: None
    call: float = 0.0  # invocation time (monotonic seconds)
    ret: float | None = None  # response time; None = outcome unknown

    def __repr__(self) -> str:  # compact, used in explanations
        return f"Op({format_op(self)})"


@dataclass
class CheckResult:
    ok: bool
    key: str | None  # first key whose sub-history is not linearizable
    explanation: str  # human-readable: the ops of that key around the failure
    checked_keys: int
    timed_out: bool = False  # search budget exhausted: inconclusive, not ok

    def __bool__(self) -> bool:
        return self.ok


class History:
    """Thread-safe recorder of client operations.

    ``invoke`` before sending a request; then exactly one of ``ok`` (response
    received), ``unknown`` (timeout / connection lost: may or may not have
    taken effect) or ``fail`` (the op certainly did not take effect, e.g. a
    rejected-before-proposal error: it is removed from the history).
    """

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.ops: list[Op] = []

    def invoke(self, client, kind, key, value=None, expected=None) -> Op:
        if kind not in _KIND_CODE:
            raise ValueError(f"unknown op kind {kind!r}")
        with self._lock:
            op = Op(client=client, kind=kind, key=key, value=value,
                    expected=expected, call=self._clock())
            self.ops.append(op)
        return op

    def ok(self, op: Op, result=None) -> None:
        with self._lock:
            op.ret = self._clock()
            op.result = result
            if op.kind == "get":
                op.value = result

    def unknown(self, op: Op) -> None:
        with self._lock:
            op.ret = None

    def fail(self, op: Op) -> None:
        with self._lock:
            for i, o in enumerate(self.ops):
                if o is op:
                    del self.ops[i]
                    break

    def snapshot(self) -> list[Op]:
        with self._lock:
            return list(self.ops)

    def check(self, timeout_s: float = 30.0) -> CheckResult:
        return check_linearizable(self.snapshot(), timeout_s=timeout_s)


# --------------------------------------------------------------------------
# formatting


def _fmt_val(v) -> str:
    return "absent" if v is None else repr(v)


def _fmt_time(t) -> str:
    return "inf" if t is None else f"{t:.6f}"


def format_op(op: Op, idx: int | None = None) -> str:
    k = op.kind
    if k == "put":
        body = f"put({op.key!r}, {_fmt_val(op.value)})"
        res = "ok"
    elif k == "get":
        body = f"get({op.key!r})"
        res = _fmt_val(_read_value(op))
    elif k == "delete":
        body = f"delete({op.key!r})"
        res = repr(op.result)
    else:
        body = f"cas({op.key!r}, expected={_fmt_val(op.expected)}, new={_fmt_val(op.value)})"
        res = repr(op.result)
    if op.ret is None:
        res = "? (unknown outcome)"
    head = f"#{idx} " if idx is not None else ""
    span = f"[{_fmt_time(op.call)}, {_fmt_time(op.ret)}]"
    return f"{head}client={op.client!r} {body} -> {res}  {span}"


def _read_value(op: Op):
    """The value a get read: ``result``, falling back to ``value``."""
    if op.result is not None:
        if op.value is not None and op.value != op.result:
            raise ValueError(f"get with conflicting value/result: {op!r}")
        return op.result
    return op.value


# --------------------------------------------------------------------------
# checker


_BAD_STATE = object()  # sentinel: model step not possible


class _Other:
    """Abstract register value: some value that no get reads and no cas expects."""

    def __repr__(self) -> str:
        return "<a value never read>"


_OTHER = _Other()
_NOCTX = object()  # search context: the last linearized op was a completed one
# memo size cap per key (~190 bytes a state): beyond it, give up as inconclusive
_MAX_STATES = 2_000_000


class _Timeout(Exception):
    pass


def _validate(op: Op) -> None:
    if op.kind not in _KIND_CODE:
        raise ValueError(f"unknown op kind {op.kind!r} in {op!r}")
    if op.ret is not None and op.ret < op.call:
        raise ValueError(f"op returns before it is called: {op!r}")
    if op.ret is not None and op.kind in ("delete", "cas") and op.result is not None \
            and not isinstance(op.result, bool):
        raise ValueError(f"{op.kind} result must be a bool (or None if unknown): {op!r}")


def check_linearizable(ops: list[Op], timeout_s: float = 30.0) -> CheckResult:
    """Check a client history for linearizability, one key at a time."""
    deadline = time.monotonic() + timeout_s
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        _validate(op)
        if op.kind == "get" and op.ret is None:
            continue  # an unknown read constrains nothing
        by_key.setdefault(op.key, []).append(op)
    # keys that only had unknown gets are trivially fine
    all_keys = {op.key for op in ops}
    checked = len(all_keys) - len(by_key)
    for key in sorted(by_key, key=repr):
        kops = sorted(by_key[key], key=lambda o: o.call)
        try:
            failure = _check_key(kops, deadline)
        except _Timeout:
            return CheckResult(
                ok=False, key=key, checked_keys=checked, timed_out=True,
                explanation=(f"key {key!r}: search budget exhausted (time limit {timeout_s}s "
                             f"or {_MAX_STATES} memoised states) after {checked} key(s) "
                             f"checked ({len(kops)} ops on this key); result inconclusive"))
        if failure is not None:
            return CheckResult(ok=False, key=key, explanation=failure, checked_keys=checked)
        checked += 1
    return CheckResult(ok=True, key=None, explanation="linearizable", checked_keys=checked)


def _check_key(ops: list[Op], deadline: float) -> str | None:
    """Wing & Gong / Lowe search over one key. Returns None if linearizable,
    else an explanation. Raises _Timeout."""
    n = len(ops)
    code = [_KIND_CODE[o.kind] for o in ops]
    known = [o.ret is not None for o in ops]
    exp = [o.expected if code[i] == _CAS else None for i, o in enumerate(ops)]
    # result constraint: for get the value read; for delete/cas a bool or
    # None (= unconstrained); unconstrained for unknown ops.
    res: list = [None] * n
    constrained = [False] * n
    for i, o in enumerate(ops):
        if not known[i]:
            continue
        if code[i] == _GET:
            res[i] = _read_value(o)
            constrained[i] = True
        elif code[i] in (_DELETE, _CAS) and o.result is not None:
            res[i] = bool(o.result)
            constrained[i] = True
    # Value abstraction (exact): the model only compares the register with
    # values read by gets and with cas expected values, so every other
    # written value behaves the same; they are all mapped to _OTHER.  Unknown
    # writes of never-read values then collapse into one class (below).
    referenced = {res[i] for i in range(n) if code[i] == _GET} | set(exp)
    referenced.discard(None)
    arg = [(o.value if o.value is None or o.value in referenced else _OTHER)
           if code[i] in (_PUT, _CAS) else None for i, o in enumerate(ops)]
    # read-only: leaves the value unchanged wherever it can validly be placed
    # (a get, a cas known to have failed, a delete known to have found nothing)
    readonly = [known[i] and (code[i] == _GET or (constrained[i] and (
        (code[i] in (_CAS, _DELETE) and res[i] is False)
        or (code[i] == _CAS and exp[i] == arg[i])))) for i in range(n)]

    # events: calls of every op, returns of known ops; rank = position in order
    events = []
    for i, o in enumerate(ops):
        events.append((o.call, 0, i))
        if known[i]:
            events.append((o.ret, 1, i))
    events.sort()
    # linked list over events of known ops: node 0 = head, M+1 = tail
    node_op = [-1]
    node_call = [False]
    node_rank = [-1]
    call_node = [0] * n
    ret_node = [0] * n
    unknown_ops: list[tuple[int, int]] = []  # (rank of call, op index)
    for rank, (_t, is_ret, i) in enumerate(events):
        if not known[i]:
            unknown_ops.append((rank, i))
            continue
        node = len(node_op)
        node_op.append(i)
        node_call.append(not is_ret)
        node_rank.append(rank)
        if is_ret:
            ret_node[i] = node
        else:
            call_node[i] = node
    M = len(node_op) - 1
    # The set of linearized known ops is kept compressed: known ops are
    # numbered in call order (kpos); ops 0..f-1 are all linearized and win is
    # the bitset of linearized ops from f on.  Only a window of concurrent ops
    # is ever partially linearized, so memo keys stay small.
    kpos = [0] * n
    for k, i in enumerate(node_op[e] for e in range(1, M + 1) if node_call[e]):
        kpos[i] = k
    TAIL = M + 1
    node_op.append(-1)
    node_call.append(False)
    node_rank.append(math.inf)
    nxt = list(range(1, M + 2)) + [TAIL]
    prv = [0] + list(range(0, M + 1))
    # Unknown ops with the same effect (kind, abstract new value, expected)
    # are interchangeable: none is obligatory and each stays available from
    # its call on, so only the earliest-called unused one of a class is tried.
    # The used members of a class are therefore always a prefix of it.
    op_rank = [0] * n
    classes: dict = {}
    for rank, i in unknown_ops:
        op_rank[i] = rank
        classes.setdefault((code[i], arg[i], exp[i]), []).append(i)
    # Classes (ids 1..C, in order of their first member's call) that still
    # have unused members are kept in a doubly linked list; 0 = head, C+1 = tail.
    cls_ops = [[]] + list(classes.values())
    C = len(cls_ops) - 1
    CTAIL = C + 1
    cls_first = [-1] + [op_rank[m[0]] for m in cls_ops[1:]] + [math.inf]
    cls_len = [len(m) for m in cls_ops]
    op_cls = [0] * n
    for c in range(1, C + 1):
        for i in cls_ops[c]:
            op_cls[i] = c
    cls_next = [0] * (C + 2)  # number of used members of each class
    # The used unknown ops are encoded exactly by their per-class counts,
    # packed into one int U: class c's count lives at bit offset cls_off[c].
    uinc = [0] * n
    off = 0
    for c in range(1, C + 1):
        for i in cls_ops[c]:
            uinc[i] = 1 << off
        off += cls_len[c].bit_length()
    cnxt = list(range(1, C + 2)) + [CTAIL]
    cprv = [0] + list(range(0, C + 1))

    _BAD = _BAD_STATE

    def step(i, s):
        """Register model: the new value, or _BAD if the op's result is
        inconsistent with value s."""
        k = code[i]
        if k == _PUT:
            return arg[i]
        if k == _GET:
            return s if s == res[i] else _BAD
        if k == _DELETE:
            if constrained[i] and res[i] != (s is not None):
                return _BAD
            return None
        swapped = s == exp[i]
        if constrained[i] and res[i] != swapped:
            return _BAD
        return arg[i] if swapped else s

    n_known = remaining = sum(known)
    f = win = U = 0
    state = None
    # ctx: if the last linearized op has an unknown outcome, the value before
    # it; else _NOCTX.  An op that would be valid from ctx with the same
    # resulting value (a put, a delete that finds a value either way, ...)
    # is not linearized next: the unknown op could as well never have
    # happened, and that alternative is explored from the parent node.
    ctx = _NOCTX
    cache: set = set()
    # A frame records a node of the search tree at the moment one of its
    # candidates was linearized:
    #   (op, cands, ci, uidx, R, state, ctx, f, win, U).
    # cands is None for a forced step (no alternatives to try on backtrack).
    stack: list[tuple] = []
    best_done = -1
    best_info = None
    cands: list | None = []
    ci = R = 0
    uidx = CTAIL
    iters = 0
    expand = True
    stuck = False

    while remaining:
        iters += 1
        if not iters & 0x3FF and time.monotonic() > deadline:
            raise _Timeout
        if expand:
            # New node.  Scan the pending known calls (those before the first
            # un-linearized return R).  A pending read-only op that is valid
            # now commutes to the front of any completion (it reads the same
            # value there and changes nothing), so it is linearized without
            # trying alternatives.
            expand = False
            cands = []
            forced = -1
            e = nxt[0]
            while node_call[e]:
                i = node_op[e]
                new = step(i, state)
                if new is not _BAD:
                    if readonly[i]:
                        forced = i
                        break
                    if ctx is _NOCTX or step(i, ctx) != new:
                        cands.append((i, new))
                e = nxt[e]
            if forced >= 0:
                i = forced
                b = kpos[i] - f
                nw = win | (1 << b)
                nf = f
                if not b:
                    t = (~nw & (nw + 1)).bit_length() - 1
                    nw >>= t
                    nf += t
                mk = (nf | nw << 32, state) if not U else (nf | nw << 32, U, state, _NOCTX)
                if mk in cache:
                    stuck = True
                else:
                    cache.add(mk)
                    stack.append((i, None, 0, 0, 0, state, ctx, f, win, U))
                    f = nf
                    win = nw
                    ctx = _NOCTX
                    remaining -= 1
                    c = call_node[i]
                    r = ret_node[i]
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    expand = True
                    continue
            else:
                R = e
                ci = 0
                uidx = cnxt[0]

        if stuck:
            # nothing pending can be linearized from this node: backtrack
            stuck = False
            # progress: completed ops linearized, then fewest unknown ops
            done = (n_known - remaining) * (n + 1) + (n - len(stack))
            if done > best_done:
                e = nxt[0]
                while node_call[e]:
                    e = nxt[e]
                best_done = done
                best_info = (node_op[e], state, [fr[0] for fr in stack])
            if not stack:
                return _explain(ops, best_info)
            i, cands, ci, uidx, R, state, ctx, f, win, U = stack.pop()
            if known[i]:
                remaining += 1
                c = call_node[i]
                r = ret_node[i]
                prv[nxt[r]] = r
                nxt[prv[r]] = r
                prv[nxt[c]] = c
                nxt[prv[c]] = c
            else:
                c = op_cls[i]
                if cls_next[c] == cls_len[c]:  # relink the exhausted class
                    cprv[cnxt[c]] = c
                    cnxt[cprv[c]] = c
                cls_next[c] -= 1
            if cands is None:
                stuck = True  # a forced step failed: so does its node
            elif ci < len(cands):
                ci += 1
            else:
                uidx = cnxt[uidx]
            continue

        # next candidate of the current node: known ops first, then unknown
        # ops called before R (they never block the search, so they are only
        # linearized when something needs their effect)
        if ci < len(cands):
            i, new = cands[ci]
        else:
            # uidx: the class of unknown ops being tried
            rlim = node_rank[R]
            while cls_first[uidx] < rlim:
                i = cls_ops[uidx][cls_next[uidx]]
                if op_rank[i] < rlim:
                    new = step(i, state)
                    # an unknown op that changes nothing is pointless
                    if new is not _BAD and new != state and (
                            ctx is _NOCTX or step(i, ctx) != new):
                        break
                uidx = cnxt[uidx]
            else:
                stuck = True
                continue
        if known[i]:
            b = kpos[i] - f
            nw = win | (1 << b)
            nf = f
            if not b:
                t = (~nw & (nw + 1)).bit_length() - 1
                nw >>= t
                nf += t
            nu = U
            mk = (nf | nw << 32, new) if not nu else (nf | nw << 32, nu, new, _NOCTX)
        else:
            nf = f
            nw = win
            nu = U + uinc[i]
            mk = (nf | nw << 32, nu, new, state)
        if mk in cache:
            if ci < len(cands):
                ci += 1
            else:
                uidx = cnxt[uidx]
            continue
        cache.add(mk)
        if len(cache) > _MAX_STATES:
            raise _Timeout
        stack.append((i, cands, ci, uidx, R, state, ctx, f, win, U))
        f = nf
        win = nw
        U = nu
        if known[i]:
            ctx = _NOCTX
            remaining -= 1
            c = call_node[i]
            r = ret_node[i]
            nxt[prv[c]] = nxt[c]
            prv[nxt[c]] = prv[c]
            nxt[prv[r]] = nxt[r]
            prv[nxt[r]] = prv[r]
        else:
            ctx = state
            c = op_cls[i]
            cls_next[c] += 1
            if cls_next[c] == cls_len[c]:  # unlink the exhausted class
                cnxt[cprv[c]] = cnxt[c]
                cprv[cnxt[c]] = cprv[c]
        state = new
        expand = True
    return None


def _explain(ops: list[Op], best_info) -> str:
    blocked, state, seq = best_info
    b = ops[blocked]
    n_unknown = sum(1 for o in ops if o.ret is None)
    n_known_lin = sum(1 for i in seq if ops[i].ret is not None)
    lines = [
        f"key {b.key!r}: sub-history is not linearizable "
        f"({len(ops)} ops on this key, {n_unknown} with unknown outcome).",
        f"Longest partial linearization found: {len(seq)} ops ({n_known_lin} completed); "
        f"register value then: {_fmt_val(state)}.",
        "No pending op can be linearized next, and this op's response cannot be passed:",
        "  " + format_op(b, blocked),
    ]
    if seq:
        tail = seq[-6:]
        lines.append(f"Last {len(tail)} ops of that partial linearization (in order):")
        lines.extend("  " + format_op(ops[i], i) for i in tail)
    lo, hi = b.call, b.ret if b.ret is not None else math.inf
    linset = set(seq)
    around = [i for i, o in enumerate(ops)
              if i not in linset and i != blocked and o.call <= hi
              and (o.ret is None or o.ret >= lo)]
    if around:
        lines.append("Ops not in that linearization that overlap it:")
        shown = around[:20]
        lines.extend("  " + format_op(ops[i], i) for i in shown)
        if len(around) > len(shown):
            lines.append(f"  ... and {len(around) - len(shown)} more")
    before = [i for i, o in enumerate(ops) if o.ret is not None and o.ret < lo][-4:]
    if before:
        lines.append("Last ops completed before it was called:")
        lines.extend("  " + format_op(ops[i], i) for i in before)
    return "\n".join(lines)
