"""A deterministic asyncio event loop with a virtual clock (issue 15 §1, option 2 of
docs: the daemon's own asyncio code on a virtual loop).

Time advances only when every ready callback has run: the clock moves to the next timer instead
of sleeping.  Nothing reaches the outside world: the loop's
``create_connection``/``create_server`` go to the simulated network (net.py), and each task
remembers which simulated host created it, so a crash can end exactly that host's tasks.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import inspect
import selectors
from asyncio import base_events, format_helpers
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from .net import SimNet

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
# asyncio's own limits for its pass of the loop (private, so not in typeshed: typed here).
_ASYNCIO: Any = base_events
_MIN_SCHEDULED_TIMER_HANDLES: int = _ASYNCIO._MIN_SCHEDULED_TIMER_HANDLES
_MIN_CANCELLED_TIMER_HANDLES_FRACTION: float = _ASYNCIO._MIN_CANCELLED_TIMER_HANDLES_FRACTION
MAXIMUM_SELECT_TIMEOUT: float = _ASYNCIO.MAXIMUM_SELECT_TIMEOUT

HOST: contextvars.ContextVar[str] = contextvars.ContextVar("simrt_host", default="sim")


class Deadlock(RuntimeError):
    """Every task waits and no timer is due: the simulated world stopped."""


class _NoSelector(selectors._BaseSelectorImpl):  # noqa: SLF001 - the stdlib's own base
    """Nothing is ever readable: the simulated sockets deliver by loop callbacks, and
    VirtualLoop._run_once never selects."""

    def select(self, timeout=None):
        return []


def _close_if_unstarted(handle: asyncio.Handle) -> None:
    """A held first step of a task (a connection handler a paused host was given) is dropped:
    close its coroutine, which runs none of its code, so that Python does not warn, at some
    later garbage collection, that it was never awaited."""
    task = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]  # noqa: SLF001 - a Handle's callback is not typed
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            coro.close()


class VirtualLoop(asyncio.SelectorEventLoop):
    # Loop passes without the clock moving before the run is declared stuck (livelock).
    MAX_PASSES_AT_ONE_TIME = 1_000_000
    # BaseEventLoop's own state, which _run_once drives (private: not in typeshed).  Its
    # handles are asyncio.Handle and TimerHandle, whose private fields are not typed either.
    _ready: collections.deque[Any]
    _scheduled: list[Any]
    _stopping: bool
    _timer_cancelled_count: int

    def __init__(self, start: float = 1000.0):
        self.now = start
        self._passes = 0
        self.time_limit = float("inf")  # virtual seconds: a run that goes past it is stuck
        super().__init__(_NoSelector())
        self._clock_resolution = 1e-9
        self.net: SimNet | None = None  # set by SimNet
        # host -> its live tasks, in creation order: a dict, not a set, because a set of
        # tasks iterates in memory-address order, and a crash cancels them in that order (a
        # seed then did not replay exactly).
        self.tasks_by_host: dict[str, dict[asyncio.Task[Any], None]] = {}
        self.paused: dict[str, list[asyncio.Handle]] = {}  # host -> its callbacks held back
        self.set_task_factory(self._make_task)

    def pause(self, host: str) -> None:
        """Stop running ``host``'s callbacks (timers, socket reads, disk jobs) until resume."""
        self.paused.setdefault(host, [])

    def resume(self, host: str) -> None:
        """Run what ``host`` was held from, in its order, before anything that comes later."""
        held = self.paused.pop(host, [])
        self._ready.extendleft(reversed(held))

    def forget(self, host: str) -> None:
        """A paused host crashed: what it was held from never runs."""
        for h in self.paused.pop(host, []):
            _close_if_unstarted(h)  # before cancel(), which forgets the callback
            h.cancel()

    def time(self) -> float:
        return self.now

    def _run_once(self) -> None:
        """One pass of asyncio's BaseEventLoop._run_once, specialised: no selector (time moves
        to the next timer when nothing is ready), held callbacks of paused hosts, and the
        callbacks run inline (as Handle._run does)."""
        # Every pass costs a little virtual CPU time, as on a real machine: a retry loop
        # that waits "until the deadline" with a nearly spent budget reaches it, instead of
        # waiting for ever on a timer too close to move a float clock.
        self.now += 1e-7
        self._passes += 1
        if self._passes > self.MAX_PASSES_AT_ONE_TIME:
            due = "; ".join(repr(getattr(h._callback, "__self__", h))[:300]
                            for h in list(self._ready)[:3])
            raise Deadlock(f"livelock: {self._passes} loop passes at virtual time "
                           f"{self.now - 1000:.4f} without a timer falling due ({due})")
        if self.now > self.time_limit:
            raise Deadlock(f"the run passed its virtual time limit ({self.now - 1000:.1f} s)")
        scheduled = self._scheduled
        self._drop_cancelled_timers(scheduled)
        ready = self._ready
        if not ready and not self._stopping:
            if not scheduled:
                raise Deadlock("nothing to run and no timer due")
            timeout = min(max(0, scheduled[0]._when - self.now), MAXIMUM_SELECT_TIMEOUT)
            if timeout > 0:
                self.now += timeout  # the clock moves to the next timer
                self._passes = 0
        end_time = self.now + self._clock_resolution
        while scheduled and scheduled[0]._when < end_time:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            ready.append(handle)
        paused = self.paused
        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            if paused:
                ctx = handle._context
                host = ctx.get(HOST, "sim") if ctx is not None else "sim"
                if host in paused:
                    paused[host].append(handle)  # its process is stopped: held, in order
                    continue
            try:
                handle._context.run(handle._callback, *handle._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # noqa: BLE001 - reported as Handle._run does
                self._report(handle, exc)
        handle = None  # (breaks a cycle when an exception occurred)

    def _drop_cancelled_timers(self, scheduled: list[Any]) -> None:
        """asyncio's clean-up of cancelled timers: all of them once they are many, else the
        ones at the head of the heap."""
        n = len(scheduled)
        if n > _MIN_SCHEDULED_TIMER_HANDLES and \
                self._timer_cancelled_count / n > _MIN_CANCELLED_TIMER_HANDLES_FRACTION:
            kept = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            scheduled[:] = kept
            self._timer_cancelled_count = 0
            return
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            handle = heapq.heappop(scheduled)
            handle._scheduled = False

    def _report(self, handle: Any, exc: BaseException) -> None:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
        context: dict[str, Any] = {"message": f"Exception in callback {cb}", "exception": exc,
                                   "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _make_task(self, loop, coro, **kw):
        task = asyncio.Task(coro, loop=loop, **kw)
        ctx = kw.get("context")
        host = ctx.run(HOST.get) if ctx is not None else HOST.get()
        tasks = self.tasks_by_host.setdefault(host, {})
        tasks[task] = None
        task.add_done_callback(lambda t: tasks.pop(t, None))
        return task

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        assert self.net is not None, "no simulated network on this loop"
        return await self.net.connect(protocol_factory, host, port, **kw)

    async def create_server(self, protocol_factory, host=None, port=None, **kw):
        assert self.net is not None, "no simulated network on this loop"
        return self.net.listen(protocol_factory, host, port)

    async def getaddrinfo(self, host, port, **kw):
        raise OSError("no name resolution in the simulation")

    def run_in_executor(self, executor: Executor | None, func: Callable[[Unpack[_Ts]], _T],
                        *args: Unpack[_Ts]) -> asyncio.Future[_T]:
        if executor is None:
            raise RuntimeError("the simulation has no default executor (threads)")
        return super().run_in_executor(executor, func, *args)
