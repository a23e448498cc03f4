"""raftctl status: one row per node (id, address, role, term, indexes, reachable);
``--watch``: the live dashboard (raftctl/dashboard.py draws it)."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Optional

import typer

from .. import dashboard
from ..cluster import STATUS_TIMEOUT, gather_status, public, tolerates, unreachable_error
from ..context import EndpointsOpt, OutputOpt, TimeoutOpt, run, settings, usage_error
from ..errors import UNAVAILABLE, CliError, fail
from ..output import json_default


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(ctx: typer.Context,
               watch: Annotated[bool, typer.Option(
                   "--watch", "-w", help="live dashboard, redrawn every --interval (Ctrl-C "
                                         "exits); piped: one table per interval")] = False,
               interval: Annotated[float, typer.Option(
                   "--interval", "-i", help="seconds between refreshes with --watch")] = 1.0,
               count: Annotated[Optional[int], typer.Option(
                   "--count", "-n", help="with --watch: stop after N refreshes")] = None,
               endpoints: EndpointsOpt = None, output: OutputOpt = None,
               timeout: TimeoutOpt = None) -> None:
        """Show every node of the cluster: role, term, commit/applied/last log index, reachable.

        Exits 3 when no node is reachable or there is no leader.  With --watch: a full-screen
        dashboard (leader, quorum, per-node lag, commits/s, recent events) until Ctrl-C
        (exit 0); when stdout is not a terminal, one plain table per interval (-o json: one
        JSON status object per line).

        \b
        Example: raftctl status --watch --interval 0.5
        Example: raftctl status -o json | jq .leader"""
        s = settings(ctx, endpoints, output, timeout)

        def body() -> int:
            if watch:
                if interval <= 0:
                    raise usage_error("--interval must be > 0")
                if count is not None and count < 1:
                    raise usage_error("--count must be at least 1")
                return watch_status(s, interval, count)
            if count is not None:
                raise usage_error("--count needs --watch")
            st = asyncio.run(gather_status(s.endpoints, min(s.timeout, STATUS_TIMEOUT)))
            if s.out.json:
                s.out.emit_json(public(st))
            else:
                print_status(s.out, st)
            unreachable = unreachable_error(st, s.endpoints)  # `no raftd at ...`, or why
            if unreachable is not None:
                return fail(unreachable, s.out.json)
            if st["leader"] is None:
                return fail(CliError("no leader", UNAVAILABLE, "no_leader"), s.out.json)
            return 0

        run(s, body)


def print_status(out, st: dict) -> None:
    conf = st["configuration"]
    term = st["term"] if st["term"] is not None else "-"
    title = ((f"cluster: {st['cluster_id']}   " if st.get("cluster_id") else "")
             + f"leader: {st['leader'] or 'none'}   term: {term}   voters: "
             f"{','.join(conf['voters']) or '-'}"
             + (f" (joint, old: {','.join(conf.get('old_voters', []))})" if conf["joint"] else "")
             + (f"   learners: {','.join(conf['learners'])}" if conf["learners"] else "")
             + (f"   {tolerates(st['fault_tolerance'])}"
                if st.get("fault_tolerance") is not None else ""))
    rows = [[n["id"], n["address"], n.get("member") or "-", n["role"] or "-", n["term"],
             n["commit_index"], n["applied_index"], n["last_log_index"], n.get("snapshot_index"),
             n.get("first_log_index"), "yes" if n["reachable"] else "NO"]
            for n in st["nodes"]]
    cols = ["id", "address", "member", "role", "term", "commit_index", "applied_index",
            "last_log_index", "snapshot_index", "first_log_index", "reachable"]
    if any(n.get("cert_days_left") is not None for n in st["nodes"]):  # a TLS cluster
        cols.append("cert_days_left")
        for row, n in zip(rows, st["nodes"], strict=True):
            row.append(n.get("cert_days_left"))
    out.table(cols, rows, title=title)
    for n in st["nodes"]:
        if n.get("cluster_id") and st.get("cluster_id") and n["cluster_id"] != st["cluster_id"]:
            out.info(f"WARNING: {n['id']} at {n['address']} belongs to cluster "
                     f"{n['cluster_id']}, not {st['cluster_id']}: two clusters behind these "
                     f"endpoints (raftctl --cluster-id ID refuses the other)")
        if n.get("cert_warning"):
            out.info(f"WARNING: {n['id']}: {n['cert_warning']}")


# ---------------------------------------------------------------------------- watch --
async def poll(endpoints: list[str], interval: float) -> dict:
    """One snapshot for the dashboard: every node polled in parallel with a short timeout,
    so a dead or stopped node shows as down without slowing the refresh."""
    t0 = time.monotonic()
    st = await gather_status(endpoints, min(interval, 0.8))
    st["time"] = time.time()
    st["poll_ms"] = (time.monotonic() - t0) * 1000
    return st


async def _watch_loop(endpoints: list[str], interval: float, count: int | None, show) -> None:
    loop = asyncio.get_running_loop()
    n = 0
    while True:
        started = loop.time()
        show(await poll(endpoints, interval))
        n += 1
        if count is not None and n >= count:
            return
        await asyncio.sleep(max(0.0, interval - (loop.time() - started)))


def watch_status(s, interval: float, count: int | None) -> int:
    """`raftctl status --watch`: exits 0 after --count refreshes or on Ctrl-C."""
    dash = dashboard.Dashboard()
    try:
        if s.out.json:
            def show(st: dict) -> None:
                doc = public({k: v for k, v in st.items() if k != "poll_ms"})
                sys.stdout.write(json.dumps(doc, default=json_default) + "\n")
                sys.stdout.flush()
            asyncio.run(_watch_loop(s.endpoints, interval, count, show))
        elif s.out.console.is_terminal:
            _watch_live(s, dash, interval, count)
        else:
            console = s.out.console
            first = [True]

            def show(st: dict) -> None:
                new = dash.add(st)
                console.print(dashboard.render_plain(st, list(dash.history)))
                for e in ([] if first[0] else new):
                    console.print("  " + dashboard.format_event(e), highlight=False,
                                  markup=False)
                first[0] = False
                sys.stdout.flush()
            asyncio.run(_watch_loop(s.endpoints, interval, count, show))
    except KeyboardInterrupt:
        return 0
    return 0  # (`raftctl status --watch | head`: BrokenPipeError ends like any command's)


def _watch_live(s, dash: dashboard.Dashboard, interval: float, count: int | None) -> None:
    from rich.live import Live  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    console = s.out.console

    def frame():
        height = console.size.height
        nodes = len(dash.history[-1]["nodes"]) if dash.history else 3
        max_events = max(3, height - nodes - 17)
        spark = max(10, min(120, console.size.width - 30))
        return dash.render(max_events=max_events, spark_width=spark)

    # screen=True: the alternate screen, restored (with the cursor) when the block exits,
    # whether by --count, Ctrl-C or an error.
    with Live(dashboard.render([]), console=console, screen=True, auto_refresh=False,
              redirect_stdout=False, redirect_stderr=False) as live:
        def show(st: dict) -> None:
            dash.add(st)
            live.update(frame(), refresh=True)
        asyncio.run(_watch_loop(s.endpoints, interval, count, show))
    if count is not None:  # a finite watch leaves its last frame on the normal screen
        console.print(frame())
