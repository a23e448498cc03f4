"""What a scenario works with: its worlds, a narrator's voice, and checks that fail loudly.

A scenario's checks ARE its point (e.g. Figure 8: an old-term entry on a majority is not
committed): a core that breaks the rule makes the scenario raise ScenarioFailed, so the tests
that play every scenario catch it.
"""
from __future__ import annotations

from typing import TypeVar

from raftd.core import RaftConfig, Role

from .model import Frame
from .world import DEFAULT_CONFIG, Disk, World

BASIC = RaftConfig(election_ticks=10, heartbeat_ticks=2, max_append_entries=4, pre_vote=False,
                   check_quorum=False)  # the paper's algorithm, without the thesis' additions
_T = TypeVar("_T")


class ScenarioFailed(AssertionError):
    """A scenario's point did not hold: the core does not behave as the paper says."""


class Script:
    def __init__(self, name: str, seed: int):
        self.name = name
        self.seed = seed
        self.worlds: list[World] = []
        self._w: World | None = None

    @property
    def w(self) -> World:
        """The world the scenario works in now (the last one world() started)."""
        if self._w is None:
            raise ScenarioFailed(f"{self.name}: no world yet (call world() first)")
        return self._w

    def world(self, nodes: int = 5, *, config: RaftConfig = DEFAULT_CONFIG,
              voters: list[str] | None = None, disks: dict[str, Disk] | None = None) -> World:
        """Start a (new) cluster; a scenario may compare two, e.g. with and without pre-vote."""
        w = self._w = World(self.seed, nodes, config=config, voters=voters, disks=disks)
        w.frames = []
        if self.worlds:
            w.time = self.worlds[-1].time + 1
        self.worlds.append(w)
        return w

    def expect(self, value: _T | None, text: str) -> _T:
        """``value``, which the scenario needs (a leader, a write's index); fails if None."""
        if value is None:
            raise ScenarioFailed(f"{self.name}: expected {text}")
        return value

    def note(self, text: str) -> None:
        """The scenario's own commentary (what is about to happen and why)."""
        w = self.w
        w.story.say(w.time, f"-- {text}")
        if w.frames is not None:  # recording: every world() starts one
            w.frames.append(w.frame(self.name))

    def check(self, ok: bool, text: str) -> None:
        """Assert the scenario's point; the transcript shows each check that held."""
        if not ok:
            raise ScenarioFailed(f"{self.name}: {text}")
        w = self.w
        w.story.say(w.time, f"CHECK {text}")
        if w.frames is not None:  # recording: every world() starts one
            w.frames.append(w.frame(self.name))

    def elect(self, nid: str, attempts: int = 4) -> None:
        """Let ``nid``'s timer fire first, and deliver the election's messages."""
        w = self.w
        for _ in range(attempts):
            w.timeout(nid)
            w.settle(until=lambda: w.node(nid).role == Role.LEADER
                     and not any(f.msg.dst == nid for f in w.flights))
            if w.node(nid).role == Role.LEADER:
                w.settle()
                return
        raise ScenarioFailed(f"{self.name}: {nid} did not win an election")

    def transcript(self) -> str:
        return "".join(w.story.transcript() for w in self.worlds)

    def frames(self) -> list[Frame]:
        return [f for w in self.worlds for f in (w.frames or [])]
