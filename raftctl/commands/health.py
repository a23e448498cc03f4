"""raftctl health: exit 0 when the cluster can serve writes promptly, 3 (with the reason)
otherwise.  For load balancers, cron jobs and deploy scripts."""
from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from ..cluster import STATUS_TIMEOUT, gather_status, require_reachable
from ..context import EndpointsOpt, OutputOpt, TimeoutOpt, run, settings, usage_error
from ..cluster import tolerates
from ..dashboard import analyze
from ..errors import UNAVAILABLE


def check_health(status: dict, max_lag: int, allow_down: int = 0) -> dict:
    """The documented JSON form of `raftctl health` for one gather_status result.

    A voter that is down does not cost the quorum yet, but it costs the margin: with one of
    three down, one more failure stops every write.  So it is unhealthy ("degraded") unless the
    operator accepts it with `allow_down` (e.g. during a rolling restart)."""
    a = analyze(status, max_lag)
    by_id = {n["id"]: n for n in status["nodes"]}
    down = sorted(v for v in a["voters"] if not by_id.get(v, {}).get("reachable"))
    reasons = list(a["reasons"])
    if a["quorum"] and len(down) > allow_down:
        spare = a["reachable_voters"] - a["need"]
        margin = ("one more failure loses the quorum" if spare == 0 else
                  f"the quorum survives {spare} more failure{'s' if spare > 1 else ''}")
        reasons.append(f"degraded: {', '.join(down)} unreachable; {margin}")
    return {"healthy": a["healthy"] and not reasons, "leader": a["leader"],
            "reachable_voters": a["reachable_voters"], "voters": len(a["voters"]),
            "quorum": a["quorum"], "fault_tolerance": a["fault_tolerance"],
            "max_lag": max_lag, "lagging": a["lagging"], "down": down, "allow_down": allow_down,
            "reasons": reasons,
            "lag": {n["id"]: a["lags"][n["id"]] for n in status["nodes"]
                    if n["reachable"] and a["lags"].get(n["id"]) is not None},
            "voter_status": [{"id": v, "reachable": v not in down, "lag": a["lags"].get(v)}
                             for v in a["voters"]]}


def register(app: typer.Typer) -> None:
    @app.command("health")
    def health(ctx: typer.Context,
               max_lag: Annotated[int, typer.Option(
                   "--max-lag", help="most entries a reachable voter may be behind the "
                                     "leader")] = 1000,
               allow_down: Annotated[int, typer.Option(
                   "--allow-down", help="voters that may be down (e.g. during a rolling "
                                        "restart) without failing the check")] = 0,
               endpoints: EndpointsOpt = None, output: OutputOpt = None,
               timeout: TimeoutOpt = None) -> None:
        """Exit 0 if there is a leader, every voter is reachable (but --allow-down of them) and
        no reachable voter lags more than --max-lag entries behind the leader; otherwise exit 3
        and print the reason on stderr.  Lists each voter's reachability and lag.

        \b
        Example: raftctl health --max-lag 500 && echo ok"""
        s = settings(ctx, endpoints, output, timeout)

        def body() -> int:
            if max_lag < 0 or allow_down < 0:
                raise usage_error("--max-lag and --allow-down must be >= 0")
            st = asyncio.run(gather_status(s.endpoints, min(s.timeout, STATUS_TIMEOUT)))
            require_reachable(st, s.endpoints)  # `no raftd at ...`, or why none answered
            h = check_health(st, max_lag, allow_down)
            if s.out.json:
                s.out.emit_json(h)
            if h["healthy"]:
                if not s.out.json:
                    voters = set(st["configuration"]["voters"])
                    worst = max((v for k, v in h["lag"].items() if k in voters), default=0)
                    s.out.line(f"healthy: leader {h['leader']}, {h['reachable_voters']}/"
                               f"{h['voters']} voters reachable, max lag {worst} entries, "
                               f"{tolerates(h['fault_tolerance'])}")
                    _voter_lines(s, h)
                return 0
            if not s.out.json:
                _voter_lines(s, h)
            reason = "; ".join(h["reasons"]) or "unhealthy"
            if s.out.json:
                sys.stderr.write(json.dumps({"error": "unhealthy", "message": reason,
                                             "exit_code": UNAVAILABLE}) + "\n")
            else:
                sys.stderr.write(f"raftctl: unhealthy: {reason}\n")
            return UNAVAILABLE

        run(s, body)


def _voter_lines(s, h: dict) -> None:
    for v in h["voter_status"]:
        lag = "lag unknown" if v["lag"] is None else f"{v['lag']} entries behind"
        s.out.line(f"  {v['id']}: {'reachable' if v['reachable'] else 'DOWN'}, {lag}")
