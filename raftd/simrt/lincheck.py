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
    return _KeySearch(ops).run(deadline)


class _KeyModel:
    """The register model of one key's ops: what each op must have read or returned, the
    abstracted values it writes, and which ops are read-only."""

    def __init__(self, ops: list[Op]) -> None:
        n = self.n = len(ops)
        code = self.code = [_KIND_CODE[o.kind] for o in ops]
        known = self.known = [o.ret is not None for o in ops]
        exp = self.exp = [o.expected if code[i] == _CAS else None for i, o in enumerate(ops)]
        # result constraint: for get the value read; for delete/cas a bool or
        # None (= unconstrained); unconstrained for unknown ops.
        res: list[object] = [None] * n
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
        self.res, self.constrained = res, constrained
        # Value abstraction (exact): the model only compares the register with
        # values read by gets and with cas expected values, so every other
        # written value behaves the same; they are all mapped to _OTHER.  Unknown
        # writes of never-read values then collapse into one class (below).
        referenced = {res[i] for i in range(n) if code[i] == _GET} | set(exp)
        referenced.discard(None)
        arg = self.arg = [(o.value if o.value is None or o.value in referenced else _OTHER)
                          if code[i] in (_PUT, _CAS) else None for i, o in enumerate(ops)]
        # read-only: leaves the value unchanged wherever it can validly be placed
        # (a get, a cas known to have failed, a delete known to have found nothing)
        self.readonly = [known[i] and (code[i] == _GET or (constrained[i] and (
            (code[i] in (_CAS, _DELETE) and res[i] is False)
            or (code[i] == _CAS and exp[i] == arg[i])))) for i in range(n)]

    def step(self, i: int, s: object) -> object:
        """Register model: the new value, or _BAD_STATE if the op's result is
        inconsistent with value s."""
        k = self.code[i]
        if k == _PUT:
            return self.arg[i]
        res = self.res[i]
        if k == _GET:
            return s if s == res else _BAD_STATE
        if k == _DELETE:
            if self.constrained[i] and res != (s is not None):
                return _BAD_STATE
            return None
        swapped = s == self.exp[i]
        if self.constrained[i] and res != swapped:
            return _BAD_STATE
        return self.arg[i] if swapped else s


# A frame records a node of the search tree at the moment one of its candidates was
# linearized: (op, cands, ci, uidx, R, state, ctx, f, win, U); cands is None for a forced
# step (no alternatives to try on backtrack).
_Frame = tuple[int, "list[tuple[int, object]] | None", int, int, int, object, object, int,
               int, int]


