"""Crash-state explorer for the storage layer (issue 21), in the spirit of ALICE (Pillai et al.,
OSDI 2014, "All File Systems Are Not Created Equal").

A workload runs the shipped ``DurableLog``, ``SnapshotStore`` and install functions over the
recording file system of ``raftd.storage.fsmodel``: votes, appends, a multi-sector group commit,
truncation after a conflict, segment rotation, a snapshot and compaction, a failed fsync, a full
disk, a snapshot install that resets the log, and appends after it.  After every file operation
that changes something (a crash point), it builds the states a power loss may leave there
(fsynced bytes kept; each unsynced write kept, lost or torn at a 512-byte sector; unsynced name
operations kept as an in-order prefix; never-fsynced files with any part of their writes),
recovers each as raftd does at start-up, and checks:

* recovery succeeds: no crash state may read as corruption;
* what it finds is the state before the operation in progress or after it, whole: nothing
  acknowledged is lost, a save (one batch) is all or nothing, the hard state never goes back (no
  second vote in a term), nothing of a failed fsync comes back, and the snapshot and the log
  agree;
* recovery makes what it read durable (issue 21 §1): recovered after a process crash (page cache
  kept), then hit by a power loss, the node finds the same state again.

``python -m raftd.storage.explore`` prints the number of crash states checked; ``--exhaustive``
enumerates every state the rules allow instead of a bounded sample; ``--mutant NAME`` brings back
one of the bugs issue 21 fixed, by patching at run time, and must then fail.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from raftd.core import SnapshotMeta
from raftd.core.membership import Configuration
from raftd.core.types import Entry, HardState
from raftd.storage import snapshots as snapshots_mod
from raftd.storage import walformat
from raftd.storage.durable import mkdir_durable
from raftd.storage.fsmodel import FsModel
from raftd.storage.install import fit_wal, log_gap, reconcile
from raftd.storage.snapshots import (CorruptSnapshotError, IncomingSnapshot, SnapshotStore,
                                     write_snapshot_file)
from raftd.storage.wal import CorruptLogError, DurableLog

DATA = Path("/n1")
SEGMENT_BYTES = 4096  # small, so the workload rotates segments
CONFIG = Configuration(frozenset({"n1", "n2", "n3"}))
PREALLOCATE = (0, 1024)  # wal_preallocate_bytes: off (the default), and on


class Finding(Exception):
    """A crash state the storage layer does not survive."""


@dataclass(frozen=True)
class State:
    """What a node's storage holds, as start-up reads it."""
    hard_state: HardState
    snapshot: tuple[int, int]  # newest valid snapshot (index, term); (0, 0) for none
    base: tuple[int, int]  # the WAL's (snapshot_index, snapshot_term)
    entries: tuple[Entry, ...]

    def describe(self) -> str:
        last = self.entries[-1].index if self.entries else self.base[0]
        terms = "".join(str(e.term) for e in self.entries)
        return (f"term {self.hard_state.term} vote {self.hard_state.voted_for}, snapshot "
                f"{self.snapshot}, log base {self.base} last {last} terms {terms or '-'}")


class Node:
    """A node's storage, opened the way raftd opens it (RaftServer._start): the data directory,
    the WAL, the snapshot store (temp files removed, newest valid snapshot), then the WAL made
    to agree with that snapshot."""

    def __init__(self, fs: FsModel, preallocate: int = 0):
        self.fs, self.preallocate = fs, preallocate
        mkdir_durable(DATA, fs=fs)
        self.log = DurableLog.open(DATA / "wal", segment_bytes=SEGMENT_BYTES, fs=fs,
                                   preallocate=preallocate)
        self.store = SnapshotStore(DATA / "snapshots", keep=2, fs=fs)
        self.store.cleanup()
        info = self.store.latest_valid()
        reconcile(self.log, info, self.store.oldest_kept_index())
        gap = log_gap(self.log, info)
        if gap is not None:
            raise Finding(f"recovery refused: the log {gap}")

    def state(self) -> State:
        info = self.store.latest_valid()
        snap = (info.meta.index, info.meta.term) if info is not None else (0, 0)
        log = self.log
        return State(log.hard_state, snap, (log.snapshot_index, log.snapshot_term),
                     tuple(log.all_entries()))

    def close(self) -> None:
        self.log.close()


