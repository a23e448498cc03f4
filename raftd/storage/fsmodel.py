"""An in-memory file system that records what is durable, and what a power loss may leave.

It implements ``raftd.storage.fs.FileSystem``, so the shipped WAL and snapshot store run on it
unchanged: the crash-state explorer (``raftd.storage.explore``, issue 21) and the simulator's
disk (issue 15) both use it.  The rules, after ALICE (Pillai et al., OSDI 2014) and what ext4
guarantees in its default data=ordered mode:

* A file's bytes are durable once the file is fsynced (fsync and fdatasync alike).  Writes since
  then are *pending*: after a power loss each pending write is kept, lost, or torn, a 512-byte
  sector being the unit a disk writes atomically (any subset of its sectors may survive, a later
  one without an earlier one; a lost sector reads as what was there before, zeros past the old
  end).  A file never fsynced comes back with any part of what was written to it.
* Names (create, mkdir, rename, unlink) are durable once their parent directory is fsynced.  The
  ones not yet durable survive as an in-order prefix, as a journaling file system replays its
  journal: each crash state keeps every durable name operation plus the first k others.
* Faults on demand: ``fail("fsync", path=...)`` makes the next matching call raise EIO.  After a
  failed fsync the pending writes of that file are *doubtful* for good: a later successful fsync
  does not make them durable (the kernel may have marked the pages clean, "fsyncgate"), reads
  still return them, and a power loss may keep or drop them, until they are overwritten or cut
  off.  ``capacity`` limits the bytes all files may hold: a write past it is short, then ENOSPC.

``process_crash()`` is the process dying (kill -9): the page cache survives, nothing becomes
durable.  ``crash_states()`` enumerates the states a power loss may leave (bounded: sampled past
``limit``); ``crash(rng)`` draws one.  Each returns new, independent models whose every byte and
name is durable; the model it was called on is left as it was.  ``on_op``, when set, is called
after every operation that changes something, with the operation's name and path: the explorer
takes its crash points there.

Paths are absolute ("/n1/wal/0000000000000001.wal"); the root directory always exists.
"""
from __future__ import annotations

import errno
import io
import itertools
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from random import Random
from typing import BinaryIO

SECTOR = 512
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


@dataclass
class _Write:
    offset: int
    data: bytes


@dataclass
class _Trunc:
    size: int


@dataclass
class _Inode:
    is_dir: bool
    data: bytearray = field(default_factory=bytearray)  # what reads see
    durable: bytes | None = None  # content at the last successful fsync; None: never fsynced
    pending: list[_Write | _Trunc] = field(default_factory=list)  # since then, in order
    doubtful: list[_Write] = field(default_factory=list)  # writes of a failed fsync (older)

    def copy(self) -> _Inode:
        return _Inode(self.is_dir, bytearray(self.data), self.durable, list(self.pending),
                      list(self.doubtful))


@dataclass
class _NameOp:
    kind: str  # create, mkdir, rename, unlink
    path: str
    target: str | None  # rename: the new name
    ino: int | None  # create, mkdir: the new inode
    unsynced: set[str]  # parent directories not fsynced since


@dataclass
class _Fault:
    op: str
    path: str | None
    error: int
    times: int
    after: int


@dataclass
class _Open:
    ino: int
    path: str
    flags: int


def _norm(path: str | os.PathLike[str]) -> str:
    p = posixpath.normpath(os.fspath(path))
    return p if p.startswith("/") else "/" + p


def _parent(path: str) -> str:
    return posixpath.dirname(path)


def _fold(base: bytes, ops: list[_Write | _Trunc]) -> bytes:
    out = bytearray(base)
    for op in ops:
        if isinstance(op, _Trunc):
            _resize(out, op.size)
        else:
            _put(out, op.offset, op.data)
    return bytes(out)


def _resize(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


def _put(buf: bytearray, offset: int, data: bytes | memoryview) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset:offset + len(data)] = data


