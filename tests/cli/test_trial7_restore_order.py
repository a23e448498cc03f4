"""issue 16 follow-up E: a corrupt backup is refused before any port is chosen."""
from typer.testing import CliRunner

from raftctl.main import app


def test_a_corrupt_backup_is_refused_before_ports_are_chosen(tmp_path):
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"RAFTSNAP" + b"\\x00" * 64)
    r = CliRunner().invoke(app, ["snapshot", "restore", str(bad), "--dir",
                                 str(tmp_path / "restored"), "--nodes", "1"])
    assert r.exit_code != 0
    assert "using" not in r.output and "ports" not in r.output
