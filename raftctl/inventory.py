"""The inventory: one YAML file describing a cluster deployed over SSH.

    cluster: {name: demo, install_dir: /opt/raftd/demo, python: python3, tick_ms: 25, ...}
    ssh:     {user: root, port: 22, identity_file: ~/.ssh/id_ed25519, known_hosts: ./known_hosts}
    hosts:
      - {name: n1, address: 10.0.0.1, raft_port: 7001}
      - {name: n2, address: 10.0.0.2, raft_port: 7001, ssh_port: 2222, data_dir: /srv/raftd}

Every error names the file, the host and the key, e.g.
``inventory.yaml: hosts[1] (n2): key 'raft_port': expected int, got str '7102'``.
Unknown keys are errors.  Relative local paths (identity_file, known_hosts) are relative to the
inventory file; ``~`` expands.  Remote paths (install_dir, data_dir) must be absolute.

On one machine, several hosts of the inventory may share one address (e.g. 127.0.0.1): each
host therefore gets its own directory, ``<install_dir>/<host name>``, holding its virtualenv,
config, log and pid files; its data directory defaults to ``<install_dir>/data/<host name>``.
"""
from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from raftd.config import KEY_TYPES
from raftd.config import ConfigError, dump_config, parse_config, read_yaml, split_address
from raftd.validate import Validator

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# raftd config keys the inventory may set for every node (under `cluster:`); the per-node ones
# (id, listen, data_dir, peers, join) come from the hosts, `cluster` from cluster.name.
TUNING_KEYS = tuple(k for k in KEY_TYPES
                    if k not in ("id", "listen", "data_dir", "peers", "join", "cluster",
                                 "metrics_listen", "tls"))
# cluster.tls: true (certificates in <inventory dir>/<cluster>-certs) or {certs_dir: PATH}:
# raftctl makes the CA and certificates there and ships each host its own (docs/SECURITY.md).
CLUSTER_KEYS = ("name", "install_dir", "python", "service", "tls") + TUNING_KEYS
SSH_KEYS = ("user", "port", "identity_file", "known_hosts", "connect_timeout")
HOST_KEYS = ("name", "address", "ssh_port", "raft_port", "raft_address", "data_dir", "user")
SERVICES = ("auto", "systemd", "process")


class InventoryError(ConfigError):
    """The inventory file is missing, unreadable or invalid (exit code 2)."""


@dataclass(frozen=True)
class SSHSettings:
    user: str
    port: int = 22
    identity_file: str | None = None  # absolute local path, or None: ssh-agent / ~/.ssh keys
    known_hosts: str = "~/.ssh/known_hosts"  # absolute local path
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # where SSH connects
    raft_port: int
    ssh_port: int
    user: str
    raft_address: str  # the address raftd listens on (default: address)
    install_dir: str  # the cluster's install_dir
    data_dir: str
    cluster: str
    index: int = 0  # position in the inventory (for messages)

    @property
    def root(self) -> str:
        """This node's own directory on the host: venvs, config, log, pid files."""
        return f"{self.install_dir}/{self.name}"

    @property
    def endpoint(self) -> str:
        """host:port of raftd (peers and clients)."""
        a = self.raft_address
        return f"[{a}]:{self.raft_port}" if ":" in a else f"{a}:{self.raft_port}"

    @property
    def ssh_target(self) -> str:
        return f"{self.user}@{self.address}:{self.ssh_port}"

    @property
    def unit(self) -> str:
        return f"raftd-{self.cluster}-{self.name}.service"

    @property
    def label(self) -> str:
        """How messages name the host: ``n2 (10.0.0.2:22)``."""
        return f"{self.name} ({self.address}:{self.ssh_port})"


@dataclass(frozen=True)
class Inventory:
    path: str
    name: str
    install_dir: str
    python: str
    service: str
    tuning: dict[str, Any]
    ssh: SSHSettings
    hosts: list[Host] = field(default_factory=list)
    tls_dir: str | None = None  # local certificates directory when the cluster uses TLS

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise InventoryError(f"{self.path}: no host named {name!r} (hosts: "
                             f"{', '.join(h.name for h in self.hosts)})")

    def select(self, names: list[str] | None) -> list[Host]:
        """The hosts named (all when ``names`` is empty), in inventory order."""
        if not names:
            return list(self.hosts)
        wanted = [self.host(n) for n in names]
        return [h for h in self.hosts if h in wanted]

    def node_config(self, host: Host, peers: dict[str, str] | None = None,
                    join: bool = False) -> dict:
        """The raftd config of ``host`` (as a dict): id = host name, listen, data_dir, peers
        (all hosts unless given) or ``join: true``, cluster name and the tuning keys."""
        cfg: dict[str, Any] = {"id": host.name, "listen": host.endpoint,
                               "data_dir": host.data_dir}
        if join:
            cfg["join"] = True
        else:
            cfg["peers"] = dict(peers) if peers is not None else \
                {h.name: h.endpoint for h in self.hosts}
        cfg["cluster"] = self.name
        cfg.update(self.tuning)
        if self.tls_dir:
            cfg["tls"] = {"ca": f"{host.root}/tls/ca.crt", "cert": f"{host.root}/tls/node.crt",
                          "key": f"{host.root}/tls/node.key"}
        return cfg

    def node_config_text(self, host: Host, peers: dict[str, str] | None = None,
                         join: bool = False) -> str:
        cfg = self.node_config(host, peers, join)
        parse_config(cfg, f"{self.path}: {host.name}")  # never ship a config raftd refuses
        return (f"# raftd node {host.name} of cluster {self.name}; written by raftctl "
                f"bootstrap from {Path(self.path).name}\n" + dump_config(cfg))


