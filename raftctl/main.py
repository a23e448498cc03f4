"""raftctl: the operator's CLI for raftd clusters.

Exit codes: 0 ok; 1 operation failed (key not found, cas did not swap); 2 usage error;
3 cluster unavailable (no leader, unreachable, timeout); 4 rejected by the cluster; 130 interrupted;
141 stdout was closed by its reader (`raftctl kv list | head`), quietly.
"""
from __future__ import annotations

import copy
import importlib
import os
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .context import EndpointsOpt, OutputOpt, TimeoutOpt
from .errors import CliError, fail

# Every subcommand's module is imported only when that command runs: importing them all cost
# about 240 ms on every `raftctl kv get` (bench, bootstrap and ssh pull in paramiko,
# cryptography, ...).  name -> (module, attribute: a Typer app, or None for a module whose
# register(app) adds the command), and the one-line help `raftctl --help` shows without
# importing anything (tests/cli/test_startup.py checks it against the commands' own).
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "status": ("status", None, "Show every node of the cluster: role, term, log, lag."),
    "health": ("health", None, "Exit 0 if the cluster is healthy, 3 with the reason if not."),
    "bench": ("bench", None, "Measure committed ops/s and latency (keys under bench/)."),
    "bootstrap": ("bootstrap", None, "Install and start raftd on every host over SSH."),
    "teardown": ("bootstrap", None, "Stop raftd on every host of an SSH-deployed cluster."),
    "local": ("local", "app", "Run a cluster of raftd processes on this machine."),
    "kv": ("kv", "app", "Read and write keys."),
    "member": ("member", "app", "List and change the cluster's members."),
    "snapshot": ("snapshot", "app", "Snapshots, backups, restore and disaster recovery."),
    "leader": ("leader", "app", "Leadership operations."),
    "ssh": ("bootstrap", "ssh_app", "Day-2 operations on a cluster deployed over SSH."),
    "certs": ("certs", "app", "Make a CA and issue certificates for mutual TLS."),
    "sim": ("sim", None, "Watch a simulated cluster run the real Raft core (paper scenarios)."),
}


def load_command(name: str, sub: str | None = None):
    """The click command for `name`, importing only its module.  For a group, ``sub`` (the
    next word of the command line) builds only that subcommand when it names one: building
    every `kv` command's parameters from its signature cost about 12 ms of each `kv get`."""
    module_name, attr, _ = COMMANDS[name]
    module = importlib.import_module(f"raftctl.commands.{module_name}")
    if attr is not None:
        app_ = copy.copy(getattr(module, attr))  # the module's own app stays whole
        app_.info = copy.copy(app_.info)
        app_.info.name = name
        app_.rich_markup_mode = None  # plain click help, like the root's
        only = [c for c in app_.registered_commands
                if (c.name or typer.main.get_command_name(c.callback.__name__)) == sub]
        if only:
            app_.registered_commands = only
        return typer.main.get_group(app_)
    holder = typer.Typer(rich_markup_mode=None)
    holder.callback()(lambda: None)  # a callback makes it a group, so commands keep names
    module.register(holder)
    return typer.main.get_group(holder).commands[name]


class LazyGroup(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        return list(dict.fromkeys([*COMMANDS, *super().list_commands(ctx)]))

    def get_command(self, ctx, name: str):
        if name in COMMANDS:
            return load_command(name)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx, args: list[str]):
        if args and args[0] in COMMANDS:  # the next word may name the one subcommand to build
            return args[0], load_command(args[0], args[1] if len(args) > 1 else None), args[1:]
        try:
            return super().resolve_command(ctx, args)
        except Exception as e:
            # typer suggests from the commands it holds, and a lazy group holds none yet:
            # `raftctl stauts` gets "Did you mean 'status'?" from the names here.
            if args and hasattr(e, "message") and "Did you mean" not in e.message:
                from difflib import get_close_matches  # noqa: PLC0415 - only on a typo
                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    e.message = (f"{e.message.rstrip('.')}. Did you mean "
                                 f"{', '.join(repr(m) for m in matches)}?")
            raise

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


app = typer.Typer(
    name="raftctl", help=__doc__, no_args_is_help=True, add_completion=True,
    pretty_exceptions_enable=False, rich_markup_mode=None, cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def root(ctx: typer.Context, endpoints: EndpointsOpt = None, output: OutputOpt = None,
         timeout: TimeoutOpt = None,
         cacert: Annotated[Optional[str], typer.Option(
             "--cacert", envvar="RAFTCTL_CACERT",
             help="CA certificate of a TLS cluster (turns TLS on)")] = None,
         cert: Annotated[Optional[str], typer.Option(
             "--cert", envvar="RAFTCTL_CERT",
             help="client certificate (raftctl certs issue)")] = None,
         key: Annotated[Optional[str], typer.Option(
             "--key", envvar="RAFTCTL_KEY", help="private key of --cert")] = None,
         cluster_id: Annotated[Optional[str], typer.Option(
             "--cluster-id", envvar="RAFTCTL_CLUSTER_ID",
             help="refuse nodes of any other cluster (raftctl status shows the id)")] = None,
         ) -> None:
    ctx.obj = {"endpoints": endpoints, "output": output, "timeout": timeout}
    # The client library reads its TLS files from these variables (raftd/client.py), so
    # every command, and any raftctl it starts, talks TLS once they are given here.
    for name, value in (("RAFTCTL_CACERT", cacert), ("RAFTCTL_CERT", cert),
                        ("RAFTCTL_KEY", key)):
        if value:
            os.environ[name] = os.path.abspath(value)
    if cluster_id:
        os.environ["RAFTCTL_CLUSTER_ID"] = cluster_id  # read by raftd.client, like the above


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for -o json (read from argv: a usage error may come
    before the options are parsed)."""
    for i, a in enumerate(argv):
        if a in ("-o", "--output") and i + 1 < len(argv):
            if argv[i + 1] == "json":
                return True
        elif a in ("-ojson", "--output=json"):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Run raftctl.  Usage errors are one line on stderr (a JSON object with -o json) and
    exit 2, like every other error, instead of click's three-line usage block."""
    import sys  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)

    args = sys.argv[1:] if argv is None else argv
    try:
        rv = app(args=args, prog_name="raftctl", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:  # e.g. while printing help: as in context.run
        from .output import closed_stdout  # noqa: PLC0415 - only when the pipe closed
        sys.exit(closed_stdout())
    except KeyboardInterrupt:
        sys.exit(fail(KeyboardInterrupt(), _wants_json(args)))
    except Exception as e:  # noqa: BLE001 - only click's own exceptions are handled here
        if type(e).__name__ == "Abort":
            sys.exit(fail(KeyboardInterrupt(), _wants_json(args)))
        if not hasattr(e, "format_message") or not hasattr(e, "exit_code"):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `raftctl` / `raftctl kv`
            if _wants_json(args):  # a script: the one-line JSON error, never the help
                where = ctx.command_path if ctx is not None else "raftctl"
                sys.exit(fail(CliError(f"missing command (see '{where} -h')", e.exit_code,
                                       "usage"), True))
            sys.stderr.write(e.format_message() + "\n")  # a person: the help, on stderr
            sys.exit(e.exit_code)
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        sys.exit(fail(CliError(e.format_message() + hint, e.exit_code, "usage"),
                      _wants_json(args)))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