def _pieces(w: _Write) -> list[tuple[int, int]]:
    """The write cut at sector boundaries: (start, end) file offsets, each written atomically."""
    out, a, end = [], w.offset, w.offset + len(w.data)
    while a < end:
        b = min(end, (a // SECTOR + 1) * SECTOR)
        out.append((a, b))
        a = b
    return out


def _keep_sets(n: int, torn: str) -> list[tuple[int, ...]]:
    """Which of a write's n sectors survive: none first, all last, torn ones between.
    ``bounded``: prefixes, suffixes (a later sector without an earlier one) and one sector
    missing in the middle, and the first and last lost with the middle kept, at a few cut
    points; ``all``: every subset (up to 10 sectors; past that, as bounded at every cut)."""
    if n == 0:
        return [()]
    full = tuple(range(n))
    if torn == "all" and n <= 10:
        subsets = [s for r in range(1, n) for s in itertools.combinations(full, r)]
        return [(), *subsets, full]
    cuts = sorted({1, 2, n // 2, n - 2, n - 1} & set(range(1, n))) if torn == "bounded" \
        else list(range(1, n))
    sets: list[tuple[int, ...]] = []
    for k in cuts:
        sets += [full[:k], full[k:]]
    if n >= 3:
        sets.append(full[:n // 2] + full[n // 2 + 1:])
        sets.append(full[1:-1])  # both ends lost (a client's bytes are all that is left)
    uniq = list(dict.fromkeys(sets))  # in order, without repeats
    return [(), *uniq, full]


class FsModel:
    """The recording file system.  See the module docstring."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.on_op: Callable[[str, str], None] | None = None
        self._inodes: dict[int, _Inode] = {0: _Inode(True, durable=b"")}
        self._names: dict[str, int] = {"/": 0}  # what a path resolves to now
        self._durable_names: dict[str, int] = {"/": 0}  # before the first journal entry
        self._journal: list[_NameOp] = []  # name operations not yet folded into _durable_names
        self._fds: dict[int, _Open] = {}
        self._next_fd = 3
        self._next_ino = 1
        self._locks: dict[int, int] = {}  # ino -> fd holding the flock
        self._faults: list[_Fault] = []

    # ------------------------------------------------------------------ faults --
    def fail(self, op: str, *, path: str | None = None, error: int = errno.EIO, times: int = 1,
             after: int = 0) -> None:
        """Make the next ``times`` calls of ``op`` (after skipping ``after`` of them) on a path
        containing ``path`` raise OSError(error).  ops: open, pwrite, fsync (fsync and fdatasync
        of a file), ftruncate, fsync_dir, mkdir, rename, unlink."""
        self._faults.append(_Fault(op, path, error, times, after))

    def _fault(self, op: str, path: str) -> None:
        for f in self._faults:
            if f.op == op and (f.path is None or f.path in path) and f.times > 0:
                if f.after > 0:
                    f.after -= 1
                    continue
                f.times -= 1
                raise OSError(f.error, f"{os.strerror(f.error)} (injected)", path)

    def _did(self, op: str, path: str) -> None:
        if self.on_op is not None:
            self.on_op(op, path)

    # ------------------------------------------------------------ descriptors --
    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
        p = _norm(path)
        self._fault("open", p)
        ino = self._names.get(p)
        created = False
        if ino is None:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
            self._need_dir(_parent(p))
            ino = self._new_inode(False)
            self._names[p] = ino
            self._journal.append(_NameOp("create", p, None, ino, {_parent(p)}))
            created = True
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno.EEXIST, "File exists", p)
        node = self._inodes[ino]
        if node.is_dir and flags & _WRITE_FLAGS:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", p)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = _Open(ino, p, flags)
        if flags & os.O_TRUNC and flags & _WRITE_FLAGS and node.data:
            self._truncate(node, 0)
            created = True
        if created:
            self._did("open", p)
        return fd

    def close(self, fd: int) -> None:
        f = self._fd(fd)
        del self._fds[fd]
        if self._locks.get(f.ino) == fd:
            del self._locks[f.ino]

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        f = self._fd(fd)
        if not f.flags & _WRITE_FLAGS:
            raise OSError(errno.EBADF, "Bad file descriptor", f.path)
        self._fault("pwrite", f.path)
        node = self._inodes[f.ino]
        n = len(data)
        if self.capacity is not None:
            room = len(node.data) + self.capacity - self.used()
            n = max(0, min(n, room - offset))
            if n == 0 and len(data):
                raise OSError(errno.ENOSPC, "No space left on device", f.path)
        chunk = bytes(data[:n])
        _put(node.data, offset, chunk)
        node.pending.append(_Write(offset, chunk))
        self._did("pwrite", f.path)
        return n

    def fsync(self, fd: int) -> None:
        f = self._fd(fd)
        node = self._inodes[f.ino]
        if node.is_dir:
            self.fsync_dir(f.path)
            return
        try:
            self._fault("fsync", f.path)
        except OSError:
            self._failed_sync(node)
            self._did("fsync-failed", f.path)
            raise
        node.durable = _fold(node.durable or b"", node.pending)
        for op in node.pending:
            self._clip_doubtful(node, op)
        node.pending = []
        self._did("fsync", f.path)

    fdatasync = fsync

    def fsize(self, fd: int) -> int:
        return len(self._inodes[self._fd(fd).ino].data)

    def ftruncate(self, fd: int, size: int) -> None:
        f = self._fd(fd)
        self._fault("ftruncate", f.path)
        self._truncate(self._inodes[f.ino], size)
        self._did("ftruncate", f.path)

    def flock(self, fd: int) -> None:
        f = self._fd(fd)
        holder = self._locks.get(f.ino)
        if holder is not None and holder != fd:
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable", f.path)
        self._locks[f.ino] = fd

    # --------------------------------------------------------- names and files --
    def read_bytes(self, path: str | os.PathLike[str]) -> bytes:
        node = self._file(_norm(path))
        return bytes(node.data)

    def open_read(self, path: str | os.PathLike[str]) -> BinaryIO:
        return io.BytesIO(self.read_bytes(path))

    def size(self, path: str | os.PathLike[str]) -> int:
        return len(self._inodes[self._lookup(_norm(path))].data)

    def exists(self, path: str | os.PathLike[str]) -> bool:
        return _norm(path) in self._names

    def is_dir(self, path: str | os.PathLike[str]) -> bool:
        ino = self._names.get(_norm(path))
        return ino is not None and self._inodes[ino].is_dir

    def listdir(self, path: str | os.PathLike[str]) -> list[str]:
        p = self._need_dir(_norm(path))
        return sorted(posixpath.basename(n) for n in self._names if n != "/" and _parent(n) == p)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o700) -> None:
        p = _norm(path)
        self._fault("mkdir", p)
        if p in self._names:
            raise FileExistsError(errno.EEXIST, "File exists", p)
        self._need_dir(_parent(p))
        ino = self._new_inode(True)
        self._inodes[ino].durable = b""
        self._names[p] = ino
        self._journal.append(_NameOp("mkdir", p, None, ino, {_parent(p)}))
        self._did("mkdir", p)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        s, d = _norm(src), _norm(dst)
        self._fault("rename", s)
        self._lookup(s)
        self._need_dir(_parent(d))
        if self.is_dir(d):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", d)
        _move(self._names, s, d)
        self._journal.append(_NameOp("rename", s, d, None, {_parent(s), _parent(d)}))
        self._did("rename", d)

    def unlink(self, path: str | os.PathLike[str]) -> None:
        p = _norm(path)
        self._fault("unlink", p)
        if self._inodes[self._lookup(p)].is_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", p)
        del self._names[p]
        self._journal.append(_NameOp("unlink", p, None, None, {_parent(p)}))
        self._did("unlink", p)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        p = self._need_dir(_norm(path))
        self._fault("fsync_dir", p)
        for op in self._journal:
            op.unsynced.discard(p)
        while self._journal and not self._journal[0].unsynced:
            _apply(self._durable_names, self._inodes, self._journal.pop(0))
        self._did("fsync_dir", p)

    # -------------------------------------------------------------- inspection --
    def used(self) -> int:
        """Bytes held by every file (what ``capacity`` limits)."""
        return sum(len(n.data) for n in self._inodes.values() if not n.is_dir)

    def unsynced(self) -> bool:
        """True if a power loss now could lose anything (a pending write or name operation)."""
        return bool(self._journal) or any(n.pending or n.doubtful for n in self._inodes.values())

    def files(self) -> dict[str, bytes]:
        """Every file's path and current content (tests and diagnostics)."""
        return {p: bytes(self._inodes[i].data) for p, i in sorted(self._names.items())
                if not self._inodes[i].is_dir}

    # ------------------------------------------------------------------ crashes --
    def process_crash(self) -> FsModel:
        """The state after the process dies (kill -9): the page cache survives, nothing more is
        durable than before; descriptors and locks are gone."""
        m = self._empty_like()
        m._inodes = {i: n.copy() for i, n in self._inodes.items()}
        m._names = dict(self._names)
        m._durable_names = dict(self._durable_names)
        m._journal = [_NameOp(o.kind, o.path, o.target, o.ino, set(o.unsynced))
                      for o in self._journal]
        m._next_ino = self._next_ino
        return m

    def crash_states(self, *, limit: int | None = None, rng: Random | None = None,
                     torn: str = "bounded") -> Iterator[FsModel]:
        """Every state a power loss now may leave (``torn``: "bounded" or "all" ways to tear a
        write), or, past ``limit`` of them, ``limit`` drawn with ``rng`` (always including the
        one that loses everything unsynced and the one that keeps it all)."""
        rng = rng or Random(0)
        spaces, contents = self._crash_spaces(torn, limit, rng)
        sizes = [_product(len(v) for v in variants.values()) for _, variants in spaces]
        total = sum(sizes)
        if limit is None or total <= limit:
            for names, variants in spaces:
                for combo in itertools.product(*variants.values()):
                    yield self._build(names, contents, dict(zip(variants, combo, strict=True)))
            return
        picks = {0, total - 1}
        while len(picks) < limit:
            picks.add(rng.randrange(total))
        for k in sorted(picks):
            yield self._state_at(spaces, sizes, contents, k)

    def count_crash_states(self, torn: str = "bounded") -> int:
        spaces, _ = self._crash_spaces(torn, None, Random(0))
        return sum(_product(len(v) for v in variants.values()) for _, variants in spaces)

    def crash(self, rng: Random, torn: str = "all") -> FsModel:
        """One power-loss state, drawn with ``rng`` (the simulator's disk)."""
        spaces, contents = self._crash_spaces(torn, 64, rng)
        sizes = [_product(len(v) for v in variants.values()) for _, variants in spaces]
        return self._state_at(spaces, sizes, contents, rng.randrange(sum(sizes)))

    # -------------------------------------------------------------- internals --
    def _empty_like(self) -> FsModel:
        m = FsModel(self.capacity)
        m._inodes, m._names, m._durable_names = {}, {}, {}
        return m

    def _new_inode(self, is_dir: bool) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self._inodes[ino] = _Inode(is_dir)
        return ino

    def _fd(self, fd: int) -> _Open:
        try:
            return self._fds[fd]
        except KeyError:
            raise OSError(errno.EBADF, "Bad file descriptor") from None

    def _lookup(self, p: str) -> int:
        try:
            return self._names[p]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p) from None

    def _file(self, p: str) -> _Inode:
        node = self._inodes[self._lookup(p)]
        if node.is_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", p)
        return node

    def _need_dir(self, p: str) -> str:
        if not self._inodes[self._lookup(p)].is_dir:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", p)
        return p

    def _truncate(self, node: _Inode, size: int) -> None:
        _resize(node.data, size)
        node.pending.append(_Trunc(size))

    def _failed_sync(self, node: _Inode) -> None:
        """fsync failed: metadata (a truncation) counts as journaled; the writes stay doubtful."""
        base = node.durable
        for op in node.pending:
            if isinstance(op, _Trunc):
                if base is not None:
                    base = _fold(base, [op])
                self._clip_doubtful(node, op)
            else:
                node.doubtful.append(op)
        node.durable = base
        node.pending = []

    @staticmethod
    def _clip_doubtful(node: _Inode, op: _Write | _Trunc) -> None:
        """A later durable write or cut decides the bytes it covers."""
        if not node.doubtful:
            return
        if isinstance(op, _Trunc):
            lo, hi = op.size, None
        else:
            lo, hi = op.offset, op.offset + len(op.data)
        out = []
        for w in node.doubtful:
            a, b = w.offset, w.offset + len(w.data)
            if a < lo:
                out.append(_Write(a, w.data[:min(b, lo) - a]))
            if hi is not None and b > hi:
                out.append(_Write(max(a, hi), w.data[max(a, hi) - a:]))
        node.doubtful = [w for w in out if w.data]

    def _crash_spaces(self, torn: str, limit: int | None, rng: Random
                      ) -> tuple[list[tuple[dict[str, int], dict[int, list[bytes]]]],
                                 dict[int, list[bytes]]]:
        """The namespaces a power loss may leave, each with the files in it whose content may
        differ; and for every file, the distinct contents it may come back with."""
        contents: dict[int, list[bytes]] = {}
        spaces = []
        seen: set[frozenset[tuple[str, int]]] = set()
        for k in range(len(self._journal) + 1):
            names = dict(self._durable_names)
            for i, op in enumerate(self._journal):
                if i < k or not op.unsynced:
                    _apply(names, self._inodes, op)
            key = frozenset(names.items())
            if key in seen:
                continue
            seen.add(key)
            variants = {}
            for ino in sorted(set(names.values())):
                if ino not in contents:
                    contents[ino] = self._contents(self._inodes[ino], torn, limit, rng)
                if len(contents[ino]) > 1:
                    variants[ino] = contents[ino]
            spaces.append((names, variants))
        return spaces, contents

    @staticmethod
    def _contents(node: _Inode, torn: str, limit: int | None, rng: Random) -> list[bytes]:
        """The distinct contents a file may have after a power loss: the one that loses every
        unsynced write first, the one that keeps them all last."""
        if node.is_dir:
            return [b""]
        ops: list[_Write | _Trunc] = [*node.doubtful, *node.pending]
        options: list[list[object]] = []
        for op in ops:
            if isinstance(op, _Trunc):
                options.append([None, op])
            else:
                pieces = _pieces(op)
                options.append([[pieces[i] for i in s] for s in _keep_sets(len(pieces), torn)])
        cap = None if limit is None and torn == "all" else max(limit or 0, 64)
        combos: Iterator[tuple[object, ...]] | list[tuple[object, ...]]
        if cap is not None and _product(len(o) for o in options) > cap:
            combos = [tuple(o[0] for o in options)]
            combos += [tuple(rng.choice(o) for o in options) for _ in range(cap - 2)]
        else:
            combos = itertools.product(*options)
        out: dict[bytes, None] = {}
        for combo in combos:
            buf = bytearray(node.durable or b"")  # never fsynced: any part of it may be there
            for op, choice in zip(ops, combo, strict=True):
                if isinstance(op, _Trunc):
                    if choice is not None:
                        _resize(buf, op.size)
                    continue
                assert isinstance(choice, list)  # a _Write's choice: the sectors kept
                for a, b in choice:
                    _put(buf, a, op.data[a - op.offset:b - op.offset])
            out[bytes(buf)] = None
        full = _fold(node.durable or b"", ops)
        out.pop(full, None)
        return [*out, full]

    def _state_at(self, spaces: list[tuple[dict[str, int], dict[int, list[bytes]]]],
                  sizes: list[int], contents: dict[int, list[bytes]],
                  k: int) -> FsModel:
        """The k-th crash state (in the order crash_states enumerates them)."""
        for (names, variants), size in zip(spaces, sizes, strict=True):
            if k < size:
                choice = {}
                for ino, v in reversed(variants.items()):
                    k, j = divmod(k, len(v))
                    choice[ino] = v[j]
                return self._build(names, contents, choice)
            k -= size
        raise IndexError(k)

    def _build(self, names: dict[str, int], contents: dict[int, list[bytes]],
               choice: dict[int, bytes]) -> FsModel:
        m = self._empty_like()
        for p, ino in names.items():
            node = self._inodes[ino]
            content = b"" if node.is_dir else choice.get(ino, contents[ino][0])
            m._inodes[ino] = _Inode(node.is_dir, bytearray(content), content)
            m._names[p] = ino
        m._durable_names = dict(names)
        m._next_ino = self._next_ino
        return m


def _product(sizes: Iterable[int]) -> int:
    n = 1
    for s in sizes:
        n *= s
    return n


def _move(names: dict[str, int], src: str, dst: str) -> None:
    """Rename src (and everything under it) to dst, replacing dst."""
    moved = {p: i for p, i in names.items() if p == src or p.startswith(src + "/")}
    for p in moved:
        del names[p]
    for p, i in moved.items():
        names[dst + p[len(src):]] = i


def _apply(names: dict[str, int], inodes: dict[int, _Inode], op: _NameOp) -> None:
    """Replay a name operation on a namespace; one whose premise a crash dropped does nothing."""
    def is_dir(p: str) -> bool:
        return p in names and inodes[names[p]].is_dir

    if op.kind in ("create", "mkdir"):
        if is_dir(_parent(op.path)):
            assert op.ino is not None
            names[op.path] = op.ino
    elif op.kind == "rename":
        assert op.target is not None
        if op.path in names and is_dir(_parent(op.target)) and not is_dir(op.target):
            _move(names, op.path, op.target)
    elif op.kind == "unlink":
        names.pop(op.path, None)
