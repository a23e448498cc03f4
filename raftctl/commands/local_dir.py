"""What `raftctl local` may touch in its DIR (issue 16, trial 6): the cluster file, read and
checked in one place, and the raftd processes that really serve a node directory of DIR.

A command never touches what it was not asked to: a copy of a cluster's directory still
lists the original's data dirs (cluster.yaml stores absolute paths) and holds its pid
files, so a node is acted on only when its data dir lies inside DIR, and a pid only when
that process holds the node directory's data-dir lock (raftd/storage/lock.py)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from ..context import usage_error
from ..errors import USAGE, CliError

CLUSTER_FILE = "cluster.yaml"
KEEP_ON_CLEANUP = "raftd.log"  # a failed node's log says why: kept when its dir is cleared


def check_dir(directory: Path, must_exist: bool) -> None:
    """One line, exit 2, for a DIR that is a regular file or (``must_exist``) missing."""
    if directory.exists() and not directory.is_dir():
        raise usage_error(f"{directory} is not a directory (--dir names the cluster's "
                          f"directory)")
    if must_exist and not (directory / CLUSTER_FILE).is_file():
        what = "no such directory" if not directory.exists() else f"no {CLUSTER_FILE} in it"
        raise CliError(f"no local cluster in {directory} ({what}); run `raftctl local up "
                       f"--dir {directory}` first", USAGE, "not_found")


def _bad(f: Path, why: str) -> CliError:
    return CliError(f"{f}: {why}", USAGE, "bad_cluster_file")


def _yaml_reason(e: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: the problem and where."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"not valid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"
    return "not valid YAML: " + " ".join(str(e).split())


def read_cluster_file(directory: Path) -> dict:
    """DIR/cluster.yaml as {"nodes": [{id, address, data_dir}, ...], "tls": ...}: a file that
    is not one, or that lists a data dir outside DIR, is one line naming the file (exit 2)."""
    check_dir(directory, must_exist=True)
    f = directory / CLUSTER_FILE
    try:
        doc = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        raise _bad(f, _yaml_reason(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(f, f"cannot read it: {getattr(e, 'strerror', None) or e}") from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list) or not all(
            isinstance(n, dict) and all(isinstance(n.get(k), str)
                                        for k in ("id", "address", "data_dir")) for n in nodes):
        raise _bad(f, "not a raftctl cluster file (expected `nodes:`, a list of id, address "
                      "and data_dir)")
    root = directory.resolve()
    for n in nodes:
        d = (root / n["data_dir"]).resolve()  # an absolute data_dir stays as it is
        if not d.is_relative_to(root):
            raise CliError(
                f"{f}: {n['id']}'s data dir {n['data_dir']} is outside {directory} (a copy or "
                f"move of another cluster's directory?); raftctl local only acts on nodes "
                f"inside its --dir: nothing was done", USAGE, "outside_dir")
        n["data_dir"] = str(d)
    return doc


def serves(pid: int | None, data_dir: Path) -> bool:
    """True if process ``pid`` is the raftd serving ``data_dir``: it holds the directory's
    LOCK open (raftd keeps its flock for the life of the process), or, for a node started
    without the lock (``data_dir_lock: false``) or not yet past start-up, it runs there."""
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self/fd").is_dir():  # no procfs: trust the pid file as before
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # another user's process: not ours to touch
    d = data_dir.resolve()
    lock = str(d / "LOCK")
    try:
        if b"raftd" not in (proc / "cmdline").read_bytes():
            return False
        for fd in os.listdir(proc / "fd"):
            try:
                if os.readlink(proc / "fd" / fd) == lock:
                    return True
            except OSError:
                continue
        return Path(os.readlink(proc / "cwd")) == d
    except OSError:  # gone, a zombie, or another user's: not a raftd of ours
        return False


def read_pid(node_dir: Path) -> int | None:
    try:
        return int((node_dir / "raftd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def running_nodes(directory: Path, layout: list[dict]) -> list[dict]:
    """Every raftd that serves a node directory of DIR: the nodes of ``layout`` and any other
    DIR/<name>/ with a pid file (a server started by hand, as the README's DIR/n6.yaml with
    data in DIR/n6/, and added with `raftctl member add`).  {"id", "data_dir", "pid"} each."""
    nodes = [{"id": n["id"], "data_dir": n["data_dir"]} for n in layout]
    known = {Path(n["data_dir"]) for n in nodes}
    for pidfile in sorted(directory.resolve().glob("*/raftd.pid")):
        if pidfile.parent not in known:
            nodes.append({"id": pidfile.parent.name, "data_dir": str(pidfile.parent)})
    out = []
    for n in nodes:
        pid = read_pid(Path(n["data_dir"]))
        if serves(pid, Path(n["data_dir"])):
            out.append({**n, "pid": pid})
    return out


def holds_files(layout: list[dict]) -> bool:
    """Whether a node directory of ``layout`` holds anything but a log (a log is all a
    failed start, undone by forget_new_cluster, leaves)."""
    return any(p.name != KEEP_ON_CLEANUP for n in layout if Path(n["data_dir"]).is_dir()
               for p in Path(n["data_dir"]).iterdir())


def forget_new_cluster(directory: Path, layout: list[dict], had_files: bool) -> str:
    """Undo what a failed `local up` created for a new cluster, so that running it again
    (with another --base-port, say) starts afresh: the cluster file, the certificates and
    each node directory's contents except its log.  Node directories that ``had_files``
    before the command are never emptied: only the cluster file goes then.  The sentence
    that says what was done."""
    (directory / CLUSTER_FILE).unlink(missing_ok=True)
    if had_files:
        return (f"removed {directory / CLUSTER_FILE} (its node directories held files before: "
                f"left as they are): run the command again to retry; --nodes and --base-port "
                f"apply")
    shutil.rmtree(directory / "certs", ignore_errors=True)
    for n in layout:
        d = Path(n["data_dir"])
        for p in (d.iterdir() if d.is_dir() else []):
            if p.name == KEEP_ON_CLEANUP:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return (f"removed the new cluster's files from {directory} (the logs stay): run the "
            f"command again to retry; --nodes and --base-port apply")
