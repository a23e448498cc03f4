"""raftctl snapshot create|list|save|inspect|restore|recover: snapshots, backups, recovery.

Example session:
    raftctl snapshot create --all
    raftctl snapshot save backup.snap            # consistent backup from the leader
    raftctl snapshot inspect backup.snap
    raftctl snapshot restore backup.snap --dir ./restored --nodes 3
    raftctl snapshot recover old/n1 old/n2 --dir ./recovered    # a majority is lost for good
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from raftd import recovery
from raftd.client import AsyncClient, ClientError
from raftd.recovery import CorruptSnapshotError

from ..cluster import gather_status, require_reachable
from ..context import EndpointsOpt, OutputOpt, TimeoutOpt, run, settings, usage_error
from ..errors import UNAVAILABLE, CliError, fail
from .local import bring_up, default_base_port, plan_layout, write_configs

app = typer.Typer(help="Snapshots, backups, restore and disaster recovery.",
                  no_args_is_help=True)


async def _ask(address: str, op: str, args: dict, timeout: float) -> dict:
    async with AsyncClient([address], timeout=timeout) as c:
        return await c.request(op, args, attempt_timeout=timeout)


def _targets(s, node: str | None, all_: bool, hint: str = " (use --node or --all)"
             ) -> list[dict]:
    """The nodes to ask: ``node``, every reachable one (``all_``) or the leader; ``hint``
    follows "no leader" (empty for a command without --node/--all)."""
    st = asyncio.run(gather_status(s.endpoints, min(s.timeout, 1.5)))
    require_reachable(st, s.endpoints)  # `no raftd at ...`, or why none answered
    up = [n for n in st["nodes"] if n["reachable"]]
    if node:
        picked = [n for n in up if n["id"] == node]
        if not picked:
            conf = st["configuration"]
            members = sorted({*conf["voters"], *conf["learners"], *conf.get("old_voters", [])})
            if members and node not in members:
                raise usage_error(f"{node} is not a member of the cluster (members: "
                                  f"{', '.join(members)})")
            raise CliError(f"node {node} is not reachable", UNAVAILABLE, "unavailable")
        return picked
    if all_:
        return up
    leader = [n for n in up if n["id"] == st["leader"]]
    if not leader:
        raise CliError(f"no leader{hint}", UNAVAILABLE, "unavailable")
    return leader


def _every_node(s) -> tuple[list[dict], list[dict]]:
    """For --all: the reachable nodes, and every other node the endpoints and the
    configuration name (each {"node", "address", "error"}): a voter that is down is not
    silently left out."""
    st = asyncio.run(gather_status(s.endpoints, min(s.timeout, 1.5)))
    require_reachable(st, s.endpoints)
    up = [n for n in st["nodes"] if n["reachable"]]
    down = [{"node": n["id"], "address": n["address"],
             "error": f"unreachable: {n.get('error') or 'no answer'}"}
            for n in st["nodes"] if not n["reachable"]]
    return up, down


@app.command("create")
def create(ctx: typer.Context,
           node: Annotated[Optional[str], typer.Option("--node", help="node id")] = None,
           all_: Annotated[bool, typer.Option("--all", help="every reachable node")] = False,
           endpoints: EndpointsOpt = None, output: OutputOpt = None,
           timeout: TimeoutOpt = None) -> None:
    """Take a snapshot now (on the leader, one --node, or --all) and compact the log.

    With --all, a node that could not be snapshotted (down, unreachable) is listed on stderr
    and in JSON `failed`, and the command exits 3.  Example: raftctl snapshot create --all"""
    s = settings(ctx, endpoints, output, timeout or 60.0)

    def body() -> int:
        targets, failed = _every_node(s) if all_ else (_targets(s, node, False), [])
        results = []
        for n in targets:
            try:
                results.append(asyncio.run(_ask(n["address"], "snapshot", {}, s.timeout))
                               | {"node": n["id"]})
            except (ClientError, OSError, asyncio.TimeoutError) as e:
                if not all_:
                    raise
                failed.append({"node": n["id"], "address": n["address"],
                               "error": str(e) or type(e).__name__})
        if s.out.json:
            s.out.emit_json({"snapshots": results, "failed": failed})
        else:
            s.out.table(["node", "index", "term", "size", "keys", "time ms", "stall ms"],
                        [[r["node"], r["index"], r["term"], r.get("size"), r.get("keys"),
                          r.get("duration_ms"), r.get("stall_ms")] for r in results])
        if failed:  # --all means every node: a partial result is no success (trial 6, 10)
            return fail(CliError(
                f"could not snapshot {len(failed)} of {len(failed) + len(results)} nodes: "
                + "; ".join(f"{f['node']} ({f['error']})" for f in failed),
                UNAVAILABLE, "unavailable"), s.out.json)
        return 0

    run(s, body)


@app.command("list")
def list_(ctx: typer.Context, endpoints: EndpointsOpt = None, output: OutputOpt = None,
          timeout: TimeoutOpt = None) -> None:
    """Snapshots held by every reachable node.

    Example: raftctl snapshot list -o json"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        rows, out = [], {}
        for n in _targets(s, None, True):
            snaps = asyncio.run(_ask(n["address"], "snapshot_list", {}, s.timeout))["snapshots"]
            out[n["id"]] = snaps
            rows += [[n["id"], x["index"], x["term"], x["size"], x["keys"]] for x in snaps]
        if s.out.json:
            s.out.emit_json({"nodes": out})
        else:
            s.out.table(["node", "index", "term", "size", "keys"], rows)
        return 0

    run(s, body)


