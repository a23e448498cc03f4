"""Mutual TLS on real raftd processes: who gets in, who is refused, and certificate reload."""
from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time

import pytest
import yaml

from raftd import pki
from raftd.client import Client, RequestError, TLSError, Timeout, Unavailable
from raftd.tls import TLSFiles, client_context
from raftd.core.messages import RequestVote
from raftd.wire.codec import encode_hello, encode_message
from tests.e2e.harness import _new_host, free_base_port, free_port

pytestmark = pytest.mark.e2e


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def files(paths) -> TLSFiles:
    return TLSFiles(str(paths.ca), str(paths.cert), str(paths.key))


@pytest.fixture
def tls_cluster(cluster_factory):
    c = cluster_factory(3, tls=True).start()
    c.wait_leader()
    return c


def test_tls_cluster_serves_an_admin_and_replicates(tls_cluster):
    c = tls_cluster
    with c.client() as cl:
        idx = cl.put("k", b"v")
        assert cl.get("k") == b"v"
    c.wait_applied(idx)
    st = c.status("n1")
    assert st["tls"]["enabled"] and st["tls"]["name"] == "n1"
    assert 364 < st["tls"]["days_left"] <= 365 and st["tls"]["warning"] is None
    assert all(p["connected"] for p in st["peers"].values())


def test_no_certificate_foreign_ca_and_plaintext_are_refused(tls_cluster, tmp_path):
    c = tls_cluster
    ca = str(c.certs / "ca.crt")
    # TLS without a client certificate: the handshake is refused, the client says so.
    with pytest.raises((Timeout, Unavailable)) as e:
        with Client(c.endpoints, timeout=1.5, tls=TLSFiles(ca)) as cl:
            cl.put("x", b"1")
    assert "certificate" in str(e.value)
    # A certificate from another CA (even with the admin role).
    other = tmp_path / "other"
    pki.init_ca(other, cluster="test")
    mallory = pki.issue_client(other, "admin", "admin")
    with pytest.raises((Timeout, Unavailable, TLSError)):
        with Client(c.endpoints, timeout=1.5,
                    tls=TLSFiles(ca, str(mallory.cert), str(mallory.key))) as cl:
            cl.put("x", b"1")
    # A server we do not trust: the client checks the node against its own CA.
    with pytest.raises(TLSError, match="TLS with .* failed"):
        with Client(c.endpoints[:1], timeout=1.5, tls=files(mallory)) as cl:
            cl.get("x")
    # Plaintext: refused, and the error says what to try.
    with pytest.raises((Timeout, Unavailable)) as e:
        with Client(c.endpoints, timeout=1.5, tls=False) as cl:
            cl.put("x", b"1")
    assert "if the cluster uses TLS: give --cacert/--cert/--key" in str(e.value), str(e.value)
    logs = "".join(n.log_text() for n in c.nodes.values())
    assert "TLS handshake failed: no client certificate presented" in logs
    assert "TLS handshake failed: certificate not signed by this cluster's CA" in logs
    assert "TLS handshake failed: not TLS (a plaintext client or peer?)" in logs
    assert c.status("n1")["counters"]["tls_handshake_failures"] >= 1
    with c.client() as cl:
        assert cl.get("x") is None  # nothing got in


