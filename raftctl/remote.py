# raftctl bootstrap's remote half: sent over SSH to the host's Python (`python3 -`) for every
# operation, so nothing needs to be pre-installed there but Python itself.  Only the standard
# library; runs as the SSH user.  The last line of its stdout is "@@raftctl@@ <json>".
#
# One node's directory on the host (ROOT = <install_dir>/<name>):
#   ROOT/venvs/<build>/      one virtualenv per build; ROOT/venv -> the current one
#   ROOT/builds/<build>/     the uploaded raftd wheel;  ROOT/wheels/  dependency wheels (--offline)
#   ROOT/raftd.yaml          the node's config            ROOT/raftd.log   its log
#   ROOT/state.json          what is installed (build, version, service manager)
#   ROOT/supervise.sh        restarts raftd after a crash (when systemd is not used)
#   ROOT/supervisor.pid, ROOT/raftd.child.pid
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

MARK = "@@raftctl@@"

SUPERVISOR = r"""#!/bin/sh
# raftd supervisor for node %(name)s of cluster %(cluster)s (written by raftctl).
# Starts raftd, restarts it when it exits with a non-zero code (1 s later), gives up after
# 3 failures in a row within 10 s of starting, and never restarts after exit 0 (clean stop)
# or 2 (bad config).  SIGTERM stops raftd, then the supervisor.
R='%(root)s'
echo $$ > "$R/supervisor.pid"
child=
stop() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  rm -f "$R/supervisor.pid" "$R/raftd.child.pid"
  exit 0
}
trap stop TERM INT HUP
fails=0
while :; do
  started=$(date +%%s)
  "$R/venv/bin/raftd" --config "$R/raftd.yaml" >> "$R/raftd.log" 2>&1 &
  child=$!
  echo "$child" > "$R/raftd.child.pid"
  wait "$child"
  rc=$?
  child=
  rm -f "$R/raftd.child.pid"
  now=$(date +%%s)
  if [ "$rc" -eq 0 ]; then
    echo "supervisor: raftd exited cleanly; not restarting" >> "$R/raftd.log"
    break
  fi
  if [ "$rc" -eq 2 ]; then
    echo "supervisor: raftd exited with code 2 (bad config); not restarting" >> "$R/raftd.log"
    break
  fi
  if [ $((now - started)) -lt 10 ]; then fails=$((fails + 1)); else fails=1; fi
  if [ "$fails" -ge 3 ]; then
    echo "supervisor: raftd exited with code $rc, $fails times in a row; giving up" \
      >> "$R/raftd.log"
    break
  fi
  echo "supervisor: raftd exited with code $rc; restarting in 1 s" >> "$R/raftd.log"
  sleep 1 &
  wait $!
done
rm -f "$R/supervisor.pid"
"""

UNIT = """# raftd node %(name)s of cluster %(cluster)s (written by raftctl)
[Unit]
Description=raftd node %(name)s of cluster %(cluster)s
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=30
StartLimitBurst=3

[Service]
Type=simple
WorkingDirectory=%(root)s
ExecStart=%(root)s/venv/bin/raftd --config %(root)s/raftd.yaml
Restart=on-failure
RestartSec=1
RestartPreventExitStatus=2
TimeoutStopSec=10
StandardOutput=append:%(root)s/raftd.log
StandardError=append:%(root)s/raftd.log
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


class Fail(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _pid_file(path):
    try:
        return int((_read(path) or "").strip())
    except ValueError:
        return None


def _alive(pid, needle):
    """Is ``pid`` a live (non-zombie) process whose command line contains ``needle``?"""
    if not pid:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and needle in cmd


def _systemctl(*args, check=False):
    p = subprocess.run(["systemctl"] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if check and p.returncode != 0:
        raise Fail("systemd", "systemctl %s failed: %s" % (" ".join(args),
                                                            (p.stderr or p.stdout).strip()))
    return p


def _systemd_usable():
    if not os.path.isdir("/run/systemd/system") or not shutil.which("systemctl"):
        return False
    if os.geteuid() != 0:
        return False
    try:
        return _systemctl("show", "--property=Version").returncode == 0
    except OSError:
        return False


def _port_free(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as raftd binds
        s.bind((host, port))
        s.listen(1)
        return True, ""
    except OSError as e:
        return False, e.strerror or str(e)
    finally:
        s.close()


def _state(a):
    text = _read(os.path.join(a["root"], "state.json"))
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _manager(a):
    st = _state(a) or {}
    return st.get("manager") or a.get("manager") or "process"


def _write_tls(root, files):
    """{file name: PEM text}: the CA, this node's certificate and key, into ROOT/tls."""
    tls_dir = os.path.join(root, "tls")
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    os.chmod(tls_dir, 0o700)  # before the key is written: never readable by others
    for fname, text in files.items():
        _write(os.path.join(tls_dir, fname), text, 0o600 if fname.endswith(".key") else 0o644)