# ------------------------------------------------------------------------- loading --
def _local_path(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = base / p
    return str(p.resolve())


def _remote_path(value: str) -> str:
    v = value.rstrip("/") or "/"
    return v


def load_inventory(path: str | Path) -> Inventory:
    p = Path(path)
    raw = read_yaml(p, InventoryError)
    return parse_inventory(raw, str(p), p.resolve().parent)


def parse_inventory(raw: Any, source: str = "inventory.yaml",
                    base: Path | None = None) -> Inventory:
    """Validate an inventory (already parsed YAML).  ``base``: the directory relative local
    paths are relative to."""
    base = base or Path.cwd()
    v = Validator(source, InventoryError)
    if not isinstance(raw, dict):
        raise InventoryError(f"{source}: expected a mapping with the keys cluster, ssh and hosts"
                             f" at the top level")
    v.check_keys(raw, ("cluster", "ssh", "hosts"))
    for key in ("cluster", "hosts"):
        if key not in raw:
            raise v.err("", key, "missing (required)")
    cluster = _parse_cluster(v, raw["cluster"], base)
    ssh = _parse_ssh(v, raw.get("ssh") or {}, base)
    hosts = _parse_hosts(v, raw["hosts"], cluster, ssh)
    return Inventory(path=source, name=cluster["name"], install_dir=cluster["install_dir"],
                     python=cluster["python"], service=cluster["service"],
                     tuning=cluster["tuning"], ssh=ssh, hosts=hosts, tls_dir=cluster["tls_dir"])


def _parse_cluster(v: Validator, cl: Any, base: Path) -> dict:
    if not isinstance(cl, dict):
        raise v.err("", "cluster", f"expected a mapping, got {type(cl).__name__}")
    v.check_keys(cl, CLUSTER_KEYS, "", "cluster.")
    name = v.typed(cl, "name", str, "", "cluster.", required=True)
    if not _NAME_RE.match(name):
        raise v.err("", "cluster.name", f"{name!r} is not a valid name (letters, digits, '_', "
                                        f"'-', '.'; it is used in paths and unit names)")
    install_dir = _remote_path(v.typed(cl, "install_dir", str, "", "cluster.",
                                       default=f"/opt/raftd/{name}"))
    if not install_dir.startswith("/"):
        raise v.err("", "cluster.install_dir", f"must be an absolute path on the hosts, "
                                               f"got {install_dir!r}")
    if install_dir == "/":
        raise v.err("", "cluster.install_dir", "must not be /")
    python = v.typed(cl, "python", str, "", "cluster.", default="python3")
    if not python.strip():
        raise v.err("", "cluster.python", "must not be empty")
    service = v.typed(cl, "service", str, "", "cluster.", default="auto")
    if service not in SERVICES:
        raise v.err("", "cluster.service", f"expected one of {', '.join(SERVICES)}, "
                                           f"got {service!r}")
    tuning = {k: cl[k] for k in TUNING_KEYS if k in cl}
    tls = cl.get("tls", False)
    tls_dir = None
    if isinstance(tls, dict):
        v.check_keys(tls, ("certs_dir",), "", "cluster.tls.")
        tls_dir = _local_path(v.typed(tls, "certs_dir", str, "", "cluster.tls.",
                                      required=True), base)
    elif tls is True:
        tls_dir = str((base / f"{name}-certs").resolve())
    elif tls is not False:
        raise v.err("", "cluster.tls", f"expected true, false or {{certs_dir: PATH}}, "
                                       f"got {tls!r}")
    # raftd validates the tuning values (types, ranges, heartbeat vs election timeout):
    try:
        parse_config({"id": "x", "listen": "127.0.0.1:1", "data_dir": "/x", "join": True,
                      **tuning}, f"{v.source}: cluster")
    except ConfigError as e:
        raise InventoryError(str(e)) from None
    return {"name": name, "install_dir": install_dir, "python": python, "service": service,
            "tuning": tuning, "tls_dir": tls_dir}


def _parse_ssh(v: Validator, ss: Any, base: Path) -> SSHSettings:
    if not isinstance(ss, dict):
        raise v.err("", "ssh", f"expected a mapping, got {type(ss).__name__}")
    v.check_keys(ss, SSH_KEYS, "", "ssh.")
    try:
        default_user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry
        default_user = "root"
    user = v.typed(ss, "user", str, "", "ssh.", default=default_user)
    port = v.port("", "ssh.port", v.typed(ss, "port", int, "", "ssh.", default=22))
    identity = v.typed(ss, "identity_file", str, "", "ssh.")
    known_hosts = v.typed(ss, "known_hosts", str, "", "ssh.", default="~/.ssh/known_hosts")
    timeout = v.typed(ss, "connect_timeout", float, "", "ssh.", default=10.0)
    if timeout <= 0:
        raise v.err("", "ssh.connect_timeout", "must be positive")
    return SSHSettings(user=user, port=port,
                       identity_file=_local_path(identity, base) if identity else None,
                       known_hosts=_local_path(known_hosts, base), connect_timeout=timeout)


def _parse_hosts(v: Validator, hs: Any, cluster: dict, ssh: SSHSettings) -> list[Host]:
    if not isinstance(hs, list) or not hs:
        raise v.err("", "hosts", "expected a non-empty list of hosts")
    hosts: list[Host] = []
    names: dict[str, int] = {}
    raft_eps: dict[tuple[str, int], int] = {}
    for i, h in enumerate(hs):
        host = _parse_host(v, i, h, cluster, ssh)
        where = f"hosts[{i}] ({host.name})"
        if host.name in names:
            raise v.err(where, "name", f"duplicate host name {host.name!r} (also "
                                       f"hosts[{names[host.name]}])")
        names[host.name] = i
        ep = (host.raft_address, host.raft_port)
        if ep in raft_eps:
            j = raft_eps[ep]
            raise v.err(where, "raft_port", f"{ep[0]}:{ep[1]} is also used by "
                                            f"hosts[{j}] ({hs[j]['name']})")
        raft_eps[ep] = i
        hosts.append(host)
    # Two hosts on one machine (same address) must not share a data directory.
    seen_dirs: dict[tuple[str, str], Host] = {}
    for h in hosts:
        k = (h.address, h.data_dir)
        if k in seen_dirs:
            o = seen_dirs[k]
            raise v.err(f"hosts[{h.index}] ({h.name})", "data_dir",
                        f"{h.data_dir} is also the data_dir of hosts[{o.index}] ({o.name}) on "
                        f"{h.address}")
        seen_dirs[k] = h
    return hosts


def _parse_host(v: Validator, i: int, h: Any, cluster: dict, ssh: SSHSettings) -> Host:
    where = f"hosts[{i}]"
    if not isinstance(h, dict):
        raise InventoryError(f"{v.source}: {where}: expected a mapping with the keys name, "
                             f"address, raft_port, got {type(h).__name__}")
    hname = h.get("name")
    if isinstance(hname, str) and hname:
        where = f"hosts[{i}] ({hname})"
    v.check_keys(h, HOST_KEYS, where)
    hname = v.typed(h, "name", str, where, required=True)
    if not _NAME_RE.match(hname):
        raise v.err(where, "name", f"{hname!r} is not a valid node name (letters, digits, "
                                   f"'_', '-', '.')")
    if hname == "data":
        raise v.err(where, "name", "'data' is reserved (<install_dir>/data holds the data "
                                   "directories)")
    address = v.typed(h, "address", str, where, required=True)
    raft_port = v.port(where, "raft_port", v.typed(h, "raft_port", int, where, required=True))
    ssh_port = v.port(where, "ssh_port", v.typed(h, "ssh_port", int, where, default=ssh.port))
    raft_address = v.typed(h, "raft_address", str, where, default=address)
    for key, value in (("address", address), ("raft_address", raft_address)):
        try:
            split_address(f"{value}:1")
        except ValueError:
            raise v.err(where, key, f"bad address {value!r} (expected an IP address or "
                                    f"host name)") from None
    if raft_address == address and raft_port == ssh_port:
        raise v.err(where, "raft_port", f"{raft_port} is also this host's SSH port")
    install_dir = cluster["install_dir"]
    data_dir = _remote_path(v.typed(h, "data_dir", str, where,
                                    default=f"{install_dir}/data/{hname}"))
    if not data_dir.startswith("/"):
        raise v.err(where, "data_dir", f"must be an absolute path on the host, got {data_dir!r}")
    if data_dir == "/":
        raise v.err(where, "data_dir", "must not be /")
    huser = v.typed(h, "user", str, where, default=ssh.user)
    return Host(name=hname, address=address, raft_port=raft_port, ssh_port=ssh_port,
                user=huser, raft_address=raft_address, install_dir=install_dir,
                data_dir=data_dir, cluster=cluster["name"], index=i)