def test_client_role_reads_and_writes_but_may_not_administer(tls_cluster):
    c = tls_cluster
    eve = pki.issue_client(c.certs, "eve", "client")
    with Client(c.endpoints, timeout=5, tls=files(eve)) as cl:
        cl.put("app/x", b"1")
        assert cl.get("app/x") == b"1"
        assert cl.cas("app/x", b"1", b"2")
        assert cl.list("app/") == {"app/x": b"2"}
        for op, args in (("change_config", {"remove": ["n3"]}), ("snapshot", {}),
                         ("transfer_leader", {})):
            with pytest.raises(RequestError) as e:
                cl.admin(op, args)
            assert e.value.code == "permission_denied"
            assert "eve (role client) may not" in str(e.value)
        with pytest.raises(RequestError, match="permission|admin"):
            cl.status(c.endpoints[0])
    # raftctl names the command the operator ran, even when the refused request is one of
    # its steps (snapshot save reads the status first).
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-e", ",".join(c.endpoints),
                        "snapshot", "save", "/tmp/never-written.snap"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RAFTCTL_CACERT": str(c.certs / "ca.crt"),
                            "RAFTCTL_CERT": str(eve.cert), "RAFTCTL_KEY": str(eve.key)})
    assert r.returncode == 4, r.stderr
    assert r.stderr.startswith("raftctl: error: raftctl snapshot save: eve (role client) may "
                               "not"), r.stderr
    st = c.status(c.wait_leader())
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3"]  # nothing changed
    # A clean stop leaves no traceback in any log (the asyncio loop, which TLS uses, logged a
    # CancelledError for every open connection at exit).
    c.stop()
    for nid, node in c.nodes.items():
        assert "Traceback" not in node.log_text(), (nid, node.log_text()[-3000:])
    logs = "".join(n.log_text() for n in c.nodes.values())
    assert "refused 'change_config' from eve (role client)" in logs


