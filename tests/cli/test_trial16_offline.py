"""Issue 16, what a new-user trial of the README still found, without a cluster: fault
tolerance arithmetic (trial item 1), fast failure where nothing listens (3), raw `kv get`
output (4), README error codes and config keys (5, 11), the permission message (6), `kv list
--prefix` (7), no subcommand with -o json (10), the free-port fallback message (11)."""
from __future__ import annotations

import json
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raftctl import dashboard, main
from raftctl.cluster import fault_tolerance, tolerates
from raftctl.commands import kv as kv_cmd
from raftctl.commands.health import check_health
from raftctl.commands.local import default_base_port, free_base_port
from raftctl.context import permission_message
from raftd.config import KEY_TYPES
from raftd.wire import ErrorCode
from tests.cli.test_dashboard import node, render_text, snap
from tests.cli.test_kv_offline import FakeClient

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


# ----------------------------------------------------------------- item 1 --
def test_fault_tolerance_counts_the_voters_that_may_still_fail():
    three = {"voters": ["n1", "n2", "n3"]}
    assert fault_tolerance(three, {"n1", "n2", "n3"}) == 1
    assert fault_tolerance(three, {"n1", "n2"}) == 0  # one down: no MORE may fail
    assert fault_tolerance(three, {"n1"}) == 0  # quorum lost: never negative
    five = {"voters": [f"n{i}" for i in range(1, 6)]}
    assert fault_tolerance(five, {"n1", "n2", "n3", "n4"}) == 1
    joint = {"voters": [f"n{i}" for i in range(1, 6)], "joint": True,
             "old_voters": ["n1", "n2", "n3"]}
    assert fault_tolerance(joint, {"n1", "n2", "n3", "n4", "n5"}) == 1
    assert fault_tolerance(joint, {"n1", "n2", "n4", "n5"}) == 0  # C_old has one down
    assert tolerates(0) == "tolerates 0 failures"


def test_health_and_dashboard_say_tolerates_0_with_one_of_three_down():
    st = snap(1.0, [node("n1", "leader", commit=5), node("n2", commit=5),
                    node("n3", reachable=False)])
    assert dashboard.analyze(st)["fault_tolerance"] == 0
    assert check_health(st, 1000, allow_down=1)["fault_tolerance"] == 0
    assert "tolerates 0 failures" in dashboard.plain_title(st)
    text = render_text(dashboard.render([st]))
    assert "tolerates 0 failures" in text and "tolerates 1" not in text


# ----------------------------------------------------------------- item 3 --
def _refused_endpoint() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("args", [
    ["status"], ["health"], ["member", "list"], ["snapshot", "save", "{tmp}/x.snap"],
    ["leader", "transfer"], ["snapshot", "create", "--node", "n2"],
    ["bench", "--duration", "1"]])
def test_nothing_listening_fails_fast_with_no_raftd_at(args, tmp_path):
    ep = _refused_endpoint()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    t0 = time.monotonic()
    r = CliRunner().invoke(main.app, ["-e", ep, "--timeout", "30", *args])
    took = time.monotonic() - t0
    assert r.exit_code == 3, (r.output, r.exit_code)
    assert f"raftctl: error: no raftd at {ep} (connection refused)\n" in r.stderr, r.stderr
    assert took < 1.0, took
    r = CliRunner().invoke(main.app, ["-e", ep, "-o", "json", *args])
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert err == {"error": "unavailable", "message": f"no raftd at {ep} (connection refused)",
                   "exit_code": 3}


# ----------------------------------------------------------------- item 4 --
@pytest.fixture
def kv(monkeypatch):
    data: dict[str, bytes] = {}
    monkeypatch.setattr(kv_cmd, "_client", lambda s: FakeClient(data))

    def invoke(*args):
        return CliRunner().invoke(main.app, ["-e", "127.0.0.1:9", "kv", *args])

    invoke.data = data
    return invoke


class _Terminal:
    """sys as kv sees it when stdout is a terminal."""

    class _Stdout:
        def __getattr__(self, name):
            return getattr(sys.stdout, name)

        def isatty(self) -> bool:
            return True

    stdout = _Stdout()

    def __getattr__(self, name):
        return getattr(sys, name)


