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
