"""What `raftctl bootstrap` will do, decided before anything changes on any host.

``plan(probes, inventory, build)`` is pure: given what preflight found on every host (one
``op_probe`` answer each, raftctl/remote.py) and the inventory, it says per host what to
install, which config to write, whether to start or restart it, what to roll back to if the
restart fails, and what to refuse (with the exit code) instead.  The executors in
raftctl/bootstrap/apply.py carry a Plan out over SSH; tests/cli/test_bootstrap_plan.py checks
plans without any sshd.

The initial membership (a config's ``peers``) matters only the first time a node starts: after
that the cluster's configuration lives in the log (Raft §6), with the addresses it was made
with.  So a config is never rewritten with addresses that differ from those, and a config is
never written whose ``peers`` entry for the node differs from its ``listen`` (issue 16 §10).

A new cluster gets a new random ``cluster_id`` in every node's config (issue 14 §9), the same
on all its nodes; a cluster that exists keeps the one its configs hold (or none, for a cluster
bootstrapped before ids: its nodes derived one and keep it in their data dirs).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from raftd.config import dump_config

from ..errors import FAILED, USAGE
from ..inventory import Host, Inventory


@dataclass(frozen=True)
class Refusal:
    """Why the plan cannot be carried out; ``host`` names the host it is about, if one."""
    message: str
    code: int = USAGE
    kind: str = "usage"
    host: str | None = None


@dataclass(frozen=True)
class Rollback:
    """What a node ran before an upgrade, to re-activate if the upgraded node fails."""
    build: str
    version: str | None
    wheel: str | None
    config: str | None


@dataclass(frozen=True)
class HostPlan:
    name: str
    running: bool
    installed: bool
    build_same: bool
    config_same: bool
    config: str | None  # config text to write; None keeps the host's
    install: bool  # ship and install the build
    start: bool  # first bootstrap / resume: start the stopped node
    restart: bool  # --upgrade: stop, switch build/config, start, in a rolling order
    rollback: Rollback | None = None

    @property
    def activate(self) -> bool:
        return self.install or self.config is not None


@dataclass(frozen=True)
class Plan:
    mode: Literal["start", "upgrade"]
    hosts: tuple[HostPlan, ...]
    refusals: tuple[Refusal, ...] = ()
    summary: str = ""  # one line over several refusals

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.name == name)

    @property
    def changes(self) -> bool:
        return any(h.install or h.config is not None or h.start or h.restart
                   for h in self.hosts)


# ------------------------------------------------------------------------ preflight --
def preflight_problem(h: Host, probe: dict, inv: Inventory, offline: bool) -> str | None:
    """What makes host ``h`` unusable, from its probe; None if it is fine."""
    running, installed = _status(probe).get("running"), _status(probe).get("installed")
    py = f"{inv.python} ({'.'.join(map(str, probe['python']))})"
    if not probe["venv"]:
        return f"{py} has no venv module (Debian/Ubuntu: apt-get install python3-venv)"
    if not offline and not probe["ensurepip"] and not installed:
        return (f"{py} cannot create virtualenvs with pip (no ensurepip; Debian/Ubuntu: "
                f"apt-get install python3-venv), or use --offline")
    for path, existing in probe.get("unwritable", []):
        return (f"{h.user} cannot create {path} ({existing} is not writable); set "
                f"cluster.install_dir / data_dir to a writable place")
    if inv.service == "systemd" and not probe["systemd"]:
        return ("cluster.service is systemd, but systemd is not running there or the SSH "
                "user is not root")
    if not running and not probe["port_free"]:
        return (f"raft port {h.endpoint} is in use ({probe['port_error']}); another process "
                f"listens there")
    return None


def manager(probe: dict) -> str:
    """systemd or process: what runs raftd there (kept once chosen)."""
    return (_status(probe).get("state") or {}).get("manager") or \
        ("systemd" if probe["systemd"] else "process")


def offline_problem(probe: dict, local_machine: str) -> str | None:
    if probe["machine"] != local_machine:
        return (f"--offline ships this machine's wheels ({local_machine}), but the host is "
                f"{probe['machine']}; install without --offline")
    return None


# ----------------------------------------------------------------------------- plan --
def _status(probe: dict) -> dict:
    return probe.get("status") or {}


def _remote_config(probe: dict) -> dict | None:
    try:
        cfg = yaml.safe_load(probe.get("config") or "")
    except yaml.YAMLError:
        return None
    return cfg if isinstance(cfg, dict) and cfg else None


def _comparable(cfg: dict | None) -> dict | None:
    """A node config without the initial membership (peers/join), which only matters the
    first time a node starts and must never change afterwards."""
    if cfg is None:
        return None
    return {k: v for k, v in cfg.items() if k not in ("peers", "join")}


def address_changes(inv: Inventory, configs: dict[str, dict]) -> dict[str, str]:
    """Per host, how its existing config's addresses differ from the inventory's (its own
    ``listen`` and every ``peers`` entry for a host of the inventory); empty if they agree."""
    want = {h.name: h.endpoint for h in inv.hosts}
    out = {}
    for name, cfg in configs.items():
        diffs = []
        if cfg.get("listen") != want[name]:
            diffs.append(f"listen {cfg.get('listen')} -> {want[name]}")
        for peer, addr in sorted((cfg.get("peers") or {}).items()):
            if peer != name and peer in want and addr != want[peer]:
                diffs.append(f"peer {peer} {addr} -> {want[peer]}")
        if diffs:
            out[name] = ", ".join(diffs)
    return out


def _refuse_address_changes(changes: dict[str, str], inventory_path: str) -> list[Refusal]:
    return [Refusal(f"its existing config differs from the inventory ({what}) and its "
                    f"data dir holds a log whose cluster configuration has the old addresses; "
                    f"nothing was changed (restore the old addresses in the inventory, or "
                    f"start over with: raftctl teardown --purge {inventory_path})",
                    USAGE, "config_mismatch", name)
            for name, what in changes.items()]


def address_refusals(probes: dict[str, dict], inv: Inventory, path: str) -> Plan | None:
    """The refusing Plan when the hosts' configs name other addresses than the inventory
    and some data dir holds a log; None otherwise.  Needs no build: bootstrap asks this
    right after preflight, before building or shipping anything."""
    configs = {h.name: c for h in inv.hosts if (c := _remote_config(probes[h.name]))}
    changes = address_changes(inv, configs)
    if not changes or not any(probes[n].get("has_log", True) for n in probes):
        return None
    refused = _refuse_address_changes(changes, path)
    return Plan("start", (), tuple(refused), "" if len(refused) == 1 else
                f"{len(refused)} hosts' configs differ from the inventory: "
                f"{', '.join(changes)}; nothing was changed")


def plan(probes: dict[str, dict], inv: Inventory, build: dict[str, Any], *,
         upgrade: bool = False, inventory_path: str = "") -> Plan:
    """Decide, for every host of ``inv`` (each with its probe), what bootstrap does."""
    path = inventory_path or inv.path
    configs = {h.name: c for h in inv.hosts if (c := _remote_config(probes[h.name]))}
    refused = address_refusals(probes, inv, path)
    if refused is not None:
        return refused
    # Before the configs may be dropped below: the data dirs keep the id they were started
    # with (<data_dir>/cluster_id) even when their logs are gone, and refuse another one.
    cluster_id = _cluster_id(configs)
    if address_changes(inv, configs):
        configs = {}  # no log anywhere: nothing remembers the old addresses; start afresh
    initial: dict[str, str] = {}
    for cfg in configs.values():
        if not cfg.get("join"):
            initial.update(cfg.get("peers") or {})
    hosts: list[HostPlan] = []
    refusals: list[Refusal] = []
    for h in inv.hosts:
        hp = _host_plan(h, probes[h.name], inv, build, configs.get(h.name), initial,
                        bool(configs), path, cluster_id)
        if isinstance(hp, Refusal):
            refusals.append(hp)
        else:
            hosts.append(hp)
    if refusals:
        what = ("are not members of the cluster" if {r.kind for r in refusals} == {"usage"}
                else "were refused")
        return Plan("start", (), tuple(refusals), "" if len(refusals) == 1 else
                    f"{len(refusals)} hosts {what}: "
                    f"{', '.join(r.host or '' for r in refusals)}; nothing was changed")
    running = any(hp.running for hp in hosts)
    if running and not upgrade:
        outdated = [hp for hp in hosts if hp.installed and not (hp.build_same and
                                                                  hp.config_same)]
        if outdated:
            return Plan("start", tuple(hosts), (_needs_upgrade(outdated, probes, build),))
    if upgrade and running:
        return Plan("upgrade", tuple(_for_upgrade(hp, probes[hp.name]) for hp in hosts))
    return Plan("start", tuple(hosts))


def _cluster_id(configs: dict[str, dict]) -> str | None:
    """The cluster_id of the nodes' configs: a new random one for a new cluster (no config
    anywhere), else the one the existing members' configs hold (None if they have none)."""
    if not configs:
        return secrets.token_hex(16)
    held = sorted({c["cluster_id"] for c in configs.values()
                   if not c.get("join") and isinstance(c.get("cluster_id"), str)})
    return held[0] if held else None


