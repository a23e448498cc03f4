"""raftctl certs init|issue|inspect: a private CA and the certificates for mutual TLS.

Example session:
    raftctl certs init certs --cluster prod
    raftctl certs issue --dir certs --node n1 --host 10.0.0.1 --host n1.example.com
    raftctl certs issue --dir certs --client alice --role admin
    raftctl certs inspect certs/*.crt

The file layout and certificate conventions are documented in raftd/pki.py; raftd relies on
them. Nothing here talks to the cluster.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..context import OutputOpt, run, settings, usage_error
from ..errors import CliError, fail

app = typer.Typer(help="Make a CA and issue certificates for mutual TLS.",
                  no_args_is_help=True)

DirOpt = Annotated[Path, typer.Option(
    "--dir", "-d", envvar="RAFTCTL_CERTS_DIR", help="the certs directory holding the CA")]
CaDaysOpt = Annotated[Optional[float], typer.Option(
    "--days", help="validity in days [default: 3650]")]
DaysOpt = Annotated[Optional[float], typer.Option(
    "--days", help="validity in days (capped at the CA's) [default: 365]")]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace existing files")]


@contextmanager
def _pki_errors() -> Iterator[None]:
    """PKI failures become raftctl errors: a bad argument is a usage error (exit 2), anything
    else about the files (missing CA, would overwrite, unreadable) is a failure (exit 1)."""
    from raftd.pki import PKIError, PKIInputError  # noqa: PLC0415 - keep raftctl start fast
    try:
        yield
    except PKIInputError as e:
        raise usage_error(str(e)) from None
    except PKIError as e:
        raise CliError(str(e), kind="pki") from None


def _days(days: float | None, default: float) -> float:
    if days is None:
        return default
    if not days > 0:  # also catches nan
        raise usage_error(f"--days must be above 0, not {days}")
    return days


def _pki_run(s, body: Callable[[], int | None]) -> None:
    def wrapped() -> int | None:
        with _pki_errors():
            return body()
    run(s, wrapped)


@app.command("init")
def init(ctx: typer.Context,
         directory: Annotated[Path, typer.Argument(metavar="DIR",
                                                   help="directory for the CA (made 0700)")],
         cluster: Annotated[str, typer.Option(
             "--cluster", help="cluster name: the CA's O and every certificate's O")] = "raftd",
         days: CaDaysOpt = None, force: ForceOpt = False, output: OutputOpt = None) -> None:
    """Make a new CA (ca.crt, ca.key) in DIR for one cluster. Refuses to replace an existing CA
    unless --force: a new CA invalidates every certificate the old one issued.

    Example: raftctl certs init certs --cluster prod"""
    s = settings(ctx, None, output)

    def body() -> int:
        from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        paths = pki.init_ca(directory, cluster=cluster, days=_days(days, 3650), force=force)
        info = pki.describe(paths.cert)
        result = {"ca": str(paths.cert), "key": str(paths.key), "dir": str(directory),
                  "subject": info["subject"], "not_after": info["not_after"]}
        if s.out.json:
            s.out.emit_json(result)
        else:
            s.out.line(f"CA certificate: {paths.cert}")
            s.out.line(f"CA key:         {paths.key} (mode 0600; keep it off the nodes)")
            s.out.line(f"subject:        {info['subject']}")
            s.out.line(f"expires:        {info['not_after']}")
            s.out.line(f"next: raftctl certs issue --dir {directory} --node n1 --host ADDR")
        return 0

    _pki_run(s, body)


@app.command("issue")
def issue(ctx: typer.Context, directory: DirOpt = Path("certs"),
          node: Annotated[Optional[str], typer.Option(
              "--node", metavar="ID", help="issue a node certificate for this node id")] = None,
          hosts: Annotated[Optional[list[str]], typer.Option(
              "--host", metavar="ADDR",
              help="IP address or DNS name the node is dialled at (repeatable)")] = None,
          client: Annotated[Optional[str], typer.Option(
              "--client", metavar="NAME", help="issue a client certificate")] = None,
          role: Annotated[Optional[str], typer.Option(
              "--role", help="admin or client (with --client)")] = None,
          days: DaysOpt = None, force: ForceOpt = False, output: OutputOpt = None) -> None:
    """Issue a node or client certificate and key, signed by the CA in --dir.

    A node: --node ID --host ADDR [--host ADDR ...], every address peers and clients dial it
    at. A client: --client NAME --role admin|client; the role goes into the certificate's OU,
    which is what raftd authorizes by (admin for operators, client for applications).

    Example: raftctl certs issue --dir certs --node n1 --host 10.0.0.1 --host n1.example.com"""
    s = settings(ctx, None, output)

    def body() -> int:
        from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        if (node is None) == (client is None):
            raise usage_error("give exactly one of --node ID or --client NAME")
        d = _days(days, 365)
        if node is not None:
            if role is not None:
                raise usage_error("--role goes with --client; a node certificate's role is node")
            if not hosts:
                raise usage_error("--node needs at least one --host ADDR (the address peers "
                                  "and clients dial)")
            paths = pki.issue_node(directory, node, list(hosts), days=d, force=force)
        elif client is not None:  # (one of --node and --client: checked above)
            if hosts:
                raise usage_error("--host goes with --node; client certificates name no hosts")
            if role is None:
                raise usage_error("--client needs --role admin or --role client")
            if role not in pki.CLIENT_ROLES:
                raise usage_error(f"--role must be admin or client, not {role!r}")
            paths = pki.issue_client(directory, client, role, days=d, force=force)
        info = pki.describe(paths.cert)
        result = {"cert": str(paths.cert), "key": str(paths.key), "ca": str(paths.ca),
                  "name": info["name"], "role": info["role"], "subject": info["subject"],
                  "not_after": info["not_after"], "hosts": info["hosts"]}
        if s.out.json:
            s.out.emit_json(result)
        else:
            s.out.line(f"certificate: {paths.cert}")
            s.out.line(f"key:         {paths.key} (mode 0600)")
            s.out.line(f"CA:          {paths.ca}")
            s.out.line(f"subject:     {info['subject']}")
            s.out.line(f"role:        {info['role']}")
            if info["hosts"]:
                s.out.line(f"hosts:       {', '.join(info['hosts'])}")
            s.out.line(f"expires:     {info['not_after']} ({info['days_left']} days)")
        return 0

    _pki_run(s, body)


def _status(info: dict[str, Any], warn_days: float) -> str:
    if info["days_left"] < 0:
        return "EXPIRED"
    if info["days_left"] < warn_days:
        return "expires soon"
    return ""


@app.command("inspect")
def inspect(ctx: typer.Context,
            files: Annotated[list[Path], typer.Argument(metavar="FILE...",
                                                        help="PEM certificate files")],
            output: OutputOpt = None) -> None:
    """Show certificates: name, role, cluster, issuer, hosts and expiry.

    Warns about certificates expiring within 30 days and marks expired ones EXPIRED. Exits 1
    if a file cannot be read as a certificate (after showing the others).

    Example: raftctl certs inspect certs/*.crt -o json"""
    s = settings(ctx, None, output)

    def body() -> int:
        from raftd import pki  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        infos, code = [], 0
        for f in files:
            try:
                info = pki.describe(f)
            except pki.PKIError as e:
                code = fail(CliError(str(e), kind="pki"), s.out.json)
                continue
            info["warning"] = info["days_left"] < pki.EXPIRY_WARNING_DAYS
            info["expired"] = info["days_left"] < 0
            infos.append(info)
        if s.out.json:
            s.out.emit_json(infos)
        elif infos:
            s.out.table(["file", "name", "role", "cluster", "issuer", "not_after", "days_left",
                         "hosts", "status"],
                        [[i["path"], i["name"], i["role"] or ("ca" if i["is_ca"] else None),
                          i["cluster"], i["issuer"], i["not_after"], i["days_left"],
                          ",".join(i["hosts"]), _status(i, pki.EXPIRY_WARNING_DAYS)]
                         for i in infos])
        if not s.out.json:
            for i in infos:
                if i["expired"]:
                    s.out.info(f"warning: {i['path']} EXPIRED on {i['not_after']}")
                elif i["warning"]:
                    s.out.info(f"warning: {i['path']} expires in {i['days_left']} days "
                               f"({i['not_after']})")
        return code

    _pki_run(s, body)
