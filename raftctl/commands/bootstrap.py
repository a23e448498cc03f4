"""raftctl bootstrap | ssh status|start|stop|restart|logs | teardown: a cluster on hosts reached
over SSH, described by an inventory file (raftctl/inventory.py).

bootstrap:  preflight every host (connect, Python >= 3.11, raft port free) before touching any;
            build the raftd wheel and ship it by SFTP; install it into a virtualenv per build
            (<install_dir>/<host>/venvs/<build>, `venv` points at the current one); write each
            node's raftd config; start raftd under systemd when the host runs it, otherwise
            under a small supervisor script; wait for a leader.  Re-running changes nothing.
            --upgrade rolls a new build (or config) out one node at a time, leader last;
            --add-host NAME starts a new node in join mode and adds it by joint consensus.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import yaml

from raftd.client import AsyncClient

from ..cluster import gather_status
from ..context import OutputOpt, Settings, run, settings, usage_error
from ..errors import FAILED, UNAVAILABLE, USAGE, CliError
from ..inventory import Host, Inventory, load_inventory
from ..ssh import (HostError, Remote, Reporter, build_wheel, connect, dependency_wheels,
                   parallel, project_source, wheel_info)

ssh_app = typer.Typer(help="Day-2 operations on a cluster deployed with `raftctl bootstrap`:\n\n"
                           "status, start, stop, restart (rolling), logs.",
                      no_args_is_help=True)

InventoryArg = Annotated[Path, typer.Argument(metavar="INVENTORY",
                                              help="inventory YAML file")]
HostOpt = Annotated[Optional[list[str]], typer.Option(
    "--host", help="only this host (repeatable) [default: all hosts]")]
def _timeout_opt(default: float, what: str):
    return Annotated[Optional[float], typer.Option(
        "--timeout", help=f"seconds to wait for {what} [default: {default:g}]")]


BootstrapTimeoutOpt = _timeout_opt(60, "a leader, and for each node to catch up")
StartTimeoutOpt = _timeout_opt(30, "the started nodes and a leader")
RestartTimeoutOpt = _timeout_opt(60, "each node to come back and catch up")
AcceptOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys", help="record the host keys of hosts not yet in the known_hosts "
                                   "file (a changed key is always refused)")]


# ------------------------------------------------------------------------ sessions --
def _stderr(line: str) -> None:
    """One line on stderr, never wrapped (rich would wrap at 80 columns when piped)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class HostsFailed(CliError):
    """Some hosts failed; each HostError is one line naming its host."""

    def __init__(self, errors: list[HostError], summary: str, result: dict | None = None):
        if len(errors) == 1:
            message = f"{errors[0]}{'; ' + summary if summary else ''}"
        else:
            message = summary
        first = errors[0] if errors else None
        super().__init__(message, first.code if first else FAILED,
                         first.kind if first else "failed")
        self.errors = errors
        self.result = result


@dataclass
class Node:
    host: Host
    remote: Remote
    python: tuple[int, ...] = ()
    probe: dict = field(default_factory=dict)
    status: str = ""  # what this run did: started, running, upgraded, restarted, added, ...
    pid: int | None = None
    manager: str = "process"
    config_text: str | None = None  # to write (None: keep the host's)
    remote_config: dict | None = None
    build_same: bool = False
    config_same: bool = False

    @property
    def running(self) -> bool:
        return bool(self.probe.get("status", {}).get("running"))

    @property
    def installed(self) -> bool:
        return bool(self.probe.get("status", {}).get("installed"))

    @property
    def state(self) -> dict:
        return self.probe.get("status", {}).get("state") or {}


class Session:
    """The inventory, the options and the open SSH connections of one command."""

    def __init__(self, s: Settings, inventory: Path, accept_new: bool):
        self.s = s
        self.inv: Inventory = load_inventory(inventory)
        ensure_tls(self.inv, create=False)  # this cluster's admin certificate, if it has one
        self.inventory_path = inventory
        self.accept_new = accept_new
        self.remotes: dict[str, Remote] = {}
        self.rep: Reporter | None = None

    def note(self, text: str) -> None:
        if self.rep is not None:
            self.rep.note(text)
        else:
            _stderr(text)

    def step(self, h: Host, text: str) -> None:
        if self.rep is not None:
            self.rep.step(h, text)

    def done(self, h: Host, text: str, ok: bool = True) -> None:
        if self.rep is not None:
            self.rep.done(h, text, ok)

    def connect(self, h: Host) -> Remote:
        if h.name not in self.remotes:
            self.step(h, f"connecting to {h.user}@{h.address}:{h.ssh_port}")
            self.remotes[h.name] = connect(self.inv, h, self.accept_new, self.note)
        return self.remotes[h.name]

    def close(self) -> None:
        for r in self.remotes.values():
            r.close()
        self.remotes.clear()

    def args(self, h: Host, **extra) -> dict:
        return {"root": h.root, "data_dir": h.data_dir, "unit": h.unit, "name": h.name,
                "cluster": self.inv.name, "install_dir": h.install_dir, **extra}

    def endpoints(self, hosts: list[Host] | None = None) -> list[str]:
        return [h.endpoint for h in (hosts if hosts is not None else self.inv.hosts)]

    def cluster_status(self, hosts: list[Host] | None = None, timeout: float = 0.8) -> dict:
        return asyncio.run(gather_status(self.endpoints(hosts), timeout))

    def log_tail(self, h: Host, lines: int = 10) -> str:
        try:
            got = self.remotes[h.name].call("logs", **self.args(h, lines=lines))["lines"]
        except (HostError, KeyError):
            return "(log unavailable)"
        return "\n".join("    " + ln for ln in got) if got else "    (log is empty)"


def _errors(results) -> list[HostError]:
    out = []
    for item, _, err in results:
        if err is None:
            continue
        if isinstance(err, HostError):
            out.append(err)
        elif isinstance(err, KeyboardInterrupt):
            raise err
        else:
            h = item.host if isinstance(item, Node) else item
            out.append(HostError(h, f"{type(err).__name__}: {err}"))
    return out


def _session_run(s: Settings, sess_factory: Callable[[], Session],
                 body: Callable[[Session], int]) -> None:
    """Run ``body`` with a Session; per-host failures become one line each on stderr."""
    def wrapped() -> int:
        sess = sess_factory()
        try:
            return body(sess)
        except HostsFailed as e:
            if s.out.json and e.result is not None:
                s.out.emit_json(e.result)
            if len(e.errors) > 1:
                for err in e.errors:
                    _stderr(json.dumps({"error": err.kind, "host": err.host.name,
                                        "message": str(err), "exit_code": err.code})
                            if s.out.json else f"raftctl: error: {err}")
            raise
        finally:
            sess.close()
    run(s, wrapped)


