"""`raftctl bootstrap --add-host NAME`: start a new host in join mode and add it to the
running cluster by joint consensus (Raft §6; thesis §4.3: as a learner first, then a voter)."""
from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from ..cluster import gather_status
from ..context import Settings, usage_error
from ..errors import FAILED, UNAVAILABLE, CliError
from ..ssh import HostError, Reporter, wheel_info
from .health import check_alive, wait_healthy
from .report import print_result
from .session import Node, Session
from .steps import (BootstrapOptions, activate, get_wheel, install, preflight,
                    prepare_shipment, start_node, stop_node)


def add_host(s: Settings, sess: Session, opts: BootstrapOptions) -> int:
    inv = sess.inv
    assert opts.add_host is not None
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
        (n,) = preflight(sess, [target], opts.offline)
        wheel = get_wheel(opts.wheel, sess.note)
        info = wheel_info(wheel)
        member_nodes = [Node(h, None, status="running") for h in others  # type: ignore[arg-type]
                        if h.name in members]
        if target.name in members and n.running:
            n.status, n.pid = "running", n.probe["status"]["pid"]
            sess.done(target, f"already a member (pid {n.pid})")
            return finish_add(s, sess, member_nodes, n, st, changed=False, info=info)
        if target.name in members:
            raise CliError(f"{target.name} is a member of the cluster but not running; start "
                           f"it with: raftctl ssh start {sess.inventory_path} --host "
                           f"{target.name}", FAILED, "stopped")
        if not n.installed or n.state.get("build") != info["build"]:
            ship = prepare_shipment(sess, opts, wheel, [n], Path(tmpd))
            install(sess, n, ship)
        text = inv.node_config_text(target, join=True)
        activate(sess, n, info, text)
        n.probe["status"]["state"] = {"build": info["build"], "version": info["version"]}
        started = not n.running
        if started:
            start_node(sess, n)
        try:
            sess.step(target, "waiting for it to listen")
            deadline = time.monotonic() + 15
            while not asyncio.run(gather_status([target.endpoint], 0.5))["nodes"][0]["reachable"]:
                if time.monotonic() > deadline:
                    raise HostError(target, f"raftd does not answer at {target.endpoint}; "
                                            f"last lines of its log:\n{sess.log_tail(target)}")
                check_alive(sess, [n])
                time.sleep(0.2)
            sess.step(target, "adding it to the cluster (learner, catch-up, joint consensus)")
            from ..commands.member import change  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
            result = change(Settings(sess.endpoints(others), s.out, max(s.timeout, 60.0)),
                            add={target.name: target.endpoint})
        except CliError as e:
            if started:
                stop_node(sess, n)
            raise CliError(f"{e}; stopped {target.name} again (it was not added)", e.code,
                           e.kind) from None
        except Exception as e:  # noqa: BLE001 - the change itself failed: report and stop
            if started:
                stop_node(sess, n)
            raise CliError(f"adding {target.name} failed: {e}; stopped it again (check "
                           f"`raftctl member list` before retrying)", FAILED,
                           type(e).__name__) from None
        for p in result.get("phases", []):
            sess.note(f"{target.name}: {p}")
        n.status = "added"
        sess.done(target, f"added (pid {n.pid})")
        return finish_add(s, sess, member_nodes, n, None, changed=True, info=info)


def finish_add(s: Settings, sess: Session, members: list[Node], n: Node, st: dict | None,
                changed: bool, info: dict) -> int:
    hosts = [m.host for m in members] + [n.host]
    endpoints = sess.endpoints(hosts)
    st = wait_healthy(sess, endpoints, endpoints, s.timeout, catch_up=n.host.endpoint,
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
    print_result(s, sess.inv, members + [n], st, changed, message)
    return 0

