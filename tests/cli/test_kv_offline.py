"""raftctl kv through typer's CliRunner against an in-memory stand-in for raftd.client.Client
(issue 17 §6): output, JSON keys and exit codes of every kv command without a process.  The
real client and server are covered by tests/cli/test_raftctl.py and tests/e2e."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from raftctl.commands import kv as kv_cmd
from raftctl.main import app
from raftd.client import RequestError, Unavailable


class FakeClient:
    """The Client methods raftctl kv calls, over a dict; ``fail`` raises instead."""

    def __init__(self, data: dict[str, bytes], fail: Exception | None = None):
        self.data, self.fail = data, fail
        self.index = 10 + len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _op(self):
        if self.fail is not None:
            raise self.fail
        self.index += 1
        return self.index

    def put(self, key, value):
        idx = self._op()
        self.data[key] = value if isinstance(value, bytes) else value.encode()
        return idx

    def get(self, key, linearizable=True):
        self._op()
        return self.data.get(key)

    def delete(self, key):
        self._op()
        return self.data.pop(key, None) is not None

    def cas(self, key, expected, new):
        self._op()
        if self.data.get(key) != expected:
            return False
        self.data[key] = new
        return True

    def list(self, prefix="", linearizable=True):
        self._op()
        return {k: v for k, v in sorted(self.data.items()) if k.startswith(prefix)}


class AsyncFakeClient:
    """The AsyncClient methods `kv delete --prefix` calls, over the same FakeClient."""

    def __init__(self, fake: FakeClient):
        self.fake = fake

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def list(self, prefix="", linearizable=True):
        return self.fake.list(prefix, linearizable)

    async def delete(self, key):
        return self.fake.delete(key)


@pytest.fixture
def cli(monkeypatch):
    state = {"data": {}, "fail": None}
    monkeypatch.setattr(kv_cmd, "_client", lambda s: FakeClient(state["data"], state["fail"]))
    monkeypatch.setattr(kv_cmd, "_async_client",
                        lambda s: AsyncFakeClient(FakeClient(state["data"], state["fail"])))

    def invoke(*args, stdin=None):
        return CliRunner().invoke(app, ["-e", "127.0.0.1:9", "kv", *args], input=stdin)

    invoke.state = state
    return invoke


def test_put_get_list_delete_in_both_formats(cli):
    r = cli("put", "a", "hello")
    assert r.exit_code == 0 and r.stdout == "OK 11\n"
    assert json.loads(cli("put", "b", "x", "-o", "json").stdout) == {"key": "b", "index": 12}
    assert cli("get", "a").stdout == "hello"  # piped: the bytes exactly (issue 16 trial)
    assert json.loads(cli("get", "a", "-o", "json").stdout) == {
        "key": "a", "value": "hello", "found": True}
    assert cli("list").stdout == "a\thello\nb\tx\n"
    assert json.loads(cli("list", "a", "-o", "json").stdout) == {
        "prefix": "a", "items": {"a": "hello"}}
    assert cli("delete", "a").stdout == "deleted\n"
    assert json.loads(cli("delete", "--prefix", "b", "-o", "json").stdout) == {
        "prefix": "b", "deleted": 1}
    assert cli.state["data"] == {}


def test_missing_key_exits_1_with_one_line(cli):
    r = cli("get", "nope")
    assert r.exit_code == 1 and r.stdout == "" and r.stderr == "raftctl: key not found: nope\n"
    r = cli("get", "nope", "-o", "json")
    assert r.exit_code == 1 and json.loads(r.stdout)["found"] is False
    r = cli("delete", "nope")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1


def test_cas_swaps_or_exits_1(cli):
    assert cli("cas", "k", "v1", "--absent").stdout == "swapped\n"
    r = cli("cas", "k", "v2", "--expected", "wrong", "-o", "json")
    assert r.exit_code == 1 and json.loads(r.stdout) == {"key": "k", "swapped": False}
    assert cli("cas", "k", "v2", "--expected", "v1").exit_code == 0
    assert cli.state["data"]["k"] == b"v2"


def test_values_from_stdin_and_usage_errors(cli, tmp_path):
    assert cli("put", "s", "-", stdin="from stdin").exit_code == 0
    assert cli.state["data"]["s"] == b"from stdin"
    f = tmp_path / "v"
    f.write_bytes(b"\x00\x01")
    assert cli("put", "f", "--file", str(f)).exit_code == 0
    assert cli.state["data"]["f"] == b"\x00\x01"
    for args in (["put", "", "v"], ["get", ""], ["delete"], ["delete", "k", "--prefix", "p"],
                 ["cas", "k", "v"], ["delete", "--prefix", ""]):
        r = cli(*args)
        assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, (args, r.stderr)


@pytest.mark.parametrize("error, code, kind", [
    (Unavailable("no leader reachable"), 3, "unavailable"),
    (RequestError("value_too_large", "value is 20 MiB, the limit is 16 MiB"), 4,
     "value_too_large"),
])
def test_cluster_errors_map_to_exit_codes_and_json(cli, error, code, kind):
    cli.state["fail"] = error
    r = cli("put", "k", "v")
    assert r.exit_code == code and r.stdout == "" and len(r.stderr.splitlines()) == 1
    r = cli("get", "k", "-o", "json")
    assert r.exit_code == code
    assert json.loads(r.stderr) == {"error": kind, "message": str(error), "exit_code": code}


def test_delete_prefix_that_fails_midway_says_how_many_were_deleted(cli, monkeypatch):
    """A pipelined delete --prefix stops at the first error and says how far it got."""
    from raftd.client import Unavailable
    cli.state["data"].update({f"p/{i:03d}": b"v" for i in range(300)})
    fake = FakeClient(cli.state["data"])
    calls = [0]

    class Failing(AsyncFakeClient):
        async def delete(self, key):
            calls[0] += 1
            if calls[0] == 101:
                raise Unavailable("delete failed: no leader reachable within 5s")
            return self.fake.delete(key)

    monkeypatch.setattr(kv_cmd, "_async_client", lambda s: Failing(fake))
    r = cli("delete", "--prefix", "p/")
    assert r.exit_code == 3 and r.stdout == ""
    assert "deleted 100 of the 300 keys under 'p/' before this error:" in r.stderr
    assert "no leader reachable" in r.stderr
    assert len(cli.state["data"]) == 200
