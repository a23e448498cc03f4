"""Issue 16 §6: `raftctl kv` talks to the cluster through raftd.client_socket (blocking
sockets, no asyncio or ssl to import), with the same answers and errors as raftd.client."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raftd import tls
from raftd.client import Client, RequestError, Unavailable
from raftd.client_socket import TLS_CA_ENV, SocketClient
from tests.e2e.harness import _new_host, free_port

pytestmark = pytest.mark.e2e

RAFTCTL = [sys.executable, "-m", "raftctl.main"]
# Modules `raftctl kv get` must not import: each costs start-up time on every run.
HEAVY = ("asyncio", "ssl", "yaml", "paramiko", "cryptography", "rich", "raftd.client",
         "raftd.config", "raftd.tls", "raftd.core.node", "raftd.core.messages",
         "raftctl.commands.bench", "raftctl.commands.bootstrap", "raftctl.commands.local")


def _loaded_by(argv: list[str], tmp_path) -> tuple[int, list[str]]:
    """Run raftctl with ``argv`` in a fresh interpreter: its exit code and the heavy modules
    it imported."""
    out = tmp_path / "modules.json"
    code = ("import json, sys\nfrom raftctl.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"json.dump([rc, sorted(m for m in sys.modules if m in {HEAVY!r})], "
            f"open({str(out)!r}, 'w'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")})
    assert r.returncode == 0, r.stderr
    rc, loaded = json.loads(out.read_text())
    return rc, loaded


def test_kv_get_imports_no_heavy_module(cluster_factory, tmp_path):
    c = cluster_factory(3).start()
    c.wait_leader()
    with c.client() as cl:
        cl.put("k", b"v")
    eps = ",".join(c.endpoints)
    assert _loaded_by(["-e", eps, "kv", "get", "k"], tmp_path) == (0, [])
    assert _loaded_by(["-e", eps, "kv", "get", "absent"], tmp_path) == (1, [])
    host = _new_host()
    refused = f"{host}:{free_port(host)}"  # nothing listens: the error path
    assert _loaded_by(["-e", refused, "kv", "get", "k"], tmp_path) == (3, [])


def test_socket_client_answers_as_the_library_client(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    # Followers first: the client must follow their leader hints.
    eps = sorted(c.endpoints, key=lambda e: e == c.nodes[leader].address)
    with SocketClient(eps, timeout=10) as sc, Client(eps, timeout=10) as ac:
        assert sc.put("a/1", b"x") > 0
        assert sc.put("a/2", "text") > 0  # str values are accepted, as UTF-8
        assert ac.get("a/2") == b"text" and sc.get("a/1") == b"x"
        assert sc.get("a/1", linearizable=False) in (b"x", None)
        assert sc.cas("a/1", b"x", b"y") and not sc.cas("a/1", b"x", b"z")
        assert sc.cas("a/3", None, b"new") and not sc.cas("a/3", None, b"again")
        assert sc.list("a/", page_size=2) == ac.list("a/") == {
            "a/1": b"y", "a/2": b"text", "a/3": b"new"}
        assert sc.delete("a/3") and not sc.delete("a/3") and sc.get("a/3") is None
        errors = []
        for client in (sc, ac):
            with pytest.raises(RequestError) as e:
                client.put("", b"x")
            errors.append((e.value.code, str(e.value)))
        assert errors[0] == errors[1] and errors[0][0] == "bad_request", errors
        # The leader dies: the next request finds the new one.
        c.nodes[leader].kill9()
        assert sc.put("after", b"1") > 0 and sc.get("after") == b"1"


def test_refused_everywhere_fails_fast_with_the_same_words():
    host = _new_host()
    eps = [f"{host}:{free_port(host)}", f"{host}:{free_port(host)}"]
    words = []
    for make in (SocketClient, Client):
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as e:
            with make(eps, timeout=5, refused_grace=0.3) as cl:
                cl.put("k", b"v")
        assert time.monotonic() - t0 < 1.5
        words.append(str(e.value))
    assert words[0] == words[1] == f"no raftd at {', '.join(eps)} (connection refused)"


def test_plaintext_kv_against_a_tls_cluster_gets_the_tls_hint(cluster_factory):
    c = cluster_factory(3, tls=True).start()
    c.wait_leader()
    eps = ",".join(c.endpoints)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    t0 = time.monotonic()
    r = subprocess.run(RAFTCTL + ["-e", eps, "kv", "get", "k"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 3, r.stderr
    assert "if the cluster uses TLS: give --cacert/--cert/--key" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 5
    # With the certificates, kv uses the library's TLS client.
    assert TLS_CA_ENV == tls.ENV["ca"]
    env.update({TLS_CA_ENV: str(c.certs / "ca.crt"), tls.ENV["cert"]: c.client_tls.cert,
                tls.ENV["key"]: c.client_tls.key})
    r = subprocess.run(RAFTCTL + ["-e", eps, "kv", "put", "k", "v"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout.startswith("OK "), r.stderr