def _host_plan(h: Host, probe: dict, inv: Inventory, build: dict, cfg: dict | None,
               initial: dict[str, str], existing: bool, path: str,
               cluster_id: str | None) -> HostPlan | Refusal:
    if cfg is not None:
        peers, join = cfg.get("peers"), bool(cfg.get("join"))
    elif not existing:
        peers, join = None, False
    elif h.name in initial:
        peers, join = initial, False
    else:
        return Refusal(f"{h.name} is in the inventory but not a member of the cluster; add "
                       f"it with: raftctl bootstrap --add-host {h.name} {path}",
                       USAGE, "usage", h.name)
    text = inv.node_config_text(h, peers, join)
    if cluster_id is not None and not join:
        text += dump_config({"cluster_id": cluster_id})  # a join server takes the leader's
    new = yaml.safe_load(text)
    if not join and (new.get("peers") or {}).get(h.name) != new["listen"]:
        return Refusal(f"the config for {h.name} would list it in peers at "
                       f"{(new.get('peers') or {}).get(h.name)} but listen at "
                       f"{new['listen']}; nothing was changed", USAGE, "config_mismatch",
                       h.name)
    st = _status(probe)
    same = _comparable(cfg) == _comparable(new)
    build_same = (st.get("state") or {}).get("build") == build["build"]
    installed, running = bool(st.get("installed")), bool(st.get("running"))
    return HostPlan(h.name, running, installed, build_same, same, None if same else text,
                    install=not installed or not build_same, start=not running,
                    restart=False)


