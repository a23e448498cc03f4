"""raftd.core must stay sans-I/O: no clock, socket, disk, thread or global randomness.

The test walks the AST of every module in raftd/core and fails on a forbidden import or on a
call into the module-level ``random`` functions (only a passed-in random.Random is allowed)."""
import ast
import pathlib

import raftd.core

CORE = pathlib.Path(raftd.core.__file__).parent
FORBIDDEN = {"asyncio", "socket", "time", "threading", "os", "io", "select", "selectors",
             "subprocess", "multiprocessing", "datetime", "signal", "pathlib", "shutil",
             "tempfile", "logging", "raftd.runtime", "raftd.storage", "raftd.wire", "uuid",
             "secrets", "concurrent"}


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module or "", node.lineno


def test_core_imports_no_io_modules():
    bad = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for name, line in _imports(tree):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"{path.name}:{line} imports {name}")
    assert not bad, "raftd.core must not do I/O: " + "; ".join(bad)


def test_core_uses_no_global_random_state():
    bad = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "random" and node.attr != "Random"):
                bad.append(f"{path.name}:{node.lineno} uses random.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                bad.append(f"{path.name}:{node.lineno} imports from random")
    assert not bad, "; ".join(bad)


def test_checker_catches_a_forbidden_import(tmp_path):
    """The walker itself works: a module importing time is flagged."""
    tree = ast.parse("import time\nfrom asyncio import sleep\n")
    names = [n for n, _ in _imports(tree)]
    assert names == ["time", "asyncio"]