# ------------------------------------------------------------------------ preflight --
def _preflight(sess: Session, hosts: list[Host], offline: bool) -> list[Node]:
    """Connect to every host in parallel and check it: Python, venv, raft port.  Raises
    HostsFailed (naming every failing host) before anything is changed anywhere."""
    inv = sess.inv

    def check(h: Host) -> Node:
        r = sess.connect(h)
        sess.step(h, "checking Python, the raft port and the installation")
        n = Node(h, r)
        n.probe = r.call("probe", **sess.args(h, host=h.raft_address, port=h.raft_port,
                                                   service=inv.service))
        p = n.probe
        n.python = tuple(p["python"])
        py = f"{inv.python} ({'.'.join(map(str, n.python))})"
        if not p["venv"]:
            raise HostError(h, f"{py} has no venv module (Debian/Ubuntu: apt-get install "
                               f"python3-venv)")
        if not offline and not p["ensurepip"] and not n.installed:
            raise HostError(h, f"{py} cannot create virtualenvs with pip (no ensurepip; "
                               f"Debian/Ubuntu: apt-get install python3-venv), or use --offline")
        for path, existing in p.get("unwritable", []):
            raise HostError(h, f"{h.user} cannot create {path} ({existing} is not writable); "
                               f"set cluster.install_dir / data_dir to a writable place")
        if inv.service == "systemd" and not p["systemd"]:
            raise HostError(h, "cluster.service is systemd, but systemd is not running there "
                               "or the SSH user is not root")
        if not n.running and not p["port_free"]:
            raise HostError(h, f"raft port {h.endpoint} is in use ({p['port_error']}); "
                               f"another process listens there")
        n.manager = n.state.get("manager") or ("systemd" if p["systemd"] else "process")
        sess.step(h, f"ready (Python {'.'.join(map(str, n.python))}"
                     f"{', raftd running' if n.running else ''})")
        return n

    results = parallel(check, hosts)
    errors = _errors(results)
    for (h, _, err) in results:
        if err is not None:
            sess.done(h, "preflight failed", ok=False)
    if errors:
        names = ", ".join(e.host.name for e in errors)
        raise HostsFailed(errors, f"preflight failed on {len(errors)} of {len(hosts)} hosts "
                                  f"({names}); nothing was changed")
    return [n for _, n, _ in results]


# --------------------------------------------------------------------------- wheel --
@dataclass
class Shipment:
    wheel: Path
    info: dict
    offline: bool
    wheelhouse: Path | None
    tmp: Path
    deps: dict[tuple[int, int], list[Path]] = field(default_factory=dict)


def _get_wheel(wheel: Path | None, note: Callable[[str], None]) -> Path:
    if wheel is not None:
        if not wheel.is_file():
            raise usage_error(f"--wheel {wheel}: no such file")
        return wheel
    src = project_source()
    if src is None:
        raise CliError("cannot find the raftd source tree to build a wheel from; pass "
                       "--wheel FILE (a raftd wheel)", USAGE, "usage")
    return build_wheel(src, note)


def _install(sess: Session, n: Node, ship: Shipment) -> None:
    """Upload the build (and for --offline the dependency wheels) and install it into
    <root>/venvs/<build> on the host.  Leaves the running node alone."""
    h, r, info = n.host, n.remote, ship.info
    build_dir = f"{h.root}/builds/{info['build']}"
    wheels_dir = f"{h.root}/wheels"
    r.call("mkdirs", dirs=[build_dir, wheels_dir, h.root])
    deps = ship.deps.get(tuple(n.python[:2]), []) if ship.offline else []
    sess.step(h, f"uploading {info['file']}" + (f" and {len(deps)} dependency wheels"
                                                 if deps else ""))
    remote_wheel = f"{build_dir}/{info['file']}"
    r.upload(ship.wheel, remote_wheel, skip_same_size=False)
    pip_wheel = None
    for d in deps:
        r.upload(d, f"{wheels_dir}/{d.name}", skip_same_size=True)
        if d.name.startswith("pip-"):
            pip_wheel = f"{wheels_dir}/{d.name}"
    sess.step(h, f"installing raftd {info['version']} (build {info['build']}) into a "
                 f"virtualenv" + (" (offline)" if ship.offline else ""))
    r.call("install", timeout=1800, root=h.root, build=info["build"], wheel=remote_wheel,
           offline=ship.offline, find_links=wheels_dir, pip_wheel=pip_wheel)


def ensure_tls(inv, create: bool = True) -> None:
    """cluster.tls: make the CA, an admin client certificate and every host's node certificate
    that do not exist yet in the inventory's certs_dir, and use the admin certificate for this
    run's own requests unless the operator gave one (--cacert/--cert/--key)."""
    if not inv.tls_dir:
        return
    from raftd import pki  # noqa: PLC0415

    d = Path(inv.tls_dir)
    if create:
        if not (d / "ca.crt").exists():
            pki.init_ca(d, cluster=inv.name)
        if not pki.client_paths(d, "admin").cert.exists():
            pki.issue_client(d, "admin", "admin")
        for h in inv.hosts:
            if not pki.node_paths(d, h.name).cert.exists():
                pki.issue_node(d, h.name, sorted({h.raft_address, h.address}))
    if not os.environ.get("RAFTCTL_CACERT") and pki.client_paths(d, "admin").cert.exists():
        admin = pki.client_paths(d, "admin")
        os.environ.update({"RAFTCTL_CACERT": str(admin.ca), "RAFTCTL_CERT": str(admin.cert),
                           "RAFTCTL_KEY": str(admin.key)})


def _tls_files(inv, h: Host) -> dict | None:
    """What op_activate writes into <root>/tls on the host (see Inventory.node_config)."""
    if not inv.tls_dir:
        return None
    from raftd import pki  # noqa: PLC0415

    p = pki.node_paths(inv.tls_dir, h.name)
    return {"ca.crt": p.ca.read_text(), "node.crt": p.cert.read_text(),
            "node.key": p.key.read_text()}


def _activate(sess: Session, n: Node, info: dict, config_text: str | None) -> None:
    state = {"cluster": sess.inv.name, "name": n.host.name, "build": info["build"],
             "version": info["version"], "wheel": info["file"], "manager": n.manager,
             "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    n.remote.call("activate", **sess.args(n.host, build=info["build"], config=config_text,
                                          state=state, tls=_tls_files(sess.inv, n.host)))


def _start(sess: Session, n: Node) -> dict:
    how = f"systemd unit {n.host.unit}" if n.manager == "systemd" else "supervised process"
    sess.step(n.host, f"starting raftd ({how})")
    st = n.remote.call("start", **sess.args(n.host, manager=n.manager, wait=5))
    n.pid = st.get("pid")
    return st