async def _raw_hello(address: str, paths, claim: str, then: list | None = None) -> bytes:
    """Connect as a peer with certificate ``paths`` claiming to be node ``claim``, send the
    raft messages ``then``; return what the server sends before closing (b'' = closed on us,
    None = still open after a second)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port),
                                                   ssl=client_context(files(paths)))
    writer.write(encode_hello(claim, "raftd", None))
    for msg in then or []:
        writer.write(encode_message(msg))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(100), 5 if not then else 1)
    except asyncio.TimeoutError:
        return None
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()


def test_peer_certificates_must_be_nodes_of_the_ca_and_members(tls_cluster):
    c = tls_cluster
    n9 = pki.issue_node(c.certs, "n9", ["127.0.0.1"])
    leader = c.wait_leader()
    target = c.nodes[leader]
    term = c.status(leader)["term"]
    # A valid node certificate for n9, never added: it may connect (a leader or candidate this
    # node has not heard of yet must reach it, thesis §4.1), but a transfer vote request, which
    # would bypass vote withholding, is dropped, and an ordinary one with a far higher term and
    # a longer log is withheld: a leader is alive (§4.2.3).
    transfer = RequestVote("n9", leader, term + 100, 10**6, term + 99, True)
    plain = RequestVote("n9", leader, term + 200, 10**6, term + 199, False)
    assert asyncio.run(_raw_hello(target.address, n9, "n9", [transfer, plain])) is None
    # n9's certificate claiming to be a member, and a client certificate speaking HELLO.
    assert asyncio.run(_raw_hello(target.address, n9, "n2")) == b""
    admin = pki.CertPaths(c.certs / "client-admin.crt", c.certs / "client-admin.key",
                          c.certs / "ca.crt")
    assert asyncio.run(_raw_hello(target.address, admin, "n2")) == b""
    log = target.log_text()
    assert "dropping RequestVote from n9: not a member of the configuration" in log
    assert "certificate is for 'n9' but the peer says it is 'n2'" in log
    assert "is not a node certificate of this cluster's CA" in log
    st = c.status(leader)
    assert st["term"] == term and st["role"] == "leader"  # n9 swayed nothing
    assert st["counters"]["peers_refused"] == 2 and st["counters"]["peer_messages_dropped"] == 1
    with c.client() as cl:
        cl.put("still", b"up")


def test_a_lagging_node_votes_for_and_follows_servers_it_has_not_heard_of(tls_cluster):
    """n3 is down while n4 and n5 join; then n1 and n2 stop.  n3's log names neither n4 nor
    n5, yet its vote is needed (3 of 5) and it must then be caught up: membership is the
    cluster's, not n3's stale view (thesis §4.1)."""
    c = tls_cluster
    c.nodes["n3"].stop()
    new = [c.add_join_node(), c.add_join_node()]
    for n in new:
        wait_for(lambda n=n: c.status(n.id) is not None, what=f"{n.id} to listen")
    with c.client(timeout=30) as cl:
        r = cl.admin("change_config", {"add": {n.id: n.address for n in new}})
        assert sorted(r["configuration"]["voters"]) == ["n1", "n2", "n3", "n4", "n5"]
        idx = cl.put("while-n3-was-down", b"1")
    c.wait_applied(idx, ["n4", "n5"])
    c.nodes["n1"].stop()
    c.nodes["n2"].stop()
    c.nodes["n3"].start()
    leader = c.wait_leader(30, exclude={"n1", "n2", "n3"})
    assert leader in ("n4", "n5")
    with c.client(timeout=30) as cl:
        idx = cl.put("after", b"2")
    wait_for(lambda: (c.status("n3") or {}).get("applied_index", 0) >= idx, 20,
             "n3 to catch up from a leader it had not heard of")
    assert sorted(c.status("n3")["configuration"]["voters"]) == ["n1", "n2", "n3", "n4", "n5"]


def test_plaintext_node_cannot_join_a_tls_cluster(tls_cluster):
    c = tls_cluster
    # n4 in plaintext, configured to think it belongs: its messages are refused, and an
    # operator trying to add it is told the node there is not who it should be.
    host = _new_host()
    addr = f"{host}:{free_port(host)}"
    d = c.root / "n4"
    d.mkdir(mode=0o700)
    peers = {**{nid: n.address for nid, n in c.nodes.items()}, "n4": addr}
    (d / "raftd.yaml").write_text(yaml.safe_dump({
        "id": "n4", "listen": addr, "data_dir": str(d), "peers": peers, "tick_ms": 20,
        "election_timeout_ms": 300, "heartbeat_interval_ms": 60}))
    from tests.e2e.harness import Node
    n4 = Node("n4", addr, d, d / "raftd.yaml")
    c.nodes["n4"] = n4
    n4.start()
    leader = c.wait_leader()
    term = c.status(leader)["term"]
    wait_for(lambda: "not TLS (a plaintext client or peer?)" in c.nodes[leader].log_text(),
             what="the leader to refuse n4's plaintext connection")
    with c.client() as cl:
        with pytest.raises(RequestError) as e:
            cl.admin("change_config", {"add": {"n5": addr}})
        assert e.value.code == "unreachable" and "nothing was changed" in str(e.value)
    st = c.status(leader)
    assert st["term"] == term and st["role"] == "leader"  # n4 disrupted nothing
    assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3"]


def test_tls_node_joins_by_membership_change(tls_cluster):
    c = tls_cluster
    n4 = c.add_join_node()
    wait_for(lambda: c.status("n4") is not None, what="n4 to listen")
    with c.client(timeout=30) as cl:
        cl.put("before", b"1")
        r = cl.admin("change_config", {"add": {"n4": n4.address}})
    assert "n4" in r["configuration"]["voters"]
    wait_for(lambda: (c.status("n4") or {}).get("applied_index", 0) >= r["index"], 15,
             "n4 to catch up over TLS")
    # A wrong name at the address is caught before anything is logged.
    n5 = c.add_join_node()
    wait_for(lambda: c.status("n5") is not None, what="n5 to listen")
    with c.client(timeout=30) as cl:
        with pytest.raises(RequestError) as e:
            cl.admin("change_config", {"add": {"n6": n5.address}})
    assert e.value.code == "unreachable" and "expected node n6" in str(e.value)


def test_sighup_reloads_certificates(tls_cluster):
    c = tls_cluster
    n1 = c.nodes["n1"]
    before = c.status("n1")["tls"]
    # Rotate n1's certificate to one that expires in 10 days: status warns after SIGHUP.
    pki.issue_node(c.certs, "n1", [n1.host], days=10, force=True)
    n1.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: c.status("n1")["tls"]["days_left"] < 11, what="reload")
    after = c.status("n1")["tls"]
    assert after["not_after"] != before["not_after"]
    assert after["warning"] and "expires in" in after["warning"]
    assert "SIGHUP: certificates reloaded" in n1.log_text()
    # New connections use the new certificate and the cluster still works.
    with Client([n1.address], timeout=3, tls=c.client_tls) as cl:
        assert cl.status(n1.address)["tls"]["days_left"] < 11
    with c.client() as cl:
        cl.put("after-reload", b"1")
    # A broken file: the reload fails loudly and the node keeps its certificates.
    cert = c.certs / "node-n1.crt"
    cert.write_text("not a certificate")
    n1.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "certificate reload failed" in n1.log_text(), what="failed reload")
    assert c.status("n1")["tls"]["not_after"] == after["not_after"]
    # raftctl status shows the expiry and the warning.
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-e", ",".join(c.endpoints),
                        "--cacert", c.client_tls.ca, "--cert", c.client_tls.cert,
                        "--key", c.client_tls.key, "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "cert_days_left" in r.stdout and "WARNING: n1: certificate" in r.stderr


def test_bad_tls_configuration_refuses_to_start(cluster_factory, tmp_path):
    c = cluster_factory(1, tls=True)
    node = c.nodes["n1"]
    conf = yaml.safe_load(node.config.read_text())
    other = tmp_path / "other"
    pki.init_ca(other)
    conf["tls"]["ca"] = str(other / "ca.crt")  # our cert was not issued by this CA
    node.config.write_text(yaml.safe_dump(conf))
    node.start()
    assert node.proc.wait(20) == 1
    assert "was not issued by the CA in" in node.log_text()


def test_data_dir_writable_by_others_refuses_to_start(cluster_factory):
    c = cluster_factory(1)
    node = c.nodes["n1"]
    os.chmod(node.data_dir, 0o777)
    node.start()
    assert node.proc.wait(20) == 1
    assert "is writable by group or others" in node.log_text()
    os.chmod(node.data_dir, 0o700)
    node.start()
    c.wait_leader()


def test_local_up_tls_and_local_add(tmp_path):
    import json
    import subprocess
    import sys

    def raftctl(*args, env=None):
        return subprocess.run([sys.executable, "-m", "raftctl.main", *args],
                              capture_output=True, text=True, timeout=120,
                              env={**{k: v for k, v in os.environ.items()
                                      if not k.startswith("RAFTCTL_")}, **(env or {})})

    d = tmp_path / "cl"
    port = free_base_port(4)  # n4 comes next to them (local add)
    r = raftctl("local", "up", "--tls", "--dir", str(d), "--base-port", str(port), "-o", "json")
    try:
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert set(info["tls"]) == {"ca", "cert", "key"}
        assert oct(os.stat(info["tls"]["key"]).st_mode & 0o777) == "0o600"
        eps = ",".join(info["endpoints"])
        env = {"RAFTCTL_ENDPOINTS": eps, "RAFTCTL_CACERT": info["tls"]["ca"],
               "RAFTCTL_CERT": info["tls"]["cert"], "RAFTCTL_KEY": info["tls"]["key"]}
        assert raftctl("kv", "put", "a", "1", env=env).returncode == 0
        plain = raftctl("--timeout", "1", "kv", "get", "a", env={"RAFTCTL_ENDPOINTS": eps})
        assert plain.returncode == 3 and len(plain.stderr.splitlines()) == 1
        r = raftctl("local", "add", "--dir", str(d), "-o", "json")
        assert r.returncode == 0, r.stderr
        st = json.loads(raftctl("status", "-o", "json", env=env).stdout)
        assert sorted(st["configuration"]["voters"]) == ["n1", "n2", "n3", "n4"]
        assert all(n["cert_days_left"] > 300 for n in st["nodes"])
    finally:
        raftctl("local", "down", "--dir", str(d))


def test_client_ca_and_ca_rotation(tls_cluster, tmp_path):
    c = tls_cluster
    old_ca = (c.certs / "ca.crt").read_text()
    # 1. A second CA for applications (client_ca): its client certificates may use keys, but
    #    a "node" certificate it signed is no node of this cluster.
    apps = tmp_path / "apps"
    pki.init_ca(apps, cluster="apps")
    app1 = pki.issue_client(apps, "app1", "client")
    fake_n2 = pki.issue_node(apps, "n2", ["127.0.0.1"])
    # 2. CA rotation, step 1: every node trusts old + new CA (one file, both certificates).
    new = tmp_path / "new"
    pki.init_ca(new, cluster="test")
    bundle = c.certs / "ca-bundle.crt"
    bundle.write_text(old_ca + (new / "ca.crt").read_text())
    c.client_tls = TLSFiles(str(bundle), c.client_tls.cert, c.client_tls.key)  # clients too
    for node in c.nodes.values():
        conf = yaml.safe_load(node.config.read_text())
        conf["tls"]["ca"] = str(bundle)
        conf["tls"]["client_ca"] = str(apps / "ca.crt")
        node.config.write_text(yaml.safe_dump(conf))
        node.stop()  # client_ca is read at start; ca files are re-read on SIGHUP too
        node.start()
    c.wait_leader()
    # (the application still checks the nodes against the cluster CA)
    with Client(c.endpoints, timeout=10,
                tls=TLSFiles(str(bundle), str(app1.cert), str(app1.key))) as cl:
        cl.put("from-app", b"1")
        with pytest.raises(RequestError, match="needs an admin certificate"):
            cl.admin("snapshot")
    fake = pki.CertPaths(fake_n2.cert, fake_n2.key, bundle)
    assert asyncio.run(_raw_hello(c.nodes["n1"].address, fake, "n2")) == b""
    assert "is not a node certificate of this cluster's CA" in c.nodes["n1"].log_text()
    # Step 2: n1 gets a certificate of the new CA (SIGHUP); the others still have old ones.
    p = pki.issue_node(new, "n1", [c.nodes["n1"].host])
    conf = yaml.safe_load(c.nodes["n1"].config.read_text())
    for key in ("cert", "key"):
        with open(conf["tls"][key], "w") as f:
            f.write(getattr(p, key).read_text())
    c.nodes["n1"].proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: certificates reloaded" in c.nodes["n1"].log_text(), what="reload")
    # Links made from now on use it: restart n2 and n3 so every link reconnects.
    for nid in ("n2", "n3"):
        c.nodes[nid].kill9()
        c.nodes[nid].start()
    c.wait_leader()
    new_admin = pki.issue_client(new, "admin", "admin")
    with Client(c.endpoints, timeout=10,
                tls=TLSFiles(str(bundle), str(new_admin.cert), str(new_admin.key))) as cl:
        idx = cl.put("after-rotation", b"1")
    c.wait_applied(idx)

    # n1 (new CA) and the old-CA nodes hold live mutual-TLS links.  Which links exist depends
    # on who leads: a follower opens a link only to a server it sends to, so n2 may have none
    # to n1 (the full suite once saw KeyError 'n1' here, with n3 leading).
    def cross_ca_link() -> bool:
        sts = {nid: c.status(nid)["peers"] for nid in ("n1", "n2", "n3")}
        return any(sts[a].get(b, {}).get("connected")
                   for a, b in (("n1", "n2"), ("n1", "n3"), ("n2", "n1"), ("n3", "n1")))
    wait_for(cross_ca_link, what="a link between n1 and an old-certificate node")


def test_raftctl_without_or_with_foreign_certificates_gets_a_tls_hint_fast(tls_cluster, tmp_path):
    """Issue 16 §5: a plaintext raftctl against a TLS cluster said `no node is reachable`
    (status) or waited the whole timeout (kv); each command now says TLS, within a second."""
    import subprocess
    import sys

    c = tls_cluster
    other = tmp_path / "other"
    pki.init_ca(other, cluster="test")
    mallory = pki.issue_client(other, "admin", "admin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    env["RAFTCTL_ENDPOINTS"] = ",".join(c.endpoints)
    foreign = ["--cacert", str(c.certs / "ca.crt"), "--cert", str(mallory.cert),
               "--key", str(mallory.key)]
    for extra in ([], foreign):
        for args in (["status"], ["health"], ["kv", "get", "a"], ["kv", "put", "a", "b"]):
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "raftctl.main", "--timeout", "30", *extra,
                                *args],
                               capture_output=True, text=True, timeout=60, env=env)
            took = time.monotonic() - t0
            assert r.returncode in (3, 4), (args, r.stdout, r.stderr)
            assert "TLS" in r.stderr or "certificate" in r.stderr, (extra, args, r.stderr)
            assert took < 8, (args, took)  # not the 30 s timeout (about 0.6 s when idle)
    with c.client() as cl:
        assert cl.get("a") is None
