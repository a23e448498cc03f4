"""raftctl bench: a closed-loop load generator (asyncio, C requests in flight on one process).

Every request is a real client request through raftd.client: puts go through the log (fsync on
a majority before the reply), gets are linearizable (ReadIndex)."""
from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from raftd.client import AsyncClient, ClientError

from ..context import REFUSED_GRACE, EndpointsOpt, OutputOpt, run, settings
from ..errors import FAILED, UNAVAILABLE, CliError
from .local import bring_down, bring_up, free_base_port


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


async def run_bench(endpoints: list[str], clients: int, duration: float, value_size: int,
                    keys: int, read_ratio: float, warmup: float = 1.0,
                    sequential: bool = False, request_timeout: float = 10.0,
                    prefix: str = "bench/", keep: bool = False, force: bool = False,
                    started: Callable[[], None] = lambda: None) -> dict:
    """Every key the benchmark touches is PREFIX + k<i> for i < ``keys``, so a user's own
    keys are never written: it refuses to start when PREFIX already holds a key, unless
    ``force``; the keys it wrote are deleted at the end unless ``keep``.  ``started`` is
    called once the cluster answered and the load begins (a refusal comes before it)."""
    rng = random.Random(1)
    value = bytes(rng.getrandbits(8) for _ in range(value_size))
    lat: list[float] = []
    errors: dict[str, int] = {}
    ops = {"put": 0, "get": 0}
    written: set[str] = set()
    warm_key = f"{prefix}k0"  # one of the --keys keys: keys_written never exceeds --keys
    # refused_grace: a stopped cluster fails at once (`no raftd at ...`), not after the
    # whole request timeout (issue 16 §5).
    async with AsyncClient(endpoints, timeout=request_timeout,
                           refused_grace=REFUSED_GRACE) as c:
        if not force:
            await _refuse_a_used_prefix(c, prefix)
        written.add(warm_key)  # added first: a put that times out may still have been applied
        await c.put(warm_key, value)  # find the leader before the clock starts
        started()
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        t_measure = t_start + warmup
        t_end = t_measure + duration

        async def worker(wid: int) -> None:
            r = random.Random(wid)
            while True:
                now = loop.time()
                if now >= t_end:
                    return
                key = f"{prefix}k{r.randrange(keys)}"
                is_read = r.random() < read_ratio
                try:
                    if is_read:
                        await c.get(key)
                    else:
                        written.add(key)
                        await c.put(key, value)
                except ClientError as e:
                    if now >= t_measure:
                        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                done = loop.time()
                if now >= t_measure and done <= t_end:
                    lat.append(done - now)
                    ops["get" if is_read else "put"] += 1

        await asyncio.gather(*(worker(i) for i in range(1 if sequential else clients)))
        deleted = 0 if keep else await _delete_keys(c, sorted(written), clients)
    lat.sort()
    n = len(lat)
    return {"ops": n, "ops_per_sec": round(n / duration, 1), "duration_s": duration,
            "clients": 1 if sequential else clients, "value_size": value_size, "keys": keys,
            "read_ratio": read_ratio, "puts": ops["put"], "gets": ops["get"],
            "p50_ms": round(_pct(lat, 50) * 1000, 3), "p95_ms": round(_pct(lat, 95) * 1000, 3),
            "p99_ms": round(_pct(lat, 99) * 1000, 3),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 3),
            "errors": sum(errors.values()), "error_kinds": errors,
            "prefix": prefix, "kept": keep, "keys_written": len(written), "keys_deleted": deleted}


async def _refuse_a_used_prefix(c: AsyncClient, prefix: str) -> None:
    """Keys under PREFIX that the benchmark did not write are someone's (a user's, or a
    --keep run's): it would overwrite and then delete them (trial 6, item 13)."""
    r = await c.request("list", {"prefix": prefix, "linearizable": True, "limit": 1,
                                 "start_after": None})
    if r["items"]:
        first = next(iter(r["items"]))
        raise CliError(f"keys already exist under {prefix!r} (e.g. {first}); the benchmark "
                       f"writes and deletes keys there: use another --prefix, or --force to "
                       f"overwrite them (and delete them, unless --keep)", FAILED,
                       "prefix_not_empty")