def _stop(sess: Session, n: Node, grace: float = 10.0) -> dict:
    sess.step(n.host, "stopping raftd")
    return n.remote.call("stop", timeout=grace + 30, **sess.args(n.host, grace=grace))


def _comparable(cfg: dict | None) -> dict | None:
    """A node config without the initial membership (peers/join), which only matters the
    first time a node starts and must never change afterwards."""
    if cfg is None:
        return None
    return {k: v for k, v in cfg.items() if k not in ("peers", "join")}


# ------------------------------------------------------------------- waiting / health --
def _check_alive(sess: Session, nodes: list[Node]) -> None:
    """Raise HostsFailed for any of ``nodes`` whose raftd died (and was given up on)."""
    def one(n: Node) -> None:
        st = n.remote.call("status", **sess.args(n.host))
        if st["running"]:
            n.pid = st["pid"]
            return
        if n.manager == "systemd":
            dead = st.get("active_state") in ("failed", "inactive")
        else:
            dead = st.get("supervisor_pid") is None
        if dead:
            raise HostError(n.host, f"raftd failed to start; last lines of "
                                    f"{n.host.root}/raftd.log:\n{sess.log_tail(n.host)}")
    errors = _errors(parallel(one, nodes))
    if errors:
        raise HostsFailed(errors, "raftd failed to start on " +
                          ", ".join(e.host.name for e in errors))


def _wait_healthy(sess: Session, endpoints: list[str], must_reach: list[str],
                  timeout: float, watch: list[Node] = (), catch_up: str | None = None,
                  what: str = "a leader") -> dict:
    """Poll until the cluster has a leader, every endpoint in ``must_reach`` answers and (if
    given) the node at ``catch_up`` has applied what the leader had committed when it came
    back.  Checks the nodes in ``watch`` over SSH meanwhile, so a node that cannot start
    fails fast with its log instead of a timeout."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    target = None
    st: dict = {}
    while True:
        st = asyncio.run(gather_status(endpoints, 0.5))
        rows = {n["address"]: n for n in st["nodes"]}
        ok = st["leader"] is not None and all(rows.get(e, {}).get("reachable")
                                              for e in must_reach)
        if ok and catch_up is not None:
            me = rows.get(catch_up)
            leader = next((n for n in st["nodes"] if n["id"] == st["leader"]
                           and n["reachable"]), None)
            if me is None or leader is None or me["applied_index"] is None:
                ok = False
            else:
                if target is None:
                    target = leader["commit_index"]
                ok = me["applied_index"] >= target
        if ok:
            return st
        now = time.monotonic()
        if watch and now >= next_check:
            _check_alive(sess, list(watch))
            next_check = now + 1.5
        if now > deadline:
            missing = [e for e in must_reach if not rows.get(e, {}).get("reachable")]
            why = (f"unreachable: {', '.join(missing)}" if missing else
                   "no leader" if st["leader"] is None else "a node did not catch up")
            raise CliError(f"the cluster did not get {what} within {timeout:g}s ({why})",
                           UNAVAILABLE, "timeout")
        time.sleep(0.1)


async def _transfer_away(endpoints: list[str], old: str, timeout: float) -> str:
    """Ask leader ``old`` to hand leadership to its most up-to-date follower; wait for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with AsyncClient(endpoints, timeout=max(1.0, timeout / 2)) as c:
        await c.admin("transfer_leader", {"target": None})
    while loop.time() < deadline:
        st = await gather_status(endpoints, 0.5)
        if st["leader"] is not None and st["leader"] != old:
            return st["leader"]
        await asyncio.sleep(0.05)
    raise CliError(f"leadership did not move away from {old} within {timeout:g}s",
                   UNAVAILABLE, "timeout")


def _roll(sess: Session, nodes: list[Node], members: list[Node], timeout: float,
          prepare: Callable[[Node], None] | None = None, verb: str = "restarted",
          rollback: Callable[[Node], None] | None = None) -> dict:
    """Restart ``nodes`` one at a time (followers first, the leader last after handing
    leadership over), waiting after each for: a leader, every member reachable, the node
    caught up.  ``prepare(node)`` runs while it is stopped (switch build/config)."""
    endpoints = sess.endpoints([m.host for m in members])
    st = sess.cluster_status([m.host for m in members])
    leader = st["leader"]
    order = sorted(nodes, key=lambda n: n.host.name == leader)
    for i, n in enumerate(order):
        h = n.host
        st = sess.cluster_status([m.host for m in members])
        if st["leader"] == h.name and len(members) > 1:
            sess.step(h, "transferring leadership")
            new = asyncio.run(_transfer_away(endpoints, h.name, timeout))
            sess.note(f"{h.name}: leadership moved to {new}")
        if n.running or n.pid:
            _stop(sess, n)
        try:
            if prepare is not None:
                prepare(n)
            _start(sess, n)
            sess.step(h, "waiting until it has caught up")
            up = [m.host.endpoint for m in members if m.running or m.pid or m is n]
            _wait_healthy(sess, endpoints, up, timeout, watch=[n], catch_up=h.endpoint,
                          what=f"{h.name} back and caught up")
        except CliError as e:
            done = [m.host.name for m in order[:i]]
            todo = [m.host.name for m in order[i + 1:]]
            msg = str(e)
            if rollback is not None:
                try:
                    _stop(sess, n)
                    rollback(n)
                    _start(sess, n)
                    msg += f"; {h.name} was rolled back to its previous build and restarted"
                except CliError as e2:
                    msg += f"; rolling {h.name} back failed too: {e2}"
            sess.done(h, "failed", ok=False)
            raise CliError(f"{msg}\nstopped at {h.name}" +
                           (f" ({verb}: {', '.join(done)}" if done else " (none done yet") +
                           (f"; not yet: {', '.join(todo)})" if todo else ")") +
                           "; fix it and re-run the same command", e.code, e.kind) from None
        n.status = verb
        n.probe.setdefault("status", {})["running"] = True
        sess.done(h, f"{verb} (pid {n.pid})")
    return sess.cluster_status([m.host for m in members])


# -------------------------------------------------------------------------- output --
def _host_rows(nodes: list[Node]) -> list[dict]:
    return [{"name": n.host.name, "address": n.host.address, "raft_port": n.host.raft_port,
             "status": n.status, "pid": n.pid,
             "version": (n.state or {}).get("version"), "build": (n.state or {}).get("build")}
            for n in nodes]