def op_tls(a):
    """New certificate files, then SIGHUP so a running raftd loads them without a restart."""
    _write_tls(a["root"], a["tls"])
    st = op_status(a)
    if st["running"] and st["pid"]:
        os.kill(st["pid"], signal.SIGHUP)
    return {"pid": st["pid"], "reloaded": bool(st["running"] and st["pid"])}


def op_status(a):
    root = a["root"]
    manager = _manager(a)
    out = {"manager": manager, "installed": _state(a) is not None, "state": _state(a),
           "running": False, "pid": None, "supervisor_pid": None}
    if manager == "systemd":
        p = _systemctl("show", a["unit"], "--property=MainPID,ActiveState,SubState")
        kv = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
        pid = int(kv.get("MainPID") or 0)
        out["active_state"] = kv.get("ActiveState")
        out["running"] = kv.get("ActiveState") in ("active", "activating", "reloading") \
            and pid > 0
        out["pid"] = pid or None
        return out
    conf = os.path.join(root, "raftd.yaml")
    sup = _pid_file(os.path.join(root, "supervisor.pid"))
    if _alive(sup, os.path.join(root, "supervise.sh")):
        out["supervisor_pid"] = sup
    for f in (os.path.join(root, "raftd.child.pid"), os.path.join(a["data_dir"], "raftd.pid")):
        pid = _pid_file(f)
        if _alive(pid, conf):
            out["running"] = True
            out["pid"] = pid
            break
    return out


def _has_log(data_dir):
    """Whether raftd ever wrote state into data_dir: a WAL segment or a snapshot file.  Then
    the cluster's configuration, with its addresses, lives there (issue 16 §10)."""
    for sub, suffix in (("wal", ".wal"), ("snapshots", ".snap")):
        try:
            names = os.listdir(os.path.join(data_dir, sub))
        except OSError:
            continue
        if any(n.endswith(suffix) for n in names):
            return True
    return False


def op_probe(a):
    """Everything preflight needs, in one round trip."""
    import importlib.util
    import platform
    has_ensurepip = importlib.util.find_spec("ensurepip") is not None
    has_venv = importlib.util.find_spec("venv") is not None
    st = op_status(a)
    free, why = _port_free(a["host"], a["port"])
    systemd = _systemd_usable() if a.get("service") in ("auto", "systemd") else False
    unwritable = []
    for d in (a["root"], a["data_dir"]):
        p = d
        while not os.path.exists(p) and os.path.dirname(p) != p:
            p = os.path.dirname(p)
        if not os.access(p, os.W_OK):
            unwritable.append([d, p])
    return {"python": list(sys.version_info[:3]), "executable": sys.executable,
            "unwritable": unwritable,
            "machine": platform.machine(), "venv": has_venv, "ensurepip": has_ensurepip,
            "uid": os.geteuid(), "systemd": systemd, "port_free": free, "port_error": why,
            "config": _read(os.path.join(a["root"], "raftd.yaml")), "status": st,
            "has_root": os.path.isdir(a["root"]), "has_log": _has_log(a["data_dir"])}