@app.command("save")
def save(ctx: typer.Context, file: Annotated[Path, typer.Argument(metavar="FILE")],
         force: Annotated[bool, typer.Option(
             "--force", help="replace FILE if it exists")] = False,
         endpoints: EndpointsOpt = None, output: OutputOpt = None,
         timeout: TimeoutOpt = None) -> None:
    """Save a consistent backup: the leader takes a snapshot now and streams it to FILE.

    FILE holds the whole keyspace: it is written with mode 0600, never replaces an existing
    file without --force, and appears only once complete and verified (a partial download is
    removed).  Example: raftctl snapshot save backup.snap"""
    s = settings(ctx, endpoints, output, timeout or 120.0)

    def body() -> int:
        _check_backup_target(file, force)
        (leader,) = _targets(s, None, False, hint="")
        snap = asyncio.run(_ask(leader["address"], "snapshot", {}, s.timeout))
        tmp = file.with_name(file.name + ".part")
        try:
            asyncio.run(_fetch(leader["address"], snap["index"], tmp, s.timeout))
            recovery.verify(tmp)
            if not force and file.exists():  # appeared while we fetched: still never replace
                raise CliError(f"{file} already exists; use --force to replace it",
                               kind="file_exists")
            os.replace(tmp, file)
            recovery.fsync_dir(file.parent)  # the new name is durable only once its directory is
        except CorruptSnapshotError as e:
            raise CliError(f"the backup did not verify: {e}", kind="corrupt_snapshot") from None
        except OSError as e:
            raise CliError(f"cannot write {file}: {e.strerror or e}", kind="io_error") from None
        finally:
            tmp.unlink(missing_ok=True)
        info = recovery.describe_snapshot(file)
        info.update({"file": str(file), "node": leader["id"]})
        if s.out.json:
            s.out.emit_json(info)
        else:
            s.out.line(f"saved snapshot index={info['index']} term={info['term']} "
                       f"keys={info['keys']} size={info['size']} from {leader['id']} to {file}")
        return 0

    run(s, body)


def _check_backup_target(file: Path, force: bool) -> None:
    """Refuse, before asking the cluster for anything, what can only end in an error."""
    if file.is_dir():
        raise usage_error(f"{file} is a directory; give a file name, e.g. {file / 'backup.snap'}")
    if not file.parent.is_dir():
        raise usage_error(f"directory {file.parent} does not exist")
    if file.exists() and not force:
        raise CliError(f"{file} already exists; use --force to replace it", kind="file_exists")