def _print_result(s: Settings, inv: Inventory, nodes: list[Node], st: dict | None,
                  changed: bool, message: str) -> None:
    result = {"cluster": inv.name, "hosts": _host_rows(nodes),
              "leader": st["leader"] if st else None, "changed": changed}
    if s.out.json:
        s.out.emit_json(result)
        return
    s.out.table(["host", "address", "raft", "status", "pid", "version", "build"],
                [[n.host.name, f"{n.host.address}:{n.host.ssh_port}", n.host.endpoint,
                  n.status, n.pid, (n.state or {}).get("version"), (n.state or {}).get("build")]
                 for n in nodes], title=f"cluster {inv.name}")
    if st is not None:
        _print_cluster(s, st)
    s.out.line(message)


def _print_cluster(s: Settings, st: dict) -> None:
    try:
        from .status import print_status  # noqa: PLC0415
    except ImportError:  # pragma: no cover - status.py is another module's
        print_status = None
    if print_status is not None:
        print_status(s.out, st)
    else:
        s.out.line(f"leader: {st['leader']}")


# ------------------------------------------------------------------------ bootstrap --
@dataclass
class BootstrapOptions:
    upgrade: bool = False
    add_host: str | None = None
    offline: bool = False
    wheelhouse: Path | None = None
    wheel: Path | None = None


def _prepare_shipment(sess: Session, opts: BootstrapOptions, wheel: Path, nodes: list[Node],
                      tmp: Path) -> Shipment:
    info = wheel_info(wheel)
    ship = Shipment(wheel, info, opts.offline, opts.wheelhouse, tmp)
    if opts.offline:
        import platform  # noqa: PLC0415
        for n in nodes:
            if n.probe["machine"] != platform.machine():
                raise HostError(n.host, f"--offline ships this machine's wheels "
                                        f"({platform.machine()}), but the host is "
                                        f"{n.probe['machine']}; install without --offline")
        for py in sorted({tuple(n.python[:2]) for n in nodes}):
            ship.deps[py] = dependency_wheels(
                wheel, tmp / f"deps-{py[0]}.{py[1]}",
                opts.wheelhouse, py, sess.note)
    return ship


def bootstrap(s: Settings, sess: Session, opts: BootstrapOptions) -> int:
    inv = sess.inv
    ensure_tls(inv)  # after the inventory checks, before anything reaches a host
    if opts.add_host is not None:
        return add_host(s, sess, opts)
    with tempfile.TemporaryDirectory(prefix="raftctl-") as tmpd, \
            Reporter(s.out.err, inv.hosts) as rep:
        sess.rep = rep
        nodes = _preflight(sess, inv.hosts, opts.offline)
        wheel = _get_wheel(opts.wheel, sess.note)
        info = wheel_info(wheel)

        # -- what is there already --
        for n in nodes:
            if n.probe.get("config"):
                try:
                    n.remote_config = yaml.safe_load(n.probe["config"])
                except yaml.YAMLError:
                    n.remote_config = None
        existing = [n for n in nodes if n.remote_config]
        initial: dict[str, str] = {}
        for n in existing:
            if not n.remote_config.get("join"):
                initial.update(n.remote_config.get("peers") or {})
        errors = []
        for n in nodes:
            h = n.host
            if n.remote_config:
                peers, join = n.remote_config.get("peers"), bool(n.remote_config.get("join"))
            elif not existing:
                peers, join = None, False
            elif h.name in initial:
                peers, join = initial, False
            else:
                errors.append(HostError(h, f"{h.name} is in the inventory but not a member of "
                                           f"the cluster; add it with: raftctl bootstrap "
                                           f"--add-host {h.name} {sess.inventory_path}",
                                        USAGE, "usage"))
                continue
            text = inv.node_config_text(h, peers, join)
            n.config_same = _comparable(n.remote_config) == \
                _comparable(yaml.safe_load(text))
            n.config_text = None if n.config_same else text
            n.build_same = n.state.get("build") == info["build"]
        if errors:
            raise HostsFailed(errors, "" if len(errors) == 1 else
                              f"{len(errors)} hosts are not members of the cluster: "
                              f"{', '.join(e.host.name for e in errors)}; nothing was changed")

        running = [n for n in nodes if n.running]
        outdated = [n for n in nodes if n.installed and (not n.build_same or not n.config_same)]
        if running and outdated and not opts.upgrade:
            what = "; ".join(
                f"{n.host.name}: " + ", ".join(
                    ([f"build {n.state.get('build')} (raftd {n.state.get('version')}) -> "
                      f"{info['build']} (raftd {info['version']})"] if not n.build_same else [])
                    + (["config differs"] if not n.config_same else []))
                for n in outdated)
            raise CliError(f"the running cluster differs from this build/inventory ({what}); "
                           f"nothing was changed; re-run with --upgrade to roll it out one "
                           f"node at a time", FAILED, "needs_upgrade")

        ship = None
        if opts.upgrade and running:
            # -- rolling upgrade: prepare every node, then restart them one at a time --
            todo = [n for n in nodes if not n.installed or not n.build_same
                    or not n.config_same or not n.running]
            st = sess.cluster_status()
            if st["leader"] is None:
                raise CliError("the cluster has no leader; not upgrading (see raftctl ssh "
                               "status)", UNAVAILABLE, "unavailable")
            for n in nodes:
                if n not in todo:
                    n.status = "running"
                    n.pid = n.probe["status"]["pid"]
                    sess.done(n.host, f"unchanged (pid {n.pid})")
            if not todo:
                return _finish(s, sess, nodes, changed=False, info=info)
            need_install = [n for n in todo if not n.build_same or not n.installed]
            if need_install:
                ship = _prepare_shipment(sess, opts, wheel, need_install, Path(tmpd))
                errs = _errors(parallel(lambda n: _install(sess, n, ship), need_install))
                if errs:
                    raise HostsFailed(errs, "installing the new build failed on " +
                                      ", ".join(e.host.name for e in errs) +
                                      "; nothing was restarted")
            for n in todo:
                sess.step(n.host, "ready to restart")

            def prepare(n: Node) -> None:
                n._old = (n.state.get("build"), n.probe.get("config"), n.state)  # for rollback
                _activate(sess, n, info, n.config_text)
                n.probe["status"]["state"] = {**n.state, "build": info["build"],
                                              "version": info["version"]}

            def rollback(n: Node) -> None:
                old_build, old_config, old_state = getattr(n, "_old", (None, None, None))
                if not old_build:
                    raise CliError("no previous build to roll back to")
                _activate(sess, n, {"build": old_build, "version": old_state.get("version"),
                                    "file": old_state.get("wheel")}, old_config)

            _roll(sess, todo, nodes, s.timeout, prepare=prepare, verb="upgraded",
                  rollback=rollback)
            return _finish(s, sess, nodes, changed=True, info=info)

        # -- first bootstrap, resume, or nothing to do --
        need_install = [n for n in nodes if not n.installed or not n.build_same]
        need_config = [n for n in nodes if n.config_text is not None]
        need_start = [n for n in nodes if not n.running]
        for n in nodes:
            if n.running:
                n.status = "running"
                n.pid = n.probe["status"]["pid"]
                sess.done(n.host, f"unchanged (pid {n.pid})")
        if not need_install and not need_config and not need_start:
            return _finish(s, sess, nodes, changed=False, info=info)
        if need_install:
            ship = _prepare_shipment(sess, opts, wheel, need_install, Path(tmpd))
            errs = _errors(parallel(lambda n: _install(sess, n, ship), need_install))
            if errs:
                raise HostsFailed(errs, "installing failed on " +
                                  ", ".join(e.host.name for e in errs) + "; nothing was started")
        for_activate = [n for n in nodes if n in need_install or n in need_config]
        errs = _errors(parallel(lambda n: _activate(sess, n, info, n.config_text), for_activate))
        if errs:
            raise HostsFailed(errs, "writing the configuration failed on " +
                              ", ".join(e.host.name for e in errs) + "; nothing was started")
        for n in for_activate:
            n.probe["status"]["state"] = {**n.state, "build": info["build"],
                                          "version": info["version"], "installed": True}
        results = parallel(lambda n: _start(sess, n), need_start)
        started = [n for n, _, err in results if err is None]
        try:
            errs = _errors(results)
            if errs:
                raise HostsFailed(errs, "starting raftd failed on " +
                                  ", ".join(e.host.name for e in errs))
            for n in need_start:
                sess.step(n.host, "started; waiting for the cluster")
            endpoints = sess.endpoints()
            _wait_healthy(sess, endpoints, endpoints, s.timeout, watch=need_start)
        except CliError as e:
            if started:
                parallel(lambda n: _stop(sess, n), started)
                for n in started:
                    sess.done(n.host, "stopped again (rolled back)", ok=False)
            back = (f"stopped {', '.join(n.host.name for n in started)} again (rolled back)"
                    if started else "")
            resume = f"fix the problem and resume with: raftctl bootstrap {sess.inventory_path}"
            if isinstance(e, HostsFailed):
                first = e.args[0] if len(e.errors) > 1 else ""
                raise HostsFailed(e.errors, "; ".join(x for x in (first, back, resume) if x)) \
                    from None
            raise CliError("; ".join(x for x in (str(e), back, resume) if x), e.code,
                           e.kind) from None
        for n in need_start:
            n.status = "started"
            sess.done(n.host, f"started (pid {n.pid})")
        return _finish(s, sess, nodes, changed=True, info=info)


