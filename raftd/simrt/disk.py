"""Simulated disk timing and crash durability, under the real WAL and snapshot store.

Jobs the runtime hands to its disk or snapshot thread run as scheduled virtual work: each
takes a random virtual time and runs on the loop (one at a time per executor, in order), so a
crash can fall between a write being asked for and it being done.  Files are real, in a
temporary directory; fsync and fdatasync are observed (patched for the run) to learn what is
durable: a crash keeps each file's fsynced length plus a random prefix of what was written
after it, so the last record can be torn.  ``ModelDisk`` (``--disk-model``) puts the WAL and
snapshot store on raftd.storage.fsmodel instead: per-sector tearing, names durable only through
their directory's fsync, and injects EIO (a WAL fsync) and ENOSPC (issue 15 §2).
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any

from .loop import HOST

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

    from raftd.storage.fsmodel import FsModel


class SimExecutor(Executor):
    def __init__(self, loop: asyncio.AbstractEventLoop, rng: Random, disk: "SimDisk",
                 host: str, delay: tuple[float, float]):
        self._loop, self._rng, self._disk, self.host = loop, rng, disk, host
        self._delay = delay
        self._free_at = 0.0  # one worker: jobs run in order
        self.epoch = disk.epoch.get(host, 0)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        at = max(self._loop.time(), self._free_at + 1e-7) + self._rng.uniform(*self._delay)
        self._free_at = at
        self._loop.call_at(at, self._run, fut, fn, args, kwargs)
        return fut

    def _run(self, fut: Future, fn, args, kwargs) -> None:
        if self._disk.epoch.get(self.host, 0) != self.epoch:
            return  # the process crashed: the job never ran
        if not fut.set_running_or_notify_cancel():
            return
        token = HOST.set(self.host)
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            fut.set_exception(e)
        finally:
            HOST.reset(token)

    def shutdown(self, wait=True, *, cancel_futures=False) -> None:
        pass


class SimDisk:
    """What each file has durable: its length at the last fsync (by inode)."""

    def __init__(self, rng: Random):
        self.rng = rng
        self.synced: dict[tuple[int, int], int] = {}
        self.epoch: dict[str, int] = {}
        self.fsyncs = 0
        self.torn = 0
        self._saved: tuple[Callable[[FileDescriptorLike], None],
                           Callable[[FileDescriptorLike], None]] | None = None

    def install(self) -> None:
        """Observe fsync/fdatasync for the run (restored by uninstall)."""
        self._saved = (os.fsync, os.fdatasync)

        def sync(fd: FileDescriptorLike) -> None:
            st = os.fstat(fd if isinstance(fd, int) else fd.fileno())
            if (st.st_mode & 0o170000) == 0o100000:  # a regular file (not a directory)
                self.synced[(st.st_dev, st.st_ino)] = st.st_size
            self.fsyncs += 1
            # No real sync: the simulated crash decides what survives.
        for name in ("fsync", "fdatasync"):
            setattr(os, name, sync)

    def uninstall(self) -> None:
        if self._saved is not None:
            for name, real in zip(("fsync", "fdatasync"), self._saved, strict=True):
                setattr(os, name, real)
            self._saved = None

    def executor(self, loop, host: str, delay=(0.0005, 0.004)):
        return lambda name: SimExecutor(loop, self.rng, self, host, delay)

    def crash(self, host: str, data_dir: str) -> None:
        """The process dies: pending jobs never run; unsynced bytes are partly lost."""
        self.epoch[host] = self.epoch.get(host, 0) + 1
        for root, _, files in os.walk(data_dir):
            for name in sorted(files):
                if name in ("LOCK", "raftd.pid"):
                    continue
                path = os.path.join(root, name)
                st = os.stat(path)
                durable = self.synced.get((st.st_dev, st.st_ino), 0)
                if st.st_size > durable:
                    keep = durable + self.rng.randrange(st.st_size - durable + 1)
                    if keep < st.st_size:
                        self.torn += 1
                        os.truncate(path, keep)


_FULL = "disk full (ENOSPC)"


class _Clock:
    """Stands in for the time module where the storage reads the wall clock (see ModelDisk)."""

    def __init__(self, now: Callable[[], float]):
        self.time = now


class ModelDisk:
    """The WAL and snapshot store of each node on raftd.storage.fsmodel instead of real files
    (issue 15 §2, issue 21): a crash then applies the model's power-loss rules (unsynced writes
    kept, lost or torn per 512-byte sector, a created or renamed name durable only once its
    directory was fsynced).  The node's other files (lock, identity, removed ids) stay real.
    Nothing in the runtime changes: the storage classes are handed the node's model for the
    run (by the simulated host that opens them)."""

    def __init__(self, rng: Random):
        from raftd.storage.fsmodel import FsModel  # noqa: PLC0415 - only this disk needs it
        self.rng = rng
        self._new = FsModel
        self.models: dict[str, FsModel] = {}
        self._saved: list[tuple[object, str, object]] = []
        self.crashes = 0
        self.injected: dict[str, str] = {}  # host -> the disk error injected there
        self.fail_stops = 0
        # What the storage would take from the OS and writes into files: WAL segment salts
        # (os.urandom) and a snapshot's "created" time (time.time).  The model's crash states
        # depend on the bytes of a write (equal contents count once), so these must come from
        # the seed for a seed to replay exactly.  Their own generator: the seed's other draws
        # stay as they are.
        self._salts = Random(0x5A17)
        self._created = 0

    def _salt(self, n: int) -> bytes:
        return self._salts.getrandbits(8 * n).to_bytes(n, "big")

    def _now(self) -> float:
        self._created += 1
        return float(self._created)

    def model(self, host: str) -> FsModel:
        m = self.models.get(host)
        if m is None:
            m = self.models[host] = self._new()
        return m

    def install(self) -> None:
        from raftd.runtime import snapshotting  # noqa: PLC0415
        from raftd.storage import snapshots  # noqa: PLC0415
        from raftd.storage.wal import DurableLog  # noqa: PLC0415

        disk = self
        open_log = DurableLog.__dict__["open"].__func__
        store_init = snapshots.SnapshotStore.__init__
        read_state, iter_chunks = snapshotting.read_state, snapshotting.iter_chunks

        def log_open(cls: type[DurableLog], directory: str, **kw: Any) -> DurableLog:
            kw["fs"] = disk.model(HOST.get())
            kw["random_bytes"] = disk._salt
            return open_log(cls, directory, **kw)  # type: ignore[no-any-return]

        def store(self: snapshots.SnapshotStore, directory: str, keep: int = 2,
                  fsync: bool = True, fs: object = None) -> None:
            store_init(self, directory, keep, fsync, disk.model(HOST.get()))

        def read_model_state(path: Path) -> Any:
            return read_state(path, fs=disk.model(HOST.get()))

        def iter_model_chunks(path: Path) -> Any:
            return iter_chunks(path, fs=disk.model(HOST.get()))
        for obj, name, value in ((DurableLog, "open", classmethod(log_open)),
                                 (snapshots.SnapshotStore, "__init__", store),
                                 (snapshotting, "read_state", read_model_state),
                                 (snapshotting, "iter_chunks", iter_model_chunks),
                                 (snapshots, "time", _Clock(disk._now))):
            self._saved.append((obj, name, vars(obj)[name]))
            setattr(obj, name, value)

    def uninstall(self) -> None:
        for obj, name, value in reversed(self._saved):
            setattr(obj, name, value)
        self._saved = []

    def crash(self, host: str, power_loss: bool = True) -> None:
        """The node's process dies: with a power loss, one state the model says may be left;
        without, the page cache survives (a fail-stop after a disk error)."""
        self.injected.pop(host, None)  # a new model: the fault went with the old one
        m = self.models.get(host)
        if m is not None:
            self.crashes += 1
            self.models[host] = m.crash(self.rng) if power_loss else m.process_crash()
            self.models[host].capacity = None  # the operator made room before the restart

    def make_room(self) -> None:
        """The operator frees space on every full disk (the end of the faulty phase).  The
        record of the injected error stays until the node's next crash: a node that hit the
        full disk just before may be stopping on it now (seed 4766 of the 10,000-seed run: n8
        fail-stopped 0.3 ms before the room was made, and the simulator, having forgotten
        the injection, called the expected stop a fatal error)."""
        for m in self.models.values():
            m.capacity = None

    def inject(self, host: str) -> str:
        """A disk error at the node's next WAL fsync (EIO) or writes (the disk is full)."""
        m = self.model(host)
        if self.rng.random() < 0.5:
            m.fail("fsync", path="/wal/")
            what = "EIO on the next WAL fsync"
        else:
            m.capacity = m.used() + self.rng.randrange(0, 4096)
            what = _FULL
        self.injected[host] = what
        return what
