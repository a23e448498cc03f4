"""Trial 7 of issue 16, finding A: with the README's TLS variables exported for one cluster,
`local up` of another cluster failed (TLS: "certificate not signed by this cluster's CA",
node left running; plaintext: "no leader elected within 20s" though its node led).  The
local commands now use DIR's own credentials, or plaintext for a plaintext DIR."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from raftctl.commands.local import free_base_port

pytestmark = pytest.mark.e2e


def raftctl(*args, env):
    return subprocess.run([sys.executable, "-m", "raftctl.main", *args], capture_output=True,
                          text=True, timeout=90, env=env)


def test_local_up_uses_its_own_clusters_credentials_not_the_environments(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    dirs = [tmp_path / name for name in ("secure", "plain", "secure2")]
    try:
        r = raftctl("local", "up", "--tls", "--dir", str(dirs[0]), "--nodes", "1",
                    "--base-port", str(free_base_port(1)), env=clean)
        assert r.returncode == 0, r.stderr
        tls = yaml.safe_load((dirs[0] / "cluster.yaml").read_text())["tls"]
        exported = {**clean, "RAFTCTL_CACERT": tls["ca"], "RAFTCTL_CERT": tls["cert"],
                    "RAFTCTL_KEY": tls["key"]}
        r = raftctl("local", "up", "--dir", str(dirs[1]), "--nodes", "1",
                    "--base-port", str(free_base_port(1)), env=exported)
        assert r.returncode == 0, r.stderr
        r = raftctl("local", "up", "--tls", "--dir", str(dirs[2]), "--nodes", "1",
                    "--base-port", str(free_base_port(1)), env=exported)
        assert r.returncode == 0, r.stderr
        for d in dirs[1:]:
            r = raftctl("local", "down", "--dir", str(d), env=exported)
            assert r.returncode == 0 and "stopped" in r.stdout, r.stderr
    finally:
        for d in dirs:
            if (d / "cluster.yaml").exists():
                raftctl("local", "down", "--dir", str(d), env=clean)
