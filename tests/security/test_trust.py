"""Trust only members (issue 19 §2 (b), (c)): a removed server keeps its data, its address and,
on a TLS cluster, its certificate; it must not be able to overwrite the cluster's state with a
snapshot of its own.  Here n3, removed by a committed configuration, says hello and streams a
forged InstallSnapshot of a higher term claiming an index far ahead: the connection is refused
at HELLO (its id is in removed_ids), the term does not move and the data is intact."""
from __future__ import annotations


import pytest

from raftd.core import Configuration, InstallSnapshot
from raftd.wire.codec import encode_hello
from tests.security.test_hostile_frames import _raw_message, _send
from tests.security.test_removed_ids import removed_n3

pytestmark = pytest.mark.timeout(120)


def test_a_forged_install_snapshot_from_a_removed_id_is_refused_and_data_intact(cluster_factory):
    c, target, st = removed_n3(cluster_factory)
    # The end of a transfer with no chunks, for an index the node already covers, reaches the
    # core as is: it would take the higher term (and depose the leader it follows).
    forged = InstallSnapshot("n3", target, st["term"] + 5, 1, st["term"],
                             Configuration(voters=frozenset({"n3"})).encode(), done=True)
    _send(c.nodes[target].address, [encode_hello("n3", "raftd", c.nodes["n3"].address,
                                                 st["cluster_id"]), _raw_message(forged)])
    after = c.status(target)
    assert after["counters"]["removed_refused"] >= 1
    assert after["term"] == st["term"]
    with c.client(timeout=30) as cl:
        assert cl.get("k") == b"before"
        cl.put("k2", b"after")  # the cluster still commits
        assert cl.get("k2") == b"after"
