"""raftctl status: one row per node (id, address, role, term, indexes, reachable)."""
from __future__ import annotations

import asyncio

import typer

from ..cluster import gather_status, public
from ..context import EndpointsOpt, OutputOpt, TimeoutOpt, run, settings
from ..errors import UNAVAILABLE


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(ctx: typer.Context, endpoints: EndpointsOpt = None, output: OutputOpt = None,
               timeout: TimeoutOpt = None) -> None:
        """Show every node of the cluster: role, term, commit/applied/last log index, reachable.

        Exits 3 when no node is reachable or there is no leader."""
        s = settings(ctx, endpoints, output, timeout)

        def body() -> int:
            st = asyncio.run(gather_status(s.endpoints, min(s.timeout, 1.5)))
            if s.out.json:
                s.out.emit_json(public(st))
            else:
                print_status(s.out, st)
            if not any(n["reachable"] for n in st["nodes"]):
                s.out.info("no node is reachable at " + ",".join(s.endpoints))
                return UNAVAILABLE
            if st["leader"] is None:
                s.out.info("no leader")
                return UNAVAILABLE
            return 0

        run(s, body)


def print_status(out, st: dict) -> None:
    conf = st["configuration"]
    title = (f"leader: {st['leader'] or 'none'}   term: {st['term']}   voters: "
             f"{','.join(conf['voters'])}" + (" (joint)" if conf["joint"] else "")
             + (f"   learners: {','.join(conf['learners'])}" if conf["learners"] else ""))
    rows = [[n["id"], n["address"], n["role"] or "-", n["term"], n["commit_index"],
             n["applied_index"], n["last_log_index"], "yes" if n["reachable"] else "NO"]
            for n in st["nodes"]]
    out.table(["id", "address", "role", "term", "commit_index", "applied_index",
               "last_log_index", "reachable"], rows, title=title)
