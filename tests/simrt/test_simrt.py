"""The simulator of raftd's own runtime (issue 15): seeds pass, a seed replays exactly, and
every mutant is caught (each from a seed known to catch it, so the test stays fast)."""
from __future__ import annotations

import pytest

from raftd.sim.__main__ import main as sim_main
from raftd.simrt import SimCluster, SimParams
from raftd.simrt.__main__ import main
from raftd.simrt.mutants import MUTANTS

# mutant -> a seed (5 nodes, the default fsmodel disk) that catches it:
# `python -m raftd.sim --mutant NAME --seeds 300` prints the first one.
CAUGHT_AT: dict[str, int] = {"ack-before-fsync": 0, "vote-before-persist": 0,
                             "commit-previous-term-by-count": 3, "truncate-committed": 0,
                             "snapshot-install-not-crash-safe": 4, "no-session-dedupe": 6,
                             "phantom-config-after-snapshot": 55,
                             "read-index-without-heartbeat": 11,
                             "snapshot-rename-not-durable": 1}

REQUIRED = {"phantom-config-after-snapshot", "ack-before-fsync", "vote-before-persist",
            "commit-previous-term-by-count", "snapshot-install-not-crash-safe",
            "no-session-dedupe", "truncate-committed", "read-index-without-heartbeat"}


def test_seeds_pass(capsys):
    assert main(["--seeds", "2", "--nodes", "5"]) == 0
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


def test_membership_changes_go_through_the_request_path():
    """Issue 15 §4: changes asked through the client's admin request, committed through
    joint consensus; the members of the final configuration converge."""
    c = SimCluster(2, trace=True).run()
    assert c.stats["conf_changed"] >= 2 and c.stats["joint_committed"] >= 1, c.stats
    assert any("admin: promote" in line or "admin: add voter" in line for line in c.trace)


def test_the_disk_model_under_the_wal_and_snapshots(capsys):
    """Issue 15 §2 / issue 21: with --disk-model the WAL and snapshot store run on
    raftd.storage.fsmodel and each crash is one of its power-loss states; a node that hits an
    injected disk error (EIO on a WAL fsync, or a full disk) fail-stops and is restarted, and
    nothing it acknowledged is lost (linearizability, convergence)."""
    c = SimCluster(2, SimParams(nodes=5, disk_model=True)).run()
    assert c.model_disk.crashes > 0 and c.stats["ok_ops"] > 0
    assert c.model_disk.fail_stops >= 1
    assert main(["--seeds", "1", "--start", "2", "--disk-model"]) == 0
    assert ", disk model," in capsys.readouterr().out
    assert main(["--seeds", "1", "--start", "2"]) == 0  # the default since issue 15 §2
    assert ", disk model," in capsys.readouterr().out


def test_only_the_disk_model_sees_a_snapshot_rename_left_in_the_page_cache(capsys):
    """Issue 15 §2: a snapshot renamed into place without the directory fsync is lost at a
    power loss while the WAL was compacted behind it.  The fsmodel disk (the default) catches
    the mutant; real files (--memory-disk) keep every rename, so the same seed passes there."""
    name, seed = "snapshot-rename-not-durable", CAUGHT_AT["snapshot-rename-not-durable"]
    assert sim_main(["--seeds", "1", "--start", str(seed), "--mutant", name]) == 1
    assert "no valid snapshot" in capsys.readouterr().out
    assert sim_main(["--seeds", "1", "--start", str(seed), "--mutant", name,
                     "--memory-disk"]) == 0
    assert ", memory disk," in capsys.readouterr().out


def test_list_mutants(capsys):
    assert main(["--list-mutants"]) == 0
    assert capsys.readouterr().out.split() == list(MUTANTS)
    assert REQUIRED <= set(MUTANTS)


def test_python_m_raftd_sim_is_the_runtime_simulator(capsys):
    assert sim_main(["--list-mutants"]) == 0
    listed = capsys.readouterr().out.split()
    # The runtime simulator's, every required one, and the storage explorer's (issue 21).
    assert REQUIRED <= set(MUTANTS) <= set(listed)
    assert sim_main(["--seeds", "1", "--start", "4", "--nodes", "3"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 seeds (4..4), 3 nodes")
    # The core-only model simulator stays reachable (raftctl sim shows it step by step).
    assert sim_main(["--model", "--seeds", "1", "--nodes", "3", "--no-membership"]) == 0
    assert "all safety and liveness checks held" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(CAUGHT_AT))
def test_mutant_is_caught(name, capsys):
    seed = CAUGHT_AT[name]
    assert sim_main(["--seeds", "1", "--start", str(seed), "--mutant", name]) == 1
    out = capsys.readouterr().out
    assert (f"replay: PYTHONHASHSEED=0 python -m raftd.sim --seeds 1 --start {seed} "
            f"--nodes 5 --mutant {name}") in out


def test_a_node_stopping_on_a_full_disk_as_the_faults_end_is_expected():
    """Seed 4766 of the 10,000-seed run: n8 fail-stopped on its injected ENOSPC 0.3 ms before
    the end of the faulty phase made room on the disk, which also forgot the injection, so the
    simulator called the node's correct stop a fatal error (raftd/simrt/disk.py make_room)."""
    assert sim_main(["--seeds", "1", "--start", "4766"]) == 0


def test_a_crashed_paused_host_leaves_no_coroutine_never_awaited():
    """A paused host that crashes drops what it was held from, the first step of a
    connection handler included (seeds 0 and 1 do): its coroutine is closed, so Python does
    not print "coroutine 'Connections._on_connection' was never awaited" at some later
    garbage collection (stop 25's CI log)."""
    import gc
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (0, 1):
            c = SimCluster(seed).run()
            del c
            gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