def op_mkdirs(a):
    for d in a["dirs"]:
        os.makedirs(d, exist_ok=True)
    return {}


def op_install(a):
    """Create ROOT/venvs/<build> and install the wheel into it (idempotent)."""
    root, build = a["root"], a["build"]
    venvs = os.path.join(root, "venvs")
    target = os.path.join(venvs, build)
    marker = os.path.join(target, ".raftctl-installed")
    if os.path.exists(marker):
        return {"installed": False}
    if os.path.exists(target):
        shutil.rmtree(target)
    os.makedirs(venvs, exist_ok=True)
    py = os.path.join(target, "bin", "python")
    if a.get("offline"):
        cmds = [[sys.executable, "-m", "venv", "--without-pip", target],
                [py, a["pip_wheel"] + "/pip", "install", "--no-index", "--find-links",
                 a["find_links"], "--no-compile", "--disable-pip-version-check", "-q",
                 a["wheel"]]]
    else:
        cmds = [[sys.executable, "-m", "venv", target],
                [py, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check",
                 "-q", a["wheel"]]]
    for cmd in cmds:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        if p.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            lines = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
            raise Fail("install", "%s failed (exit %d): %s" % (
                " ".join(cmd[:4]), p.returncode, " | ".join(lines[-4:]) or "no output"))
    _write(marker, build + "\n")
    return {"installed": True}


def op_activate(a):
    """Point ROOT/venv at the build, write config, state and the service definition; keep
    the current and the previous build's venv, delete older ones."""
    root, build = a["root"], a["build"]
    os.makedirs(root, exist_ok=True)
    os.makedirs(a["data_dir"], mode=0o700, exist_ok=True)
    link = os.path.join(root, "venv")
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("venvs", build), tmp)
    os.replace(tmp, link)
    if a.get("tls"):
        _write_tls(root, a["tls"])
    if a.get("config") is not None:
        _write(os.path.join(root, "raftd.yaml"), a["config"], 0o600)
    values = {"root": root, "name": a["name"], "cluster": a["cluster"]}
    _write(os.path.join(root, "supervise.sh"), SUPERVISOR % values, 0o755)
    state = dict(a["state"])
    prev = (_state(a) or {}).get("build")
    if prev and prev != build:
        state["previous_build"] = prev
    _write(os.path.join(root, "state.json"), json.dumps(state, indent=1) + "\n")
    if state.get("manager") == "systemd":
        unit_path = "/etc/systemd/system/" + a["unit"]
        text = UNIT % values
        if _read(unit_path) != text:
            _write(unit_path, text)
            _systemctl("daemon-reload", check=True)
        _systemctl("enable", a["unit"], check=True)
    keep = {build, state.get("previous_build")}
    venvs = os.path.join(root, "venvs")
    for d in os.listdir(venvs) if os.path.isdir(venvs) else []:
        if d not in keep:
            shutil.rmtree(os.path.join(venvs, d), ignore_errors=True)
            shutil.rmtree(os.path.join(root, "builds", d), ignore_errors=True)
    return {}