async def _fetch(address: str, index: int, tmp: Path, timeout: float) -> None:
    """Stream snapshot `index` into `tmp` (mode 0600: it holds every key) and fsync it."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a stale .part left by a crash
    async with AsyncClient([address], timeout=timeout) as c:
        offset = 0
        with open(fd, "wb") as f:
            while True:
                r = await c.request("snapshot_read", {"index": index, "offset": offset,
                                                      "length": 1 << 20},
                                    attempt_timeout=timeout)
                f.write(r["data"])
                offset += len(r["data"])
                if r["eof"]:
                    break
            f.flush()
            os.fsync(f.fileno())


@app.command("inspect")
def inspect(ctx: typer.Context, file: Annotated[Path, typer.Argument(metavar="FILE")],
            output: OutputOpt = None) -> None:
    """Verify a snapshot file and print its metadata (index, term, configuration, keys, size).

    Example: raftctl snapshot inspect backup.snap -o json"""
    s = settings(ctx, None, output)

    def body() -> int:
        check_backup_file(file)
        info = recovery.describe_snapshot(file)
        info["file"] = str(file)
        if s.out.json:
            s.out.emit_json(info)
        else:
            c = info["configuration"]
            s.out.table(["index", "term", "keys", "size", "voters", "learners"],
                        [[info["index"], info["term"], info["keys"], info["size"],
                          ",".join(c["voters"]), ",".join(c["learners"])]])
        return 0

    run(s, body)


def check_backup_file(file: Path) -> None:
    """One clear line (exit 2) for a FILE that is missing or a directory, instead of a raw
    errno ("[Errno 21] Is a directory")."""
    if not file.exists():
        raise usage_error(f"no such file: {file}")
    if file.is_dir():
        raise usage_error(f"{file} is a directory; give a backup file "
                          f"(written by raftctl snapshot save FILE)")


def check_new_cluster_dir(directory: Path) -> None:
    """--dir of restore/recover must be new: refused before anything is said or chosen (the
    free-port line included, trial 6, item 11)."""
    if directory.exists() and not directory.is_dir():
        raise usage_error(f"{directory} is not a directory")
    if (directory / "cluster.yaml").exists():
        raise usage_error(f"{directory} already holds a cluster; use an empty directory")


def seed_cluster(directory: Path, nodes: int, base_port: int, index: int, term: int,
                 header: dict, data, keys: int | None = None) -> list[dict]:
    """Write a new local cluster whose every node starts from the given state at (index,
    term), with a fresh configuration of its own.  Every file and directory is durable when
    this returns (issue 21 §6): the directories are made and synced into their parents
    before local's config writer finds them, and the files it writes are synced after."""
    check_new_cluster_dir(directory)
    recovery.make_dirs(directory)
    layout = plan_layout(directory, nodes, base_port, "127.0.0.1", False)
    for n in layout:
        recovery.make_dirs(n["data_dir"])
    write_configs(directory, layout, {"fsync": True, "tick_ms": 25,
                                      "election_timeout_ms": 500,
                                      "heartbeat_interval_ms": 100})
    recovery.sync_files([Path(n["data_dir"]) / "raftd.yaml" for n in layout]
                        + [directory / "cluster.yaml"])
    recovery.seed([n["data_dir"] for n in layout], {n["id"]: n["address"] for n in layout},
                  index, term, header, data, keys=keys)
    return layout


