"""The crash-state explorer (raftd/storage/explore.py, issue 21): it finds no crash state the
storage layer does not survive, and it sees each bug issue 21 fixed when that bug is brought
back by a mutant."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raftd.storage import explore


@pytest.mark.parametrize("preallocate", explore.PREALLOCATE)
def test_no_crash_state_loses_or_resurrects_anything(preallocate):
    report = explore.explore(preallocate=preallocate, torn="all", limit=None, recheck=None)
    print(f"preallocate={preallocate}: {report.states} crash states at {report.points} points")
    # Every step of the workload has crash points, and a restart after each failure.
    assert report.points > 60 and report.states > report.points and report.recoveries > 60


@pytest.mark.parametrize("mutant", sorted(explore.MUTANTS))
def test_each_mutant_is_caught(mutant):
    with explore.MUTANTS[mutant][1](), pytest.raises(explore.Finding):
        for preallocate in explore.PREALLOCATE:
            explore.explore(preallocate=preallocate)


def test_command_line_reports_the_count_and_fails_on_a_mutant():
    run = [sys.executable, "-m", "raftd.storage.explore"]
    ok = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ") and "crash states" in ok.stdout
    names = subprocess.run([*run, "--list-mutants"], capture_output=True, text=True, timeout=60)
    assert names.stdout.split() == sorted(explore.MUTANTS)
    bad = subprocess.run([*run, "--mutant", "no-dir-fsync"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "FAILED (mutant no-dir-fsync)" in bad.stdout
    assert "replay: python -m raftd.storage.explore" in bad.stdout


def test_the_simulators_mutant_list_has_the_storage_mutants():
    """Issue 21: the storage mutants are in `python -m raftd.sim --list-mutants`, and
    `--mutant NAME` with one of them runs the explorer, which must fail."""
    run = [sys.executable, "-m", "raftd.sim"]
    names = subprocess.run([*run, "--list-mutants"], capture_output=True, text=True, timeout=60)
    assert set(explore.MUTANTS) <= set(names.stdout.split())
    bad = subprocess.run([*run, "--mutant", "batch-not-atomic", "--seeds", "300", "--nodes", "5"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "FAILED (mutant batch-not-atomic)" in bad.stdout
