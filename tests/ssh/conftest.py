"""Real OpenSSH servers on loopback for the SSH bootstrap tests.

Each "host" is its own `sshd -D -e -f CONFIG` on 127.0.1.x (a range the e2e tests do not use)
with its own host key, accepting only a generated ed25519 test key.  Raft ports are free ports
on the same address; everything is installed under pytest's tmp dirs.  The remote virtualenvs
are built with --offline from a wheelhouse downloaded once (and kept in ~/.cache/raftctl, so a
second run needs no index)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port
import yaml

SSHD = "/usr/sbin/sshd"
_BASE_OCTET = 10 + (os.getpid() % 40) * 5  # 127.0.1.<octet>: parallel runs do not collide


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, stdin=subprocess.DEVNULL)
    return (path.with_suffix(".pub") if path.suffix else Path(str(path) + ".pub")).read_text()


@dataclass
class SSHServer:
    name: str
    address: str
    port: int
    directory: Path
    host_key_pub: str  # "ssh-ed25519 AAAA... comment"
    proc: subprocess.Popen | None = None

    @property
    def known_hosts_line(self) -> str:
        kind, b64 = self.host_key_pub.split()[:2]
        return f"[{self.address}]:{self.port} {kind} {b64}\n"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_sshd(name: str, address: str, root: Path, authorized_keys: Path) -> SSHServer:
    d = root / f"sshd-{name}"
    d.mkdir(parents=True)
    host_key = d / "ssh_host_ed25519_key"
    pub = _keygen(host_key, f"host-{name}")
    port = free_port(address)
    cfg = d / "sshd_config"
    cfg.write_text(f"""\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    log = open(d / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    log.close()
    server = SSHServer(name, address, port, d, pub, proc)
    deadline = time.monotonic() + 10
    while True:  # accepting = it sends its banner
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return server
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sshd for {name} did not start: "
                               f"{(d / 'sshd.log').read_text()[-2000:]}")
        time.sleep(0.05)


@dataclass
class SSHEnv:
    root: Path
    client_key: Path
    wrong_key: Path
    servers: list[SSHServer]
    raft_ports: dict[str, int]
    wheelhouse: Path
    python: str

    def known_hosts(self, path: Path, servers: list[SSHServer] | None = None) -> Path:
        path.write_text("".join(s.known_hosts_line for s in (servers or self.servers)))
        return path

    def inventory(self, path: Path, names: list[str], install_dir: Path,
                  known_hosts: Path | None = None, identity: Path | None = None,
                  **cluster) -> Path:
        """Write an inventory for the named servers (n1..n4)."""
        by_name = {s.name: s for s in self.servers}
        inv = {"cluster": {"name": "t", "install_dir": str(install_dir), "python": self.python,
                           "tick_ms": 20, "election_timeout_ms": 300,
                           "heartbeat_interval_ms": 60, "fsync": False, **cluster},
               "ssh": {"user": _user(), "identity_file": str(identity or self.client_key),
                       "known_hosts": str(known_hosts or self.known_hosts(
                           path.parent / "known_hosts")),
                       "connect_timeout": 5},
               "hosts": [{"name": n, "address": by_name[n].address,
                          "ssh_port": by_name[n].port, "raft_port": self.raft_ports[n]}
                         for n in names]}
        path.write_text(yaml.safe_dump(inv, sort_keys=False))
        return path


def _user() -> str:
    import getpass
    return getpass.getuser()


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory) -> SSHEnv:
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing (apt-get install openssh-server)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    elif not os.path.isdir("/run/sshd"):
        pytest.skip("sshd needs /run/sshd (create it as root)")
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is missing")
    root = tmp_path_factory.mktemp("ssh")
    client_key = root / "id_ed25519"
    authorized = root / "authorized_keys"
    authorized.write_text(_keygen(client_key, "raftctl-test"))
    wrong_key = root / "id_wrong"
    _keygen(wrong_key, "not-authorized")

    # One wheelhouse per machine (pip download needs the index only the first time).
    from raftctl.ssh import build_wheel, cache_dir, dependency_wheels, project_source
    src = project_source()
    if src is None:
        pytest.skip("not running from a source tree: cannot build the raftd wheel")
    wheel = build_wheel(src)
    wheelhouse = cache_dir() / "test-wheelhouse"
    dependency_wheels(wheel, root / "deps-check", wheelhouse)

    servers = []
    try:
        for i in range(4):
            name = f"n{i + 1}"
            servers.append(_start_sshd(name, f"127.0.1.{_BASE_OCTET + i}", root, authorized))
        env = SSHEnv(root=root, client_key=client_key, wrong_key=wrong_key, servers=servers,
                     raft_ports={s.name: free_port(s.address) for s in servers},
                     wheelhouse=wheelhouse,
                     python=os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
        yield env
    finally:
        for s in servers:
            s.stop()
