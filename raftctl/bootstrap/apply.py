"""`raftctl bootstrap`: preflight every host, make a Plan (plan.py), then carry it out.

Two executors, one per kind of plan:

* start: first bootstrap, or resuming one: install where needed, write configs, start the
  stopped nodes, wait for a leader.  If that fails, the nodes this run started are stopped
  again (``started`` is the rollback state) and the operator is told how to resume.
* upgrade: restart the nodes to change one at a time, the leader last; a node that does not
  come back is re-activated with what it ran before (the plan's ``Rollback``).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..context import Settings
from ..errors import UNAVAILABLE, CliError
from ..ssh import HostError, Reporter, parallel, wheel_info
from .add import add_host
from .certs import ensure_tls
from .health import roll, wait_healthy
from .plan import HostPlan, Plan, address_refusals, plan
from .report import finish
from .session import HostsFailed, Node, Session, host_errors
from .steps import (BootstrapOptions, activate, get_wheel, install, preflight,
                    prepare_shipment, start_node, stop_node)


@dataclass
class Run:
    """One bootstrap run: the settings, the session, the preflighted nodes and the plan."""
    s: Settings
    sess: Session
    opts: BootstrapOptions
    nodes: list[Node]
    plan: Plan
    wheel: Path
    info: dict
    tmp: Path

    def hp(self, n: Node) -> HostPlan:
        return self.plan.host(n.host.name)

    def finish(self, changed: bool) -> int:
        return finish(self.s, self.sess, self.nodes, changed=changed, info=self.info)


def bootstrap(s: Settings, sess: Session, opts: BootstrapOptions) -> int:
    inv = sess.inv
    ensure_tls(inv)  # after the inventory checks, before anything reaches a host
    if opts.add_host is not None:
        return add_host(s, sess, opts)
    with tempfile.TemporaryDirectory(prefix="raftctl-") as tmpd, \
            Reporter(s.out.err, inv.hosts) as rep:
        sess.rep = rep
        nodes = preflight(sess, inv.hosts, opts.offline)
        probes = {n.host.name: n.probe for n in nodes}
        early = address_refusals(probes, inv, str(sess.inventory_path))
        if early is not None:
            refuse(sess, early)  # at once: before building or shipping anything
        wheel = get_wheel(opts.wheel, sess.note)
        info = wheel_info(wheel)
        p = plan(probes, inv, info, upgrade=opts.upgrade,
                 inventory_path=str(sess.inventory_path))
        refuse(sess, p)
        run = Run(s, sess, opts, nodes, p, wheel, info, Path(tmpd))
        return upgrade(run) if p.mode == "upgrade" else start(run)


def refuse(sess: Session, p: Plan) -> None:
    """Raise the plan's refusals, before anything has changed on any host."""
    if not p.refusals:
        return
    if all(r.host for r in p.refusals):
        raise HostsFailed([HostError(sess.inv.host(r.host), r.message, r.code, r.kind)
                           for r in p.refusals if r.host], p.summary)
    r = p.refusals[0]
    raise CliError(r.message, r.code, r.kind)


def _install_all(run: Run, nodes: list[Node], nothing: str) -> None:
    ship = prepare_shipment(run.sess, run.opts, run.wheel, nodes, run.tmp)
    errs = host_errors(parallel(lambda n: install(run.sess, n, ship), nodes))
    if errs:
        what = "the new build " if run.plan.mode == "upgrade" else ""
        raise HostsFailed(errs, f"installing {what}failed on " +
                          ", ".join(e.host.name for e in errs) + f"; nothing was {nothing}")


def _mark_unchanged(run: Run, nodes: list[Node]) -> None:
    for n in nodes:
        n.status = "running"
        n.pid = n.probe["status"]["pid"]
        run.sess.done(n.host, f"unchanged (pid {n.pid})")


def _record_build(n: Node, info: dict, **extra) -> None:
    n.probe["status"]["state"] = {**n.state, "build": info["build"],
                                  "version": info["version"], **extra}


# --------------------------------------------------------------------------- start --
def start(run: Run) -> int:
    """First bootstrap, a resume, or nothing to do."""
    sess = run.sess
    need_install = [n for n in run.nodes if run.hp(n).install]
    need_start = [n for n in run.nodes if run.hp(n).start]
    _mark_unchanged(run, [n for n in run.nodes if n.running])
    if not run.plan.changes:
        return run.finish(changed=False)
    if need_install:
        _install_all(run, need_install, "started")
    for_activate = [n for n in run.nodes if run.hp(n).activate]
    errs = host_errors(parallel(lambda n: activate(sess, n, run.info, run.hp(n).config),
                                for_activate))
    if errs:
        raise HostsFailed(errs, "writing the configuration failed on " +
                          ", ".join(e.host.name for e in errs) + "; nothing was started")
    for n in for_activate:
        _record_build(n, run.info, installed=True)
    _start_and_wait(run, need_start)
    for n in need_start:
        n.status = "started"
        sess.done(n.host, f"started (pid {n.pid})")
    return run.finish(changed=True)


def _start_and_wait(run: Run, need_start: list[Node]) -> None:
    """Start ``need_start`` and wait for a healthy cluster; on failure stop again what this
    run started (and only that) and say how to resume."""
    sess = run.sess
    results = parallel(lambda n: start_node(sess, n), need_start)
    started = [n for n, _, err in results if err is None]
    try:
        errs = host_errors(results)
        if errs:
            raise HostsFailed(errs, "starting raftd failed on " +
                              ", ".join(e.host.name for e in errs))
        for n in need_start:
            sess.step(n.host, "started; waiting for the cluster")
        endpoints = sess.endpoints()
        wait_healthy(sess, endpoints, endpoints, run.s.timeout, watch=need_start)
    except CliError as e:
        if started:
            parallel(lambda n: stop_node(sess, n), started)
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


# ------------------------------------------------------------------------- upgrade --
def upgrade(run: Run) -> int:
    """--upgrade of a running cluster: prepare every node, then restart them one at a time."""
    sess = run.sess
    todo = [n for n in run.nodes if run.hp(n).restart]
    if sess.cluster_status()["leader"] is None:
        raise CliError("the cluster has no leader; not upgrading (see raftctl ssh status)",
                       UNAVAILABLE, "unavailable")
    _mark_unchanged(run, [n for n in run.nodes if n not in todo])
    if not todo:
        return run.finish(changed=False)
    need_install = [n for n in todo if run.hp(n).install]
    if need_install:
        _install_all(run, need_install, "restarted")
    for n in todo:
        sess.step(n.host, "ready to restart")

    def prepare(n: Node) -> None:
        activate(sess, n, run.info, run.hp(n).config)
        _record_build(n, run.info)

    def rollback(n: Node) -> None:
        rb = run.hp(n).rollback
        if rb is None:
            raise CliError("no previous build to roll back to")
        activate(sess, n, {"build": rb.build, "version": rb.version, "file": rb.wheel},
                 rb.config)

    roll(sess, todo, run.nodes, run.s.timeout, prepare=prepare, verb="upgraded",
         rollback=rollback)
    return run.finish(changed=True)
