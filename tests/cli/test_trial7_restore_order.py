"""issue 16 follow-up (trial 7, E): a corrupt backup is refused before any port is chosen.

`snapshot restore bad.snap` said "ports 7001-7003 are in use ...; using ..." and only then
`corrupt_snapshot`.  The port choice is replaced here by one that always reports the demo's
ports as taken (a test must not hold 7001-7003 itself), so the line shows if it is reached.
"""
from typer.testing import CliRunner

from raftctl.commands import snapshot as snapshot_cmd
from raftctl.commands.local import free_base_port
from raftctl.main import app


def test_a_corrupt_backup_is_refused_before_ports_are_chosen(tmp_path, monkeypatch):
    def demo_ports_taken(n, info, *args, **kwargs):
        base = free_base_port(n)  # (free ports: should the refusal fail, nodes would start)
        info(f"ports 7001-7003 are in use (another cluster?); using {base}-{base + n - 1}")
        return base

    monkeypatch.setattr(snapshot_cmd, "default_base_port", demo_ports_taken)
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"RAFTSNAP" + b"\x00" * 64)
    r = CliRunner().invoke(app, ["snapshot", "restore", str(bad), "--dir",
                                 str(tmp_path / "restored"), "--nodes", "1"])
    assert r.exit_code != 0
    assert "using" not in r.output, r.output
    assert not (tmp_path / "restored" / "cluster.yaml").exists()