def _needs_upgrade(outdated: list[HostPlan], probes: dict[str, dict], build: dict) -> Refusal:
    parts = []
    for hp in outdated:
        state = _status(probes[hp.name]).get("state") or {}
        what = ([f"build {state.get('build')} (raftd {state.get('version')}) -> "
                 f"{build['build']} (raftd {build['version']})"] if not hp.build_same else [])
        what += ["config differs"] if not hp.config_same else []
        parts.append(f"{hp.name}: " + ", ".join(what))
    return Refusal(f"the running cluster differs from this build/inventory ({'; '.join(parts)}"
                   f"); nothing was changed; re-run with --upgrade to roll it out one node at "
                   f"a time", FAILED, "needs_upgrade")


def _for_upgrade(hp: HostPlan, probe: dict) -> HostPlan:
    """--upgrade on a running cluster: every node that is not installed, outdated or not
    running is restarted in turn, and may roll back to what it ran before."""
    restart = not hp.installed or not hp.build_same or not hp.config_same or not hp.running
    state = _status(probe).get("state") or {}
    rollback = (Rollback(state["build"], state.get("version"), state.get("wheel"),
                         probe.get("config")) if state.get("build") else None)
    return HostPlan(hp.name, hp.running, hp.installed, hp.build_same, hp.config_same,
                    hp.config, install=restart and hp.install, start=False, restart=restart,
                    rollback=rollback if restart else None)
