"""docs/RAFT.md names files and functions: each one exists (issue 18 §3)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "RAFT.md"
REF = re.compile(r"((?:raftd|raftctl|tests)/[\w/]+\.py)(?:::([\w.]+))?")


def _defined(path: Path) -> set[str]:
    """Top-level names and Class.method names defined in ``path``."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{n.name}" for n in node.body
                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def test_every_file_and_function_named_in_raft_md_exists():
    refs = REF.findall(DOC.read_text())
    assert len(refs) > 50
    missing = []
    for path, name in refs:
        p = ROOT / path
        if not p.is_file():
            missing.append(path)
        elif name and name not in _defined(p):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/RAFT.md names what does not exist: {sorted(set(missing))}"


def test_every_scenario_named_in_raft_md_exists():
    from raftctl.learn.scenarios import SCENARIOS
    named = set(re.findall(r"scenario `([\w-]+)`", DOC.read_text()))
    assert named and named <= set(SCENARIOS), named - set(SCENARIOS)
