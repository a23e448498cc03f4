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
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..bootstrap.apply import bootstrap
from ..bootstrap.certs import tls_files
from ..bootstrap.health import roll, wait_healthy
from ..bootstrap.session import (HostsFailed, Node, Session, host_errors, session_run,
                                 stderr_line)
from ..bootstrap.steps import BootstrapOptions, start_node, stop_node
from ..cluster import gather_status
from ..context import OutputOpt, Settings, settings, usage_error
from ..errors import FAILED, UNAVAILABLE, CliError
from ..inventory import Host
from ..ssh import HostError, Remote, Reporter, parallel

ssh_app = typer.Typer(help="Day-2 operations on a cluster deployed with `raftctl bootstrap`:\n\n"
                           "status, start, stop, restart (rolling), logs.",
                      no_args_is_help=True)

InventoryArg = Annotated[Path, typer.Argument(metavar="INVENTORY",
                                              help="inventory YAML file")]
HostOpt = Annotated[Optional[list[str]], typer.Option(
    "--host", help="only this host (repeatable) [default: all hosts]")]


# --timeout of each command (a type alias each, so the type checker sees them as types).
BootstrapTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="seconds to wait for a leader, and for each node to catch up "
                      "[default: 60]")]
StartTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="seconds to wait for the started nodes and a leader [default: 30]")]
RestartTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="seconds to wait for each node to come back and catch up "
                      "[default: 60]")]
AcceptOpt = Annotated[bool, typer.Option(
    "--accept-new-host-keys", help="record the host keys of hosts not yet in the known_hosts "
                                   "file (a changed key is always refused)")]


# ----------------------------------------------------------------------- commands --
def command_settings(ctx: typer.Context, output: str | None, timeout: float | None,
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
        s = command_settings(ctx, output, timeout, 60.0)
        from ..ssh import cache_dir  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        opts = BootstrapOptions(upgrade=upgrade, add_host=add_host_, offline=offline,
                                wheelhouse=(wheelhouse or cache_dir() / "wheelhouse")
                                if offline else None, wheel=wheel)

        def session() -> Session:
            if add_host_ is not None and upgrade:
                raise usage_error("--add-host and --upgrade cannot be combined")
            if wheelhouse is not None and not offline:
                raise usage_error("--wheelhouse needs --offline")
            return Session(s, inventory, accept_new_host_keys)

        session_run(s, session, lambda sess: bootstrap(s, sess, opts))

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
        session_run(s, lambda: Session(s, inventory, accept_new_host_keys),
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
        errors = host_errors(results)
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
                stderr_line(json.dumps({"error": r["status"], "host": h.name,
                                        "message": f"{h.label}: {r['error']}"}))
            else:
                stderr_line(f"raftctl: error: {h.label}: {r['error']}")
        if code and not bad:
            stderr_line("no leader")
        return code

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


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
    errors = host_errors(results)
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
    s = command_settings(ctx, output, timeout, 30.0)

    def body(sess: Session) -> int:
        with Reporter(s.out.err, sess.inv.select(hosts)) as rep:
            sess.rep = rep
            nodes = _nodes_for(sess, hosts)
            todo = [n for n in nodes if not n.running]
            for n in nodes:
                if n.running:
                    n.status = "running"
                    sess.done(n.host, f"already running (pid {n.pid})")
            errs = host_errors(parallel(lambda n: start_node(sess, n), todo))
            if errs:
                raise HostsFailed(errs, "starting failed on " +
                                  ", ".join(e.host.name for e in errs))
            endpoints = sess.endpoints()
            wait_healthy(sess, endpoints, [n.host.endpoint for n in todo], s.timeout,
                          watch=todo, what="the started nodes answering and a leader")
            for n in todo:
                n.status = "started"
                sess.done(n.host, f"started (pid {n.pid})")
            sess.rep = None
        st = sess.cluster_status()
        _simple_table(s, sess, nodes, {"leader": st["leader"]})
        return 0

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


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
                res = stop_node(sess, n, grace)
                n.status = ("stopped" + (" (SIGKILL)" if res["killed"] else "")
                            if res["was_running"] else "not running")
                n.pid = None
                sess.done(n.host, n.status)
            errs = host_errors(parallel(one, nodes))
            sess.rep = None
        if errs:
            raise HostsFailed(errs, "stopping failed on " + ", ".join(e.host.name for e in errs))
        _simple_table(s, sess, nodes)
        return 0

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


@ssh_app.command("restart")
def ssh_restart_cmd(ctx: typer.Context, inventory: InventoryArg, hosts: HostOpt = None,
                    accept_new_host_keys: AcceptOpt = False, output: OutputOpt = None,
                    timeout: RestartTimeoutOpt = None) -> None:
    """Restart raftd one node at a time (followers first; the leader last, after handing
    leadership over), waiting for each to catch up.

    \b
    Example: raftctl ssh restart inventory.yaml"""
    s = command_settings(ctx, output, timeout, 60.0)

    def body(sess: Session) -> int:
        with Reporter(s.out.err, sess.inv.select(hosts)) as rep:
            sess.rep = rep
            members = _nodes_for(sess, None)
            chosen = {h.name for h in sess.inv.select(hosts)}
            todo = [n for n in members if n.host.name in chosen]
            for n in members:
                if n.host.name not in chosen:
                    n.status = "running" if n.running else "stopped"
            st = roll(sess, todo, members, s.timeout, verb="restarted")
            sess.rep = None
        _simple_table(s, sess, todo, {"leader": st["leader"]})
        return 0

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


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
        errors = host_errors(results)
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

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)


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
    s = command_settings(ctx, output, timeout, 30.0)

    def body(sess: Session) -> int:
        from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

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
            r = sess.connect(h).call("tls", **sess.args(h, tls=tls_files(inv, h)))
            return {"host": h, **r}

        results = parallel(ship, selected)
        errs = host_errors(results)
        if errs:
            raise HostsFailed(errs, "shipping certificates failed on " +
                              ", ".join(e.host.name for e in errs))
        rows = []
        deadline = time.monotonic() + s.timeout
        for r in (r for _, r, _ in results if r is not None):  # (no errors: checked above)
            h = r["host"]
            row = {"name": h.name, "not_after": want[h.name], "reloaded": r["reloaded"],
                   "confirmed": False}
            while r["reloaded"] and time.monotonic() < deadline:
                st = asyncio.run(gather_status([h.endpoint], 1.0, pinned=False))["nodes"][0]
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

    session_run(s, lambda: Session(s, inventory, accept_new_host_keys), body)