def test_kv_get_writes_the_value_bytes_exactly_when_piped(kv, monkeypatch):
    value = bytes(range(256)) * 3 + b"no newline at the end"
    kv.data.update({"big": value, "line": b"hello\n", "word": b"hello"})
    assert kv("get", "big").stdout_bytes == value
    assert kv("get", "line").stdout_bytes == b"hello\n"
    assert kv("get", "word").stdout_bytes == b"hello"
    monkeypatch.setattr(kv_cmd, "sys", _Terminal())
    assert kv("get", "word").stdout_bytes == b"hello\n"  # a terminal: the prompt's own line
    assert kv("get", "line").stdout_bytes == b"hello\n"


# ----------------------------------------------------------------- item 7 --
def test_kv_list_takes_prefix_as_an_option_too(kv):
    kv.data.update({"app/a": b"1", "app/b": b"2", "other": b"3"})
    assert kv("list", "--prefix", "app/").stdout == "app/a\t1\napp/b\t2\n"
    assert kv("list", "app/").stdout == "app/a\t1\napp/b\t2\n"
    doc = json.loads(kv("list", "--prefix", "app/", "-o", "json").stdout)
    assert doc["prefix"] == "app/" and set(doc["items"]) == {"app/a", "app/b"}
    r = kv("list", "app/", "--prefix", "other")
    assert r.exit_code == 2 and "not both" in r.stderr


# ------------------------------------------------------------- items 5, 11 --
def test_every_error_code_the_readme_names_is_a_real_one():
    named = set(re.findall(r"`([a-z_]+)`,? \(?exit \d", README))
    named |= set(re.findall(r"gets `([a-z_]+)`", README))
    for m in re.finditer(r"\.code`, e\.g\. ([^)]*)\)", README):
        named |= set(re.findall(r"`([a-z_]+)`", m.group(1)))
    assert {"too_large", "permission_denied", "wrong_cluster"} <= named, named
    assert named <= {c.value for c in ErrorCode}, named - {c.value for c in ErrorCode}
    assert "value_too_large" not in README


def test_readme_lists_every_config_key():
    section = README[README.index("Config keys (see"):README.index("Unknown keys, wrong types")]
    missing = [k for k in KEY_TYPES if f"`{k}`" not in section and f"`{k}: " not in section]
    assert not missing, missing


def test_free_port_fallback_names_the_ports_actually_taken():
    base = free_base_port(3)
    said: list[str] = []
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", base + 1))
        b.bind(("127.0.0.1", base + 2))
        port = default_base_port(3, said.append, preferred=base)
    assert port != base
    assert said[0].startswith(f"ports {base + 1}-{base + 2} are in use"), said
    with socket.socket() as a:
        a.bind(("127.0.0.1", base))
        default_base_port(3, said.append, preferred=base)
    assert said[1].startswith(f"port {base} is in use"), said


# ----------------------------------------------------------------- item 6 --
def test_permission_message_names_the_command_not_the_request():
    msg = "app1 (role client) may not status: it needs an admin certificate"
    assert permission_message("raftctl member list", msg) == (
        "raftctl member list: app1 (role client) may not run this command: it needs an admin "
        "certificate")


# ---------------------------------------------------------------- item 10 --
@pytest.mark.parametrize("args", [["-o", "json", "kv"], ["--output=json", "member"],
                                  ["-o", "json", "snapshot"]])
def test_no_subcommand_with_json_is_one_json_line(args, capsys):
    with pytest.raises(SystemExit) as e:
        main.main(args)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    doc = json.loads(err)
    assert doc["error"] == "usage" and doc["exit_code"] == 2
    assert f"raftctl {args[-1]} -h" in doc["message"]


def test_no_subcommand_without_json_shows_the_help_on_stderr(capsys):
    for args in (["kv"], []):
        with pytest.raises(SystemExit) as e:
            main.main(args)
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == "" and err.startswith("Usage: raftctl"), (out, err)
