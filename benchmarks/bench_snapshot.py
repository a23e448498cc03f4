"""Snapshot cost at scale: 1M keys of 100-byte values.

    python benchmarks/bench_snapshot.py [--keys 1000000]

Measures, with the real code paths (KVStateMachine, SnapshotStore, InstallSnapshot framing over
a loopback TCP connection):
  - the longest stall of the event loop while a snapshot is taken (the loop keeps applying a
    put every millisecond; we report the longest gap between two applies),
  - time to write the snapshot (fsynced), to stream it to a receiver in 1 MiB InstallSnapshot
    chunks and verify it there, and to restore a state machine from it,
  - peak RSS of the process at each step.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raftd.core import Configuration, InstallSnapshot, SnapshotMeta
from raftd.kv.commands import Command, Op, encode_command
from raftd.kv.fsm import KVStateMachine
from raftd.storage.snapshots import IncomingSnapshot, SnapshotStore, iter_chunks, read_state
from raftd.wire.codec import decode_message, encode_message
from raftd.wire.framing import FrameDecoder


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(keys: int) -> None:
    fsm = KVStateMachine()
    value = os.urandom(100)
    t0 = time.perf_counter()
    for i in range(1, keys + 1):
        fsm.apply(i, encode_command(Command(Op.PUT, f"key{i:08d}", value)))
    print(f"loaded {keys:,} keys in {time.perf_counter() - t0:.1f}s; peak RSS {rss_mb():.0f} MB")
    tmp = Path(tempfile.mkdtemp(prefix="raftd-snapbench-"))
    store = SnapshotStore(tmp / "leader")
    meta = SnapshotMeta(fsm.applied_index, 1, Configuration.make(["n1", "n2", "n3"]))
    pool = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    # 1. take a snapshot while applying a put every millisecond
    gaps = []
    done = asyncio.Event()
    next_index = [fsm.applied_index + 1]

    async def applier() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            cmd = encode_command(Command(Op.PUT, "hot", b"x"))
            fsm.apply(next_index[0], cmd)  # noqa: F821 - main's fsm, deleted after this ends
            next_index[0] += 1
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = loop.create_task(applier())
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    header, data = fsm.freeze()  # on the loop, as raftd does
    freeze_s = time.perf_counter() - t0
    info = await loop.run_in_executor(pool, store.write, meta, header, data)
    fsm.thaw()
    write_s = time.perf_counter() - t0
    done.set()
    await task
    del data
    print(f"snapshot: {info.size / 1e6:.0f} MB written+fsynced in {write_s:.2f}s; freeze "
          f"{freeze_s * 1000:.0f} ms; longest apply stall {max(gaps) * 1000:.0f} ms "
          f"(applies during the snapshot: {len(gaps)}); peak RSS {rss_mb():.0f} MB")

    # 2. stream it over loopback TCP as InstallSnapshot chunks; the receiver verifies it
    recv_store = SnapshotStore(tmp / "follower")
    received = asyncio.get_running_loop().create_future()

    async def on_conn(reader, writer):
        dec = FrameDecoder(16 << 20)
        inc = None
        while True:
            b = await reader.read(1 << 20)
            if not b:
                break
            for ftype, body in dec.feed(b):
                m = decode_message(ftype, body)
                if m.done:
                    path = inc.finish()
                    received.set_result(path)
                    writer.close()
                    return
                if inc is None:
                    inc = IncomingSnapshot(recv_store, m.last_included_index,
                                           m.last_included_term, "bench")
                inc.write(m.offset, m.data)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    _, w = await asyncio.open_connection("127.0.0.1", port)
    cfg = meta.configuration.encode()
    for offset, chunk in iter_chunks(info.path):
        w.write(encode_message(InstallSnapshot("n1", "n2", 1, meta.index, 1, cfg, offset, chunk)))
        await w.drain()
    w.write(encode_message(InstallSnapshot("n1", "n2", 1, meta.index, 1, cfg, 0, b"", True)))
    await w.drain()
    path = await received
    transfer_s = time.perf_counter() - t0
    server.close()
    print(f"transfer: {info.size / 1e6:.0f} MB in 1 MiB chunks over loopback, fsynced and "
          f"verified in {transfer_s:.2f}s; peak RSS {rss_mb():.0f} MB")

    # 3. restore a fresh state machine from the received file
    del fsm
    t0 = time.perf_counter()
    fresh = KVStateMachine()
    _, header, batches = read_state(path)
    fresh.restore_stream(header, batches)
    print(f"restore: {len(fresh):,} keys in {time.perf_counter() - t0:.2f}s; peak RSS "
          f"{rss_mb():.0f} MB")
    pool.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    asyncio.run(main(ap.parse_args().keys))
