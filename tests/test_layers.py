"""The layers of raftd and raftctl, enforced (issue 17 §5).

    raftd.core                      the pure Raft state machine: imports nothing else of raftd
    raftd.wire, .storage, .kv       each imports only raftd.core, raftd.validate (the id and
                                    address rules; it imports nothing of raftd) and itself
    raftd.runtime, .sim, ...        may use the layers above
    raftctl                         a client of raftd's public modules only (PUBLIC below)

Every import is checked, those inside functions included (raftctl imports lazily to start
fast), by parsing the source: nothing is imported to run this test.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What raftctl may import from raftd, and why each is public.
PUBLIC = {
    "raftd.client": "the client library every command talks to the cluster through",
    "raftd.client_socket": "the client library without asyncio, for `raftctl kv`'s start-up",
    "raftd.client_errors": "the client library's errors, to map them without importing asyncio",
    "raftd.config": "node config parsing/writing, shared with the inventory (one validator)",
    "raftd.validate": "the shared config/inventory validator",
    "raftd.tls": "TLS contexts and their errors for the client side",
    "raftd.pki": "the CA and certificates raftctl certs/bootstrap issue",
    "raftd.recovery": "offline data-dir tools (survey, rebuild, seed), as etcdutl beside etcd",
    "raftd.core": "the pure Raft core: `raftctl learn` drives RaftNode directly, as a library",
}
SELF_ONLY = {"raftd.wire", "raftd.storage", "raftd.kv"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod in ("raftd", "raftctl") or (node.level and not node.module):
                # `from raftd import pki` / `from . import x`: the names are modules
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return out


def _layer(mod: str) -> str:
    """raftd.storage.wal -> raftd.storage; raftd.client -> raftd.client."""
    return ".".join(mod.split(".")[:2])


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _violations(package: str, allowed) -> list[str]:
    bad = []
    for path in _sources(package):
        me = _layer(_module_name(path)) if package == "raftd" else "raftctl"
        for line, mod in _imports(path):
            if not mod.startswith("raftd"):
                continue
            if not allowed(me, _layer(mod)):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {mod}")
    return bad


def test_core_imports_nothing_else_of_raftd():
    assert not _violations("raftd", lambda me, it: me != "raftd.core" or it == "raftd.core")


def test_wire_storage_kv_import_only_core():
    assert not _violations("raftd", lambda me, it: me not in SELF_ONLY
                           or it in (me, "raftd.core", "raftd.validate"))


def test_validate_imports_nothing_of_raftd():
    assert not _violations("raftd", lambda me, it: me != "raftd.validate")


def test_raftctl_imports_only_public_raftd_modules():
    assert not _violations("raftctl", lambda me, it: it in PUBLIC)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The scan is not vacuous: it finds imports inside functions and resolves relative ones."""
    found = dict((mod, line) for line, mod in _imports(ROOT / "raftd" / "storage" / "wal.py"))
    assert "raftd.core.types" in found
    lazy = [mod for _, mod in _imports(ROOT / "raftctl" / "commands" / "certs.py")]
    assert "raftd.pki" in lazy  # imported inside a function
    rel = [mod for _, mod in _imports(ROOT / "raftctl" / "commands" / "snapshot.py")]
    assert "raftctl.cluster" in rel and "raftd.recovery" in rel


# Private names imported across modules: none may be (issue 17 §4).
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def _private_imports() -> set[tuple[str, str]]:
    found = set()
    for package in ("raftd", "raftctl"):
        for path in _sources(package):
            name = _module_name(path)
            pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                mod = node.module or ""
                if node.level:
                    base = pkg.split(".")
                    mod = ".".join(base[:len(base) - node.level + 1] + ([mod] if mod else []))
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.add((str(path.relative_to(ROOT)), f"{mod}.{a.name}"))
    return found


def test_no_new_private_names_imported_across_modules():
    new = _private_imports() - KNOWN_PRIVATE
    assert not new, f"import a public name instead: {sorted(new)}"
