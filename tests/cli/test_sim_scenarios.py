"""raftctl sim scenarios (issue 18 §2): each plays on the real core, asserts its point, and
prints the transcript kept here as a golden file (regenerate: RAFTCTL_SIM_REGEN=1)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftctl.learn.scenarios import SCENARIOS, play
from raftctl.learn.script import ScenarioFailed, Script

GOLDEN = Path(__file__).parent / "testdata" / "sim"
REQUIRED = ["leader-election", "split-vote", "log-replication", "leader-crash", "figure7",
            "figure8", "partition", "joint-consensus", "snapshot-catch-up", "pre-vote"]


def raftctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftctl.main", "sim", *args],
                          capture_output=True, text=True, timeout=60)


def test_every_required_scenario_exists():
    assert list(SCENARIOS) == REQUIRED


@pytest.mark.parametrize("name", REQUIRED)
def test_scenario_matches_golden_transcript(name):
    text = play(name).transcript()
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("RAFTCTL_SIM_REGEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"transcript of {name} changed; RAFTCTL_SIM_REGEN=1 to accept"
    checks = [line for line in text.splitlines() if "  CHECK " in line]
    assert checks, f"{name} asserts nothing"
    # Every rule the scenario shows is cited: each narrated line names a section or figure.
    for line in text.splitlines():
        if "CHECK" in line or " -- " in line:
            continue
        assert "§" in line or "Figure" in line or "partition" in line or "heals" in line \
            or "cut off" in line, line


def test_scenario_is_deterministic_per_seed():
    assert play("leader-election", 5).transcript() == play("leader-election", 5).transcript()
    assert play("leader-election", 5).transcript() != play("leader-election", 6).transcript()


def test_a_failed_point_raises():
    s = Script("x", 1)
    s.world(3)
    with pytest.raises(ScenarioFailed, match="x: the point"):
        s.check(False, "the point")


def test_cli_script_prints_the_golden_and_exits_0():
    r = raftctl("--scenario", "figure8", "--script")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (GOLDEN / "figure8.txt").read_text()


def test_cli_list_scenarios():
    r = raftctl("--list-scenarios")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == REQUIRED


def test_cli_unknown_scenario_is_one_line_exit_2():
    r = raftctl("--scenario", "figure9", "--script")
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown scenario 'figure9'" in r.stderr


def test_cli_free_run_with_keys_is_replayable():
    args = ("--seed", "3", "--keys", "60:k,120:r,130:p2", "--ticks", "160", "--script")
    a, b = raftctl(*args), raftctl(*args)
    assert a.returncode == 0 and a.stdout == b.stdout
    assert "crashes" in a.stdout and "client write 'w1'" in a.stdout and "n2 is cut off" in a.stdout
    bad = raftctl("--keys", "k", "--script")
    assert bad.returncode == 2 and "bad --keys item 'k'" in bad.stderr


def test_cli_live_view_needs_a_terminal():
    r = raftctl("--seed", "1")
    assert r.returncode == 2 and "needs a terminal" in r.stderr