def recover(fs: FsModel, preallocate: int = 0) -> State:
    try:
        node = Node(fs, preallocate)
    except (CorruptLogError, CorruptSnapshotError, ValueError, OSError) as e:
        raise Finding(f"recovery refused: {type(e).__name__}: {e}") from None
    try:
        return node.state()
    finally:
        node.close()


# ---------------------------------------------------------------- the workload --
def ents(lo: int, hi: int, term: int, size: int = 10) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(lo, hi + 1)]


def snapshot_bytes(index: int, term: int, keys: int = 30) -> bytes:
    """A snapshot file as a leader would send it (written on a scratch model)."""
    scratch = FsModel()
    path = Path("/snap")
    data = [[[f"k{i}".encode(), b"v" * 40] for i in range(keys)]]
    write_snapshot_file(path, SnapshotMeta(index, term, CONFIG), {"sessions": []}, data,
                        fs=scratch)
    return scratch.read_bytes(path)


@dataclass
class Run:
    """The workload's node: ``fs`` and ``node`` change when a failed step restarts it."""
    fs: FsModel
    node: Node
    on_restart: Callable[[FsModel], None] = field(default=lambda fs: None)
    # The state a save about to fail would leave, had it succeeded: a crash before the failure
    # may keep it (nothing was acknowledged yet), a crash after it must not (issue 21 §2).
    would_be: State | None = None

    def restart(self) -> None:
        """The process stops (the log refuses writes after a failed fsync) and starts again:
        the page cache survives, as after kill -9."""
        self.node.close()
        self.fs = self.fs.process_crash()
        self.on_restart(self.fs)
        self.node = Node(self.fs, self.node.preallocate)


def _save(hs: HardState | None, entries: list[Entry]) -> Callable[[Run], None]:
    return lambda r: r.node.log.save(hs, entries)


def _take_snapshot(index: int, term: int) -> Callable[[Run], None]:
    def step(r: Run) -> None:
        data = [[[b"k", b"v" * 100]]]
        r.node.store.write(SnapshotMeta(index, term, CONFIG), {"sessions": []}, data)
    return step


def _compact(index: int, term: int, failing_unlink: bool = False) -> Callable[[Run], None]:
    def step(r: Run) -> None:
        if not failing_unlink:
            r.node.log.compact(index, term)
            return
        # The BASE record is durable before any unlink; a failed unlink leaves an extra old
        # segment, removed by a later compaction or reset, and loses nothing.
        r.fs.fail("unlink", path="/wal/")
        try:
            r.node.log.compact(index, term)
        except OSError:
            return
        raise Finding("an injected EIO on unlink did not fail the compaction")
    return step


def _fail_then_restart(op: str, error: int, hs: HardState | None,
                       entries: list[Entry], also: str | None = None) -> Callable[[Run], None]:
    """A save whose ``op`` fails (and ``also``, the cut that follows it): the node restarts."""
    def step(r: Run) -> None:
        r.fs.fail(op, path="/wal/", error=error)
        if also is not None:
            r.fs.fail(also, path="/wal/")
        before = r.node.state()
        kept = tuple(e for e in before.entries if e.index < entries[0].index)
        r.would_be = State(hs or before.hard_state, before.snapshot, before.base,
                           kept + tuple(entries))
        try:
            r.node.log.save(hs, entries)
        except OSError:
            r.would_be = None
            r.restart()
            return
        raise Finding(f"an injected {errno.errorcode[error]} on {op} did not fail the save")
    return step