def _finish(s: Settings, sess: Session, nodes: list[Node], changed: bool, info: dict) -> int:
    """Wait for a healthy cluster, close the progress display, print the result."""
    endpoints = sess.endpoints([n.host for n in nodes])
    st = _wait_healthy(sess, endpoints, endpoints, s.timeout)
    for n in nodes:
        row = next((r for r in st["nodes"] if r["address"] == n.host.endpoint), None)
        if row and row.get("pid"):
            n.pid = row["pid"]
    if sess.rep is not None:
        sess.rep.__exit__(None, None, None)
        sess.rep = None
    if changed:
        message = (f"cluster {sess.inv.name}: {len(nodes)} nodes run raftd {info['version']} "
                   f"(build {info['build']}); leader {st['leader']}")
    else:
        message = (f"no change: all {len(nodes)} nodes already run raftd {info['version']} "
                   f"(build {info['build']}) with this configuration; leader {st['leader']}")
    _print_result(s, sess.inv, nodes, st, changed, message)
    return 0


def add_host(s: Settings, sess: Session, opts: BootstrapOptions) -> int:
    inv = sess.inv
    target = inv.host(opts.add_host)
    others = [h for h in inv.hosts if h.name != target.name]
    if not others:
        raise usage_error("--add-host needs the cluster's other hosts in the inventory")
    st = sess.cluster_status(others, 1.0)
    if st["leader"] is None:
        raise CliError(f"the cluster ({', '.join(sess.endpoints(others))}) has no leader; "
                       f"cannot add {target.name}", UNAVAILABLE, "unavailable")
    conf = st["configuration"]
    members = set(conf["voters"]) | set(conf["learners"]) | set(conf.get("old_voters", []))
    with tempfile.TemporaryDirectory(prefix="raftctl-") as tmpd, \
            Reporter(s.out.err, [target]) as rep:
        sess.rep = rep
        (n,) = _preflight(sess, [target], opts.offline)
        wheel = _get_wheel(opts.wheel, sess.note)
        info = wheel_info(wheel)
        member_nodes = [Node(h, None, status="running") for h in others  # type: ignore[arg-type]
                        if h.name in members]
        if target.name in members and n.running:
            n.status, n.pid = "running", n.probe["status"]["pid"]
            sess.done(target, f"already a member (pid {n.pid})")
            return _finish_add(s, sess, member_nodes, n, st, changed=False, info=info)
        if target.name in members:
            raise CliError(f"{target.name} is a member of the cluster but not running; start "
                           f"it with: raftctl ssh start {sess.inventory_path} --host "
                           f"{target.name}", FAILED, "stopped")
        if not n.installed or n.state.get("build") != info["build"]:
            ship = _prepare_shipment(sess, opts, wheel, [n], Path(tmpd))
            _install(sess, n, ship)
        text = inv.node_config_text(target, join=True)
        _activate(sess, n, info, text)
        n.probe["status"]["state"] = {"build": info["build"], "version": info["version"]}
        started = not n.running
        if started:
            _start(sess, n)
        try:
            sess.step(target, "waiting for it to listen")
            deadline = time.monotonic() + 15
            while not asyncio.run(gather_status([target.endpoint], 0.5))["nodes"][0]["reachable"]:
                if time.monotonic() > deadline:
                    raise HostError(target, f"raftd does not answer at {target.endpoint}; "
                                            f"last lines of its log:\n{sess.log_tail(target)}")
                _check_alive(sess, [n])
                time.sleep(0.2)
            sess.step(target, "adding it to the cluster (learner, catch-up, joint consensus)")
            from .member import change  # noqa: PLC0415
            result = change(Settings(sess.endpoints(others), s.out, max(s.timeout, 60.0)),
                            add={target.name: target.endpoint})
        except CliError as e:
            if started:
                _stop(sess, n)
            raise CliError(f"{e}; stopped {target.name} again (it was not added)", e.code,
                           e.kind) from None
        except Exception as e:  # noqa: BLE001 - the change itself failed: report and stop
            if started:
                _stop(sess, n)
            raise CliError(f"adding {target.name} failed: {e}; stopped it again (check "
                           f"`raftctl member list` before retrying)", FAILED,
                           type(e).__name__) from None
        for p in result.get("phases", []):
            sess.note(f"{target.name}: {p}")
        n.status = "added"
        sess.done(target, f"added (pid {n.pid})")
        return _finish_add(s, sess, member_nodes, n, None, changed=True, info=info)


