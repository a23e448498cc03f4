"""raftctl health: exit 0 when the cluster can serve writes promptly, 3 (with the reason)
otherwise.  For load balancers, cron jobs and deploy scripts."""
from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from ..cluster import gather_status
from ..context import EndpointsOpt, OutputOpt, TimeoutOpt, run, settings, usage_error
from ..dashboard import analyze
from ..errors import UNAVAILABLE


def check_health(status: dict, max_lag: int) -> dict:
    """The documented JSON form of `raftctl health` for one gather_status result."""
    a = analyze(status, max_lag)
    return {"healthy": a["healthy"], "leader": a["leader"],
            "reachable_voters": a["reachable_voters"], "voters": len(a["voters"]),
            "quorum": a["quorum"], "max_lag": max_lag, "lagging": a["lagging"],
            "reasons": a["reasons"],
            "lag": {n["id"]: a["lags"][n["id"]] for n in status["nodes"]
                    if n["reachable"] and a["lags"].get(n["id"]) is not None}}


def register(app: typer.Typer) -> None:
    @app.command("health")
    def health(ctx: typer.Context,
               max_lag: Annotated[int, typer.Option(
                   "--max-lag", help="most entries a reachable voter may be behind the "
                                     "leader")] = 1000,
               endpoints: EndpointsOpt = None, output: OutputOpt = None,
               timeout: TimeoutOpt = None) -> None:
        """Exit 0 if there is a leader, a quorum of voters is reachable and no reachable voter
        lags more than --max-lag entries behind the leader; otherwise exit 3 and print the
        reason on stderr.

        \b
        Example: raftctl health --max-lag 500 && echo ok"""
        s = settings(ctx, endpoints, output, timeout)

        def body() -> int:
            if max_lag < 0:
                raise usage_error("--max-lag must be >= 0")
            st = asyncio.run(gather_status(s.endpoints, min(s.timeout, 1.5)))
            h = check_health(st, max_lag)
            if s.out.json:
                s.out.emit_json(h)
            if h["healthy"]:
                if not s.out.json:
                    voters = set(st["configuration"]["voters"])
                    worst = max((v for k, v in h["lag"].items() if k in voters), default=0)
                    s.out.line(f"healthy: leader {h['leader']}, {h['reachable_voters']}/"
                               f"{h['voters']} voters reachable, max lag {worst} entries")
                return 0
            reason = "; ".join(h["reasons"]) or "unhealthy"
            if s.out.json:
                sys.stderr.write(json.dumps({"error": "unhealthy", "message": reason,
                                             "exit_code": UNAVAILABLE}) + "\n")
            else:
                sys.stderr.write(f"raftctl: unhealthy: {reason}\n")
            return UNAVAILABLE

        run(s, body)