async def _delete_keys(c: AsyncClient, keys: list[str], parallel: int) -> int:
    """Delete the benchmark's keys, `parallel` at a time.  A failure is an error of the
    command (raised), never silently left behind."""
    sem = asyncio.Semaphore(max(1, parallel))

    async def one(k: str) -> None:
        async with sem:
            await c.delete(k)

    await asyncio.gather(*(one(k) for k in keys))
    return len(keys)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(ctx: typer.Context,
              clients: Annotated[int, typer.Option(help="requests in flight")] = 64,
              duration: Annotated[float, typer.Option(help="seconds measured")] = 20.0,
              value_size: Annotated[int, typer.Option(help="bytes per value")] = 100,
              keys: Annotated[int, typer.Option(help="distinct keys")] = 10000,
              read_ratio: Annotated[float, typer.Option(help="fraction of gets")] = 0.0,
              warmup: Annotated[float, typer.Option(help="seconds before measuring")] = 2.0,
              prefix: Annotated[str, typer.Option(
                  help="every key the benchmark writes starts with this (never your own keys)")
              ] = "bench/",
              keep: Annotated[bool, typer.Option(
                  "--keep", help="leave the benchmark's keys (default: delete them at the end)")
              ] = False,
              force: Annotated[bool, typer.Option(
                  "--force", help="run even if keys exist under --prefix (they are "
                                  "overwritten, then deleted unless --keep)")] = False,
              local: Annotated[bool, typer.Option(
                  "--local", help="start a temporary local cluster, run, tear it down")] = False,
              nodes: Annotated[int, typer.Option(help="nodes for --local")] = 3,
              endpoints: EndpointsOpt = None, output: OutputOpt = None,
              timeout: Annotated[Optional[float], typer.Option(
                  "--timeout", help="seconds one request may take, retries included; one that "
                                    "runs out counts as an error [default: 10]")] = None) -> None:
        """Measure committed ops/s and latency with CLIENTS requests in flight.

        Keys are PREFIX + k0..k<KEYS-1> (default prefix bench/); they are deleted at the end
        unless --keep.  It refuses to start (exit 1) when keys already exist under PREFIX,
        unless --force.  Example: raftctl bench --local --clients 64 --duration 20 -o json"""
        s = settings(ctx, endpoints, output, timeout)
        # a request's own budget (retries included); a request that runs out counts as an error
        request_timeout = timeout or (ctx.find_root().obj or {}).get("timeout") or 10.0

        def body() -> int:
            if clients < 1 or duration <= 0 or not 0 <= read_ratio <= 1 or not prefix:
                from ..context import usage_error  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
                raise usage_error("need --clients >= 1, --duration > 0, 0 <= --read-ratio <= 1 "
                                  "and a non-empty --prefix")
            tmp = None
            eps = s.endpoints
            try:
                if local:
                    tmp = Path(tempfile.mkdtemp(prefix="raftd-bench-"))
                    eps = _local_up(tmp, nodes)
                    s.out.info(f"local cluster of {nodes} in {tmp}: {','.join(eps)}")
                banner = (f"bench: {clients} in flight, {duration:g}s, {value_size}-byte "
                          f"values, {keys} keys under {prefix!r}, read ratio {read_ratio}")
                # Said once the cluster answered: an error is then the only line (issue 16).
                res = asyncio.run(run_bench(eps, clients, duration, value_size, keys,
                                            read_ratio, warmup,
                                            request_timeout=request_timeout,
                                            prefix=prefix, keep=keep, force=force,
                                            started=lambda: s.out.info(banner)))
            finally:
                if tmp is not None:
                    _local_down(tmp)
                    shutil.rmtree(tmp, ignore_errors=True)
            if res["ops"] == 0:
                raise CliError(f"no request completed ({res['error_kinds']})", UNAVAILABLE,
                               "unavailable")
            if s.out.json:
                s.out.emit_json(res)
            else:
                s.out.table(["ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "ops", "errors"],
                            [[f"{res['ops_per_sec']:,.0f}", res["p50_ms"], res["p95_ms"],
                              res["p99_ms"], res["max_ms"], res["ops"], res["errors"]]])
                s.out.info(f"kept {res['keys_written']} keys under {prefix!r}" if keep else
                           f"deleted the {res['keys_deleted']} keys it wrote under {prefix!r}")
            return 0

        run(s, body)


def _local_up(directory: Path, nodes: int) -> list[str]:
    layout, _ = bring_up(directory, nodes, base_port=free_base_port(nodes))
    return [n["address"] for n in layout]


def _local_down(directory: Path) -> None:
    bring_down(directory)
