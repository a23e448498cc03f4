"""The client library's request machinery against a scripted server that speaks the real wire
protocol (framing + msgpack) but answers as each test tells it: late, never, out of order,
not_leader, or by closing.  A real raftd cannot be made to drop one particular answer.

Checks what the hot path must keep while it is made cheaper: every request gets its own
answer, a timeout fires and leaves nothing behind, a retried write reuses its session.
"""
from __future__ import annotations

import asyncio

import pytest

from raftd.client import AsyncClient, RequestError, Timeout, Unavailable
from raftd.wire.codec import decode_body, encode_client_response
from raftd.wire.framing import FrameDecoder, FrameType


class ScriptedServer:
    """``answer(req) -> response dict | None`` (None: never answer) or a coroutine of it."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[dict] = []
        self.sessions_opened = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _on_conn(self, reader, writer):
        self.writers.append(writer)
        dec = FrameDecoder(1 << 20)
        while data := await reader.read(65536):
            for ftype, body in dec.feed(data):
                assert ftype == FrameType.CLIENT_REQUEST
                req = decode_body(body)
                if req["op"] == "open_session":  # as raftd does: the session is registered
                    self.sessions_opened += 1
                    writer.write(encode_client_response({"id": req["id"], **ok({"index": 0})}))
                    continue
                self.requests.append(req)
                asyncio.get_running_loop().create_task(self._reply(writer, req))

    async def _reply(self, writer, req):
        resp = self.answer(req)
        if asyncio.iscoroutine(resp):
            resp = await resp
        if resp is not None and not writer.is_closing():
            writer.write(encode_client_response({"id": req["id"], **resp}))

    async def close(self):
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()


def ok(result):
    return {"ok": True, "result": result, "error": None}


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def _conn(client):
    (conn,) = client._conns.values()
    return conn


def test_many_in_flight_answered_out_of_order_each_get_their_own():
    async def answer(req):
        await asyncio.sleep((hash(req["key"]) % 7) / 1000)  # shuffles the answer order
        return ok({"index": int(req["key"][1:])})

    async def main():
        srv = ScriptedServer(answer)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=5) as c:
            got = await asyncio.gather(*(c.put(f"k{i}", b"v") for i in range(300)))
            assert got == list(range(300))
            conn = _conn(c)
            assert not conn._pending and not conn._deadlines  # nothing left behind
            # 300 writes at once: each its own session, so (client_id, seq) pairs are unique
            pairs = {(r["client_id"], r["seq"]) for r in srv.requests}
            assert len(pairs) == 300
        await srv.close()

    _run(main())


def test_an_unanswered_write_times_out_and_leaves_nothing_behind():
    async def main():
        srv = ScriptedServer(lambda req: None)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=0.6) as c:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(Timeout, match="may or may not have been applied"):
                await c.put("k", b"v")
            assert 0.5 < loop.time() - t0 < 2.0
            conn = _conn(c)
            assert not conn._pending and not conn._deadlines
            # every attempt was the same write: one session, one seq
            assert len({(r["client_id"], r["seq"]) for r in srv.requests}) == 1
            assert len(srv.requests) >= 1
        await srv.close()

    _run(main())


def test_a_cancelled_request_is_cleaned_up_when_its_answer_comes():
    gate = None

    async def answer(req):
        await gate.wait()
        return ok({"value": b"x"})

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        srv = ScriptedServer(answer)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=5) as c:
            t = asyncio.get_running_loop().create_task(c.get("k"))
            for _ in range(200):
                await asyncio.sleep(0.005)
                if srv.requests:
                    break
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            gate.set()
            for _ in range(200):
                await asyncio.sleep(0.005)
                if not _conn(c)._pending:
                    break
            conn = _conn(c)
            assert not conn._pending and not conn._deadlines
            assert await c.get("k") == b"x"  # the connection still works
        await srv.close()

    _run(main())


def test_a_retried_write_after_not_leader_keeps_its_session():
    calls = []

    def answer(req):
        calls.append(req)
        if len(calls) == 1:
            return {"ok": False, "result": None,
                    "error": {"code": "not_leader", "message": "no", "leader_address": None}}
        return ok({"index": 7})

    async def main():
        srv = ScriptedServer(answer)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=5) as c:
            assert await c.put("k", b"v") == 7
            assert (calls[0]["client_id"], calls[0]["seq"]) == \
                (calls[1]["client_id"], calls[1]["seq"])
            assert await c.put("k", b"w") == 7
            assert calls[2]["client_id"] == calls[0]["client_id"]  # the session is reused ...
            assert calls[2]["seq"] == calls[0]["seq"] + 1  # ... with the next seq
        await srv.close()

    _run(main())


def test_caller_args_are_not_modified_and_errors_are_raised():
    def answer(req):
        return {"ok": False, "result": None, "error": {"code": "invalid", "message": "bad op"}}

    async def main():
        srv = ScriptedServer(answer)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=5) as c:
            args = {"x": 1}
            with pytest.raises(RequestError, match="bad op"):
                await c.admin("frobnicate", args)
            assert args == {"x": 1}
        await srv.close()

    _run(main())


def test_the_server_closing_fails_every_request_in_flight_then_the_client_gives_up():
    async def main():
        srv = ScriptedServer(lambda req: None)
        addr = await srv.start()
        async with AsyncClient([addr], timeout=1.0) as c:
            tasks = [asyncio.get_running_loop().create_task(c.get(f"k{i}")) for i in range(20)]
            for _ in range(200):
                await asyncio.sleep(0.005)
                if len(srv.requests) >= 20:
                    break
            await srv.close()  # closes the connection and stops listening
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, (Unavailable, Timeout)) for r in results), results
            conns = list(c._conns.values())
            assert conns  # (the connection that failed is still listed, closed)
            for conn in conns:
                assert conn.closed and not conn._pending and not conn._deadlines

    _run(main())
