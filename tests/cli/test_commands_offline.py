"""raftctl status, member, snapshot, leader and health through typer's CliRunner against an
in-memory cluster standing in for raftd.client (issue 17 §6): the text and JSON output, the
JSON keys and the exit codes, without a process.  tests/cli/test_kv_offline.py does the same
for kv; the real client against real servers is covered by tests/cli/test_raftctl.py,
test_health_leader.py and tests/e2e."""
from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raftctl import cluster as cluster_mod
from raftctl.commands import leader as leader_cmd
from raftctl.commands import member as member_cmd
from raftctl.commands import snapshot as snapshot_cmd
from raftctl.main import app
from raftd.client import CLUSTER_ID_ENV, RequestError
from raftd.core import Configuration, RaftConfig, RaftNode, SnapshotMeta
from raftd.kv.commands import Command, Op
from raftd.kv.fsm import KVStateMachine
from raftd.storage.snapshots import write_snapshot_file


class FakeCluster:
    """Three voters n1..n3 at 127.0.0.1:7101..7103 as the client library sees them: each node's
    status (the keys RaftServer.status() returns that raftctl reads) and the leader's answers
    to admin requests.  ``down`` nodes refuse connections; ``refuse`` maps an op to the
    RequestError the leader answers it with."""

    def __init__(self, tmp: Path) -> None:
        self.addresses = {f"n{i}": f"127.0.0.1:{7100 + i}" for i in (1, 2, 3)}
        self.voters, self.learners = ["n1", "n2", "n3"], []
        self.leader: str | None = "n1"
        self.term = 2
        self.last = {"n1": 40, "n2": 40, "n3": 37}
        self.down: set[str] = set()  # nothing listens: connection refused
        self.paused: set[str] = set()  # listens, never answers (SIGSTOP): a timeout
        self.refuse: dict[str, RequestError] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (node, op, args)
        self.snapshot_file = _snapshot_file(tmp / "held.snap", index=40, term=2)

    def node_at(self, address: str) -> str:
        nid = next(n for n, a in self.addresses.items() if a == address)
        if nid in self.down:
            raise ConnectionRefusedError(f"connection to {address} refused")
        if nid in self.paused:
            raise asyncio.TimeoutError
        return nid

    def status(self, address: str) -> dict:
        nid = self.node_at(address)
        leads = nid == self.leader
        return {
            "id": nid, "term": self.term, "leader": self.leader,
            "role": "leader" if leads else "learner" if nid in self.learners else "follower",
            "commit_index": 40, "applied_index": min(40, self.last[nid]),
            "last_log_index": self.last[nid], "first_log_index": 1, "snapshot_index": 0,
            "configuration": {"voters": list(self.voters), "learners": list(self.learners),
                              "joint": False, "addresses": dict(self.addresses)},
            "progress": ({p: {"match_index": self.last[p], "next_index": self.last[p] + 1,
                              "state": "replicate"}
                          for p in self.voters + self.learners if p != nid} if leads else {}),
            "address": address, "cluster_id": "c0ffee", "pid": 4000 + int(nid[1:]),
            "tls": {"enabled": False},
        }

    def handle(self, address: str, op: str, args: dict) -> dict:
        """A request sent to ``address`` (the leader, for admin requests)."""
        nid = self.node_at(address)
        self.requests.append((nid, op, args))
        if op in self.refuse:
            raise self.refuse[op]
        if op == "transfer_leader":
            target = args.get("target") or "n2"
            self.leader, self.term = target, self.term + 1
            return {"target": target}
        if op == "change_config":
            for new, addr in args["add"].items():
                self.addresses[new], self.last[new] = addr, 40
                (self.learners if args["learner"] else self.voters).append(new)
            for gone in args["remove"]:
                self.voters.remove(gone)
            return {"phases": [f"added {','.join(args['add']) or '-'}", "committed"],
                    "configuration": {"voters": list(self.voters),
                                      "learners": list(self.learners)}}
        if op == "snapshot":
            return {"index": 40, "term": 2, "size": self.snapshot_file.stat().st_size,
                    "keys": 2, "duration_ms": 3, "stall_ms": 0, "node": nid}
        if op == "snapshot_read":
            data = self.snapshot_file.read_bytes()
            chunk = data[args["offset"]:args["offset"] + args["length"]]
            return {"data": chunk, "size": len(data),
                    "eof": args["offset"] + len(chunk) >= len(data)}
        raise RequestError("unknown_op", f"unknown op {op!r}")


def _snapshot_file(path: Path, index: int, term: int) -> Path:
    """A real snapshot file of a real state machine holding two keys."""
    fsm = KVStateMachine()
    fsm.apply_command(1, Command(Op.PUT, "a", value=b"1"))
    fsm.apply_command(2, Command(Op.PUT, "b", value=b"2"))
    header, data = fsm.freeze()
    write_snapshot_file(path, SnapshotMeta(index, term, Configuration.make(["n1"])), header,
                        data, fsync=False)
    return path


