"""raftctl member list|add|remove|promote|replace: membership changes by joint consensus.

New servers run raftd with `join: true`; they are added as learners, caught up, and then made
voters through a joint configuration (Raft §6). One change at a time."""
from __future__ import annotations

import asyncio
from typing import Annotated, Optional

import typer

from raftd.client import Client
from raftd.validate import split_address

from ..cluster import gather_status, require_reachable
from ..context import (REFUSED_GRACE, EndpointsOpt, OutputOpt, TimeoutOpt, run, settings,
                       usage_error)
from ..errors import UNAVAILABLE, CliError

app = typer.Typer(help="List and change the cluster's members.", no_args_is_help=True)


def _address(address: str) -> str:
    """A usage error (exit 2) before anything is sent, for an address that is not host:port."""
    try:
        split_address(address)
    except ValueError as e:
        raise usage_error(str(e)) from None
    return address


def change(s, add: dict[str, str] | None = None, remove: list[str] | None = None,
           promote: list[str] | None = None, learner: bool = False) -> dict:
    """Send one change_config request to the leader and wait for its outcome."""
    with Client(s.endpoints, timeout=s.timeout, refused_grace=REFUSED_GRACE) as c:
        return c.admin("change_config", {"add": add or {}, "remove": remove or [],
                                         "promote": promote or [], "learner": learner})


def _report(s, result: dict) -> int:
    if s.out.json:
        s.out.emit_json(result)
        return 0
    for p in result["phases"]:
        s.out.line(f"- {p}")
    conf = result["configuration"]
    s.out.line(f"configuration: voters={','.join(conf['voters'])}"
               + (f" learners={','.join(conf['learners'])}" if conf["learners"] else ""))
    return 0


@app.command("list")
def list_(ctx: typer.Context, endpoints: EndpointsOpt = None, output: OutputOpt = None,
          timeout: TimeoutOpt = None) -> None:
    """Members with their role, match index and lag behind the leader.

    Example: raftctl member list -o json"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        st = asyncio.run(gather_status(s.endpoints, min(s.timeout, 1.5)))
        require_reachable(st, s.endpoints)  # `no raftd at ...`, or why none answered
        leader = next((n["_raw"] for n in st["nodes"] if n["reachable"]
                       and n["id"] == st["leader"]), None)
        if leader is None:
            raise CliError("no leader: cannot tell the members' replication state",
                           UNAVAILABLE, "unavailable")
        conf = leader["configuration"]
        last = leader["last_log_index"]
        reachable = {n["id"]: n["reachable"] for n in st["nodes"]}
        members = []
        for nid in sorted(set(conf["voters"]) | set(conf.get("old_voters", []))
                          | set(conf["learners"])):
            match = last if nid == leader["id"] else \
                leader["progress"].get(nid, {}).get("match_index")
            members.append({
                "id": nid, "address": conf["addresses"].get(nid),
                "suffrage": "learner" if nid in conf["learners"] else "voter",
                "in_new": nid in conf["voters"] or nid in conf["learners"],
                "in_old": nid in conf.get("old_voters", conf["voters"]),
                "leader": nid == leader["id"], "match_index": match,
                "lag": None if match is None else last - match,
                "reachable": reachable.get(nid, False)})
        result = {"leader": leader["id"], "term": leader["term"], "joint": conf["joint"],
                  "voters": conf["voters"], "learners": conf["learners"], "members": members}
        if conf["joint"]:
            result["old_voters"] = conf.get("old_voters", [])
        if s.out.json:
            s.out.emit_json(result)
        else:
            title = "joint configuration (change in progress)" if conf["joint"] else "stable"
            s.out.table(["id", "address", "suffrage", "leader", "match_index", "lag", "reachable"],
                        [[m["id"], m["address"], m["suffrage"], "*" if m["leader"] else "",
                          m["match_index"], m["lag"], "yes" if m["reachable"] else "NO"]
                         for m in members], title=f"configuration: {title}")
        return 0

    run(s, body)


@app.command("add")
def add(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
        address: Annotated[str, typer.Argument(metavar="ADDRESS", help="host:port")],
        learner: Annotated[bool, typer.Option("--learner", help="add as a non-voter")] = False,
        endpoints: EndpointsOpt = None, output: OutputOpt = None,
        timeout: TimeoutOpt = None) -> None:
    """Add a server (running raftd with join: true): learner, catch-up, then voter.

    Example: raftctl member add n4 127.0.0.1:7004"""
    s = settings(ctx, endpoints, output, timeout or 60.0)
    run(s, lambda: _report(s, change(s, add={node_id: _address(address)}, learner=learner)))


@app.command("remove")
def remove(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
           endpoints: EndpointsOpt = None, output: OutputOpt = None,
           timeout: TimeoutOpt = None) -> None:
    """Remove a server (the leader too: it steps down once the change commits).

    Example: raftctl member remove n3"""
    s = settings(ctx, endpoints, output, timeout or 60.0)
    run(s, lambda: _report(s, change(s, remove=[node_id])))


@app.command("promote")
def promote(ctx: typer.Context, node_id: Annotated[str, typer.Argument(metavar="ID")],
            endpoints: EndpointsOpt = None, output: OutputOpt = None,
            timeout: TimeoutOpt = None) -> None:
    """Make a learner a voter (after catching it up).

    Example: raftctl member promote n4"""
    s = settings(ctx, endpoints, output, timeout or 60.0)
    run(s, lambda: _report(s, change(s, promote=[node_id])))


@app.command("replace")
def replace(ctx: typer.Context,
            add_: Annotated[Optional[list[str]], typer.Option(
                "--add", help="ID=ADDRESS of a server to add (repeatable)")] = None,
            remove_: Annotated[Optional[list[str]], typer.Option(
                "--remove", help="ID of a server to remove (repeatable)")] = None,
            endpoints: EndpointsOpt = None, output: OutputOpt = None,
            timeout: TimeoutOpt = None) -> None:
    """Add and remove several servers in one joint-consensus step.

    Example: raftctl member replace --add n4=127.0.0.1:7004 --add n5=127.0.0.1:7005 --remove n1"""
    s = settings(ctx, endpoints, output, timeout or 120.0)

    def body() -> int:
        adds = {}
        for item in add_ or []:
            nid, sep, addr = item.partition("=")
            if not sep or not nid or not addr:
                raise usage_error(f"--add expects ID=ADDRESS, got {item!r}")
            adds[nid] = _address(addr)
        if not adds and not remove_:
            raise usage_error("give at least one --add or --remove")
        return _report(s, change(s, add=adds, remove=list(remove_ or [])))

    run(s, body)
