"""What bootstrap prints at the end: the hosts table (or JSON) and the cluster's status."""
from __future__ import annotations

from ..context import Settings
from ..inventory import Inventory
from .health import wait_healthy
from .session import Node, Session


def _host_rows(nodes: list[Node]) -> list[dict]:
    return [{"name": n.host.name, "address": n.host.address, "raft_port": n.host.raft_port,
             "status": n.status, "pid": n.pid,
             "version": (n.state or {}).get("version"), "build": (n.state or {}).get("build")}
            for n in nodes]


def print_result(s: Settings, inv: Inventory, nodes: list[Node], st: dict | None,
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
        from ..commands.status import print_status  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
    except ImportError:  # pragma: no cover - status.py is another module's
        s.out.line(f"leader: {st['leader']}")
        return
    print_status(s.out, st)


def finish(s: Settings, sess: Session, nodes: list[Node], changed: bool, info: dict) -> int:
    """Wait for a healthy cluster, close the progress display, print the result."""
    endpoints = sess.endpoints([n.host for n in nodes])
    st = wait_healthy(sess, endpoints, endpoints, s.timeout)
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
    print_result(s, sess.inv, nodes, st, changed, message)
    return 0