def op_start(a):
    st = op_status(a)
    if st["running"]:
        return dict(st, started=False)
    if not st["installed"]:
        raise Fail("not_installed", "raftd is not installed in %s" % a["root"])
    root = a["root"]
    log = os.path.join(root, "raftd.log")
    with open(log, "a") as f:
        f.write("%s raftctl: starting raftd (%s)\n" % (time.strftime("%Y-%m-%d %H:%M:%S"),
                                                       st["manager"]))
    if st["manager"] == "systemd":
        _systemctl("reset-failed", a["unit"])
        _systemctl("start", a["unit"], check=True)
    else:
        subprocess.Popen(["/bin/sh", os.path.join(root, "supervise.sh")], cwd=root,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    deadline = time.time() + float(a.get("wait", 5))
    while time.time() < deadline:
        st = op_status(a)
        if st["running"]:
            break
        time.sleep(0.05)
    return dict(st, started=True)


def op_stop(a):
    st = op_status(a)
    if st["manager"] == "systemd":
        if st["running"]:
            _systemctl("stop", a["unit"], check=True)
        return {"was_running": st["running"], "killed": False}
    root = a["root"]
    pids = [p for p in (st["supervisor_pid"], st["pid"]) if p]
    if not pids:
        return {"was_running": False, "killed": False}
    first = st["supervisor_pid"] or st["pid"]
    try:
        os.kill(first, signal.SIGTERM)
    except OSError:
        pass
    grace = float(a.get("grace", 10))
    deadline = time.time() + grace

    def alive():
        return [p for p, n in ((st["supervisor_pid"], os.path.join(root, "supervise.sh")),
                               (st["pid"], os.path.join(root, "raftd.yaml")))
                if p and _alive(p, n)]
    while time.time() < deadline and alive():
        if not _alive(st["supervisor_pid"], os.path.join(root, "supervise.sh")) and \
                st["pid"] and _alive(st["pid"], os.path.join(root, "raftd.yaml")):
            try:  # the supervisor is gone but raftd is not: stop raftd directly
                os.kill(st["pid"], signal.SIGTERM)
            except OSError:
                pass
        time.sleep(0.05)
    killed = False
    for p in alive():
        try:
            os.kill(p, signal.SIGKILL)
            killed = True
        except OSError:
            pass
    for f in ("supervisor.pid", "raftd.child.pid"):
        try:
            os.unlink(os.path.join(root, f))
        except OSError:
            pass
    return {"was_running": bool(st["running"]), "killed": killed}


def op_logs(a):
    path = os.path.join(a["root"], "raftd.log")
    n = int(a.get("lines", 50))
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            chunk = min(size, max(65536, n * 400))
            f.seek(size - chunk)
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return {"lines": [], "exists": False}
    lines = data.splitlines()
    if chunk < size and lines:
        lines = lines[1:]  # the first line may be cut
    return {"lines": lines[-n:] if n > 0 else [], "exists": True}


def op_purge(a):
    st = op_status(a)
    if st["running"]:
        raise Fail("running", "raftd is still running (pid %s)" % st["pid"])
    if st["manager"] == "systemd":
        unit_path = "/etc/systemd/system/" + a["unit"]
        if os.path.exists(unit_path):
            _systemctl("disable", a["unit"])
            os.unlink(unit_path)
            _systemctl("daemon-reload")
    removed = []
    for d in (a["data_dir"], a["root"]):
        if d.rstrip("/").count("/") < 2:
            raise Fail("refused", "refusing to remove %r (too close to /)" % d)
        if os.path.lexists(d):
            shutil.rmtree(d)
            removed.append(d)
    for d in (os.path.join(a["install_dir"], "data"), a["install_dir"]):
        try:
            os.rmdir(d)  # only when empty: other nodes on this machine may still use it
            removed.append(d)
        except OSError:
            pass
    return {"removed": removed}


OPS = {"probe": op_probe, "status": op_status, "mkdirs": op_mkdirs, "install": op_install,
       "activate": op_activate, "start": op_start, "stop": op_stop, "logs": op_logs,
       "purge": op_purge, "tls": op_tls}


def main(op, args):
    try:
        result = {"ok": True, "result": OPS[op](args)}
    except Fail as e:
        result = {"ok": False, "kind": e.kind, "message": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to raftctl, which names the host
        result = {"ok": False, "kind": type(e).__name__, "message": str(e)}
    sys.stdout.write("\n" + MARK + " " + json.dumps(result) + "\n")
    sys.stdout.flush()