def _finish_add(s: Settings, sess: Session, members: list[Node], n: Node, st: dict | None,
                changed: bool, info: dict) -> int:
    hosts = [m.host for m in members] + [n.host]
    endpoints = sess.endpoints(hosts)
    st = _wait_healthy(sess, endpoints, endpoints, s.timeout, catch_up=n.host.endpoint,
                       what=f"{n.host.name} caught up")
    rows = {r["address"]: r for r in st["nodes"]}
    for m in members + [n]:
        m.pid = (rows.get(m.host.endpoint) or {}).get("pid") or m.pid
    if sess.rep is not None:
        sess.rep.__exit__(None, None, None)
        sess.rep = None
    message = (f"added {n.host.name} at {n.host.endpoint}; voters: "
               f"{','.join(st['configuration']['voters'])}" if changed else
               f"no change: {n.host.name} is already a member; voters: "
               f"{','.join(st['configuration']['voters'])}")
    _print_result(s, sess.inv, members + [n], st, changed, message)
    return 0


# ----------------------------------------------------------------------- commands --
def _settings(ctx: typer.Context, output: str | None, timeout: float | None,
              default: float) -> Settings:
    """Like context.settings, with this command's own default timeout (the global
    `raftctl --timeout` still applies)."""
    root = (ctx.find_root().obj or {}) if ctx is not None else {}
    return settings(ctx, None, output, timeout or root.get("timeout") or default)


def register(app: typer.Typer) -> None:
    @app.command("bootstrap")
    def bootstrap_cmd(
            ctx: typer.Context, inventory: InventoryArg,
            upgrade: Annotated[bool, typer.Option(
                "--upgrade", help="roll a new build or config out to a running cluster, one "
                                  "node at a time (the leader last)")] = False,
            add_host_: Annotated[Optional[str], typer.Option(
                "--add-host", metavar="NAME", help="start the inventory's host NAME in join "
                                                   "mode and add it to the running cluster")]
            = None,
            offline: Annotated[bool, typer.Option(
                "--offline", help="download the dependency wheels here and ship them (the "
                                  "hosts need no package index)")] = False,
            wheelhouse: Annotated[Optional[Path], typer.Option(
                "--wheelhouse", help="with --offline: keep/reuse the dependency wheels in this "
                                     "directory [default: ~/.cache/raftctl/wheelhouse]")] = None,
            wheel: Annotated[Optional[Path], typer.Option(
                "--wheel", help="ship this raftd wheel instead of building one from the "
                                "source tree")] = None,
            accept_new_host_keys: AcceptOpt = False,
            output: OutputOpt = None, timeout: BootstrapTimeoutOpt = None) -> None:
        """Install and start raftd on every host of INVENTORY over SSH; wait for a leader.

        Preflights every host (SSH, Python >= 3.11, raft port free) before changing any.
        Running it again changes nothing (and says so).  --upgrade rolls a new build out one
        node at a time; --add-host NAME adds a host by joint consensus.

        \b
        Example: raftctl bootstrap inventory.yaml
        Example: raftctl bootstrap --upgrade inventory.yaml
        Example: raftctl bootstrap --add-host n4 inventory.yaml"""
        s = _settings(ctx, output, timeout, 60.0)
        from ..ssh import cache_dir  # noqa: PLC0415
        opts = BootstrapOptions(upgrade=upgrade, add_host=add_host_, offline=offline,
                                wheelhouse=(wheelhouse or cache_dir() / "wheelhouse")
                                if offline else None, wheel=wheel)

        def session() -> Session:
            if add_host_ is not None and upgrade:
                raise usage_error("--add-host and --upgrade cannot be combined")
            if wheelhouse is not None and not offline:
                raise usage_error("--wheelhouse needs --offline")
            return Session(s, inventory, accept_new_host_keys)

        _session_run(s, session, lambda sess: bootstrap(s, sess, opts))

    @app.command("teardown")
    def teardown_cmd(
            ctx: typer.Context, inventory: InventoryArg,
            purge: Annotated[bool, typer.Option(
                "--purge", help="also delete every node's data and install directory")] = False,
            yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before "
                                                                  "--purge")] = False,
            hosts: HostOpt = None, accept_new_host_keys: AcceptOpt = False,
            output: OutputOpt = None) -> None:
        """Stop raftd on every host; with --purge (after confirmation) delete the data and
        install directories too.

        \b
        Example: raftctl teardown inventory.yaml
        Example: raftctl teardown --purge --yes inventory.yaml"""
        s = settings(ctx, None, output)
        _session_run(s, lambda: Session(s, inventory, accept_new_host_keys),
                     lambda sess: teardown(s, sess, hosts, purge, yes))


def teardown(s: Settings, sess: Session, names: list[str] | None, purge: bool,
             yes: bool) -> int:
    inv = sess.inv
    hosts = inv.select(names)
    if purge and not yes:
        if not sys.stdin.isatty():
            raise usage_error("--purge deletes the cluster's data: confirm with --yes when "
                              "not running interactively")
        listing = ", ".join(f"{h.name}:{h.data_dir}" for h in hosts)
        if not typer.confirm(f"Delete the data and install directories of {len(hosts)} "
                             f"hosts of cluster {inv.name} ({listing})? This destroys the "
                             f"cluster's data", default=False, err=True):
            raise CliError("not confirmed; nothing was deleted", FAILED, "aborted")
    rows: dict[str, dict] = {h.name: {"name": h.name, "address": h.address,
                                      "raft_port": h.raft_port, "status": None}
                             for h in hosts}
    with Reporter(s.out.err, hosts) as rep:
        sess.rep = rep

        def one(h: Host) -> None:
            r = sess.connect(h)
            sess.step(h, "stopping raftd")
            res = r.call("stop", timeout=60, **sess.args(h, grace=10))
            rows[h.name]["status"] = "stopped" if res["was_running"] else "not running"
            if purge:
                sess.step(h, "deleting the data and install directories")
                res = r.call("purge", **sess.args(h))
                rows[h.name]["status"] = "purged"
                rows[h.name]["removed"] = res["removed"]
            sess.done(h, rows[h.name]["status"])

        results = parallel(one, hosts)
        errors = _errors(results)
        for h, _, err in results:
            if err is not None:
                rows[h.name]["status"] = "error"
                rows[h.name]["error"] = str(getattr(err, "reason", err))
                sess.done(h, "failed", ok=False)
        sess.rep = None
    result = {"cluster": inv.name, "hosts": list(rows.values()), "purged": purge}
    if errors:
        raise HostsFailed(errors, f"teardown failed on {len(errors)} of {len(hosts)} hosts "
                                  f"({', '.join(e.host.name for e in errors)})", result)
    if s.out.json:
        s.out.emit_json(result)
    else:
        s.out.table(["host", "raft", "status"],
                    [[h.name, h.endpoint, rows[h.name]["status"]] for h in hosts],
                    title=f"cluster {inv.name}")
    return 0


