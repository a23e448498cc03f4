"""raftctl local up|down: a cluster of raftd processes on this machine.

    DIR/cluster.yaml          the nodes (id, address, data_dir), so later commands find them
    DIR/<id>/raftd.yaml       that node's config
    DIR/<id>/raftd.log        its log (stderr)
    DIR/<id>/raftd.pid        its pid while it runs; DIR/<id>/wal/ its durable log
    DIR/certs/                with --tls: the cluster CA, a certificate per node and an admin
                              client certificate that raftctl uses for this cluster
"""
from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional, TypeGuard

import typer
import yaml

from raftd.config import dump_config

from ..cluster import gather_status, unreachable_error
from ..context import OutputOpt, TimeoutOpt, run, settings, usage_error
from ..errors import UNAVAILABLE, CliError
from . import local_dir

app = typer.Typer(help="Run a cluster of raftd processes on this machine.", no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="directory holding the cluster")]


def free_base_port(n: int, host: str = "127.0.0.1") -> int:
    """A port P with P..P+n-1 all free now (a local cluster's ports).  Drawn below the
    kernel's ephemeral range (32768-60999 by default), where outgoing connections pick their
    ports: a base taken from bind(0) lies in that range, and a neighbouring port was sometimes
    taken by the time raftd bound it (seen in CI)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        if ports_free(base, n, host):
            return base
    raise RuntimeError(f"no {n} consecutive free ports on {host}")


def ports_free(base: int, n: int, host: str = "127.0.0.1") -> bool:
    """True if base..base+n-1 can all be bound on ``host`` now."""
    socks = []
    try:
        for i in range(n):
            s = socket.socket()
            socks.append(s)
            # SO_REUSEADDR as raftd's listener (reuse_address=True): a port
            # held only by TIME-WAIT connections after `local down` is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, base + i))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def default_base_port(n: int, info, host: str = "127.0.0.1", preferred: int = 7001) -> int:
    """The demo's 7001 when its n ports are free, else free ports, said in one line: a new
    cluster must not collide with one already running there (issue 16 §11)."""
    taken = [p for p in range(preferred, preferred + n) if not ports_free(p, 1, host)]
    if not taken:
        return preferred
    base = free_base_port(n, host)
    info(f"{_ports_phrase(taken)} in use (another cluster?); using "
         f"{base}-{base + n - 1} (choose with --base-port)")
    return base


def _ports_phrase(ports: list[int]) -> str:
    """"port 7002 is", "ports 7002-7003 are", "ports 7001, 7003 are": the ports actually
    taken, not the whole range asked for."""
    if len(ports) == 1:
        return f"port {ports[0]} is"
    if ports == list(range(ports[0], ports[-1] + 1)):
        return f"ports {ports[0]}-{ports[-1]} are"
    return f"ports {', '.join(map(str, ports))} are"


def _pid_alive(pid: int | None) -> TypeGuard[int]:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # guard against pid reuse: it must be a raftd
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"raftd" not in cmdline:
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read_pid(node_dir: Path) -> int | None:
    """The pid of the raftd serving ``node_dir``, or None: a pid file whose process does not
    hold that data dir (a copied directory's, a stale one) names no node of ours."""
    pid = local_dir.read_pid(node_dir)
    return pid if local_dir.serves(pid, node_dir) else None


def plan_layout(directory: Path, nodes: int, base_port: int, host: str,
            distinct_ips: bool) -> list[dict]:
    out = []
    for i in range(1, nodes + 1):
        h = f"127.0.0.{10 + i}" if distinct_ips else host
        out.append({"id": f"n{i}", "address": f"{h}:{base_port + i - 1}",
                    "data_dir": str((directory / f"n{i}").resolve())})
    return out


def write_configs(directory: Path, nodes: list[dict], tuning: dict,
                   tls: bool = False) -> None:
    """The node configs of a new cluster, with a new cluster_id shared by its nodes (issue 14
    §9: a server of another cluster is then refused as a peer and as a new member)."""
    peers = {n["id"]: n["address"] for n in nodes}
    cluster_id = secrets.token_hex(16)
    client = None
    if tls:
        from raftd import pki  # noqa: PLC0415 - cryptography only when asked for TLS
        certs = (directory / "certs").resolve()
        pki.init_ca(certs, cluster="raftd-local")
        admin = pki.issue_client(certs, "admin", "admin")
        client = {"ca": str(admin.ca), "cert": str(admin.cert), "key": str(admin.key)}
    for n in nodes:
        d = Path(n["data_dir"])
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        cfg = {"id": n["id"], "listen": n["address"], "data_dir": n["data_dir"], "peers": peers,
               "cluster_id": cluster_id, **tuning}
        if tls:
            cfg["tls"] = _node_tls(directory, n)
        (d / "raftd.yaml").write_text(dump_config(cfg))
    save_cluster(directory, nodes, client)


def _node_tls(directory: Path, n: dict) -> dict:
    """Issue node ``n`` its certificate (CN = id, SAN = its host) from DIR/certs."""
    from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    paths = pki.issue_node((directory / "certs").resolve(), n["id"],
                           [n["address"].rsplit(":", 1)[0]], force=True)
    return {"ca": str(paths.ca), "cert": str(paths.cert), "key": str(paths.key)}


def save_cluster(directory: Path, nodes: list[dict], tls: dict | None = None) -> None:
    f = directory / "cluster.yaml"
    if tls is None and f.exists():
        tls = local_dir.read_cluster_file(directory).get("tls")
    f.write_text(yaml.safe_dump({"nodes": nodes, **({"tls": tls} if tls else {})},
                                sort_keys=False))


_TLS_ENV = ("RAFTCTL_CACERT", "RAFTCTL_CERT", "RAFTCTL_KEY")


def cluster_tls(directory: Path) -> dict | None:
    """The admin client certificate of a local TLS cluster ({ca, cert, key}), or None.
    raftctl's local commands talk to DIR's nodes with DIR's own credentials: its admin
    certificate for a TLS cluster, plaintext otherwise.  RAFTCTL_* certificates in the
    environment may be another cluster's (the README's TLS section exports them), and with
    them `local up` of a second cluster failed its TLS check or waited for a leader it could
    not see (trial 7 of issue 16)."""
    f = directory / "cluster.yaml"
    tls = local_dir.read_cluster_file(directory).get("tls") if f.exists() else None
    if tls:
        os.environ.update({"RAFTCTL_CACERT": tls["ca"], "RAFTCTL_CERT": tls["cert"],
                           "RAFTCTL_KEY": tls["key"]})
    elif f.exists():
        for name in _TLS_ENV:
            os.environ.pop(name, None)
    return tls


def load_cluster(directory: Path) -> list[dict]:
    """The nodes of DIR/cluster.yaml, each with its data dir inside DIR (else one line, exit
    2: local_dir.read_cluster_file)."""
    nodes = local_dir.read_cluster_file(directory)["nodes"]
    cluster_tls(directory)
    return nodes


def start_node(n: dict) -> int:
    """Start node ``n``'s raftd; its pid.  ``n["log_from"]``: where its own log lines begin
    (the log is appended to: the lines before are an earlier process's)."""
    d = Path(n["data_dir"])
    logf = open(d / "raftd.log", "ab")  # noqa: SIM115 - handed to the child
    n["log_from"] = logf.tell()
    proc = subprocess.Popen([sys.executable, "-m", "raftd", "--config", str(d / "raftd.yaml")],
                            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                            start_new_session=True, cwd=str(d))
    logf.close()
    return proc.pid


def _last_log_line(d: Path, start: int = 0) -> str:
    """The last line of ``d``'s log from byte ``start`` on."""
    try:
        with open(d / "raftd.log", "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


def _why_exited(n: dict) -> str:
    """The last line node ``n``'s process logged or, when it logged none (trial 6 saw an
    empty reason, and under load an earlier process's "stopping"), its exit status: it is
    our child, so waitpid has it."""
    pid = n["pid"]
    line = _last_log_line(Path(n["data_dir"]), n.get("log_from", 0))
    if line:
        return line
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child, or reaped already
        return "no log line, exit status unknown"
    if not done:
        return "no log line"
    code = os.waitstatus_to_exitcode(status)
    return (f"no log line, killed by signal {-code}" if code < 0
            else f"no log line, exit status {code}")


# More nodes than this are no cluster a machine runs: each is a Python process (about
# 40 MB), and on a laptop 200 of them could not even elect a leader in time (trial 6, 15).
MAX_NODES = 25


def bring_up(directory: Path, nodes: int | None = None, base_port: int | None = None,
             host: str = "127.0.0.1", distinct_ips: bool = False, fsync: bool = True,
             timeout: float = 20.0, info=lambda text: None,
             tls: bool = False) -> tuple[list[dict], dict]:
    """Start (or restart) the local cluster in ``directory``; wait until every node answers
    at its address and there is a leader.  Returns the layout (with pids) and the status.
    If a node it started fails, it stops the nodes it started and raises (one line each);
    a new cluster's files are then removed again, so that a retry starts afresh."""
    explicit = {"--nodes": nodes, "--base-port": base_port}
    nodes = 3 if nodes is None else nodes
    base_port = 7001 if base_port is None else base_port
    if not 1 <= nodes <= MAX_NODES:
        raise usage_error(f"--nodes must be from 1 to {MAX_NODES}, not {nodes}")
    if not 1 <= base_port <= 65536 - nodes:
        raise usage_error(f"--base-port must be from 1 to {65536 - nodes} for {nodes} nodes, "
                          f"not {base_port}")
    local_dir.check_dir(directory, must_exist=False)
    directory.mkdir(parents=True, exist_ok=True)
    new = not (directory / "cluster.yaml").exists()
    if not new:
        layout = load_cluster(directory)
        ignored = [k for k, v in explicit.items() if v is not None]
        if ignored:
            info(f"{directory} already holds a cluster ({len(layout)} nodes at "
                 f"{', '.join(n['address'] for n in layout)}): {' and '.join(ignored)} "
                 f"ignored")
        if tls and not cluster_tls(directory):
            raise usage_error(f"{directory} holds a plaintext cluster; --tls applies when a "
                              f"cluster is created (use a new --dir)")
    else:
        if explicit["--base-port"] is None and not distinct_ips:
            base_port = default_base_port(nodes, info, host)  # the demo may hold 7001..
        layout = plan_layout(directory, nodes, base_port, host, distinct_ips)
        had_files = local_dir.holds_files(layout)
        write_configs(directory, layout, {"fsync": fsync, "tick_ms": 25,
                                           "election_timeout_ms": 500,
                                           "heartbeat_interval_ms": 100}, tls)
        cluster_tls(directory)
    layout = _skip_removed(directory, layout, info)
    started = []
    for n in layout:
        pid = _read_pid(Path(n["data_dir"]))
        if pid is not None:
            n["pid"] = pid
            continue
        n["pid"] = start_node(n)
        started.append(n["id"])
    try:
        st = _wait_until_up(directory, layout, set(started), timeout)
    except CliError:
        _stop([n for n in layout if n["id"] in started])  # leave nothing half-started behind
        if new:  # said before the error lines, which stay one per failed node
            info(local_dir.forget_new_cluster(directory, layout, had_files))
        raise
    removed = _removed(layout, st)
    if removed:
        # Removed by `raftctl member remove`/`replace` while this DIR still lists them: they
        # must not run (a removed server only disrupts), so stop them and say so.
        _stop(removed)
        info(f"stopped {', '.join(n['id'] for n in removed)}: removed from the cluster's "
             f"configuration (`raftctl local remove ID --dir {directory}` forgets it)")
        layout = [n for n in layout if n not in removed]
    # Success only now, and counting only the nodes that stay (trial 6, items 7 and 8).
    started = [i for i in started if any(n["id"] == i for n in layout)]
    info(f"started {', '.join(started)} in {directory}" if started
         else f"all {len(layout)} nodes already running in {directory}")
    for n in layout:
        n["pid"] = _read_pid(Path(n["data_dir"])) or n["pid"]
    return layout, st


def _skip_removed(directory: Path, layout: list[dict], info) -> list[dict]:
    """``layout`` without the stopped servers that were removed from the cluster (issue 16
    §8): a removed server only disrupts, so it is not started.  Removals are read from the
    nodes' own data dirs (``removed_ids``, read only) and from any node already running."""
    from . import local_ids  # noqa: PLC0415 - reads data dirs: only `local up` needs it

    gone = local_ids.removed_on_disk(layout)
    running = [n for n in layout if _pid_alive(_read_pid(Path(n["data_dir"])))]
    if running:
        st = asyncio.run(gather_status([n["address"] for n in running], 0.5, pinned=False))
        gone |= local_ids.removed_by_cluster(st)
    skipped = [n for n in layout if n["id"] in gone and n not in running]
    if skipped:
        ids = ", ".join(n["id"] for n in skipped)
        info(f"not starting {ids}: removed from the cluster's configuration "
             f"(`raftctl local remove ID --dir {directory}` forgets it)")
    return [n for n in layout if n not in skipped]


def _failures(layout: list[dict], started: set[str], st: dict) -> list[str]:
    """Why each node this command started is not (yet known to be) the one serving at its
    address: it exited, or another process answers there (another cluster on those ports)."""
    answering = {n["address"]: n for n in st["nodes"] if n["reachable"]}
    out = []
    for n in layout:
        if n["id"] not in started:
            continue
        if not _pid_alive(n["pid"]):
            out.append(f"{n['id']} exited: {_why_exited(n)} "
                       f"(log: {n['data_dir']}/raftd.log)")
            continue
        other = answering.get(n["address"])
        if other is not None and other.get("pid") not in (None, n["pid"]):
            out.append(f"{n['id']}: {n['address']} is answered by another raftd (pid "
                       f"{other['pid']}, id {other['id']}), not by the one started (pid "
                       f"{n['pid']})")
    return out


def _wait_until_up(directory: Path, layout: list[dict], started: set[str],
                   timeout: float) -> dict:
    """Wait until every node of ``layout`` answers at its address (the ones this command
    started: with their own pid) and there is a leader.  One line per failed node."""
    endpoints = [n["address"] for n in layout]
    ours = set(endpoints)
    deadline = time.monotonic() + timeout
    while True:
        st = asyncio.run(gather_status(endpoints, 0.5, pinned=False))
        failed = _failures(layout, started, st)
        if failed:
            if any(not _pid_alive(n["pid"]) for n in layout if n["id"] in started) \
                    or time.monotonic() > deadline:
                raise CliError("\n".join(failed))
        # Our nodes up and some leader (which may be a member added outside this DIR); a
        # server elsewhere that is down or gone is not ours to wait for.
        elif st["leader"] and all(n["reachable"] for n in st["nodes"] if n["address"] in ours):
            return st
        if time.monotonic() > deadline:
            down = [n["id"] for n in st["nodes"] if n["address"] in ours and not n["reachable"]]
            what = (f"{', '.join(map(str, down))} not answering within {timeout:g}s (leader: "
                    f"{st['leader']})" if st["leader"] and down
                    else f"no leader elected within {timeout:g}s")
            raise CliError(f"{what}; see the logs in {directory}/*/raftd.log",
                           UNAVAILABLE, "unavailable")
        time.sleep(0.1)


def _removed(layout: list[dict], st: dict) -> list[dict]:
    """Nodes of ``layout`` that the leader's configuration no longer has."""
    conf = st["configuration"]
    members = {*conf["voters"], *conf["learners"], *conf.get("old_voters", [])}
    return [n for n in layout if members and n["id"] not in members]


def _stop(nodes: list[dict], grace: float = 5.0) -> None:
    """SIGTERM the given nodes' processes, SIGKILL after ``grace`` seconds."""
    pids = [n["pid"] for n in nodes if _pid_alive(n.get("pid"))]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def bring_down(directory: Path, grace: float = 5.0) -> dict:
    """SIGTERM every running node of the local cluster, SIGKILL after ``grace`` seconds: the
    nodes in DIR/cluster.yaml and any other raftd serving a node directory of DIR (one
    started by hand and added with `raftctl member add`, one removed but still running).
    Only processes that hold a data dir inside DIR (local_dir.running_nodes)."""
    layout = load_cluster(directory)
    running = local_dir.running_nodes(directory, layout)
    pids = {}
    for n in running:
        try:
            os.kill(n["pid"], signal.SIGTERM)
            pids[n["id"]] = n["pid"]
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids.values()):
        time.sleep(0.05)
    killed = []
    for nid, pid in pids.items():
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            killed.append(nid)
    return {"stopped": sorted(pids, key=_id_order), "killed": killed,
            "already_stopped": sorted((n["id"] for n in layout if n["id"] not in pids),
                                      key=_id_order)}


def _id_order(nid: str) -> tuple[int, str]:
    """n2 before n10."""
    digits = nid.lstrip("abcdefghijklmnopqrstuvwxyz")
    return (int(digits) if digits.isdigit() else 0, nid)


@app.command("up")
def up(ctx: typer.Context,
       nodes: Annotated[Optional[int], typer.Option(
           "--nodes", "-n", help="number of nodes [default: 3]", show_default=False)] = None,
       directory: DirOpt = Path("./raftd-local"),
       base_port: Annotated[Optional[int], typer.Option(
           "--base-port", help="port of n1; n2 is +1 [default: 7001]",
           show_default=False)] = None,
       host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
       distinct_ips: Annotated[bool, typer.Option(
           "--distinct-ips", help="give node i the address 127.0.0.(10+i) so firewall rules "
                                  "can separate nodes")] = False,
       fsync: Annotated[bool, typer.Option(help="fsync the log (turn off only for trials)")] = True,
       tls: Annotated[bool, typer.Option(
           "--tls",
           help="mutual TLS: make a CA and certificates in DIR/certs and use them")] = False,
       output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Start (or restart) a local cluster in DIR and wait until it has a leader.

    Run again on the same DIR: restarts any stopped node and keeps the data.

    With --tls, DIR/certs gets a CA, a certificate per node and an admin client certificate;
    later `raftctl local ...` commands use it, other commands need --cacert/--cert/--key (or
    the RAFTCTL_CACERT/RAFTCTL_CERT/RAFTCTL_KEY variables it prints).

    Example: raftctl local up --nodes 3 --dir ./raftd-local --tls"""
    s = settings(ctx, None, output, timeout or 20.0)

    def body() -> int:
        layout, st = bring_up(directory, nodes, base_port, host, distinct_ips, fsync,
                              s.timeout, s.out.info, tls)
        endpoints = [n["address"] for n in layout]
        client_tls = cluster_tls(directory)
        if s.out.json:
            s.out.emit_json({"endpoints": endpoints, "leader": st["leader"],
                             "nodes": [{"id": n["id"], "address": n["address"], "pid": n["pid"],
                                        "data_dir": n["data_dir"]} for n in layout],
                             "tls": client_tls})
        else:
            s.out.table(["id", "address", "pid", "data_dir"],
                        [[n["id"], n["address"], n["pid"], n["data_dir"]] for n in layout],
                        title=f"leader: {st['leader']}")
            s.out.line(f"endpoints: {','.join(endpoints)}")
            if client_tls:
                s.out.line(f"TLS: export RAFTCTL_CACERT={client_tls['ca']} "
                           f"RAFTCTL_CERT={client_tls['cert']} RAFTCTL_KEY={client_tls['key']}")
            s.out.line(f"try: raftctl -e {','.join(endpoints)} status")
        return 0

    run(s, body)


@app.command("down")
def down(ctx: typer.Context, directory: DirOpt = Path("./raftd-local"),
         grace: Annotated[float, typer.Option(help="seconds before SIGKILL")] = 5.0,
         output: OutputOpt = None) -> None:
    """Stop every node of the local cluster in DIR (SIGTERM, then SIGKILL after --grace).

    Example: raftctl local down --dir ./raftd-local"""
    s = settings(ctx, None, output)

    def body() -> int:
        result = bring_down(directory, grace)
        killed = result["killed"]
        if s.out.json:
            s.out.emit_json(result)
        else:
            s.out.line(f"stopped: {', '.join(result['stopped']) or 'none'}"
                       + (f" (SIGKILL: {', '.join(killed)})" if killed else ""))
        return 0

    run(s, body)


@app.command("add")
def add(ctx: typer.Context, directory: DirOpt = Path("./raftd-local"),
        output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Start one more local node in join mode and add it to the cluster (learner, catch-up,
    voter).

    Example: raftctl local add --dir ./raftd-local"""
    s = settings(ctx, None, output, timeout or 60.0)

    def body() -> int:
        layout = load_cluster(directory)
        s.endpoints = [n["address"] for n in layout]
        node = _plan_new_node(directory, layout, s.endpoints)
        d = Path(node["data_dir"])
        d.mkdir(parents=True, mode=0o700)  # a new id: never an existing dir
        try:
            result = _start_and_add(s, directory, layout, node)
        except BaseException:
            # Nothing of a failed add stays behind: not the process, not its (empty) data
            # dir, not a line in cluster.yaml (a later `local up` would start it).
            _stop([node])
            shutil.rmtree(d, ignore_errors=True)
            raise
        layout.append({k: node[k] for k in ("id", "address", "data_dir")})
        save_cluster(directory, layout)
        for p in result["phases"]:
            s.out.info(f"- {p}")
        if s.out.json:
            s.out.emit_json({"id": node["id"], "address": node["address"], "pid": node["pid"],
                             "data_dir": node["data_dir"]})
        else:
            s.out.line(f"added {node['id']} at {node['address']} (pid {node['pid']})")
        return 0

    run(s, body)


def _plan_new_node(directory: Path, layout: list[dict], endpoints: list[str]) -> dict:
    """The id, address and data dir of the node `local add` starts: an id the cluster never
    had (members, removed ids, DIR's node dirs: ids are never reused) and a free port above
    every member's.  Fails at once, starting nothing, when the cluster has no leader."""
    from . import local_ids  # noqa: PLC0415 - reads data dirs: only this path needs it

    st = asyncio.run(gather_status(endpoints, 0.5))
    unreachable = unreachable_error(st, endpoints)
    if unreachable is not None or st["leader"] is None:
        why = str(unreachable) if unreachable is not None else "no leader"
        raise CliError(f"{why}; nothing was started (`raftctl local up --dir {directory}` "
                       f"starts the cluster)", UNAVAILABLE, "unavailable")
    used = ({n["id"] for n in layout} | local_ids.members(st) | local_ids.removed_by_cluster(st)
            | local_ids.removed_on_disk(layout) | {p.name for p in directory.iterdir()})
    nid = local_ids.new_id(used)
    hosts = {n["address"].rsplit(":", 1)[0] for n in layout}
    host = next(iter(hosts)) if len(hosts) == 1 else f"127.0.0.{10 + int(nid[1:])}"
    taken = {int(a.rsplit(":", 1)[1]) for a in
             {n["address"] for n in layout} | local_ids.addresses(st)}
    port = local_ids.new_port(taken, lambda p: ports_free(p, 1, host))
    return {"id": nid, "address": f"{host}:{port}", "data_dir": str((directory / nid).resolve())}


def _start_and_add(s, directory: Path, layout: list[dict], node: dict) -> dict:
    """Write ``node``'s config (join mode, the cluster's tuning), start it, wait until it
    listens, and add it to the cluster; the change's result."""
    from .member import change  # noqa: PLC0415 - lazy import: only this path needs it

    d = Path(node["data_dir"])
    first = yaml.safe_load((Path(layout[0]["data_dir"]) / "raftd.yaml").read_text())
    tuning = {k: v for k, v in first.items()
              if k not in ("id", "listen", "data_dir", "peers", "tls")}
    if first.get("tls"):
        tuning["tls"] = _node_tls(directory, node)
    (d / "raftd.yaml").write_text(dump_config({"id": node["id"], "listen": node["address"],
                                               "data_dir": node["data_dir"], "join": True,
                                               **tuning}))
    node["pid"] = start_node(node)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for it to listen
        if asyncio.run(gather_status([node["address"]], 0.3, pinned=False))["nodes"][0][
                "reachable"]:
            break
        if not _pid_alive(node["pid"]):
            raise CliError(f"{node['id']} exited: {_why_exited(node)}")
        time.sleep(0.1)
    return change(s, add={node["id"]: node["address"]})


@app.command("remove")
def remove(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
           directory: DirOpt = Path("./raftd-local"), output: OutputOpt = None,
           timeout: TimeoutOpt = None) -> None:
    """Remove a local node from the configuration, then stop it.

    Example: raftctl local remove n4 --dir ./raftd-local"""
    s = settings(ctx, None, output, timeout or 60.0)

    def body() -> int:
        from .member import change  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

        layout = load_cluster(directory)
        node = next((n for n in layout if n["id"] == node_id), None)
        if node is None:
            raise usage_error(f"no node {node_id} in {directory}")
        s.endpoints = [n["address"] for n in layout]
        st = asyncio.run(gather_status(s.endpoints, 1.0))
        result: dict[str, Any]
        if st["leader"] and node in _removed(layout, st):
            # Already removed (e.g. by `raftctl member remove`): nothing to change, but its
            # process may still run: stop it below.
            s.out.info(f"{node_id} is not in the configuration any more; stopping it")
            conf = st["configuration"]
            result = {"configuration": {"voters": conf["voters"]}, "phases": []}
        else:
            result = change(s, remove=[node_id])
        for p in result["phases"]:
            s.out.info(f"- {p}")
        pid = _read_pid(Path(node["data_dir"]))
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        layout = [n for n in layout if n["id"] != node_id]
        save_cluster(directory, layout)
        if s.out.json:
            s.out.emit_json({"removed": node_id, "configuration": result["configuration"]})
        else:
            s.out.line(f"removed {node_id}; voters: {','.join(result['configuration']['voters'])}")
        return 0

    run(s, body)
