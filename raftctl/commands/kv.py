"""raftctl kv put|get|delete|cas|list: read and write keys (linearizable by default)."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from raftd.client_socket import SocketClient, tls_configured

if TYPE_CHECKING:
    from raftd.client import AsyncClient, Client

from ..context import (EndpointsOpt, OutputOpt, REFUSED_GRACE, TimeoutOpt, run, settings,
                       usage_error)
from ..errors import FAILED

app = typer.Typer(help="Read and write keys.", no_args_is_help=True)


def _client(s) -> "SocketClient | Client":
    """The blocking socket client: no asyncio to import, no thread (issue 16 §6: start-up
    time).  With TLS settings, the library's asyncio Client, which speaks TLS."""
    if tls_configured():
        from raftd.client import Client  # noqa: PLC0415 - only a TLS cluster needs it
        return Client(s.endpoints, timeout=s.timeout, refused_grace=REFUSED_GRACE)
    return SocketClient(s.endpoints, timeout=s.timeout, refused_grace=REFUSED_GRACE)


def _async_client(s) -> "AsyncClient":
    """The library's asyncio client, for the one kv command that pipelines (delete --prefix)."""
    from raftd.client import AsyncClient  # noqa: PLC0415 - only delete --prefix needs it
    return AsyncClient(s.endpoints, timeout=s.timeout, refused_grace=REFUSED_GRACE)


def _check_key(key: str) -> None:
    """One error for an empty key, on every kv command (before anything is sent)."""
    if not key:
        raise usage_error("KEY must not be empty")


def _raw_writer(value: bytes) -> Callable[[], None]:
    """Print a value as its raw bytes (--output text).  Piped or redirected: the value's bytes
    exactly (`kv get k | cmp - file`); on a terminal a missing final newline is added, so the
    prompt starts on its own line."""
    def raw() -> None:
        end = b"\n" if sys.stdout.isatty() and not value.endswith(b"\n") else b""
        sys.stdout.buffer.write(value + end)
        sys.stdout.flush()
    return raw


def _read_value(value: str | None, path: str | None) -> bytes:
    """VALUE as given, `-` for stdin, or --file PATH (for values too big for a command line)."""
    if path is not None and value is None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise usage_error(f"cannot read --file {path}: {e.strerror or e}") from None
    if value is not None and path is None:
        return sys.stdin.buffer.read() if value == "-" else value.encode()
    raise usage_error("give exactly one of VALUE (- for stdin) or --file PATH")


