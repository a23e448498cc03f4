"""Snapshots on real processes: bounded logs, restart from snapshot + log, InstallSnapshot."""
from __future__ import annotations

import time

import pytest

from raftd.client import Client

pytestmark = pytest.mark.e2e

SMALL = {"snapshot_entries": 200, "snapshot_trailing": 50}


def test_log_stays_bounded_and_restart_uses_snapshot_plus_log(cluster_factory):
    cluster = cluster_factory(3, **SMALL).start()
    leader = cluster.wait_leader()
    cluster.fill({f"k{i:04d}": b"v%d" % i for i in range(1000)})
    with cluster.client() as c:
        last = c.put("last", b"x")
    cluster.wait_applied(last, list(cluster.nodes))
    for nid in cluster.nodes:
        st = cluster.status(nid)
        assert st["snapshot_index"] >= 600, st["snapshot_index"]
        assert st["first_log_index"] > 400  # compacted: the log is bounded
        assert st["last_log_index"] - st["first_log_index"] < 500
    cluster.stop()
    for n in cluster.nodes.values():
        n.start()
    cluster.wait_leader()
    with cluster.client() as c:
        assert c.get("k0000") == b"v0" and c.get("k0999") == b"v999"
        assert len(c.list("k")) == 1000
    assert "restored snapshot" in cluster.nodes[leader].log_text()


def test_lagging_follower_catches_up_by_install_snapshot(cluster_factory):
    cluster = cluster_factory(3, **SMALL).start()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[victim].kill9()
    cluster.fill({f"k{i:04d}": b"%d" % i for i in range(800)})
    with cluster.client() as c:
        last = c.put("last", b"x")
    st = cluster.status(leader)
    assert st["first_log_index"] > 1  # the victim's next entry is gone from the leader's log
    cluster.nodes[victim].start()
    cluster.wait_applied(last, [victim], timeout=30)
    vs = cluster.status(victim)
    assert vs["snapshots"]["transfers"]["received"] >= 1
    assert vs["snapshot_index"] >= st["snapshot_index"] - 1 or vs["snapshot_index"] > 0
    with Client([cluster.nodes[victim].address], timeout=5) as c:
        items = c.list("k", linearizable=False)
    assert len(items) == 800 and items["k0799"] == b"799"
    digests = {cluster.status(n, digest=True)["digest"] for n in cluster.nodes}
    assert len(digests) == 1
    snapdir = cluster.nodes[victim].data_dir / "snapshots"
    assert not [p for p in snapdir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("trailing", [500, 5], ids=["long-trailing-log", "short-trailing-log"])
def test_corrupt_newest_snapshot_falls_back_to_older(cluster_factory, trailing):
    """With a short trailing log (issue 21 §8: the defaults scaled down) the log is never
    compacted past the oldest kept snapshot, so that snapshot plus the log still work."""
    cluster = cluster_factory(1, snapshot_entries=100, snapshot_trailing=trailing).start()
    cluster.wait_leader()
    cluster.fill({f"k{i}": b"v" for i in range(350)}, concurrency=8)
    cluster.stop()
    node = cluster.nodes["n1"]
    snaps = sorted((node.data_dir / "snapshots").glob("*.snap"))
    assert len(snaps) == 2
    data = bytearray(snaps[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    snaps[-1].write_bytes(bytes(data))
    node.start()
    cluster.wait_leader()
    with cluster.client() as c:
        assert len(c.list("k")) == 350  # older snapshot + trailing log
    log = node.log_text()
    assert "checksum mismatch" in log and "trying an older snapshot" in log


def test_snapshot_on_demand_reports_stall(cluster_factory):
    cluster = cluster_factory(3).start()
    leader = cluster.wait_leader()
    with cluster.client() as c:
        for i in range(100):
            c.put(f"k{i}", b"v")
        r = c.admin("snapshot", {})  # goes to the leader
    assert r["index"] >= 100 and r["size"] > 0 and "stall_ms" in r
    time.sleep(0.1)
    assert cluster.status(leader)["snapshot_index"] == r["index"]


def _wait_incoming(node, timeout=30):
    snapdir = node.data_dir / "snapshots"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if snapdir.exists() and any(p.name.startswith("incoming-") for p in snapdir.iterdir()):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("side", ["receiver", "sender"])
def test_interrupted_snapshot_transfer_restarts_cleanly(cluster_factory, side):
    """hashicorp/raft #212: a transfer cut by a crash on either side leaves no temp file and
    the follower still catches up."""
    cluster = cluster_factory(3, snapshot_entries=300, snapshot_trailing=10).start()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[victim].kill9()
    big = b"x" * 8192
    cluster.fill({f"k{i:05d}": big for i in range(2500)})
    with cluster.client() as c:
        c.admin("snapshot", {})
    cluster.nodes[victim].start()
    assert _wait_incoming(cluster.nodes[victim]), "the transfer never started"
    if side == "receiver":
        cluster.nodes[victim].kill9()
        cluster.nodes[victim].start()
    else:
        cluster.nodes[leader].kill9()
        cluster.wait_leader(exclude={leader})
        cluster.nodes[leader].start()
    with cluster.client(timeout=30) as c:
        last = c.put("after", b"1")
    cluster.wait_applied(last, [victim], timeout=60)
    assert cluster.status(victim)["keys"] == 2501  # the 2,500 big ones and "after"
    cluster.wait_applied(last, list(cluster.nodes), timeout=60)
    digests = {cluster.status(n, digest=True)["digest"] for n in cluster.nodes}
    assert len(digests) == 1
    leftovers = [p.name for p in (cluster.nodes[victim].data_dir / "snapshots").iterdir()
                 if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
