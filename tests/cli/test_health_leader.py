"""`raftctl health` and `raftctl leader transfer` against real raftd processes (one 3-node
cluster for the module; the tests run in order and the last one kills two nodes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raftctl.commands.health import check_health
from tests.e2e.harness import LocalCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e


def raftctl(cluster, *args, check=None):
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-e", ",".join(cluster.endpoints),
                        *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("health"), 3).start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


def test_health_ok(cluster):
    leader = cluster.wait_leader()
    with cluster.client() as c:
        c.put("k", b"v")
    r = raftctl(cluster, "health", check=0)
    assert r.stdout.startswith(f"healthy: leader {leader}, 3/3 voters reachable") and not r.stderr
    h = json.loads(raftctl(cluster, "health", "-o", "json", check=0).stdout)
    assert h["healthy"] is True and h["leader"] == leader and h["quorum"] is True
    assert h["reachable_voters"] == 3 and h["voters"] == 3
    assert h["max_lag"] == 1000 and h["lagging"] == [] and h["reasons"] == []
    assert set(h["lag"]) == {"n1", "n2", "n3"}


def test_health_lagging_voter_unit():
    """A reachable voter far behind the leader fails the check (hand-made status)."""
    def row(nid, role, applied):
        raw = {"last_log_index": 5000 if role == "leader" else applied,
               "progress": {"n2": {"match_index": 5000}, "n3": {"match_index": 1200}}
               if role == "leader" else {}}
        return {"id": nid, "address": f"h:{nid}", "role": role, "term": 4, "commit_index": applied,
                "applied_index": applied, "last_log_index": applied, "reachable": True,
                "pid": 1, "_raw": raw}
    st = {"leader": "n1", "term": 4,
          "nodes": [row("n1", "leader", 5000), row("n2", "follower", 5000),
                    row("n3", "follower", 1200)],
          "configuration": {"voters": ["n1", "n2", "n3"], "learners": [], "joint": False}}
    h = check_health(st, 1000)
    assert h["healthy"] is False and h["quorum"] is True and h["lagging"] == ["n3"]
    assert h["reasons"] == ["n3 lags 3800 entries behind the leader (max 1000)"]
    assert check_health(st, 4000)["healthy"] is True


def test_leader_transfer_to_chosen_node(cluster):
    old = cluster.wait_leader()
    target = next(n for n in sorted(cluster.nodes) if n != old)
    r = raftctl(cluster, "leader", "transfer", target, "-o", "json", "--timeout", "10", check=0)
    res = json.loads(r.stdout)
    assert res["from"] == old and res["to"] == target and res["elapsed_ms"] >= 0
    assert cluster.wait_leader() == target
    assert cluster.status(target)["role"] == "leader"

    # without an ID: the most up-to-date follower takes over; table output names both
    r = raftctl(cluster, "leader", "transfer", "--timeout", "10", check=0)
    assert r.stdout.startswith(f"leader: {target} -> ") and " ms" in r.stdout
    assert cluster.wait_leader() != target


def test_leader_transfer_refused(cluster):
    leader = cluster.wait_leader()
    r = raftctl(cluster, "leader", "transfer", "n9", check=4)
    assert "n9" in r.stderr and len(r.stderr.splitlines()) == 1
    r = raftctl(cluster, "leader", "transfer", leader, "-o", "json", check=4)
    assert json.loads(r.stderr)["exit_code"] == 4
    assert cluster.wait_leader() == leader


def test_health_without_quorum(cluster):
    leader = cluster.wait_leader()
    victims = [n for n in sorted(cluster.nodes) if n != leader]
    for nid in victims:
        cluster.nodes[nid].kill9()
    r = raftctl(cluster, "health", check=3)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and "quorum" in r.stderr
    r = raftctl(cluster, "health", "-o", "json", check=3)
    h = json.loads(r.stdout)
    assert h["healthy"] is False and h["quorum"] is False
    assert h["reachable_voters"] == 1 and h["voters"] == 3
    assert any("quorum" in reason for reason in h["reasons"])
    assert json.loads(r.stderr)["exit_code"] == 3
