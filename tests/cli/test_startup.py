"""raftctl imports a subcommand's module only when that command runs (issue 16 §6)."""
from __future__ import annotations

import subprocess
import sys

from raftctl import main


def test_every_command_loads_under_its_name():
    """A row of COMMANDS that names a wrong module or attribute fails here, not in the field."""
    for name, (_, _, short) in main.COMMANDS.items():
        cmd = main.load_command(name)
        assert cmd.name == name and cmd.help, name
        assert short and len(short) <= 70 and short.endswith("."), name


def test_help_and_kv_import_no_other_subcommand():
    code = ("import sys; from raftctl.main import app, main\n"
            "try:\n    main(['kv', 'get', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('raftctl.commands.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert loaded == ["raftctl.commands.kv"], loaded
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    for name in main.COMMANDS:
        assert f"  {name} " in r.stdout, name


def test_python_m_raftctl_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "raftctl", "kv", "get", "k", "-e", ""],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no endpoint given" in r.stderr, r.stderr