class _KeySearch:
    """The search over one key's ops (see the module docstring).  The event list and the
    classes of unknown ops are doubly linked lists over index arrays; the search is
    iterative, with an explicit stack of _Frame."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        self.m = _KeyModel(ops)
        self._link_events(self._events())
        self.n_known = self.remaining = sum(self.m.known)
        # The linearized known ops: 0..f-1 all, and the bitset win from f on; U packs the
        # per-class counts of used unknown ops.
        self.f = self.win = self.U = 0
        self.state: object = None
        # ctx: if the last linearized op has an unknown outcome, the value before
        # it; else _NOCTX.  An op that would be valid from ctx with the same
        # resulting value (a put, a delete that finds a value either way, ...)
        # is not linearized next: the unknown op could as well never have
        # happened, and that alternative is explored from the parent node.
        self.ctx: object = _NOCTX
        self.cache: set[tuple[object, ...]] = set()
        self.stack: list[_Frame] = []
        self.best_done = -1
        self.best_info: tuple[int, object, list[int]] | None = None
        self.cands: list[tuple[int, object]] | None = []
        self.ci = self.R = 0
        self.uidx = self.CTAIL
        self.stuck = False

    def _events(self) -> list[tuple[float, int, int]]:
        """Calls of every op, returns of known ops, in time order (calls first at equal
        times); rank = position in that order."""
        events: list[tuple[float, int, int]] = []
        for i, o in enumerate(self.ops):
            events.append((o.call, 0, i))
            if o.ret is not None:
                events.append((o.ret, 1, i))
        events.sort()
        return events

    def _link_events(self, events: list[tuple[float, int, int]]) -> None:
        """The linked list over events of known ops (node 0 = head, M+1 = tail), the
        numbering of known ops in call order (kpos), and the unknown ops' classes."""
        n, known = self.m.n, self.m.known
        node_op, node_call, node_rank = [-1], [False], [-1.0]
        self.call_node, self.ret_node = [0] * n, [0] * n
        unknown_ops: list[tuple[int, int]] = []  # (rank of call, op index)
        for rank, (_t, is_ret, i) in enumerate(events):
            if not known[i]:
                unknown_ops.append((rank, i))
                continue
            node = len(node_op)
            node_op.append(i)
            node_call.append(not is_ret)
            node_rank.append(rank)
            (self.ret_node if is_ret else self.call_node)[i] = node
        M = len(node_op) - 1
        # The set of linearized known ops is kept compressed: known ops are
        # numbered in call order (kpos); ops 0..f-1 are all linearized and win is
        # the bitset of linearized ops from f on.  Only a window of concurrent ops
        # is ever partially linearized, so memo keys stay small.
        self.kpos = [0] * n
        for k, i in enumerate(node_op[e] for e in range(1, M + 1) if node_call[e]):
            self.kpos[i] = k
        node_op.append(-1)
        node_call.append(False)
        node_rank.append(math.inf)
        self.node_op, self.node_call, self.node_rank = node_op, node_call, node_rank
        self.nxt = list(range(1, M + 2)) + [M + 1]
        self.prv = [0] + list(range(0, M + 1))
        self._link_classes(unknown_ops)

    def _link_classes(self, unknown_ops: list[tuple[int, int]]) -> None:
        """Unknown ops with the same effect (kind, abstract new value, expected)
        are interchangeable: none is obligatory and each stays available from
        its call on, so only the earliest-called unused one of a class is tried.
        The used members of a class are therefore always a prefix of it."""
        m, n = self.m, self.m.n
        self.op_rank = [0] * n
        classes: dict[tuple[int, object, object], list[int]] = {}
        for rank, i in unknown_ops:
            self.op_rank[i] = rank
            classes.setdefault((m.code[i], m.arg[i], m.exp[i]), []).append(i)
        # Classes (ids 1..C, in order of their first member's call) that still
        # have unused members are kept in a doubly linked list; 0 = head, C+1 = tail.
        cls_ops: list[list[int]] = [[]] + list(classes.values())
        C = len(cls_ops) - 1
        self.CTAIL = C + 1
        self.cls_ops = cls_ops
        self.cls_first = [-1.0] + [float(self.op_rank[c[0]]) for c in cls_ops[1:]] + [math.inf]
        self.cls_len = [len(c) for c in cls_ops]
        self.op_cls = [0] * n
        for c in range(1, C + 1):
            for i in cls_ops[c]:
                self.op_cls[i] = c
        self.cls_next = [0] * (C + 2)  # number of used members of each class
        # The used unknown ops are encoded exactly by their per-class counts,
        # packed into one int U: class c's count lives at bit offset cls_off[c].
        self.uinc = [0] * n
        off = 0
        for c in range(1, C + 1):
            for i in cls_ops[c]:
                self.uinc[i] = 1 << off
            off += self.cls_len[c].bit_length()
        self.cnxt = list(range(1, C + 2)) + [self.CTAIL]
        self.cprv = [0] + list(range(0, C + 1))

    def run(self, deadline: float) -> str | None:
        iters = 0
        expand = True
        while self.remaining:
            iters += 1
            if not iters & 0x3FF and time.monotonic() > deadline:
                raise _Timeout
            if expand:
                expand = self._expand()
                if expand:
                    continue  # a forced step: expand its node
            if self.stuck:
                self.stuck = False
                if self._backtrack():
                    assert self.best_info is not None
                    return _explain(self.ops, self.best_info)
                continue
            expand = self._next_candidate()
        return None

    def _expand(self) -> bool:
        """New node.  Scan the pending known calls (those before the first
        un-linearized return R).  A pending read-only op that is valid
        now commutes to the front of any completion (it reads the same
        value there and changes nothing), so it is linearized without
        trying alternatives: True when that was done."""
        m, state, ctx = self.m, self.state, self.ctx
        nxt, node_call, node_op = self.nxt, self.node_call, self.node_op
        cands: list[tuple[int, object]] = []
        self.cands = cands
        e = nxt[0]
        while node_call[e]:
            i = node_op[e]
            new = m.step(i, state)
            if new is not _BAD_STATE:
                if m.readonly[i]:
                    return self._force(i)
                if ctx is _NOCTX or m.step(i, ctx) != new:
                    cands.append((i, new))
            e = nxt[e]
        self.R = e
        self.ci = 0
        self.uidx = self.cnxt[0]
        return False

    def _force(self, i: int) -> bool:
        nf, nw = self._mark(i)
        state, U = self.state, self.U
        mk = (nf | nw << 32, state) if not U else (nf | nw << 32, U, state, _NOCTX)
        if mk in self.cache:
            self.stuck = True
            return False
        self.cache.add(mk)
        self.stack.append((i, None, 0, 0, 0, state, self.ctx, self.f, self.win, U))
        self.f, self.win, self.ctx = nf, nw, _NOCTX
        self.remaining -= 1
        self._unlink_op(i)
        return True

    def _mark(self, i: int) -> tuple[int, int]:
        """(f, win) with known op i linearized too."""
        b = self.kpos[i] - self.f
        nw = self.win | (1 << b)
        nf = self.f
        if not b:
            t = (~nw & (nw + 1)).bit_length() - 1
            nw >>= t
            nf += t
        return nf, nw

    def _backtrack(self) -> bool:
        """Nothing pending can be linearized from this node: back to its parent's next
        candidate.  True when there is no parent: not linearizable."""
        stack, n = self.stack, self.m.n
        # progress: completed ops linearized, then fewest unknown ops
        done = (self.n_known - self.remaining) * (n + 1) + (n - len(stack))
        if done > self.best_done:
            e = self.nxt[0]
            while self.node_call[e]:
                e = self.nxt[e]
            self.best_done = done
            self.best_info = (self.node_op[e], self.state, [fr[0] for fr in stack])
        if not stack:
            return True
        i, cands, ci, uidx, R, self.state, self.ctx, self.f, self.win, self.U = stack.pop()
        self.cands, self.ci, self.uidx, self.R = cands, ci, uidx, R
        if self.m.known[i]:
            self.remaining += 1
            self._relink_op(i)
        else:
            self._unuse(i)
        if cands is None:
            self.stuck = True  # a forced step failed: so does its node
        elif ci < len(cands):
            self.ci = ci + 1
        else:
            self.uidx = self.cnxt[uidx]
        return False

    def _next_candidate(self) -> bool:
        """Linearize the current node's next candidate: known ops first, then unknown
        ops called before R (they never block the search, so they are only
        linearized when something needs their effect).  False if that state was
        explored already, or nothing is left to try (stuck)."""
        cands = self.cands
        assert cands is not None
        if self.ci < len(cands):
            i, new = cands[self.ci]
        else:
            picked = self._next_unknown()
            if picked is None:
                self.stuck = True
                return False
            i, new = picked
        known = self.m.known[i]
        if known:
            nf, nw = self._mark(i)
            nu = self.U
            mk = (nf | nw << 32, new) if not nu else (nf | nw << 32, nu, new, _NOCTX)
        else:
            nf, nw, nu = self.f, self.win, self.U + self.uinc[i]
            mk = (nf | nw << 32, nu, new, self.state)
        if mk in self.cache:
            if self.ci < len(cands):
                self.ci += 1
            else:
                self.uidx = self.cnxt[self.uidx]
            return False
        self.cache.add(mk)
        if len(self.cache) > _MAX_STATES:
            raise _Timeout
        self.stack.append((i, cands, self.ci, self.uidx, self.R, self.state, self.ctx,
                           self.f, self.win, self.U))
        self.f, self.win, self.U = nf, nw, nu
        if known:
            self.ctx = _NOCTX
            self.remaining -= 1
            self._unlink_op(i)
        else:
            self.ctx = self.state
            self._use(i)
        self.state = new
        return True

    def _next_unknown(self) -> tuple[int, object] | None:
        """The next class of unknown ops (from uidx) whose earliest unused op was called
        before R and would change the value: that op and the value after it."""
        rlim = self.node_rank[self.R]
        m, state, ctx, uidx = self.m, self.state, self.ctx, self.uidx
        while self.cls_first[uidx] < rlim:
            i = self.cls_ops[uidx][self.cls_next[uidx]]
            if self.op_rank[i] < rlim:
                new = m.step(i, state)
                # an unknown op that changes nothing is pointless
                if new is not _BAD_STATE and new != state and (
                        ctx is _NOCTX or m.step(i, ctx) != new):
                    self.uidx = uidx
                    return i, new
            uidx = self.cnxt[uidx]
        self.uidx = uidx
        return None

    def _unlink_op(self, i: int) -> None:
        nxt, prv = self.nxt, self.prv
        c, r = self.call_node[i], self.ret_node[i]
        nxt[prv[c]] = nxt[c]
        prv[nxt[c]] = prv[c]
        nxt[prv[r]] = nxt[r]
        prv[nxt[r]] = prv[r]

    def _relink_op(self, i: int) -> None:
        nxt, prv = self.nxt, self.prv
        c, r = self.call_node[i], self.ret_node[i]
        prv[nxt[r]] = r
        nxt[prv[r]] = r
        prv[nxt[c]] = c
        nxt[prv[c]] = c

    def _use(self, i: int) -> None:
        c = self.op_cls[i]
        self.cls_next[c] += 1
        if self.cls_next[c] == self.cls_len[c]:  # unlink the exhausted class
            self.cnxt[self.cprv[c]] = self.cnxt[c]
            self.cprv[self.cnxt[c]] = self.cprv[c]

    def _unuse(self, i: int) -> None:
        c = self.op_cls[i]
        if self.cls_next[c] == self.cls_len[c]:  # relink the exhausted class
            self.cprv[self.cnxt[c]] = c
            self.cnxt[self.cprv[c]] = c
        self.cls_next[c] -= 1


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