def _async_client(c: FakeCluster):
    class FakeAsyncClient:
        def __init__(self, endpoints, timeout=5.0, refused_grace=None, cluster_id=None):
            self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
            self.cluster_id = cluster_id or os.environ.get(CLUSTER_ID_ENV) or None

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            await self.close()

        async def close(self):
            pass

        async def status(self, endpoint, timeout=None, digest=False):
            return c.status(endpoint)

        async def request(self, op, args, attempt_timeout=None, write=False):
            return c.handle(self.endpoints[0], op, args)

        async def admin(self, op, args=None):
            return c.handle(c.addresses[c.leader or "n1"], op, args or {})
    return FakeAsyncClient


def _client(c: FakeCluster):
    class FakeClient:
        def __init__(self, endpoints, timeout=5.0, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def admin(self, op, args=None):
            return c.handle(c.addresses[c.leader or "n1"], op, args or {})
    return FakeClient


@pytest.fixture
def cli(monkeypatch, tmp_path):
    c = FakeCluster(tmp_path)
    fake_async = _async_client(c)
    for module in (cluster_mod, leader_cmd, snapshot_cmd):
        monkeypatch.setattr(module, "AsyncClient", fake_async)
    monkeypatch.setattr(member_cmd, "Client", _client(c))

    def invoke(*args):
        return CliRunner().invoke(app, ["-e", c.addresses["n1"], *args])

    invoke.cluster = c
    return invoke


def _json(r) -> dict:
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_the_fake_status_has_a_real_nodes_keys(cli):
    """What the stand-in answers has every key a real RaftNode's status has (the server adds
    the rest), so the commands below read what they would read from raftd."""
    real = RaftNode("n1", RaftConfig(), random.Random(1),
                    base_configuration=Configuration.make(["n1", "n2", "n3"])).status()
    fake = cli.cluster.status("127.0.0.1:7101")
    assert set(real) - {"voted_for", "refused_messages"} <= set(fake)
    assert set(real["configuration"]) <= set(fake["configuration"])


# ----------------------------------------------------------------------------- status --
def test_status_text_and_json(cli):
    r = cli("status")
    assert r.exit_code == 0 and r.stderr == ""
    assert "leader: n1" in r.stdout and "tolerates 1 failure" in r.stdout
    assert all(f"127.0.0.1:710{i}" in r.stdout for i in (1, 2, 3))
    st = _json(cli("status", "-o", "json"))
    assert {"leader", "term", "cluster_id", "fault_tolerance", "nodes",
            "configuration"} <= set(st)
    assert (st["leader"], st["term"], st["cluster_id"], st["fault_tolerance"]) == (
        "n1", 2, "c0ffee", 1)
    assert st["configuration"] == {"voters": ["n1", "n2", "n3"], "learners": [], "joint": False}
    n3 = next(n for n in st["nodes"] if n["id"] == "n3")
    assert {"id", "address", "role", "term", "commit_index", "applied_index", "last_log_index",
            "reachable", "member"} <= set(n3)
    assert (n3["role"], n3["member"], n3["last_log_index"]) == ("follower", "voter", 37)
    assert not any(k.startswith("_") for n in st["nodes"] for k in n)  # internals dropped


def test_status_exit_3_without_leader_or_nodes(cli):
    cli.cluster.leader = None
    r = cli("status")
    assert r.exit_code == 3 and r.stderr == "raftctl: error: no leader\n"
    r = cli("status", "-o", "json")
    assert r.exit_code == 3 and json.loads(r.stdout)["leader"] is None
    assert json.loads(r.stderr) == {"error": "no_leader", "message": "no leader", "exit_code": 3}
    cli.cluster.down = {"n1", "n2", "n3"}
    r = cli("status")
    assert r.exit_code == 3
    assert r.stderr == "raftctl: error: no raftd at 127.0.0.1:7101 (connection refused)\n"
    cli.cluster.down, cli.cluster.paused = set(), {"n1", "n2", "n3"}
    r = cli("status")
    assert r.exit_code == 3 and r.stderr.startswith("raftctl: error: no node is reachable at ")
    assert r.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- health --
def test_health_healthy_then_degraded(cli):
    r = cli("health")
    assert r.exit_code == 0 and r.stdout.startswith("healthy: leader n1, 3/3 voters reachable")
    h = _json(cli("health", "-o", "json"))
    assert {"healthy", "leader", "reachable_voters", "voters", "quorum", "fault_tolerance",
            "max_lag", "lagging", "down", "allow_down", "reasons", "lag",
            "voter_status"} <= set(h)
    assert (h["healthy"], h["lag"]) == (True, {"n1": 0, "n2": 0, "n3": 3})
    cli.cluster.down = {"n3"}
    r = cli("health", "-o", "json")
    assert r.exit_code == 3
    h = json.loads(r.stdout)
    assert h["healthy"] is False and h["down"] == ["n3"]
    assert h["reasons"] == ["degraded: n3 unreachable; one more failure loses the quorum"]
    assert cli("health", "--allow-down", "1").exit_code == 0


def test_health_lag_and_usage(cli):
    r = cli("health", "--max-lag", "2")
    assert r.exit_code == 3 and "n3 lags 3 entries behind the leader (max 2)" in r.stderr
    r = cli("health", "--max-lag", "-1")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1


# ----------------------------------------------------------------------------- member --
def test_member_list(cli):
    r = cli("member", "list")
    assert r.exit_code == 0 and "configuration: stable" in r.stdout
    m = _json(cli("member", "list", "-o", "json"))
    assert {"leader", "term", "joint", "voters", "learners", "members"} <= set(m)
    n3 = next(x for x in m["members"] if x["id"] == "n3")
    assert n3 == {"id": "n3", "address": "127.0.0.1:7103", "suffrage": "voter", "in_new": True,
                  "in_old": True, "leader": False, "match_index": 37, "lag": 3,
                  "reachable": True}
    cli.cluster.leader = None
    r = cli("member", "list")
    assert r.exit_code == 3 and "no leader" in r.stderr


def test_member_add_and_remove(cli):
    r = cli("member", "add", "n4", "127.0.0.1:7104", "--learner")
    assert r.exit_code == 0
    assert r.stdout == "- added n4\n- committed\nconfiguration: voters=n1,n2,n3 learners=n4\n"
    assert cli.cluster.requests[-1] == ("n1", "change_config", {
        "add": {"n4": "127.0.0.1:7104"}, "remove": [], "promote": [], "learner": True})
    res = _json(cli("member", "remove", "n3", "-o", "json"))
    assert res["configuration"] == {"voters": ["n1", "n2"], "learners": ["n4"]}
    assert "phases" in res


def test_member_errors_map_to_exit_codes(cli):
    r = cli("member", "add", "n4", "no-port")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
    cli.cluster.refuse["change_config"] = RequestError("change_in_progress",
                                                       "a membership change is in progress")
    r = cli("member", "remove", "n2")
    assert r.exit_code == 4 and r.stderr == "raftctl: error: a membership change is in progress\n"
    r = cli("member", "remove", "n2", "-o", "json")
    assert r.exit_code == 4 and r.stdout == ""
    assert json.loads(r.stderr) == {"error": "change_in_progress", "exit_code": 4,
                                    "message": "a membership change is in progress"}


# --------------------------------------------------------------------------- snapshot --
def test_snapshot_create_on_the_leader(cli):
    r = cli("snapshot", "create")
    assert r.exit_code == 0 and "n1" in r.stdout
    out = _json(cli("snapshot", "create", "--all", "-o", "json"))
    assert [s["node"] for s in out["snapshots"]] == ["n1", "n2", "n3"]
    assert {"index", "term", "size", "keys", "node"} <= set(out["snapshots"][0])
    cli.cluster.leader = None
    r = cli("snapshot", "create")
    assert r.exit_code == 3 and "no leader (use --node or --all)" in r.stderr


def test_snapshot_save_writes_a_verified_private_file(cli, tmp_path):
    target = tmp_path / "backup.snap"
    r = cli("snapshot", "save", str(target))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (f"saved snapshot index=40 term=2 keys=2 "
                        f"size={target.stat().st_size} from n1 to {target}\n")
    assert target.read_bytes() == cli.cluster.snapshot_file.read_bytes()
    assert os.stat(target).st_mode & 0o777 == 0o600
    r = cli("snapshot", "save", str(target), "-o", "json")
    assert r.exit_code == 1 and json.loads(r.stderr)["error"] == "file_exists"
    info = _json(cli("snapshot", "save", str(target), "--force", "-o", "json"))
    assert (info["index"], info["term"], info["keys"], info["node"]) == (40, 2, 2, "n1")
    assert info["file"] == str(target)


def test_snapshot_save_refuses_a_corrupt_download(cli, tmp_path):
    f = cli.cluster.snapshot_file
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    target = tmp_path / "backup.snap"
    r = cli("snapshot", "save", str(target))
    assert r.exit_code == 1 and r.stderr.startswith("raftctl: error: the backup did not verify")
    assert not target.exists() and not (tmp_path / "backup.snap.part").exists()


# ----------------------------------------------------------------------------- leader --
def test_leader_transfer(cli):
    r = cli("leader", "transfer", "n3")
    assert r.exit_code == 0 and r.stdout.startswith("leader: n1 -> n3 in ")
    res = _json(cli("leader", "transfer", "-o", "json"))
    assert set(res) == {"from", "to", "elapsed_ms", "already_leader"}
    assert (res["from"], res["to"], res["already_leader"]) == ("n3", "n2", False)


def test_leader_transfer_refusals(cli):
    r = cli("leader", "transfer", "n1")  # already done: exit 0, for scripts (issue 16 trial 6)
    assert r.exit_code == 0 and r.stdout == "n1 is already the leader\n"
    r = cli("leader", "transfer", "n9", "-o", "json")
    assert r.exit_code == 4 and json.loads(r.stderr)["error"] == "bad_request"
    assert not any(op == "transfer_leader" for _, op, _ in cli.cluster.requests)
    cli.cluster.leader = None
    r = cli("leader", "transfer")
    assert r.exit_code == 3 and r.stderr == "raftctl: error: no leader to transfer from\n"
