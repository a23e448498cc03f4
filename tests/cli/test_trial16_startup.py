"""Issue 16 §6 (trial item 12): the client path does not import the whole Raft core."""
from __future__ import annotations

import importlib
import subprocess
import sys

import raftd.core


def test_client_import_leaves_the_core_node_unimported():
    code = ("import sys, raftd.client\n"
            "print(sorted(m for m in sys.modules if m.startswith('raftd.core')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = eval(r.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert "raftd.core.node" not in loaded and "raftd.core.log" not in loaded, loaded


def test_every_public_core_name_is_importable_from_the_package():
    for name in raftd.core.__all__:
        value = getattr(raftd.core, name)
        home = importlib.import_module(f"raftd.core.{raftd.core._HOME[name]}")
        assert value is getattr(home, name), name
    assert set(raftd.core.__all__) <= set(dir(raftd.core))
    from raftd.core import RaftNode, membership  # noqa: F401 - a class and a submodule


def test_a_group_builds_only_the_subcommand_being_run():
    from raftctl import main
    from raftctl.commands import kv

    assert list(main.load_command("kv", "get").commands) == ["get"]
    assert set(main.load_command("kv", "-h").commands) == {"put", "get", "delete", "cas", "list"}
    assert len(kv.app.registered_commands) == 5  # the module's own app is left whole
