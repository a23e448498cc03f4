"""Issue 16, what a new-user trial of the README still found, on real raftd processes:
fault tolerance with a voter down (trial item 1), --cluster-id for the status commands (2), a
TLS hint from every command (3), the command named to a client certificate (6), and
`snapshot create --node` for a non-member (11)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from raftctl.cluster import gather_status
from raftctl.main import app
from raftd import pki
from raftd.client import RequestError

pytestmark = pytest.mark.e2e


def raftctl(*args, env=None):
    """raftctl in a process of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    return subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})})


_RAFTCTL_ENV = ("RAFTCTL_ENDPOINTS", "RAFTCTL_CLUSTER_ID", "RAFTCTL_CACERT", "RAFTCTL_CERT",
                "RAFTCTL_KEY")


def cli(*args, env=None):
    """raftctl in this process (faster), against the same real servers; every RAFTCTL_*
    variable, set by the command itself too, is restored afterwards."""
    r = CliRunner().invoke(app, list(args), env={**dict.fromkeys(_RAFTCTL_ENV), **(env or {})})
    r.returncode = r.exit_code
    return r


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_one_voter_down_tolerates_no_more_failures_and_cluster_id_is_checked(cluster_factory,
                                                                            monkeypatch):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    eps = ",".join(c.endpoints)
    st = json.loads(cli("-e", eps, "-o", "json", "status").stdout)
    assert st["fault_tolerance"] == 1
    cid = st["cluster_id"]
    assert cid

    # Item 2: --cluster-id (or RAFTCTL_CLUSTER_ID) refuses a node of another cluster, as kv.
    for args in (["status"], ["health"], ["member", "list"]):
        r = cli("-e", eps, "--cluster-id", "deadbeef", "-o", "json", *args)
        assert r.returncode == 4, (args, r.stdout, r.stderr)
        err = json.loads(r.stderr.strip().splitlines()[-1])
        assert err["error"] == "wrong_cluster" and "not deadbeef" in err["message"], err
        r = cli("-e", eps, *args, env={"RAFTCTL_CLUSTER_ID": "deadbeef"})
        if args == ["health"]:  # once in a process of its own, as an operator runs it
            r = raftctl("-e", eps, *args, env={"RAFTCTL_CLUSTER_ID": "deadbeef"})
        assert r.returncode == 4 and "belongs to cluster" in r.stderr, (args, r.stderr)
        assert cli("-e", eps, "--cluster-id", cid, *args).returncode == 0, args
    # The local tooling, which starts nodes of new clusters, does not pin (pinned=False).
    monkeypatch.setenv("RAFTCTL_CLUSTER_ID", "deadbeef")
    with pytest.raises(RequestError, match="not deadbeef"):
        asyncio.run(gather_status(c.endpoints, 0.5))
    assert asyncio.run(gather_status(c.endpoints, 0.5, pinned=False))["leader"] == leader
    monkeypatch.delenv("RAFTCTL_CLUSTER_ID")

    # Item 11: a node id that is no member is a usage error, not "not reachable".
    r = cli("-e", eps, "snapshot", "create", "--node", "n7")
    assert r.returncode == 2 and "n7 is not a member" in r.stderr, r.stderr

    # Item 1: one of three voters down: the quorum holds, but no MORE voter may fail.
    victim = next(nid for nid in c.nodes if nid != leader)
    c.nodes[victim].kill9()
    r = cli("-e", eps, "-o", "json", "status")
    assert json.loads(r.stdout)["fault_tolerance"] == 0, r.stdout
    r = cli("-e", eps, "status")
    assert "tolerates 0 failures" in r.stdout and "tolerates 1" not in r.stdout, r.stdout
    r = cli("-e", eps, "health", "--allow-down", "1")
    assert r.returncode == 0 and "tolerates 0 failures" in r.stdout, (r.stdout, r.stderr)
    h = json.loads(cli("-e", eps, "-o", "json", "health").stdout)
    assert h["fault_tolerance"] == 0 and h["down"] == [victim], h
    r = cli("-e", eps, "status", "--watch", "--count", "1")
    assert "tolerates 0 failures" in r.stdout, r.stdout


def test_tls_hint_and_client_certificate_name_the_command(cluster_factory, tmp_path):
    """Item 3: a plaintext client gets the TLS hint from member list, snapshot save and
    leader transfer too; item 6: a client-role certificate is told the command it ran."""
    c = cluster_factory(3, tls=True).start()
    c.wait_leader()
    env = {"RAFTCTL_ENDPOINTS": ",".join(c.endpoints)}
    for args in (["member", "list"], ["snapshot", "save", str(tmp_path / "a.snap")],
                 ["leader", "transfer"]):
        r = cli(*args, env=env)
        assert r.returncode == 3, (args, r.stderr)
        assert "TLS" in r.stderr and "no leader" not in r.stderr, (args, r.stderr)
    app1 = pki.issue_client(c.certs, "app1", "client")
    env.update({"RAFTCTL_CACERT": str(c.certs / "ca.crt"), "RAFTCTL_CERT": str(app1.cert),
                "RAFTCTL_KEY": str(app1.key)})
    for args, name in ((["member", "list"], "member list"),
                       (["snapshot", "save", str(tmp_path / "b.snap")], "snapshot save")):
        r = cli(*args, env=env)
        assert r.returncode == 4, (args, r.stderr)
        assert r.stderr == (f"raftctl: error: raftctl {name}: app1 (role client) may not run "
                            f"this command: it needs an admin certificate\n"), r.stderr
        assert "may not status" not in r.stderr
    assert not (tmp_path / "b.snap").exists()
