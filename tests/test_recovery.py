"""raftd.recovery, the offline data-dir tools behind `raftctl snapshot recover|restore`:
reading a data dir writes nothing to it (issue 21, "Bad input and operators"), seeding a new
cluster leaves every file and directory durable (issue 21 §6), files are closed on errors
(issue 17 §5)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raftd import recovery
from raftd.core import Entry, EntryKind, HardState
from raftd.storage.wal import DurableLog

ROOT = Path(__file__).resolve().parents[1]


def _stopped_data_dir(d: Path, torn_tail: bytes = b"\x10\x00\x00") -> Path:
    """A data dir as a node that crashed mid-write leaves it: a log of 5 entries and the
    first bytes of a sixth record (recovery in place would cut them off)."""
    log = DurableLog.open(d / "wal")
    log.save(HardState(2, "n1"), [Entry(2, i, EntryKind.NORMAL, b"") for i in range(1, 6)])
    log.close()
    (d / "snapshots").mkdir()
    seg = sorted((d / "wal").iterdir())[-1]
    with open(seg, "ab") as f:
        f.write(torn_tail)
    return d


def _tree(d: Path) -> dict[str, tuple]:
    """Every path under d with its mtime (ns), mode and content hash (files)."""
    out = {}
    for p in sorted([d, *d.rglob("*")]):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(d))] = (st.st_mtime_ns, st.st_mode, st.st_size, digest)
    return out


def test_survey_writes_nothing_to_the_data_dir(tmp_path):
    d = _stopped_data_dir(tmp_path / "n1")
    before = _tree(d)
    s = recovery.survey(d)
    assert (s.last_index, s.last_term, s.term, s.snapshot_index) == (5, 2, 2, 0)
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "-o", "json", "snapshot",
                        "recover", str(d)], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nodes"][0]["last_index"] == 5
    assert _tree(d) == before  # the torn tail is still there: only a copy was recovered


def test_survey_of_a_non_data_dir_is_a_usage_error(tmp_path):
    with pytest.raises(recovery.NotADataDir):
        recovery.survey(tmp_path)
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "snapshot", "recover",
                        str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "not a raftd data directory" in r.stderr
    assert list(tmp_path.iterdir()) == []  # not even a LOCK file


def test_a_damaged_log_is_reported_at_its_own_path(tmp_path):
    d = _stopped_data_dir(tmp_path / "n1", torn_tail=b"")
    (seg,) = (d / "wal").iterdir()
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF  # inside the first records, not a torn tail
    seg.write_bytes(bytes(data))
    with pytest.raises(recovery.CorruptLogError) as e:
        recovery.survey(d)
    assert e.value.path == str(seg)
    r = subprocess.run([sys.executable, "-m", "raftctl.main", "snapshot", "recover", str(d)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1 and f"corrupt record in {seg} at offset" in r.stderr, r.stderr


def _open_fds_on(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return n


def test_read_snapshot_closes_the_file_when_the_reader_fails(tmp_path):
    recovery.seed([tmp_path / "n1"], {"n1": "127.0.0.1:1"}, 7, 3, {"x": 1}, {"k": b"v"}, 1)
    (snap,) = (tmp_path / "n1" / "snapshots").iterdir()
    with pytest.raises(RuntimeError):
        with recovery.read_snapshot(snap) as (info, header, batches):
            assert info.meta.index == 7 and header == {"x": 1}
            raise RuntimeError("the caller failed before reading any batch")
    assert _open_fds_on(snap) == 0
    with recovery.read_snapshot(snap) as (_, _, batches):
        assert list(batches) == [[["k", b"v"]]]
    assert _open_fds_on(snap) == 0


_SEED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from raftctl.commands.snapshot import seed_cluster
    seed_cluster(Path(sys.argv[1]), 3, 1, 40, 4, {}, [[["k", b"v"]]], keys=1)
""")
_CALL = re.compile(r'^(?:\d+\s+)?(\w+)\((.*)\)\s+= (-?\d+)')
_FD_PATH = re.compile(r'^-?\d+<(.*)>')