# ----------------------------------------------------------------------------- ssh --
def _connect_all(sess: Session, hosts: list[Host], what: Callable[[Host, Remote], Any]):
    def one(h: Host):
        return what(h, sess.connect(h))
    return parallel(one, hosts)


def _ssh_status(s: Settings, sess: Session, names: list[str] | None) -> tuple[dict, int]:
    inv = sess.inv
    hosts = inv.select(names)
    results = _connect_all(sess, hosts, lambda h, r: r.call("status", **sess.args(h)))
    st = sess.cluster_status()
    raft = {n["address"]: n for n in st["nodes"]}
    rows = []
    code = 0
    for h, res, err in results:
        r = raft.get(h.endpoint) or {}
        row = {"name": h.name, "address": h.address, "raft_port": h.raft_port,
               "status": None, "pid": None, "version": None, "build": None, "manager": None,
               "role": r.get("role"), "term": r.get("term"),
               "reachable": bool(r.get("reachable"))}
        if err is not None:
            row["status"] = "unreachable" if getattr(err, "code", 1) == UNAVAILABLE else "error"
            row["error"] = str(getattr(err, "reason", err))
            code = getattr(err, "code", FAILED)
        else:
            state = res.get("state") or {}
            row.update(status="running" if res["running"] else
                       "stopped" if res["installed"] else "not installed",
                       pid=res["pid"], version=state.get("version"), build=state.get("build"),
                       manager=res["manager"] if res["installed"] else None)
        rows.append(row)
    if not code and st["leader"] is None:
        code = UNAVAILABLE
    return {"cluster": inv.name, "leader": st["leader"], "hosts": rows}, code


@ssh_app.command("status")
def ssh_status_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                   accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None) -> None:
    """Per host: is raftd installed and running (pid, build, systemd or supervised), and its
    Raft role.  Exits 3 if a host is unreachable or the cluster has no leader.

    \b
    Example: raftctl ssh status inventory.yaml"""
    s = settings(ctx, None, output)

    def body(sess: Session) -> int:
        result, code = _ssh_status(s, sess, hosts)
        if s.out.json:
            s.out.emit_json(result)
        else:
            s.out.table(["host", "ssh", "raft", "status", "pid", "service", "version", "build",
                         "role", "term"],
                        [[r["name"], f"{r['address']}", f"{sess.inv.host(r['name']).endpoint}",
                          r["status"],
                          r["pid"], r["manager"], r["version"], r["build"], r["role"] or "-",
                          r["term"]] for r in result["hosts"]],
                        title=f"cluster {sess.inv.name}   leader: {result['leader'] or 'none'}")
        bad = [r for r in result["hosts"] if r.get("error")]
        for r in bad:
            h = sess.inv.host(r["name"])
            if s.out.json:
                _stderr(json.dumps({"error": r["status"], "host": h.name,
                                       "message": f"{h.label}: {r['error']}"}))
            else:
                _stderr(f"raftctl: error: {h.label}: {r['error']}")
        if code and not bad:
            _stderr("no leader")
        return code

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


def _nodes_for(sess: Session, names: list[str] | None, require_installed: bool = True):
    hosts = sess.inv.select(names)

    def one(h: Host) -> Node:
        r = sess.connect(h)
        st = r.call("status", **sess.args(h))
        n = Node(h, r, probe={"status": st}, manager=st["manager"])
        n.pid = st["pid"]
        if require_installed and not st["installed"]:
            raise HostError(h, f"raftd is not installed in {h.root}; run: raftctl bootstrap "
                               f"{sess.inventory_path}")
        return n
    results = parallel(one, hosts)
    errors = _errors(results)
    if errors:
        raise HostsFailed(errors, f"{len(errors)} of {len(hosts)} hosts failed: "
                                  f"{', '.join(e.host.name for e in errors)}")
    return [n for _, n, _ in results]


def _simple_table(s: Settings, sess: Session, nodes: list[Node], extra: dict | None = None):
    if s.out.json:
        s.out.emit_json({"cluster": sess.inv.name,
                         "hosts": [{"name": n.host.name, "address": n.host.address,
                                    "raft_port": n.host.raft_port, "status": n.status,
                                    "pid": n.pid} for n in nodes], **(extra or {})})
    else:
        s.out.table(["host", "raft", "status", "pid"],
                    [[n.host.name, n.host.endpoint, n.status, n.pid] for n in nodes],
                    title=f"cluster {sess.inv.name}" + (
                        f"   leader: {extra['leader']}" if extra and "leader" in extra else ""))


@ssh_app.command("start")
def ssh_start_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                  accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None,
                  timeout: StartTimeoutOpt = None) -> None:
    """Start raftd where it is stopped; wait until those nodes answer (and, if the whole
    cluster is up, for a leader).

    \b
    Example: raftctl ssh start inventory.yaml --host n2"""
    s = _settings(ctx, output, timeout, 30.0)

    def body(sess: Session) -> int:
        with Reporter(s.out.err, sess.inv.select(hosts)) as rep:
            sess.rep = rep
            nodes = _nodes_for(sess, hosts)
            todo = [n for n in nodes if not n.running]
            for n in nodes:
                if n.running:
                    n.status = "running"
                    sess.done(n.host, f"already running (pid {n.pid})")
            errs = _errors(parallel(lambda n: _start(sess, n), todo))
            if errs:
                raise HostsFailed(errs, "starting failed on " +
                                  ", ".join(e.host.name for e in errs))
            endpoints = sess.endpoints()
            _wait_healthy(sess, endpoints, [n.host.endpoint for n in todo], s.timeout,
                          watch=todo, what="the started nodes answering and a leader")
            for n in todo:
                n.status = "started"
                sess.done(n.host, f"started (pid {n.pid})")
            sess.rep = None
        st = sess.cluster_status()
        _simple_table(s, sess, nodes, {"leader": st["leader"]})
        return 0

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