def _install(index: int, term: int) -> Callable[[Run], None]:
    """InstallSnapshot as the runtime does it (Snapshotter.install): chunks into a temp file,
    fsync and verify, the commit point (adopt), the WAL follows, older snapshots pruned."""
    payload = snapshot_bytes(index, term)

    def step(r: Run) -> None:
        store, meta = r.node.store, SnapshotMeta(index, term, CONFIG)
        incoming = IncomingSnapshot(store, index, term, "n2")
        for off in range(0, len(payload), 700):
            incoming.write(off, payload[off:off + 700])
        path = incoming.finish()
        store.adopt(path, meta)
        fit_wal(r.node.log, meta, store.oldest_kept_index())
        store.prune()
    return step


def workload() -> list[tuple[str, Callable[[Run], None]]]:
    big = [Entry(1, i, data=bytes([i]) * 300) for i in range(4, 10)]  # one batch, 4 sectors
    # A value that is itself a well-formed batch (with a guessed salt) then zeros: if a power loss
    # keeps only the middle of its write, the data ends in the client's bytes (issue 21 §4).
    fake = walformat.frame([walformat.record(walformat.ENTRY, [5, 52, 0, b"forged"])], 0,
                           bytes(walformat.SALT))[len(walformat.MAGIC) + walformat.SALT:]
    forged = b"A" * 600 + fake + bytes(1100)
    return [
        ("vote", _save(HardState(1, "n2"), [])),
        ("append", _save(None, ents(1, 3, 1))),
        ("multi-sector group commit", _save(None, big)),
        ("new term, vote and entries", _save(HardState(2, "n3"), ents(10, 11, 2))),
        ("truncate after a conflict", _save(None, ents(8, 9, 2))),
        ("group commit of three Readies", lambda r: r.node.log.save_many(
            [(None, ents(10, 12, 2)), (None, ents(12, 13, 2, size=60)), (None, ents(14, 15, 2))])),
        ("fill the segment", _save(None, ents(10, 16, 2, size=400))),
        ("rotate", _save(None, ents(17, 20, 2, size=100))),
        ("snapshot", _take_snapshot(17, 2)),
        ("compaction whose unlink fails", _compact(17, 2, failing_unlink=True)),
        ("failed fsync", _fail_then_restart("fsync", errno.EIO, HardState(3, "n1"),
                                            ents(21, 22, 3))),
        ("append after the restart", _save(HardState(3, "n2"), ents(21, 22, 3))),
        ("disk full", _fail_then_restart("pwrite", errno.ENOSPC, None, ents(23, 24, 3))),
        ("failed fsync, and the cut after it fails", _fail_then_restart(
            "fsync", errno.EIO, HardState(4, "n3"), ents(23, 24, 4), also="ftruncate")),
        ("install a snapshot (log reset)", _install(40, 5)),
        ("append after the install", _save(HardState(5, "n2"), ents(41, 42, 5))),
        ("append more", _save(None, ents(43, 50, 5, size=300))),
        ("a client's value holding a forged batch", _save(None, [Entry(5, 51, data=forged)])),
        ("second snapshot", _take_snapshot(41, 5)),
        ("compaction after it", _compact(41, 5)),
    ]


# ------------------------------------------------------------------ exploring --
@dataclass
class Report:
    points: int = 0
    states: int = 0
    recoveries: int = 0


