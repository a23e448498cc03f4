"""The runtime's sources of time and of background workers, passed in rather than built inside.

The daemon uses the system clock and worker threads; the simulator (raftd.simrt) passes a
virtual clock and executors that run jobs as scheduled virtual work, so the same runtime code
runs deterministically under simulated faults (issue 15 §1).  Timers are the event loop's own
(asyncio.sleep, loop.time): the simulator's loop has a virtual clock too.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic  # intervals, deadlines, leases
    wall: Callable[[], float] = time.time  # timestamps shown to people (events, uptime)
    perf: Callable[[], float] = time.perf_counter  # measuring short durations (fsync, RTT)


SYSTEM_CLOCK = Clock()


def thread_executor(name: str) -> Executor:
    """One worker thread per job kind (disk, snapshot): jobs of a kind run one at a time, in
    order."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


ExecutorFactory = Callable[[str], Executor]
