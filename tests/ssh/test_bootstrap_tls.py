"""`raftctl bootstrap` of a TLS cluster over real sshd (tests/ssh/conftest.py): raftctl makes
the CA and certificates locally and ships each host its own; the cluster refuses plaintext."""
from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from raftd.client import Client, Timeout, Unavailable
from raftd.tls import TLSFiles
from tests.ssh.conftest import free_port
from tests.ssh.test_bootstrap import raftctl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_deployed(ssh_env, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls-cluster")
    inv = ssh_env.inventory(d / "inventory.yaml", ["n1", "n2", "n3"], d / "install",
                            tls={"certs_dir": "certs"})
    raw = yaml.safe_load(inv.read_text())
    for h in raw["hosts"]:  # ports of its own: the plaintext module's cluster may be up
        h["raft_port"] = free_port(h["address"])
    inv.write_text(yaml.safe_dump(raw, sort_keys=False))
    endpoints = [f"{h['address']}:{h['raft_port']}" for h in raw["hosts"]]
    yield {"dir": d, "inv": inv, "endpoints": endpoints, "install": d / "install"}
    raftctl("teardown", "--purge", "--yes", inv, timeout=120)


def test_tls_bootstrap_ships_certificates_and_refuses_plaintext(tls_deployed, ssh_env):
    d, inv = tls_deployed["dir"], tls_deployed["inv"]
    r = raftctl("bootstrap", "--offline", "--wheelhouse", ssh_env.wheelhouse, "-o", "json", inv)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["leader"] in ("n1", "n2", "n3")
    certs = d / "certs"
    assert (certs / "ca.crt").exists() and (certs / "client-admin.crt").exists()
    assert stat.S_IMODE(os.stat(certs / "ca.key").st_mode) == 0o600
    for name in ("n1", "n2", "n3"):
        root = tls_deployed["install"] / name
        cfg = yaml.safe_load((root / "raftd.yaml").read_text())
        assert cfg["tls"] == {"ca": f"{root}/tls/ca.crt", "cert": f"{root}/tls/node.crt",
                              "key": f"{root}/tls/node.key"}
        assert stat.S_IMODE(os.stat(root / "tls").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(root / "tls" / "node.key").st_mode) == 0o600
        assert (root / "tls" / "node.crt").read_text() == \
            (certs / f"node-{name}.crt").read_text()

    admin = TLSFiles(str(certs / "ca.crt"), str(certs / "client-admin.crt"),
                     str(certs / "client-admin.key"))
    with Client(tls_deployed["endpoints"], timeout=10, tls=admin) as c:
        c.put("secure", b"yes")
        assert c.get("secure") == b"yes"
        st = c.status(tls_deployed["endpoints"][0])
        assert st["tls"]["enabled"] and st["tls"]["name"] == "n1"
    with pytest.raises((Timeout, Unavailable)):
        with Client(tls_deployed["endpoints"], timeout=1.5, tls=False) as c:
            c.get("secure")
    # Later commands on the inventory find the admin certificate by themselves.
    r = raftctl("ssh", "status", inv, "-o", "json")
    assert r.returncode == 0, r.stderr
    # A re-run changes nothing (the certificates are kept, not re-issued).
    before = (certs / "node-n1.crt").read_text()
    r = raftctl("bootstrap", "--offline", "--wheelhouse", ssh_env.wheelhouse, inv)
    assert r.returncode == 0 and "no change" in r.stdout, r.stdout + r.stderr
    assert (certs / "node-n1.crt").read_text() == before


def test_rotate_certs_over_ssh(tls_deployed, ssh_env):
    inv = tls_deployed["inv"]
    r = raftctl("ssh", "rotate-certs", inv, "--reissue", "--days", "20", "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["n1", "n2", "n3"]
    assert all(h["reloaded"] and h["confirmed"] and 19 < h["days_left"] <= 20
               for h in doc["hosts"])
    certs = tls_deployed["dir"] / "certs"
    admin = TLSFiles(str(certs / "ca.crt"), str(certs / "client-admin.crt"),
                     str(certs / "client-admin.key"))
    # New connections (peer links included, as they reconnect) use the new certificates.
    with Client(tls_deployed["endpoints"], timeout=10, tls=admin) as c:
        c.put("rotated", b"yes")
        st = c.status(tls_deployed["endpoints"][1])
        assert st["tls"]["warning"] and "expires in" in st["tls"]["warning"]
    root = tls_deployed["install"] / "n2"
    assert stat.S_IMODE(os.stat(root / "tls" / "node.key").st_mode) == 0o600