@ssh_app.command("stop")
def ssh_stop_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                 grace: Annotated[float, typer.Option(help="seconds before SIGKILL")] = 10.0,
                 accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None) -> None:
    """Stop raftd (and its supervisor, or its systemd unit): SIGTERM, SIGKILL after --grace.

    \b
    Example: raftctl ssh stop inventory.yaml --host n3"""
    s = settings(ctx, None, output)

    def body(sess: Session) -> int:
        with Reporter(s.out.err, sess.inv.select(hosts)) as rep:
            sess.rep = rep
            nodes = _nodes_for(sess, hosts, require_installed=False)

            def one(n: Node) -> None:
                res = _stop(sess, n, grace)
                n.status = ("stopped" + (" (SIGKILL)" if res["killed"] else "")
                            if res["was_running"] else "not running")
                n.pid = None
                sess.done(n.host, n.status)
            errs = _errors(parallel(one, nodes))
            sess.rep = None
        if errs:
            raise HostsFailed(errs, "stopping failed on " + ", ".join(e.host.name for e in errs))
        _simple_table(s, sess, nodes)
        return 0

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


@ssh_app.command("restart")
def ssh_restart_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                    accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None,
                    timeout: RestartTimeoutOpt = None) -> None:
    """Restart raftd one node at a time (followers first; the leader last, after handing
    leadership over), waiting for each to catch up.

    \b
    Example: raftctl ssh restart inventory.yaml"""
    s = _settings(ctx, output, timeout, 60.0)

    def body(sess: Session) -> int:
        with Reporter(s.out.err, sess.inv.select(hosts)) as rep:
            sess.rep = rep
            members = _nodes_for(sess, None)
            chosen = {h.name for h in sess.inv.select(hosts)}
            todo = [n for n in members if n.host.name in chosen]
            for n in members:
                if n.host.name not in chosen:
                    n.status = "running" if n.running else "stopped"
            st = _roll(sess, todo, members, s.timeout, verb="restarted")
            sess.rep = None
        _simple_table(s, sess, todo, {"leader": st["leader"]})
        return 0

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


@ssh_app.command("logs")
def ssh_logs_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                 lines: Annotated[int, typer.Option("--lines", "-n",
                                                    help="last N lines per host")] = 50,
                 accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None) -> None:
    """Print the last --lines lines of raftd's log on each host (prefixed with the host
    name when there are several).

    \b
    Example: raftctl ssh logs inventory.yaml --host n1 --lines 100"""
    s = settings(ctx, None, output)

    def body(sess: Session) -> int:
        if lines < 0:
            raise usage_error("--lines must be >= 0")
        chosen = sess.inv.select(hosts)
        results = _connect_all(sess, chosen,
                               lambda h, r: r.call("logs", **sess.args(h, lines=lines)))
        errors = _errors(results)
        docs = []
        for h, res, err in results:
            if err is None:
                docs.append({"name": h.name, "lines": res["lines"]})
        if s.out.json:
            s.out.emit_json({"cluster": sess.inv.name, "hosts": docs})
        else:
            for d in docs:
                for ln in d["lines"]:
                    s.out.line(f"{d['name']} | {ln}" if len(chosen) > 1 else ln)
        if errors:
            raise HostsFailed(errors, f"{len(errors)} of {len(chosen)} hosts failed: "
                                      f"{', '.join(e.host.name for e in errors)}")
        return 0

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


@ssh_app.command("rotate-certs")
def ssh_rotate_certs_cmd(
        ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
        reissue: Annotated[bool, typer.Option(
            "--reissue", help="issue new node certificates from the CA first (otherwise ship "
                              "the files in the certs dir as they are)")] = False,
        days: Annotated[float, typer.Option(help="validity of re-issued certificates")] = 365,
        accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None,
        timeout: StartTimeoutOpt = None) -> None:
    """Ship each host its certificate files from the inventory's certs dir and SIGHUP its raftd,
    which loads them without a restart (a TLS cluster: cluster.tls in the inventory).  Waits
    until every running node reports the new certificate.

    \b
    Example: raftctl ssh rotate-certs inventory.yaml --reissue --days 365"""
    s = _settings(ctx, output, timeout, 30.0)

    def body(sess: Session) -> int:
        from raftd import pki  # noqa: PLC0415

        inv = sess.inv
        if not inv.tls_dir:
            raise usage_error(f"{sess.inventory_path}: the cluster does not use TLS "
                              f"(set tls: true under cluster:)")
        selected = inv.select(hosts)
        if reissue:
            for h in selected:
                pki.issue_node(inv.tls_dir, h.name, sorted({h.raft_address, h.address}),
                               days=days, force=True)
        want = {h.name: pki.describe(pki.node_paths(inv.tls_dir, h.name).cert)["not_after"]
                for h in selected}

        def ship(h: Host) -> dict:
            r = sess.connect(h).call("tls", **sess.args(h, tls=_tls_files(inv, h)))
            return {"host": h, **r}

        results = parallel(ship, selected)
        errs = _errors(results)
        if errs:
            raise HostsFailed(errs, "shipping certificates failed on " +
                              ", ".join(e.host.name for e in errs))
        rows = []
        deadline = time.monotonic() + s.timeout
        for _, r, _ in results:
            h = r["host"]
            row = {"name": h.name, "not_after": want[h.name], "reloaded": r["reloaded"],
                   "confirmed": False}
            while r["reloaded"] and time.monotonic() < deadline:
                st = asyncio.run(gather_status([h.endpoint], 1.0))["nodes"][0]
                tls = ((st.get("_raw") or {}).get("tls") or {})
                # not_after in status is isoformat of a datetime; describe() is ISO too
                if tls.get("not_after", "")[:19] == want[h.name][:19]:
                    row["confirmed"] = True
                    row["days_left"] = tls.get("days_left")
                    break
                time.sleep(0.2)
            rows.append(row)
        if s.out.json:
            s.out.emit_json({"cluster": inv.name, "hosts": rows})
        else:
            s.out.table(["host", "not_after", "reloaded", "confirmed"],
                        [[r["name"], r["not_after"], "yes" if r["reloaded"] else
                          "not running (files updated)", "yes" if r["confirmed"] else "NO"]
                         for r in rows], title=f"cluster {inv.name}: certificates")
        unconfirmed = [r["name"] for r in rows if r["reloaded"] and not r["confirmed"]]
        if unconfirmed:
            raise CliError(f"{', '.join(unconfirmed)} did not report the new certificate "
                           f"within {s.timeout:g}s; see raftctl ssh logs", UNAVAILABLE,
                           "unavailable")
        return 0

    _session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)
