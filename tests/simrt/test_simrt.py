"""The simulator of raftd's own runtime (issue 15): seeds pass, a seed replays exactly, and
every mutant is caught (each from a seed known to catch it, so the test stays fast)."""
from __future__ import annotations

import pytest

from raftd.simrt import SimCluster, SimParams
from raftd.simrt.__main__ import main
from raftd.simrt.mutants import MUTANTS

# mutant -> first seed (from 0, 5 nodes) that catches it: `python -m raftd.simrt --mutant NAME`
CAUGHT_AT: dict[str, int] = {"ack-before-fsync": 0, "vote-before-persist": 0,
                             "commit-previous-term-by-count": 7, "truncate-committed": 1,
                             "no-session-dedupe": 3}


def test_seeds_pass(capsys):
    assert main(["--seeds", "3", "--nodes", "5"]) == 0
    assert "all safety, linearizability and convergence checks held" in capsys.readouterr().out


def test_three_nodes_pass():
    c = SimCluster(7, SimParams(nodes=3)).run()
    assert c.stats["ok_ops"] > 0 and c.stats["crashes"] > 0


def test_a_seed_replays_exactly():
    runs = []
    for _ in range(2):
        c = SimCluster(3, trace=True).run()
        runs.append((c.trace, c.stats, c.net.stats, c.disk.fsyncs))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) > 20


def test_list_mutants(capsys):
    assert main(["--list-mutants"]) == 0
    assert capsys.readouterr().out.split() == list(MUTANTS)


@pytest.mark.parametrize("name", sorted(CAUGHT_AT))
def test_mutant_is_caught(name, capsys):
    seed = CAUGHT_AT[name]
    assert main(["--seeds", "1", "--start", str(seed), "--mutant", name]) == 1
    out = capsys.readouterr().out
    assert (f"replay: PYTHONHASHSEED=0 python -m raftd.simrt --seeds 1 --start {seed} "
            f"--nodes 5 --mutant {name}") in out
