"""Waiting for a healthy cluster, and rolling restarts: one node at a time (followers first,
the leader last after handing leadership over), each waited for until it has caught up."""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Sequence

from raftd.client import AsyncClient

from ..cluster import gather_status
from ..errors import UNAVAILABLE, CliError
from ..ssh import HostError, parallel
from .session import HostsFailed, Node, Session, host_errors
from .steps import start_node, stop_node


def check_alive(sess: Session, nodes: list[Node]) -> None:
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
    errors = host_errors(parallel(one, nodes))
    if errors:
        raise HostsFailed(errors, "raftd failed to start on " +
                          ", ".join(e.host.name for e in errors))


def wait_healthy(sess: Session, endpoints: list[str], must_reach: list[str],
                  timeout: float, watch: Sequence[Node] = (), catch_up: str | None = None,
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
            check_alive(sess, list(watch))
            next_check = now + 1.5
        if now > deadline:
            missing = [e for e in must_reach if not rows.get(e, {}).get("reachable")]
            why = (f"unreachable: {', '.join(missing)}" if missing else
                   "no leader" if st["leader"] is None else "a node did not catch up")
            raise CliError(f"the cluster did not get {what} within {timeout:g}s ({why})",
                           UNAVAILABLE, "timeout")
        time.sleep(0.1)


async def transfer_away(endpoints: list[str], old: str, timeout: float) -> str:
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


def roll(sess: Session, nodes: list[Node], members: list[Node], timeout: float,
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
            new = asyncio.run(transfer_away(endpoints, h.name, timeout))
            sess.note(f"{h.name}: leadership moved to {new}")
        if n.running or n.pid:
            stop_node(sess, n)
        try:
            if prepare is not None:
                prepare(n)
            start_node(sess, n)
            sess.step(h, "waiting until it has caught up")
            up = [m.host.endpoint for m in members if m.running or m.pid or m is n]
            wait_healthy(sess, endpoints, up, timeout, watch=[n], catch_up=h.endpoint,
                          what=f"{h.name} back and caught up")
        except CliError as e:
            done = [m.host.name for m in order[:i]]
            todo = [m.host.name for m in order[i + 1:]]
            msg = str(e)
            if rollback is not None:
                try:
                    stop_node(sess, n)
                    rollback(n)
                    start_node(sess, n)
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

