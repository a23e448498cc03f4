"""issue 16 follow-up C: without a leader, status shows the newest configuration,
not a removed node's (which ties on term)."""
import asyncio

from raftctl import cluster


def _answer(nid, addr, commit, voters):
    addrs = {"n1": "a1", "n2": "a2", "n3": "a3", "n4": "a4", "n5": "a5"}
    return {"id": nid, "address": addr, "role": "follower", "term": 7,
            "commit_index": commit, "applied_index": commit, "cluster_id": "c",
            "configuration": {"voters": voters, "learners": [], "joint": False,
                              "addresses": {v: addrs[v] for v in voters}}}


def test_status_without_a_leader_prefers_a_members_newer_configuration(monkeypatch):
    old = ["n1", "n2", "n3", "n4"]
    new = ["n3", "n4", "n5"]
    answers = {"a1": _answer("n1", "a1", 10, old),    # removed earlier, answers first
               "a3": _answer("n3", "a3", 14, new),
               "a4": _answer("n4", "a4", 14, new),
               "a5": _answer("n5", "a5", 14, new)}

    async def one(address, timeout, wanted):
        return answers.get(address) or cluster.Down(reason="refused", refused=True)

    monkeypatch.setattr(cluster, "_one", one)
    st = asyncio.run(cluster.gather_status(["a1", "a3", "a4", "a5"]))
    assert st["leader"] is None
    assert st["configuration"]["voters"] == new
