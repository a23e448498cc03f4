"""The executors' steps on the hosts: preflight, build and ship the wheel, install it,
activate a build and config, start and stop raftd.  Each is one remote operation of
raftctl/remote.py (or a few), reported on the progress display."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..context import usage_error
from ..errors import USAGE, CliError
from ..inventory import Host
from ..ssh import (HostError, build_wheel, dependency_wheels, parallel, project_source,
                   wheel_info)
from .certs import tls_files
from .plan import manager, offline_problem, preflight_problem
from .session import HostsFailed, Node, Session, host_errors


def preflight(sess: Session, hosts: list[Host], offline: bool) -> list[Node]:
    """Connect to every host in parallel and check it: Python, venv, raft port.  Raises
    HostsFailed (naming every failing host) before anything is changed anywhere."""
    inv = sess.inv

    def check(h: Host) -> Node:
        r = sess.connect(h)
        sess.step(h, "checking Python, the raft port and the installation")
        n = Node(h, r)
        n.probe = r.call("probe", **sess.args(h, host=h.raft_address, port=h.raft_port,
                                                   service=inv.service))
        n.python = tuple(n.probe["python"])
        problem = preflight_problem(h, n.probe, inv, offline)
        if problem is not None:
            raise HostError(h, problem)
        n.manager = manager(n.probe)
        sess.step(h, f"ready (Python {'.'.join(map(str, n.python))}"
                     f"{', raftd running' if n.running else ''})")
        return n

    results = parallel(check, hosts)
    errors = host_errors(results)
    for (h, _, err) in results:
        if err is not None:
            sess.done(h, "preflight failed", ok=False)
    if errors:
        names = ", ".join(e.host.name for e in errors)
        raise HostsFailed(errors, f"preflight failed on {len(errors)} of {len(hosts)} hosts "
                                  f"({names}); nothing was changed")
    return [n for _, n, _ in results if n is not None]


# --------------------------------------------------------------------------- wheel --
@dataclass
class Shipment:
    wheel: Path
    info: dict
    offline: bool
    wheelhouse: Path | None
    tmp: Path
    deps: dict[tuple[int, ...], list[Path]] = field(default_factory=dict)  # by (major, minor)


def get_wheel(wheel: Path | None, note: Callable[[str], None]) -> Path:
    if wheel is not None:
        if not wheel.is_file():
            raise usage_error(f"--wheel {wheel}: no such file")
        return wheel
    src = project_source()
    if src is None:
        raise CliError("cannot find the raftd source tree to build a wheel from; pass "
                       "--wheel FILE (a raftd wheel)", USAGE, "usage")
    return build_wheel(src, note)


def install(sess: Session, n: Node, ship: Shipment) -> None:
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


# ---------------------------------------------------------------- on one host --
def activate(sess: Session, n: Node, info: dict, config_text: str | None) -> None:
    state = {"cluster": sess.inv.name, "name": n.host.name, "build": info["build"],
             "version": info["version"], "wheel": info["file"], "manager": n.manager,
             "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    n.remote.call("activate", **sess.args(n.host, build=info["build"], config=config_text,
                                          state=state, tls=tls_files(sess.inv, n.host)))


def start_node(sess: Session, n: Node) -> dict:
    how = f"systemd unit {n.host.unit}" if n.manager == "systemd" else "supervised process"
    sess.step(n.host, f"starting raftd ({how})")
    st = n.remote.call("start", **sess.args(n.host, manager=n.manager, wait=5))
    n.pid = st.get("pid")
    return st


def stop_node(sess: Session, n: Node, grace: float = 10.0) -> dict:
    sess.step(n.host, "stopping raftd")
    return n.remote.call("stop", timeout=grace + 30, **sess.args(n.host, grace=grace))

# ------------------------------------------------------------------------ bootstrap --
@dataclass
class BootstrapOptions:
    upgrade: bool = False
    add_host: str | None = None
    offline: bool = False
    wheelhouse: Path | None = None
    wheel: Path | None = None


def prepare_shipment(sess: Session, opts: BootstrapOptions, wheel: Path, nodes: list[Node],
                     tmp: Path) -> Shipment:
    info = wheel_info(wheel)
    ship = Shipment(wheel, info, opts.offline, opts.wheelhouse, tmp)
    if opts.offline:
        import platform  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        for n in nodes:
            problem = offline_problem(n.probe, platform.machine())
            if problem is not None:
                raise HostError(n.host, problem)
        for py in sorted({tuple(n.python[:2]) for n in nodes}):
            ship.deps[py] = dependency_wheels(
                wheel, tmp / f"deps-{py[0]}.{py[1]}",
                opts.wheelhouse, py, sess.note)
    return ship