@app.command("put")
def put(ctx: typer.Context, key: str,
        value: Annotated[Optional[str], typer.Argument(
            help="the value; - reads it from stdin")] = None,
        file: Annotated[Optional[str], typer.Option(
            "--file", help="read the value from this file")] = None,
        endpoints: EndpointsOpt = None,
        output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Set KEY to VALUE (or stdin with -, or --file PATH); prints the log index it was
    committed at.

    Example: raftctl kv put config/flag on; raftctl kv put cert - < cert.pem"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        _check_key(key)
        data = _read_value(value, file)
        with _client(s) as c:
            index = c.put(key, data)
        s.out.result({"key": key, "index": index}, f"OK {index}")
        return 0

    run(s, body)


@app.command("get")
def get(ctx: typer.Context, key: str,
        stale: Annotated[bool, typer.Option(help="serve from any node without ReadIndex")] = False,
        endpoints: EndpointsOpt = None, output: OutputOpt = None,
        timeout: TimeoutOpt = None) -> None:
    """Print the raw value of KEY (its bytes exactly; a newline is added only on a terminal,
    when the value does not end in one); exits 1 if it does not exist.

    Example: raftctl kv get config/flag; raftctl kv get cert > cert.pem"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        _check_key(key)
        with _client(s) as c:
            value = c.get(key, linearizable=not stale)
        found = value is not None
        s.out.result({"key": key, "value": value, "found": found},
                     _raw_writer(value) if value is not None else None,
                     error=None if found else f"raftctl: key not found: {key}")
        return 0 if found else FAILED

    run(s, body)


@app.command("delete")
def delete(ctx: typer.Context,
           key: Annotated[Optional[str], typer.Argument()] = None,
           prefix: Annotated[Optional[str], typer.Option(
               "--prefix", help="delete every key starting with this (prints the count)")] = None,
           endpoints: EndpointsOpt = None,
           output: OutputOpt = None, timeout: TimeoutOpt = None) -> None:
    """Delete KEY (exits 1 if it did not exist), or every key under --prefix P.

    Example: raftctl kv delete config/flag; raftctl kv delete --prefix tmp/"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        if prefix is not None and key is None:
            return _delete_prefix(s, prefix)
        if key is None or prefix is not None:
            raise usage_error("give exactly one of KEY or --prefix P")
        _check_key(key)
        with _client(s) as c:
            deleted = c.delete(key)
        s.out.result({"key": key, "deleted": deleted}, "deleted" if deleted else None,
                     error=None if deleted else f"raftctl: key not found: {key}")
        return 0 if deleted else FAILED

    run(s, body)


@app.command("cas")
def cas(ctx: typer.Context, key: str, new: str,
        expected: Annotated[Optional[str], typer.Option(
            "--expected", help="current value required for the swap")] = None,
        absent: Annotated[bool, typer.Option(
            "--absent", help="swap only if KEY does not exist")] = False,
        endpoints: EndpointsOpt = None, output: OutputOpt = None,
        timeout: TimeoutOpt = None) -> None:
    """Compare-and-swap: set KEY to NEW only if it currently holds --expected (or is --absent).
    Exits 1 if it did not swap.

    Example: raftctl kv cas lock/leader me --absent"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        _check_key(key)
        if (expected is None) == (not absent):
            raise usage_error("give exactly one of --expected VALUE or --absent")
        with _client(s) as c:
            # (absent: expected is None, checked above)
            swapped = c.cas(key, None if expected is None else expected.encode(), new.encode())
        s.out.result({"key": key, "swapped": swapped}, "swapped" if swapped else "not swapped")
        return 0 if swapped else FAILED

    run(s, body)


DELETE_CONCURRENCY = 64  # deletes in flight: the leader batches them into few fsyncs


def _delete_prefix(s, prefix: str) -> int:
    """Delete the keys under a non-empty prefix, one write each (not atomic: a key written
    under the prefix meanwhile may stay), and print how many were deleted.  The deletes are
    pipelined (DELETE_CONCURRENCY in flight, as bench does): one at a time, each waits for
    its own commit and 16,456 keys took 2 minutes (issue 16, trial 6)."""
    if not prefix:
        raise usage_error("--prefix must not be empty (it would delete every key)")
    import asyncio  # noqa: PLC0415 - only this kv command needs it (start-up time)

    async def delete_all() -> tuple[int, int, BaseException | None]:
        async with _async_client(s) as c:
            keys = list(await c.list(prefix))
            if len(keys) > 1000:
                s.out.info(f"deleting {len(keys)} keys under {prefix!r}")
            todo, done = iter(keys), [0]
            failed: list[Exception] = []

            async def worker() -> None:
                for k in todo:  # one shared iterator: each key goes to one worker
                    if failed:
                        return
                    try:
                        ok = await c.delete(k)  # (not `done[0] += await`: that reads first)
                    except Exception as e:  # noqa: BLE001 - reported below with the count
                        failed.append(e)
                        return
                    done[0] += ok

            await asyncio.gather(*(worker() for _ in range(min(DELETE_CONCURRENCY,
                                                               len(keys)) or 1)))
            return done[0], len(keys), failed[0] if failed else None

    deleted, found, error = asyncio.run(delete_all())
    if error is not None:
        s.out.info(f"deleted {deleted} of the {found} keys under {prefix!r} before this "
                   f"error:")
        raise error
    s.out.result({"prefix": prefix, "deleted": deleted}, f"deleted {deleted}")
    return 0


@app.command("list")
def list_(ctx: typer.Context, prefix: Annotated[str, typer.Argument()] = "",
          prefix_opt: Annotated[Optional[str], typer.Option(
              "--prefix", help="the same as PREFIX (as kv delete --prefix)")] = None,
          stale: Annotated[bool, typer.Option(
              help="serve from any node without ReadIndex")] = False,
          endpoints: EndpointsOpt = None, output: OutputOpt = None,
          timeout: TimeoutOpt = None) -> None:
    """List keys starting with PREFIX (or --prefix P; all keys if omitted) and their values,
    a page at a time from the server.

    Example: raftctl kv list config/ -o json; raftctl kv list --prefix config/"""
    s = settings(ctx, endpoints, output, timeout)

    def body() -> int:
        nonlocal prefix
        if prefix_opt is not None:
            if prefix and prefix != prefix_opt:
                raise usage_error("give PREFIX or --prefix P, not both")
            prefix = prefix_opt
        with _client(s) as c:
            items = c.list(prefix, linearizable=not stale)
        s.out.result({"prefix": prefix, "items": items},
                     [f"{k}\t{v.decode(errors='backslashreplace')}" for k, v in items.items()])
        return 0

    run(s, body)
