"""A deterministic asyncio event loop with a virtual clock (issue 15 §1, option 2 of
docs: the daemon's own asyncio code on a virtual loop).

Time advances only when every ready callback has run: the selector's ``select(timeout)`` moves
the clock to the next timer instead of sleeping.  Nothing reaches the outside world: the loop's
``create_connection``/``create_server`` go to the simulated network (net.py), and each task
remembers which simulated host created it, so a crash can end exactly that host's tasks.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import selectors

HOST: contextvars.ContextVar[str] = contextvars.ContextVar("simrt_host", default="sim")


class Deadlock(RuntimeError):
    """Every task waits and no timer is due: the simulated world stopped."""


class _VirtualSelector(selectors._BaseSelectorImpl):  # noqa: SLF001 - the stdlib's own base
    def __init__(self, loop: "VirtualLoop"):
        super().__init__()
        self._loop = loop

    def select(self, timeout=None):
        if timeout is None:
            raise Deadlock("nothing to run and no timer due")
        if timeout > 0:
            self._loop.now += timeout
            self._loop._passes = 0  # noqa: SLF001 - the clock moved to a timer
        return []


class _PausableReady(collections.deque):
    """The loop's ready queue.  A callback of a paused host is held back, in order, instead of
    run (the base loop skips what it gets as a cancelled handle): its process is stopped
    (SIGSTOP, a long GC pause, a stalled VM) while the rest of the world goes on."""

    def __init__(self, loop: "VirtualLoop"):
        super().__init__()
        self._loop = loop

    def popleft(self):
        handle = super().popleft()
        paused = self._loop.paused
        if paused and not handle._cancelled:  # noqa: SLF001 - asyncio's own handle
            ctx = handle._context  # noqa: SLF001
            host = ctx.get(HOST, "sim") if ctx is not None else "sim"
            if host in paused:
                paused[host].append(handle)
                return _SKIP
        return handle


class VirtualLoop(asyncio.SelectorEventLoop):
    # Loop passes without the clock moving before the run is declared stuck (livelock).
    MAX_PASSES_AT_ONE_TIME = 1_000_000

    def __init__(self, start: float = 1000.0):
        self.now = start
        self._passes = 0
        self.time_limit = float("inf")  # virtual seconds: a run that goes past it is stuck
        super().__init__(_VirtualSelector(self))
        self._clock_resolution = 1e-9
        self.net = None  # set by SimNet
        self.tasks_by_host: dict[str, set[asyncio.Task]] = {}
        self.paused: dict[str, list[asyncio.Handle]] = {}  # host -> its callbacks held back
        self._ready = _PausableReady(self)
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
            h.cancel()

    def time(self) -> float:
        return self.now

    def _run_once(self) -> None:
        # Every pass costs a little virtual CPU time, as on a real machine: a retry loop
        # that waits "until the deadline" with a nearly spent budget reaches it, instead of
        # waiting for ever on a timer too close to move a float clock.
        self.now += 1e-7
        self._passes += 1
        if self._passes > self.MAX_PASSES_AT_ONE_TIME:
            ready = "; ".join(repr(getattr(h._callback, "__self__", h))[:300]
                              for h in list(self._ready)[:3])
            raise Deadlock(f"livelock: {self._passes} loop passes at virtual time "
                           f"{self.now - 1000:.4f} without a timer falling due ({ready})")
        if self.now > self.time_limit:
            raise Deadlock(f"the run passed its virtual time limit ({self.now - 1000:.1f} s)")
        super()._run_once()

    def _make_task(self, loop, coro, **kw):
        task = asyncio.Task(coro, loop=loop, **kw)
        ctx = kw.get("context")
        host = ctx.run(HOST.get) if ctx is not None else HOST.get()
        tasks = self.tasks_by_host.setdefault(host, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        return await self.net.connect(protocol_factory, host, port, **kw)

    async def create_server(self, protocol_factory, host=None, port=None, **kw):
        return self.net.listen(protocol_factory, host, port)

    async def getaddrinfo(self, host, port, **kw):
        raise OSError("no name resolution in the simulation")

    def run_in_executor(self, executor, func, *args):
        if executor is None:
            raise RuntimeError("the simulation has no default executor (threads)")
        return super().run_in_executor(executor, func, *args)


class _Skip:
    """What the base loop gets for a held callback: a cancelled handle, which it skips."""
    _cancelled = True


_SKIP = _Skip()
