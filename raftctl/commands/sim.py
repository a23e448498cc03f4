"""raftctl sim: watch a simulated cluster run the real Raft core (issue 18 §1, §2)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..errors import USAGE, CliError, fail


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(nodes: Annotated[int, typer.Option("--nodes", help="cluster size (1-9)")] = 5,
            seed: Annotated[int, typer.Option("--seed", help="same seed, same keys: same run")] = 1,
            speed: Annotated[float, typer.Option("--speed", help="ticks per second / 4")] = 1.0,
            scenario: Annotated[Optional[str], typer.Option(
                "--scenario", help="play a scenario from the paper (see --list-scenarios)")] = None,
            list_scenarios: Annotated[bool, typer.Option(
                "--list-scenarios", help="list the scenarios and exit")] = False,
            script: Annotated[bool, typer.Option(
                "--script", help="print the narrated transcript as plain text and exit")] = False,
            keys: Annotated[str, typer.Option(
                "--keys", help="keys at ticks, e.g. '40:k,80:r,90:p3' (replay a live run)")] = "",
            ticks: Annotated[int, typer.Option(
                "--ticks", help="with --script and no --scenario: ticks to run")] = 200) -> None:
        """Watch a simulated cluster run the real Raft core (raftd.core.RaftNode).

        Full screen: per node its role, term, vote, election timer and log (coloured by term,
        | marks the commit index); messages in flight; what happens, with the paper's section.
        Keys: space pause/resume, . one step, +/- speed, 1-9 crash/restart node i, k crash the
        leader, p then a digit isolate/heal that node, r a client write, q quit (prints the
        --keys that replay the run).

        \b
        Example: raftctl sim --seed 7
        Example: raftctl sim --scenario figure8 --script"""
        try:
            code = _run(nodes, seed, speed, scenario, list_scenarios, script, keys, ticks)
        except CliError as e:
            code = fail(e, False)
        raise typer.Exit(code)


def _run(nodes: int, seed: int, speed: float, scenario: str | None, list_scenarios: bool,
         script: bool, keys: str, ticks: int) -> int:
    from ..learn import driver  # noqa: PLC0415 - rich and the core load only for this command
    from ..learn.scenarios import SCENARIOS, play  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    if list_scenarios:
        width = max(map(len, SCENARIOS))
        for sc in SCENARIOS.values():
            print(f"{sc.name.ljust(width)}  {sc.summary}")
        return 0
    if not 1 <= nodes <= 9:
        raise CliError("--nodes must be between 1 and 9", USAGE, "usage")
    if speed <= 0:
        raise CliError("--speed must be > 0", USAGE, "usage")
    if scenario is not None and scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {scenario!r}; choose from: {', '.join(SCENARIOS)}",
                       USAGE, "usage")
    try:
        parsed = driver.parse_keys(keys)
    except ValueError as e:
        raise CliError(str(e), USAGE, "usage") from None
    if scenario is not None:
        s = play(scenario, seed)
        if script:
            sys.stdout.write(s.transcript())
            return 0
        _need_terminal()
        driver.live_frames(s.frames(), speed)
        return 0
    session = driver.Session(seed, nodes)
    if script:
        sys.stdout.write(session.run_script(ticks, parsed))
        return 0
    _need_terminal()
    for t, key in parsed:  # replayed keys first, then the live ones
        while session.world.time < t:
            session.world.tick()
        session.act(key)
    driver.live_free(session, seed, speed)
    print(session.replay_hint(seed))
    return 0


def _need_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError("the live view needs a terminal; use --script for a plain transcript",
                       USAGE, "usage")
