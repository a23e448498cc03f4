"""Issue 16, trial 6, on a real three-node cluster: `leader transfer` to the current leader
succeeds (item G); `status` calls an endpoint that does not answer and that no
configuration names `unknown`, not `removed` (item E); `snapshot create --all` with a voter
down names it and exits 3 (item F); a closed stdout ends a command quietly with 141 (item
H); bench leaves keys it did not write alone and writes at most --keys keys (item I)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.harness import free_port

pytestmark = pytest.mark.e2e


def raftctl(cluster, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    return subprocess.run([sys.executable, "-m", "raftctl.main", "-e",
                           ",".join(cluster.endpoints), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_transfer_to_the_leader_status_of_a_stranger_and_snapshot_all_with_one_down(
        cluster_factory):
    cluster = cluster_factory(3).start()
    leader = cluster.wait_leader()

    r = raftctl(cluster, "leader", "transfer", leader)
    assert r.returncode == 0 and r.stdout == f"{leader} is already the leader\n", r.stderr
    res = json.loads(raftctl(cluster, "-o", "json", "leader", "transfer", leader).stdout)
    assert res == {"from": leader, "to": leader, "elapsed_ms": 0, "already_leader": True}

    stranger = f"127.0.0.1:{free_port('127.0.0.1')}"
    eps = ",".join([*cluster.endpoints, stranger])
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-e", eps, "-o", "json",
                        "status"], capture_output=True, text=True, timeout=60)
    members = {n["address"]: n["member"] for n in json.loads(r.stdout)["nodes"]}
    assert members[stranger] == "unknown", members
    assert sorted(members.values()).count("voter") == 3

    # Item H: a reader that goes away (`| head -2`) ends the command quietly, with 141.
    with cluster.client() as c:
        c.put("many/1", b"x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    for args in (["kv", "list", "many/"], ["status"], ["status", "--watch", "-i", "0.2"]):
        p = subprocess.Popen([sys.executable, "-m", "raftctl.main", "-e",
                              ",".join(cluster.endpoints), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
        p.stdout.close()  # before it writes anything: its first write finds no reader
        err = p.stderr.read()
        assert p.wait(30) == 141 and err == b"", (args, p.returncode, err)

    # Item I: bench never touches keys it did not write, and writes at most --keys keys.
    with cluster.client() as c:
        c.put("bench/k3", b"mine")
        quick = ("bench", "--clients", "2", "--duration", "0.3", "--warmup", "0", "--keys", "5")
        r = raftctl(cluster, *quick)
        assert r.returncode == 1 and r.stderr.count("raftctl: error:") == 1, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr  # the error only, no banner before it
        assert "keys already exist under 'bench/' (e.g. bench/k3)" in r.stderr, r.stderr
        assert c.get("bench/k3") == b"mine"
        r = raftctl(cluster, *quick, "--prefix", "b6/", "-o", "json")
        res = json.loads(r.stdout)
        assert r.stderr.startswith("bench: 2 in flight"), r.stderr
        assert 1 <= res["keys_written"] <= 5 and res["keys_deleted"] == res["keys_written"]
        assert c.list("b6/") == {}

    victim = next(n for n in sorted(cluster.nodes) if n != leader)
    cluster.nodes[victim].kill9()
    r = raftctl(cluster, "snapshot", "create", "--all")
    assert r.returncode == 3, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert f"could not snapshot 1 of 3 nodes: {victim} (unreachable" in r.stderr, r.stderr
    up = sorted(set(cluster.nodes) - {victim})
    assert all(f" {n} " in r.stdout for n in up), r.stdout
    r = raftctl(cluster, "-o", "json", "snapshot", "create", "--all")
    out = json.loads(r.stdout)
    assert r.returncode == 3 and sorted(s["node"] for s in out["snapshots"]) == up
    assert [f["node"] for f in out["failed"]] == [victim]
    assert json.loads(r.stderr)["exit_code"] == 3
