"""Run the simulation: keys -> world actions, and the live full-screen loop.

Determinism: a key changes the world only between two ticks, and the session records
(tick, key) for every such key; `--keys` replays them, so the same seed and the same keys at
the same ticks give the same run, live or as a script (`raftctl sim --script --keys ...`).
"""
from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager

from .model import Frame
from .view import render
from .world import World

SPEEDS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
TICKS_PER_SECOND = 4.0  # at speed 1: an election timeout (10-20 ticks) lasts 2.5-5 s


def parse_keys(spec: str) -> list[tuple[int, str]]:
    """'40:k,80:r,90:p3' -> [(40, 'k'), (80, 'r'), (90, 'p3')]."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        tick, sep, key = item.partition(":")
        if not sep or not tick.isdigit() or not key:
            raise ValueError(f"bad --keys item {item!r}: expected TICK:KEY, e.g. 40:k")
        out.append((int(tick), key))
    return sorted(out, key=lambda p: p[0])


class Session:
    """A free-running cluster driven by keys (the actions that change the world)."""

    def __init__(self, seed: int, nodes: int):
        self.world = World(seed, nodes)
        self.keys: list[tuple[int, str]] = []
        self.writes = 0

    def act(self, key: str) -> bool:
        """Apply a world key ('3', 'k', 'p3', 'r'); False if it means nothing."""
        w = self.world
        if key.isdigit() and 1 <= int(key) <= len(w.ids):
            w.toggle(f"n{key}")
        elif key == "k":
            lead = w.leader()
            if lead is None:
                w.story.say(w.time, "k: there is no leader to crash right now")
            else:
                w.crash(lead)
        elif key == "r":
            self.writes += 1
            w.write(f"w{self.writes}".encode())
        elif (len(key) == 2 and key[0] == "p" and key[1].isdigit()
              and 1 <= int(key[1]) <= len(w.ids)):
            w.toggle_isolation(f"n{key[1]}")
        else:
            return False
        self.keys.append((w.time, key))
        return True

    def run_script(self, ticks: int, keys: list[tuple[int, str]]) -> str:
        pending = list(keys)
        for _ in range(ticks):
            while pending and pending[0][0] <= self.world.time:
                self.act(pending.pop(0)[1])
            self.world.tick()
        return self.world.story.transcript()

    def replay_hint(self, seed: int) -> str:
        keys = ",".join(f"{t}:{k}" for t, k in self.keys)
        return f"raftctl sim --seed {seed} --nodes {len(self.world.ids)} --keys '{keys}' --script"


@contextmanager
def raw_keys() -> Iterator[None]:
    """Single key presses without Enter (cbreak), restored on exit."""
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def read_key(timeout: float) -> str | None:
    ready, _, _ = select.select([sys.stdin], [], [], max(timeout, 0))
    if not ready:
        return None
    ch = os.read(sys.stdin.fileno(), 1).decode(errors="replace")
    return ch or "q"  # EOF: quit


class Clock:
    """Pause, single step and speed: the keys that change only how fast we watch."""

    def __init__(self, speed: float):
        self.speed = speed
        self.paused = False
        self.steps = 0  # single steps requested while paused

    def key(self, ch: str) -> bool:
        if ch == " ":
            self.paused = not self.paused
        elif ch == ".":
            self.paused, self.steps = True, self.steps + 1
        elif ch in "+=":
            self.speed = next((s for s in SPEEDS if s > self.speed), self.speed)
        elif ch in "-_":
            self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), self.speed)
        else:
            return False
        return True

    def status(self) -> str:
        return f"speed {self.speed:g}x  " + ("PAUSED" if self.paused else "running")

    def due(self, last: float, now: float) -> bool:
        if self.paused:
            if self.steps:
                self.steps -= 1
                return True
            return False
        return now - last >= 1.0 / (TICKS_PER_SECOND * self.speed)


def live_free(session: Session, seed: int, speed: float) -> None:
    """The interactive view of a free-running cluster (raftctl sim)."""
    from rich.live import Live  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    clock, pending_p, last = Clock(speed), False, time.monotonic()
    title = f"seed {seed}"
    with raw_keys(), Live(screen=True, auto_refresh=False) as live:
        while True:
            live.update(render(session.world.frame(title), _status(clock, pending_p)),
                        refresh=True)
            ch = read_key(0.05)
            if ch == "q":
                return
            if ch is not None:
                if pending_p:
                    pending_p = False
                    session.act("p" + ch)
                elif ch == "p":
                    pending_p = True
                elif not clock.key(ch):
                    session.act(ch)
            now = time.monotonic()
            if clock.due(last, now):
                session.world.tick()
                last = now


def _status(clock: Clock, pending_p: bool) -> str:
    return clock.status() + ("  p: which node? (digit)" if pending_p else "")


def live_frames(frames: list[Frame], speed: float) -> None:
    """Play a scenario's recorded frames; at the end the last frame stays until q."""
    from rich.live import Live  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    clock, pos, last = Clock(speed), 0, time.monotonic()
    with raw_keys(), Live(screen=True, auto_refresh=False) as live:
        while True:
            end = "  END (q quits)" if pos == len(frames) - 1 else ""
            live.update(render(frames[pos], clock.status() + end), refresh=True)
            ch = read_key(0.05)
            if ch == "q":
                return
            if ch is not None:
                clock.key(ch)
            now = time.monotonic()
            if pos < len(frames) - 1 and clock.due(last, now):
                pos += 1
                last = now