def explore(*, limit: int | None = 24, recheck: int | None = 6, seed: int = 0,
            torn: str = "bounded", preallocate: int = 0,
            log: Callable[[str], None] | None = None) -> Report:
    """Run the workload twice: once to learn the state after each step, once taking every
    crash point.  ``limit``/``recheck``: power-loss states checked per crash point (None: all)
    and per re-crash after recovery; ``torn``: "bounded" (prefixes, suffixes, one sector
    missing, at a few cut points) or "all" (every subset of a write's sectors);
    ``preallocate``: the WAL's wal_preallocate_bytes (writes land in zeros ahead).  Raises
    Finding on the first state that fails."""
    steps = workload()
    after = _states_after(steps, preallocate)
    report, rng = Report(), Random(seed)
    current = _Cursor()

    def at_crash_point(fs: FsModel, op: str, path: str) -> None:
        allowed = {after[current.k], after[current.k + 1]}
        if run.would_be is not None:
            allowed.add(run.would_be)
        where = f"step {current.name!r}, after {op} {path}"
        report.points += 1
        for state in fs.crash_states(limit=limit, rng=rng, torn=torn):
            report.states += 1
            _check(recover(state, preallocate), allowed, where, "power loss")
        # Recovery reads the page cache after a process crash; what it read must be durable
        # before it is acted on (issue 21 §1): a power loss right after must not change it.
        # Not checked in the instant between a failed fsync and the cut that follows it: pages
        # the kernel failed to write may read as clean, and no fsync can tell (the log cuts them
        # off before it does anything else, _discard_unsynced).
        if op == "fsync-failed":
            return
        survivor = fs.process_crash()
        seen = recover(survivor, preallocate)
        report.recoveries += 1
        _check(seen, allowed, where, "process crash")
        for state in survivor.crash_states(limit=recheck, rng=rng, torn=torn):
            report.states += 1
            again = recover(state, preallocate)
            if again != seen:
                raise Finding(f"{where}: recovery after a process crash read\n  {seen.describe()}\n"
                              f"but a power loss right after it leaves\n  {again.describe()}")

    def checked(fs: FsModel, op: str, path: str) -> None:
        try:
            at_crash_point(fs, op, path)
        except Finding as e:
            if str(e).startswith("step "):
                raise
            raise Finding(f"step {current.name!r}, after {op} {path}: {e}") from None

    def watch(fs: FsModel) -> None:
        fs.on_op = lambda op, path: None if current.quiet else checked(fs, op, path)

    fs = FsModel()
    run = Run(fs, Node(fs, preallocate), on_restart=watch)
    watch(run.fs)
    for k, (name, step) in enumerate(steps):
        current.k, current.name, current.quiet = k, name, False
        step(run)
        current.quiet = True
        if run.node.state() != after[k + 1]:
            raise Finding(f"step {name!r} left {run.node.state().describe()}, "
                          f"expected {after[k + 1].describe()}")
        if log is not None:
            log(f"{name}: {report.points} crash points, {report.states} states so far")
    return report


@dataclass
class _Cursor:
    """Where the workload is: crash points are taken only while a step runs."""
    k: int = 0
    name: str = "start"
    quiet: bool = True


def _states_after(steps: list[tuple[str, Callable[[Run], None]]],
                  preallocate: int) -> list[State]:
    fs = FsModel()
    run = Run(fs, Node(fs, preallocate))
    out = [run.node.state()]
    for _, step in steps:
        step(run)
        out.append(run.node.state())
    run.node.close()
    return out


def _check(found: State, allowed: set[State], where: str, how: str) -> None:
    if found not in allowed:
        options = "\n  ".join(s.describe() for s in allowed)
        raise Finding(f"{where}: after a {how}, recovery found\n  {found.describe()}\n"
                      f"expected one of\n  {options}")


# -------------------------------------------------------------------- mutants --
def _patch(obj: object, name: str, value: object) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def patched() -> Iterator[None]:
        saved = getattr(obj, name)
        setattr(obj, name, value)
        try:
            yield
        finally:
            setattr(obj, name, saved)
    return patched()


def _append_records_as_batches(self: DurableLog, parts: list[bytes]) -> None:
    """One batch per record, all in one write: a save is no longer one unit at recovery."""
    out, off, salt = b"", self._size, self._segs[-1].salt
    for r in parts:
        out += walformat.frame([r], off + len(out), salt)
    self._write_batch(out)


def _adopt_without_commit_point(self: SnapshotStore, received: Path,
                                meta: SnapshotMeta) -> snapshots_mod.SnapshotInfo:
    path = self.path_for(meta)
    self.fs.rename(received, path)  # no directory fsync: the WAL reset may land first
    return snapshots_mod.read_meta(path, self.fs)


