"""A removed server's id is refused for good and never reused (issue 19 §2).  On a plaintext
cluster anyone may claim an id; what is shown here is what a removed server (or, with TLS, its
certificate) can no longer do: connect as a peer, or come back under its old id."""
from __future__ import annotations

import time

import pytest

from raftd.client import RequestError
from raftd.core import AppendEntries
from raftd.wire.codec import encode_hello
from tests.security.test_hostile_frames import _raw_message, _send

pytestmark = pytest.mark.timeout(120)


def removed_n3(cluster_factory):
    """A 3-node cluster holding k=before that removed n3 (stopped); returns (cluster, a
    follower that recorded the removal, its status)."""
    c = cluster_factory(3).start()
    c.wait_leader()
    with c.client(timeout=30) as cl:
        cl.put("k", b"before")
        r = cl.admin("change_config", {"remove": ["n3"]})
        assert sorted(r["configuration"]["voters"]) == ["n1", "n2"]
    c.nodes["n3"].stop()
    leader = c.wait_leader()
    target = next(n for n in ("n1", "n2") if n != leader)
    deadline = time.monotonic() + 10
    while "n3" not in (c.status(target) or {}).get("removed_ids", []):
        assert time.monotonic() < deadline, c.status(target)
        time.sleep(0.1)
    return c, target, c.status(target)


def test_a_removed_id_is_refused_as_a_peer_and_cannot_be_added_back(cluster_factory):
    c, target, st = removed_n3(cluster_factory)
    # The removed server (its id, its certificate) says hello and forges an AppendEntries of a
    # higher term: the connection is refused at HELLO, the term does not move.
    forged = _raw_message(AppendEntries("n3", target, st["term"] + 5, 0, 0, (), 0))
    _send(c.nodes[target].address, [encode_hello("n3", "raftd", c.nodes["n3"].address,
                                                 st["cluster_id"]), forged])
    after = c.status(target)
    assert after["counters"]["removed_refused"] >= 1
    assert after["term"] == st["term"]
    # Ids are never reused: adding n3 back is refused before anything is logged.
    with c.client(timeout=30) as cl:
        with pytest.raises(RequestError) as e:
            cl.admin("change_config", {"add": {"n3": c.nodes["n3"].address}})
        assert e.value.code == "id_removed" and "new id" in str(e.value)
        assert cl.get("k") == b"before"
    # and it survives a restart
    c.nodes[target].stop()
    c.nodes[target].start()
    deadline = time.monotonic() + 10
    while (c.status(target) or {}).get("removed_ids") != ["n3"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_follower_that_learns_a_removal_from_a_snapshot_records_it(cluster_factory):
    """Issue 19 §2: a follower that was down while n3 was removed, and is then caught up with
    a snapshot (the leader's log no longer holds the configuration entries), never applies
    those entries: the snapshot's metadata carries the removed ids, and the follower refuses
    n3 like the others do, also after a restart."""
    c = cluster_factory(4, snapshot_entries=20, snapshot_keep=1, snapshot_trailing=0).start()
    leader = c.wait_leader()
    gone, victim = [n for n in c.nodes if n != leader][:2]
    with c.client(timeout=30) as cl:
        cl.put("k", b"before")
    c.nodes[victim].stop()
    with c.client(timeout=30) as cl:
        cl.admin("change_config", {"remove": [gone]})
    c.nodes[gone].stop()
    c.fill({f"f{i}": b"x" for i in range(60)})  # snapshots; the log now starts after them
    leader = c.wait_leader()
    st = c.status(leader)
    assert st["first_log_index"] > 10 and gone in st["removed_ids"], st
    c.nodes[victim].start()
    deadline = time.monotonic() + 20
    while (s := c.status(victim)) is None or s["snapshot_index"] < st["first_log_index"] - 1 \
            or s["applied_index"] < st["commit_index"]:
        assert time.monotonic() < deadline, (s, c.logs_tail())
        time.sleep(0.1)
    assert s["removed_ids"] == [gone], s["removed_ids"]
    forged = _raw_message(AppendEntries(gone, victim, s["term"] + 5, 0, 0, (), 0))
    _send(c.nodes[victim].address, [encode_hello(gone, "raftd", c.nodes[gone].address,
                                                 s["cluster_id"]), forged])
    after = c.status(victim)
    assert after["counters"]["removed_refused"] >= 1 and after["term"] == s["term"]
    c.nodes[victim].stop()
    c.nodes[victim].start()
    deadline = time.monotonic() + 10
    while (c.status(victim) or {}).get("removed_ids") != [gone]:
        assert time.monotonic() < deadline, c.status(victim)
        time.sleep(0.1)
    with c.client(timeout=30) as cl:
        assert cl.get("k") == b"before" and cl.get("f59") == b"x"


def test_snapshot_metadata_carries_removed_ids_and_older_snapshots_still_read(tmp_path):
    """The ``removed`` list of a snapshot's metadata, and what a snapshot written before it
    existed gives: none from the list, but the members our last committed configuration had
    that the snapshot's no longer has (ids are never reused)."""
    import struct

    import msgpack

    from raftd.core import Configuration, SnapshotMeta
    from raftd.runtime.removed import RemovedIds
    from raftd.storage.snapshots import MAGIC, read_meta, write_snapshot_file

    cfg = Configuration.make(["n1", "n2", "n4"])
    new = tmp_path / "new.snap"
    write_snapshot_file(new, SnapshotMeta(9, 2, cfg), {}, {}, fsync=False,
                        removed={"n3", "n5"})
    assert read_meta(new).removed_ids == {"n3", "n5"}
    old = tmp_path / "old.snap"
    m = msgpack.packb({"index": 9, "term": 2, "configuration": cfg.encode(), "keys": 0})
    old.write_bytes(MAGIC + struct.pack(">I", len(m)) + m)
    assert read_meta(old).removed_ids == frozenset()

    r = RemovedIds(str(tmp_path), frozenset({"n1", "n2", "n3", "n4"}))
    assert r.installed(read_meta(old).removed_ids, cfg) == {"n3"}
    assert r.installed(read_meta(new).removed_ids, cfg) == {"n5"}  # added and removed unseen
    assert RemovedIds(str(tmp_path), frozenset()).ids == {"n3", "n5"}  # durable
