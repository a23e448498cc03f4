"""Issue 16, trial 6, what needs no cluster: bad --dir inputs of `raftctl local` (item C)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from raftctl import main


def invoke(*args):
    return CliRunner().invoke(main.app, list(args))


@pytest.mark.parametrize("text, said", [
    ("nodes: [oops\n", "not valid YAML: expected ',' or ']'"),
    ("hello\n", "not a raftctl cluster file"),
    ("nodes:\n  - {id: n1}\n", "not a raftctl cluster file"),
])
@pytest.mark.parametrize("cmd", [["up"], ["down"], ["add"], ["remove", "n1"]])
def test_a_corrupt_cluster_file_is_one_line_naming_it(tmp_path, text, said, cmd):
    (tmp_path / "cluster.yaml").write_text(text)
    r = invoke("local", *cmd, "--dir", str(tmp_path))
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and str(tmp_path / "cluster.yaml") in r.stderr, r.stderr
    assert said in r.stderr and "attribute" not in r.stderr


def test_a_file_or_a_missing_dir_is_a_usage_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in ("up", "down"):
        r = invoke("local", cmd, "--dir", str(afile))
        assert r.exit_code == 2 and "is not a directory" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1
    assert afile.read_text() == "x"
    r = invoke("local", "down", "--dir", str(tmp_path / "nonexistent"))
    assert r.exit_code == 2 and "no such directory" in r.stderr, r.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_too_many_nodes_is_a_usage_error(tmp_path):
    r = invoke("local", "up", "--nodes", "200", "--dir", str(tmp_path / "x"))
    assert r.exit_code == 2 and "--nodes must be from 1 to 25" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_restore_into_a_dir_holding_a_cluster_refuses_before_choosing_ports(tmp_path,
                                                                           monkeypatch):
    """Trial item 11: the refusal comes first, not after "ports ... are in use; using ..."."""
    from raftctl.commands import snapshot as snapshot_cmd

    asked = []
    monkeypatch.setattr(snapshot_cmd, "default_base_port", lambda *a, **k: asked.append(a))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "cluster.yaml").write_text("nodes: []\n")
    backup = tmp_path / "backup.snap"
    backup.write_bytes(b"x")
    r = invoke("snapshot", "restore", str(backup), "--dir", str(existing))
    assert r.exit_code == 2 and r.stderr == (
        f"raftctl: error: {existing} already holds a cluster; use an empty directory\n")
    assert asked == []


@pytest.mark.parametrize("args, suggestion", [(["stauts"], "'status'"),
                                              (["snapshott", "list"], "'snapshot'"),
                                              (["local", "dwn"], "'down'")])
def test_an_unknown_command_gets_a_suggestion(args, suggestion):
    r = invoke(*args)
    assert r.exit_code == 2 and f"Did you mean {suggestion}?" in r.output, r.output
