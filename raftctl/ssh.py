"""SSH plumbing for `raftctl bootstrap|ssh|teardown`: connections (paramiko, key
authentication only, host keys checked against a known_hosts file), running raftctl's remote
half (raftctl/remote.py) on a host, SFTP uploads, the wheel we ship, and the per-host progress
display.

Every failure is a HostError naming the host, with a raftctl exit code: 3 unreachable,
4 rejected (authentication, unknown or changed host key), 1 failed, 2 bad local setup."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import FAILED, REJECTED, UNAVAILABLE, USAGE, CliError
from .inventory import Host, Inventory

if TYPE_CHECKING:
    from rich.progress import Progress  # imported where it is used (start-up time)

MIN_PYTHON = (3, 11)
_MARK = "@@raftctl@@"
_AGENT = (Path(__file__).with_name("remote.py")).read_text()


def _version(v) -> str:
    return ".".join(map(str, v))


class HostError(CliError):
    """A failure on one host; the message starts with the host's label."""

    def __init__(self, host: Host, message: str, code: int = FAILED, kind: str = "failed"):
        super().__init__(f"{host.label}: {message}", code, kind)
        self.host = host
        self.reason = message


# ------------------------------------------------------------------------ host keys --
def fingerprint(key) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKey(Exception):
    """Raised (through paramiko's connect) for a host key not in known_hosts."""


_KNOWN_HOSTS_LOCK = threading.Lock()


class _HostKeyPolicy:  # paramiko.MissingHostKeyPolicy (paramiko is imported lazily)
    """Unknown host key: refuse, or (``accept_new``) record it in the known_hosts file.
    (A key that differs from the recorded one never gets here: paramiko raises
    BadHostKeyException.)"""

    def __init__(self, known_hosts: str, accept_new: bool, on_record: Callable[[str], None]):
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.on_record = on_record

    def missing_host_key(self, client, hostname, key):
        if not self.accept_new:
            raise UnknownHostKey(hostname, key)
        with _KNOWN_HOSTS_LOCK:
            path = Path(self.known_hosts)
            path.parent.mkdir(parents=True, exist_ok=True)
            existing = path.read_text() if path.exists() else ""
            with open(path, "a") as f:
                if existing and not existing.endswith("\n"):
                    f.write("\n")
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            os.chmod(path, 0o600)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.on_record(f"recorded the host key {key.get_name()} {fingerprint(key)} of "
                       f"{hostname} in {self.known_hosts}")


def _known_hosts_name(host: Host) -> str:
    return host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"