def _cleanup_without_sync(self: SnapshotStore) -> list[str]:
    removed = []
    for name in sorted(self.fs.listdir(self.dir)):
        if name.endswith(".tmp") or name.startswith("incoming-"):
            self.discard(self.dir / name)
            removed.append(name)
    return removed  # snapshots/ not fsynced: start-up may restore a rename still in the cache


_init_log = DurableLog.__init__


def _guessable_salt(self: DurableLog, *args: object, **kwargs: object) -> None:
    _init_log(self, *args, **kwargs)  # type: ignore[arg-type]
    self._random_bytes = bytes  # a salt of zeros: a client's value can hold a valid batch


MUTANTS: dict[str, tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]] = {
    "forgeable-batch": (
        "segment salts a client can guess, so bytes in a value read as a batch (§4; review)",
        lambda: _patch(DurableLog, "__init__", _guessable_salt)),
    "snapshot-rename-unsynced-at-start": (
        "start-up restores a snapshot whose rename is only in the page cache (found by this "
        "explorer)",
        lambda: _patch(SnapshotStore, "cleanup", _cleanup_without_sync)),
    "no-fsync-on-recovery": (
        "open() hands back what it read without fsyncing it (§1)",
        lambda: _patch(DurableLog, "_make_recovered_durable", lambda self: None)),
    "failed-batch-resurrected": (
        "a failed fsync's batch stays in the file (§2)",
        lambda: _patch(DurableLog, "_discard_unsynced", lambda self, written: None)),
    "batch-not-atomic": (
        "each record of a save is its own batch (§3)",
        lambda: _patch(DurableLog, "_append", _append_records_as_batches)),
    "install-not-crash-atomic": (
        "the install's rename is not made durable before the WAL follows (§5)",
        lambda: _patch(SnapshotStore, "adopt", _adopt_without_commit_point)),
    "no-dir-fsync": (
        "the WAL does not fsync its directory after creating or removing a segment (§6)",
        lambda: _patch(DurableLog, "_sync_dir", lambda self, path=None: None)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raftd.storage.explore", description=__doc__
                                 .split("\n\n")[0])
    ap.add_argument("--exhaustive", action="store_true",
                    help="every crash state the rules allow, not a bounded sample")
    ap.add_argument("--limit", type=int, default=24, help="states per crash point (sampled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mutant", choices=sorted(MUTANTS))
    ap.add_argument("--list-mutants", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.list_mutants:
        for name in sorted(MUTANTS):
            print(name)
        return 0
    limit = None if args.exhaustive else args.limit
    recheck = None if args.exhaustive else 6
    started = time.monotonic()
    if not args.verbose:  # recovery logs every torn tail it cuts: thousands here
        logging.getLogger("raftd.storage").setLevel(logging.CRITICAL + 1)
    ctx = MUTANTS[args.mutant][1]() if args.mutant else contextlib.nullcontext()
    try:
        with ctx:
            report = Report()
            for preallocate in PREALLOCATE:  # both ways raftd writes its WAL
                one = explore(limit=limit, recheck=recheck, seed=args.seed,
                              torn="all" if args.exhaustive else "bounded",
                              preallocate=preallocate, log=print if args.verbose else None)
                report.points += one.points
                report.states += one.states
                report.recoveries += one.recoveries
    except Finding as e:
        print(f"FAILED{f' (mutant {args.mutant})' if args.mutant else ''}: {e}")
        print(f"replay: python -m raftd.storage.explore --seed {args.seed}"
              f"{' --exhaustive' if args.exhaustive else f' --limit {args.limit}'}"
              f"{f' --mutant {args.mutant}' if args.mutant else ''}")
        return 1
    print(f"ok: {report.states} crash states at {report.points} crash points, "
          f"{report.recoveries} recoveries after a process crash, "
          f"{'exhaustive' if args.exhaustive else f'at most {args.limit} per point'}, "
          f"{time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
