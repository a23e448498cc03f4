"""raftctl leader transfer: move leadership to another voter (thesis §3.10), e.g. before
taking the leader's machine down for maintenance."""
from __future__ import annotations

import asyncio
import time
from typing import Annotated, Optional

import typer

from raftd.client import AsyncClient

from ..cluster import gather_status, require_reachable
from ..context import EndpointsOpt, OutputOpt, REFUSED_GRACE, TimeoutOpt, run, settings
from ..errors import REJECTED, UNAVAILABLE, CliError

app = typer.Typer(help="Leadership operations.\n\nExample: raftctl leader transfer n2",
                  no_args_is_help=True)


async def transfer(endpoints: list[str], target: str | None, timeout: float) -> dict:
    """Ask the leader to hand over to ``target`` (None: the most up-to-date follower), then
    poll until the cluster has a new leader (``target`` when given).  Returns
    {"from", "to", "elapsed_ms"}."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    st = await gather_status(endpoints, min(timeout, 1.0))
    require_reachable(st, endpoints)  # `no raftd at ...`, or why none answered
    old = st["leader"]
    if old is None:
        raise CliError("no leader to transfer from", UNAVAILABLE, "unavailable")
    if target is not None:
        if target == old:  # already done: success, so a script may run it again (trial 6)
            return {"from": old, "to": old, "elapsed_ms": 0, "already_leader": True}
        if target not in st["configuration"]["voters"]:
            raise CliError(f"cannot transfer leadership to {target}: not a voter of the "
                           f"cluster (voters: {','.join(st['configuration']['voters'])})",
                           REJECTED, "bad_request")
    t0 = time.monotonic()
    async with AsyncClient(endpoints, timeout=max(0.5, deadline - loop.time()),
                           refused_grace=REFUSED_GRACE) as c:
        r = await c.admin("transfer_leader", {"target": target})  # RequestError -> exit 4
    chosen = r.get("target", target)
    want = target or chosen
    leader = old
    while loop.time() < deadline:
        st = await gather_status(endpoints, 0.5)
        leader = st["leader"]
        if leader is not None and leader != old and (target is None or leader == want):
            return {"from": old, "to": leader, "elapsed_ms": round((time.monotonic() - t0) * 1000),
                    "already_leader": False}
        await asyncio.sleep(0.05)
    raise CliError(f"leadership did not move from {old} to {want or 'another node'} within "
                   f"{timeout:g}s (leader now: {leader or 'none'})", UNAVAILABLE, "timeout")


@app.command("transfer")
def transfer_cmd(ctx: typer.Context,
                 target: Annotated[Optional[str], typer.Argument(
                     metavar="ID", help="voter to hand leadership to [default: the most "
                                          "up-to-date follower]")] = None,
                 endpoints: EndpointsOpt = None, output: OutputOpt = None,
                 timeout: TimeoutOpt = None) -> None:
    """Transfer leadership to voter ID (or the most up-to-date follower) and wait until it
    leads.  Exits 3 if that did not happen within --timeout, 4 if the target was refused; 0
    if ID already leads ("ID is already the leader", JSON "already_leader": true).

    \b
    Example: raftctl leader transfer n2 --timeout 5"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        res = asyncio.run(transfer(s.endpoints, target, s.timeout))
        if s.out.json:
            s.out.emit_json(res)
        elif res["already_leader"]:
            s.out.line(f"{res['to']} is already the leader")
        else:
            s.out.line(f"leader: {res['from']} -> {res['to']} in {res['elapsed_ms']} ms")
        return 0

    run(s, body)