# ----------------------------------------------------------------------- connection --
class Remote:
    """One SSH connection to one host."""

    def __init__(self, inv: Inventory, host: Host, client):
        self.inv = inv
        self.host = host
        self.client = client  # paramiko.SSHClient
        self._sftp = None  # paramiko.SFTPClient, opened on first use

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001 - any failure here is reported, never raised
                pass
        self.client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, command: str, stdin: bytes | str | None = None,
            timeout: float = 60.0) -> tuple[int, str, str]:
        """Run a shell command; returns (exit status, stdout, stderr)."""
        import paramiko  # noqa: PLC0415 - imported lazily: other raftctl commands start faster
        deadline = time.monotonic() + timeout
        try:
            chan = self.client.get_transport().open_session(timeout=timeout)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise socket.timeout()
                if not got:
                    time.sleep(0.01)
            status = chan.recv_exit_status()
            chan.close()
        except socket.timeout:
            raise HostError(self.host, f"command timed out after {timeout:g}s: "
                                       f"{command[:80]}", UNAVAILABLE, "timeout") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostError(self.host, f"SSH connection lost: {e or type(e).__name__}",
                            UNAVAILABLE, "unreachable") from None
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def call(self, op: str, timeout: float = 120.0, **args: Any) -> dict:
        """Run one operation of raftctl/remote.py on the host with the cluster's Python (one
        SSH exec).  A missing or too old Python is reported as such: the script starts with
        a version check that any Python can parse."""
        script = (
            "import sys, json\n"
            f"if tuple(sys.version_info[:2]) < {MIN_PYTHON!r}:\n"
            f"    sys.stdout.write('\\n{_MARK} ' + json.dumps({{'ok': False, 'kind': 'old_python', "
            f"'message': '.'.join(map(str, sys.version_info[:3]))}}) + '\\n')\n"
            "    sys.exit(0)\n"
            f"exec(compile({_AGENT!r}, 'raftctl/remote.py', 'exec'))\n"
            f"main({op!r}, json.loads({json.dumps(args)!r}))\n")
        py = self.inv.python
        rc, out, err = self.run(f"{shlex.quote(py)} -", stdin=script, timeout=timeout)
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith(_MARK)), None)
        if line is None:
            why = (err.strip().splitlines() or [f"exit status {rc}"])[-1]
            if rc == 127 or "not found" in why or "No such file" in why:
                raise HostError(self.host, f"no Python: {py!r} not found (install Python >= "
                                           f"{_version(MIN_PYTHON)} or set cluster.python)",
                                FAILED, "no_python")
            raise HostError(self.host, f"remote {op} with {py} failed: {why}", FAILED, op)
        res = json.loads(line[len(_MARK):])
        if not res["ok"]:
            if res.get("kind") == "old_python":
                raise HostError(self.host, f"{py} is Python {res['message']}; raftd needs >= "
                                           f"{_version(MIN_PYTHON)} (set cluster.python to a "
                                           f"newer interpreter)", FAILED, "old_python")
            raise HostError(self.host, f"{op}: {res['message']}", FAILED, res.get("kind", op))
        return res["result"]

    @property
    def sftp(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def upload(self, local: Path, remote: str, skip_same_size: bool = False) -> bool:
        """Copy a file by SFTP (to a temporary name, then renamed).  Returns False if
        ``skip_same_size`` and the remote file already has the same size."""
        import paramiko  # noqa: PLC0415 - lazy import: only this path needs it (start-up time)
        try:
            if skip_same_size:
                try:
                    if self.sftp.stat(remote).st_size == local.stat().st_size:
                        return False
                except FileNotFoundError:
                    pass
            tmp = remote + ".part"
            self.sftp.put(str(local), tmp)
            self.sftp.posix_rename(tmp, remote)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostError(self.host, f"upload of {local.name} to {remote} failed: "
                                       f"{e or type(e).__name__}", FAILED, "upload") from None
        return True


def connect(inv: Inventory, host: Host, accept_new_host_keys: bool = False,
            note: Callable[[str], None] = lambda text: None) -> Remote:
    """Open an SSH connection with key authentication, checking the host key against the
    inventory's known_hosts file."""
    import paramiko  # noqa: PLC0415 - imported lazily: other raftctl commands start faster
    ssh = inv.ssh
    key_file = ssh.identity_file
    if key_file and not os.path.exists(key_file):
        raise HostError(host, f"identity_file {key_file} does not exist", USAGE, "config")
    client = paramiko.SSHClient()
    if os.path.exists(ssh.known_hosts):
        try:
            client.load_system_host_keys(ssh.known_hosts)
        except (OSError, paramiko.SSHException) as e:
            raise HostError(host, f"cannot read known_hosts {ssh.known_hosts}: {e}",
                            USAGE, "config") from None
    client.set_missing_host_key_policy(_HostKeyPolicy(ssh.known_hosts, accept_new_host_keys,
                                                      note))
    kh_name = _known_hosts_name(host)
    try:
        client.connect(host.address, port=host.ssh_port, username=host.user,
                       key_filename=key_file, allow_agent=key_file is None,
                       look_for_keys=key_file is None, timeout=ssh.connect_timeout,
                       banner_timeout=ssh.connect_timeout, auth_timeout=ssh.connect_timeout)
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostError(
            host, f"HOST KEY CHANGED: {ssh.known_hosts} has {e.expected_key.get_name()} "
                  f"{fingerprint(e.expected_key)} for {kh_name}, but the host offered "
                  f"{e.key.get_name()} {fingerprint(e.key)}.  Refusing to connect (this could "
                  f"be a man-in-the-middle attack).  If the host was reinstalled, remove the "
                  f"old key: ssh-keygen -R '{kh_name}' -f {ssh.known_hosts}",
            REJECTED, "host_key_changed") from None
    except UnknownHostKey as e:
        client.close()
        _, key = e.args
        raise HostError(
            host, f"unknown host key {key.get_name()} {fingerprint(key)} for {kh_name} (not in "
                  f"{ssh.known_hosts}); refusing to connect.  Check the fingerprint, then "
                  f"re-run with --accept-new-host-keys to record it", REJECTED,
            "host_key_unknown") from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise HostError(host, f"identity_file {key_file} is encrypted; load it into ssh-agent "
                              f"and leave ssh.identity_file unset", USAGE, "config") from None
    except paramiko.AuthenticationException as e:
        client.close()
        how = f"key {key_file}" if key_file else "keys from ssh-agent and ~/.ssh"
        raise HostError(host, f"authentication refused for user {host.user!r} with {how} "
                              f"({e})", REJECTED, "auth_refused") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise HostError(host, f"unreachable: no answer within {ssh.connect_timeout:g}s",
                        UNAVAILABLE, "unreachable") from None
    except paramiko.ssh_exception.NoValidConnectionsError as e:
        client.close()
        why = "; ".join(sorted({(err.strerror or str(err)) for err in e.errors.values()}))
        raise HostError(host, f"unreachable: {why}", UNAVAILABLE, "unreachable") from None
    except OSError as e:
        client.close()
        raise HostError(host, f"unreachable: {e.strerror or e}", UNAVAILABLE,
                        "unreachable") from None
    except (paramiko.SSHException, EOFError) as e:
        client.close()
        raise HostError(host, f"SSH handshake failed: {e or type(e).__name__}", UNAVAILABLE,
                        "unreachable") from None
    return Remote(inv, host, client)


# ------------------------------------------------------------------------- parallel --
T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[tuple[T, R | None,
                                                                      BaseException | None]]:
    """Run ``fn`` on every item in its own thread; (item, result, error) in input order."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        futures = [pool.submit(fn, it) for it in items]
        out: list[tuple[T, R | None, BaseException | None]] = []
        for it, f in zip(items, futures, strict=True):
            try:
                out.append((it, f.result(), None))
            except BaseException as e:  # noqa: BLE001 - reported per host
                out.append((it, None, e))
    return out


# ---------------------------------------------------------------------------- wheel --
def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "raftctl"


def project_source() -> Path | None:
    """The source tree raftctl runs from (an editable install or a checkout), if any."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists() and (root / "raftd").is_dir():
        return root
    return None


_SOURCE_ITEMS = ("pyproject.toml", "setup.cfg", "setup.py", "README.md", "LICENSE",
                 "MANIFEST.in", "raftd", "raftctl")


def _source_files(root: Path) -> list[Path]:
    files = []
    for item in _SOURCE_ITEMS:
        p = root / item
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc" \
                        and not any(part.endswith(".egg-info") for part in f.parts):
                    files.append(f)
    return files


def build_wheel(root: Path, note: Callable[[str], None] = lambda t: None) -> Path:
    """Build the raftd wheel from the source tree at ``root`` (`pip wheel --no-deps`, in a
    copy of the tree, reproducibly).  Cached by a digest of the sources, so an unchanged
    tree is built once."""
    files = _source_files(root)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    digest = h.hexdigest()[:20]
    dest = cache_dir() / "wheels" / digest
    found = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if found:
        return found[0]
    note(f"building the raftd wheel from {root}")
    with tempfile.TemporaryDirectory(prefix="raftctl-build-") as tmp:
        src = Path(tmp) / "src"
        for f in files:
            target = src / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        out = Path(tmp) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_NO_INPUT": "1"}
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--disable-pip-version-check", "-w", str(out), str(src)],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if p.returncode != 0 or not wheels:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-5:])
            raise CliError(f"building the wheel failed (pip wheel exit {p.returncode}): {tail}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=dest.parent))
        shutil.copy2(wheels[0], staging / wheels[0].name)
        try:
            staging.rename(dest)
        except OSError:  # another run built it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    _prune(dest.parent, keep=5)
    return sorted(dest.glob("*.whl"))[0]


def _prune(directory: Path, keep: int) -> None:
    """Keep the ``keep`` most recently built wheels of the cache."""
    dirs = sorted((d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        shutil.rmtree(d, ignore_errors=True)


def wheel_info(wheel: Path) -> dict:
    """{"file", "version", "build"}: ``build`` hashes the wheel's contents (not the zip's
    metadata), so two builds of the same sources have the same id."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                h.update(name.encode() + b"\0" + z.read(name) + b"\0")
    except (OSError, zipfile.BadZipFile) as e:
        raise CliError(f"{wheel}: not a wheel: {e}", USAGE, "usage") from None
    parts = wheel.name.split("-")
    if len(parts) < 5 or parts[0] != "raftd":
        raise CliError(f"{wheel}: not a raftd wheel (expected raftd-VERSION-...whl)",
                       USAGE, "usage")
    return {"file": wheel.name, "version": parts[1], "build": h.hexdigest()[:12]}


def requirements(wheel: Path) -> list[str]:
    """The wheel's install requirements (Requires-Dist without extras)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return sorted(ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("Requires-Dist:") and "extra ==" not in ln)


def dependency_wheels(wheel: Path, dest: Path, wheelhouse: Path | None,
                      python: tuple[int, ...] | None = None,
                      note: Callable[[str], None] = lambda t: None) -> list[Path]:
    """For --offline: every wheel needed to install ``wheel``'s requirements, and pip itself
    (to install with).  Taken from ``wheelhouse`` when it has them all (no index needed),
    otherwise downloaded into it with `pip download` first; without a wheelhouse, downloaded
    into ``dest``."""
    target: list[str] = []
    if python and tuple(python[:2]) != sys.version_info[:2]:
        target = ["--python-version", f"{python[0]}.{python[1]}", "--only-binary", ":all:"]
    reqs = requirements(wheel)
    base = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
            *target, *reqs, "pip"]

    def pip(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(base + args, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)

    dest.mkdir(parents=True, exist_ok=True)
    memo = None
    if wheelhouse is not None:
        wheelhouse.mkdir(parents=True, exist_ok=True)
        # What a set of requirements resolved to is remembered (pip takes seconds to say).
        key = hashlib.sha256(json.dumps([reqs, target, sys.version_info[:2],
                                         sys.platform]).encode()).hexdigest()[:16]
        memo = wheelhouse / ".resolved" / f"{key}.json"
        try:
            files = [wheelhouse / n for n in json.loads(memo.read_text())]
            if files and all(f.is_file() for f in files):
                return files
        except (OSError, ValueError):
            pass
        p = pip(["--no-index", "--find-links", str(wheelhouse), "-d", str(dest)])
        if p.returncode != 0:
            note(f"downloading the dependency wheels into {wheelhouse}")
            p = pip(["-d", str(wheelhouse)])
            if p.returncode == 0:
                p = pip(["--no-index", "--find-links", str(wheelhouse), "-d", str(dest)])
    else:
        note("downloading the dependency wheels")
        p = pip(["-d", str(dest)])
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-4:])
        raise CliError(f"pip download of the dependency wheels failed: {tail}")
    files = sorted(f for f in dest.iterdir() if f.suffix == ".whl")
    if memo is not None and all((wheelhouse / f.name).is_file() for f in files):
        memo.parent.mkdir(exist_ok=True)
        memo.write_text(json.dumps([f.name for f in files]))
        return [wheelhouse / f.name for f in files]
    return files


# ------------------------------------------------------------------------- progress --
class Reporter:
    """Per-host progress on stderr: a live rich display on a terminal, otherwise one line
    per step (``n1: installing``)."""

    def __init__(self, console, hosts: list[Host], title: str = ""):
        self.console = console
        self.hosts = hosts
        self.lock = threading.Lock()
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, Any] = {}
        self.title = title

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
            progress = self.progress = Progress(SpinnerColumn(finished_text="•"),
                                                TextColumn("[bold]{task.fields[host]}"),
                                                TextColumn("{task.description}"),
                                                TimeElapsedColumn(), console=self.console,
                                                transient=False)
            progress.start()
            for h in self.hosts:
                self.tasks[h.name] = progress.add_task("waiting", host=h.name, total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            for t in self.tasks.values():
                self.progress.update(t, total=1, completed=1)
            self.progress.stop()
            self.progress = None

    def add_host(self, h: Host) -> None:
        if self.progress is not None and h.name not in self.tasks:
            self.tasks[h.name] = self.progress.add_task("waiting", host=h.name, total=None)

    def step(self, host: Host, text: str) -> None:
        if self.progress is not None and host.name in self.tasks:
            self.progress.update(self.tasks[host.name], description=text)
        else:
            self._line(f"{host.name}: {text}")

    def done(self, host: Host, text: str, ok: bool = True) -> None:
        if self.progress is not None and host.name in self.tasks:
            color = "green" if ok else "red"
            mark = "✓" if ok else "✗"
            from rich.markup import escape
            self.progress.update(self.tasks[host.name], total=1, completed=1,
                                 description=f"[{color}]{mark}[/{color}] {escape(text)}")
        else:
            self._line(f"{host.name}: {text}")

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            self._line(text)

    def _line(self, text: str) -> None:
        with self.lock:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