def _strace(argv: list[str], out: Path) -> list[tuple[str, list[str]]]:
    """The file-system calls of ``argv``: (name, [path arguments]) in order."""
    subprocess.run(["strace", "-f", "-y", "-qq", "-o", str(out), "-e",
                    "trace=fsync,fdatasync,mkdir,mkdirat,rename,renameat,renameat2,openat"]
                   + argv, check=True, capture_output=True, timeout=120, cwd=ROOT)
    calls = []
    for line in out.read_text().splitlines():
        m = _CALL.match(line)
        if not m or int(m[3]) < 0:
            continue
        name, args = m[1], m[2]
        paths = re.findall(r'"([^"]*)"', args)
        if name in ("fsync", "fdatasync"):
            fd = _FD_PATH.match(args)
            paths = [fd[1]] if fd else []
        elif name == "openat" and "O_CREAT" not in args:
            continue
        calls.append((name, paths))
    return calls


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    r = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True,
                       timeout=30)
    return r.returncode == 0  # not where ptrace is forbidden


@pytest.mark.skipif(not _strace_works(), reason="needs a working strace")
def test_seeding_makes_every_file_and_directory_durable(tmp_path):
    """Run the seeding under strace and check the rules of a crash-consistent write: every
    file that ends up in the new cluster dir was fsynced under its final or temporary name,
    and every name created there (mkdir, create, rename) was followed by an fsync of its
    parent directory."""
    target = tmp_path / "seeded"
    calls = _strace([sys.executable, "-c", _SEED, str(target)], tmp_path / "trace")
    assert (target / "n3" / "snapshots").is_dir()
    synced_at: dict[str, list[int]] = {}
    for i, (name, paths) in enumerate(calls):
        if name in ("fsync", "fdatasync") and paths:
            synced_at.setdefault(paths[0], []).append(i)
    renamed_from = {ps[-1]: ps[0] for n, ps in calls if n.startswith("rename") and len(ps) == 2}
    problems = []
    for i, (name, paths) in enumerate(calls):
        if name.startswith("rename"):
            created = paths[-1]
        elif name.startswith("mkdir") or name == "openat":
            created = paths[0] if paths else ""
        else:
            continue
        if not created.startswith(str(target)) and created != str(target):
            continue
        parent = str(Path(created).parent)
        if not any(j > i for j in synced_at.get(parent, [])):
            problems.append(f"{name} {created}: parent not fsynced after it")
    for p in target.rglob("*"):
        if p.is_file() and p.name != "LOCK":
            names = {str(p), renamed_from.get(str(p), "")}
            if not any(synced_at.get(n) for n in names):
                problems.append(f"{p}: never fsynced")
    assert not problems, "\n".join(problems)
    # and the seeded files are what a node reads at start
    s = recovery.survey(target / "n2")
    assert (s.snapshot_index, s.last_index, s.term) == (40, 40, 4)


_REOPEN = """
import sys
from raftd.storage.wal import DurableLog
DurableLog.open(sys.argv[1]).close()
"""


@pytest.mark.skipif(not _strace_works(), reason="needs a working strace")
def test_reopening_a_wal_makes_what_it_read_durable_first(tmp_path):
    """Issue 21 §1: after a process crash the WAL may be only in the page cache; open() fsyncs
    every segment and the directories before handing anything back."""
    from raftd.core.types import Entry, HardState
    from raftd.storage.wal import DurableLog
    wal = tmp_path / "data" / "wal"
    log = DurableLog.open(wal, segment_bytes=4096)
    for i in range(1, 60):
        log.save(HardState(1, "n1"), [Entry(1, i, 0, b"x" * 100)])
    log.close()
    segments = sorted(str(p) for p in wal.iterdir() if p.suffix == ".wal" or "seg" in p.name)
    assert len(segments) > 1
    calls = _strace([sys.executable, "-c", _REOPEN, str(wal)], tmp_path / "trace")
    synced = {paths[0] for name, paths in calls if name in ("fsync", "fdatasync") and paths}
    missing = [s for s in segments if s not in synced]
    assert not missing, f"not fsynced on open: {missing}"
    assert str(wal) in synced and str(wal.parent) in synced