@app.command("restore")
def restore(ctx: typer.Context, file: Annotated[Path, typer.Argument(metavar="FILE")],
            directory: Annotated[Path, typer.Option("--dir", "-d", help="new cluster dir")],
            nodes: Annotated[int, typer.Option("--nodes", "-n")] = 3,
            base_port: Annotated[Optional[int], typer.Option(
                "--base-port", help="first raft port [default: 7001, or free ports when "
                                    "7001.. are taken]", show_default=False)] = None,
            output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Seed a new local cluster from a backup and start it.

    Example: raftctl snapshot restore backup.snap --dir ./restored --nodes 3 --base-port 7101"""
    s = settings(ctx, None, output, timeout or 30.0)

    def body() -> int:
        check_backup_file(file)  # before anything else is said or done
        check_new_cluster_dir(directory)
        with recovery.read_snapshot(file) as (info, header, batches):
            # Ports are chosen (and said) only once the backup has been read (trial 7, E).
            port = base_port if base_port is not None else default_base_port(nodes, s.out.info)
            seed_cluster(directory, nodes, port, info.meta.index, info.meta.term, header,
                         batches, keys=info.keys)
        layout, st = bring_up(directory, timeout=s.timeout, info=s.out.info)
        result = {"endpoints": [n["address"] for n in layout], "leader": st["leader"],
                  "index": info.meta.index, "keys": info.keys,
                  "nodes": [{k: n[k] for k in ("id", "address", "pid", "data_dir")}
                            for n in layout]}
        if s.out.json:
            s.out.emit_json(result)
        else:
            s.out.line(f"restored {info.keys} keys (index {info.meta.index}) into {nodes} nodes "
                       f"in {directory}; endpoints: {','.join(result['endpoints'])}")
        return 0

    run(s, body)


@app.command("recover")
def recover(ctx: typer.Context,
            data_dirs: Annotated[list[Path], typer.Argument(metavar="DATA_DIR...")],
            directory: Annotated[Optional[Path], typer.Option(
                "--dir", "-d", help="new cluster dir (omit to only report)")] = None,
            nodes: Annotated[int, typer.Option("--nodes", "-n")] = 3,
            base_port: Annotated[Optional[int], typer.Option(
                "--base-port", help="first raft port [default: 7001, or free ports when "
                                    "7001.. are taken]", show_default=False)] = None,
            output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Disaster recovery after losing a majority for good: read the surviving nodes' data
    directories (their raftd must be stopped), report which has the newest log, and with --dir
    rebuild a new local cluster from it.

    Every entry in that node's log is kept, committed or not (as etcd's --force-new-cluster):
    a write that was never acknowledged may survive, but nothing acknowledged is lost if the
    node held it. Example: raftctl snapshot recover old/n2 old/n3 --dir ./recovered"""
    s = settings(ctx, None, output, timeout or 30.0)

    def body() -> int:
        # Held until the command ends: no raftd may start on these directories while they
        # are read (the survey reads a copy of each WAL and writes nothing to them).
        try:
            with recovery.offline_locks(data_dirs):
                return _recover(s, data_dirs, directory, nodes, base_port)
        except recovery.DataDirInUse as e:
            raise usage_error(str(e)) from None
        except recovery.NotADataDir as e:
            raise usage_error(str(e)) from None

    run(s, body)


def _recover(s, data_dirs, directory, nodes, base_port) -> int:
    survey = [recovery.survey(d) for d in data_dirs]
    best = max(survey, key=lambda x: (x.last_term, x.last_index))
    report: dict[str, Any] = {"nodes": [x.describe() for x in survey], "newest": str(best.dir)}
    if directory is None:
        if s.out.json:
            s.out.emit_json(report)
        else:
            s.out.table(["data dir", "snapshot", "first log", "last index", "last term"],
                        [[str(x.dir), x.snapshot_index, x.first_log_index, x.last_index,
                          x.last_term] for x in survey])
            s.out.line(f"newest: {best.dir}; rebuild with --dir NEWDIR")
        return 0
    check_new_cluster_dir(directory)
    state = recovery.rebuild(best)
    if base_port is None:
        base_port = default_base_port(nodes, s.out.info)
    seed_cluster(directory, nodes, base_port, state.index, state.term, state.header,
                 state.data)
    layout, st = bring_up(directory, timeout=s.timeout, info=s.out.info)
    report.update({"rebuilt": str(directory), "index": state.index, "keys": state.keys,
                   "endpoints": [n["address"] for n in layout], "leader": st["leader"]})
    if s.out.json:
        s.out.emit_json(report)
    else:
        plural = "s" if nodes != 1 else ""
        s.out.line(f"rebuilt {state.keys} keys up to index {state.index} from {best.dir} into "
                   f"{nodes} node{plural} in {directory}; endpoints: "
                   f"{','.join(report['endpoints'])}")
    return 0
