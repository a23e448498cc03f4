"""Cluster identity (issue 14 §9): a server of another cluster is never added and never taken
for a peer; every node reports the same cluster_id; raftctl --cluster-id refuses others."""
from __future__ import annotations

import json

import pytest

from raftd.client import Client, RequestError
from tests.cli.test_raftctl import raftctl

pytestmark = pytest.mark.timeout(180)


def test_a_server_of_another_cluster_is_not_added_and_changes_nothing(cluster_factory):
    """The new-user trial: n6 ran as its own single-node cluster and held a key; `member add`
    accepted it as a voter, then reads served its key.  Now: exit 4, nothing changed."""
    main = cluster_factory(3).start()
    main.wait_leader()
    other = cluster_factory(1).start()  # a single-node cluster of its own, with data
    other.wait_leader()
    with other.client() as c:
        c.put("only-on-the-other", b"x")
    stranger = other.nodes["n1"]
    eps = ",".join(main.endpoints)
    before = json.loads(raftctl("-e", eps, "status", "-o", "json", check=0).stdout)
    r = raftctl("-e", eps, "member", "add", "n9", stranger.address, check=4)
    assert "another cluster" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    after = json.loads(raftctl("-e", eps, "status", "-o", "json", check=0).stdout)
    assert after["configuration"] == before["configuration"]
    with main.client() as c:
        assert c.get("only-on-the-other") is None


def test_a_non_empty_server_without_an_id_and_a_fresh_join_server(cluster_factory):
    main = cluster_factory(3).start()
    main.wait_leader()
    eps = ",".join(main.endpoints)
    fresh = main.add_join_node()
    st = json.loads(raftctl("-e", eps, "status", "-o", "json", check=0).stdout)
    cid = st["cluster_id"]
    assert cid and all(n["cluster_id"] == cid for n in st["nodes"] if n["reachable"])
    raftctl("-e", eps, "member", "add", fresh.id, fresh.address, "--learner", check=0)
    # the joining server took the cluster's id from the leader, durably
    main.wait_applied(1, [fresh.id])
    assert (fresh.data_dir / "cluster_id").read_text().strip() == cid
    st = json.loads(raftctl("-e", ",".join(main.endpoints), "status", "-o", "json",
                            check=0).stdout)
    assert {n["cluster_id"] for n in st["nodes"] if n["reachable"]} == {cid}


def test_peers_of_another_cluster_are_refused_and_cluster_id_pins_clients(cluster_factory):
    a = cluster_factory(3).start()
    b = cluster_factory(3).start()
    a.wait_leader()
    b.wait_leader()
    st_a, st_b = a.status("n1"), b.status("n1")
    assert st_a["cluster_id"] != st_b["cluster_id"]
    # Mixed endpoints: with --cluster-id, raftctl refuses the other cluster's nodes.
    mixed = ",".join([b.nodes["n1"].address, *a.endpoints])
    r = raftctl("-e", b.nodes["n1"].address, "--cluster-id", st_a["cluster_id"],
                "kv", "put", "k", "v", check=4)
    assert "wrong_cluster" in r.stderr or "belongs to cluster" in r.stderr, r.stderr
    with Client(a.endpoints, timeout=10, cluster_id=st_a["cluster_id"]) as c:
        c.put("pinned", b"1")
    with pytest.raises(RequestError) as e:
        with Client([b.nodes["n1"].address], timeout=5, cluster_id=st_a["cluster_id"]) as c:
            c.get("pinned")
    assert e.value.code == "wrong_cluster"
    out = raftctl("-e", mixed, "status", check=None).stderr
    assert "two clusters behind these endpoints" in out, out
