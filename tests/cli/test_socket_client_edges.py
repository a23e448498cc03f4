"""raftd.client_socket against a scripted server on a real socket: the cases a healthy cluster
rarely shows (an ERROR frame, a late answer, a node that closes unread), each compared with
the asyncio client's answer, which the socket client must match word for word (issue 16 §6)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from raftd.client import Client, ClientError
from raftd.client_socket import SocketClient
from raftd.wire.codec import decode_body, encode_client_response, encode_error
from raftd.wire.framing import FrameDecoder


class ScriptedServer:
    """Accepts connections; ``answer(request) -> list of (delay, frame bytes) or None``
    (None: close the connection without a word)."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests: list[dict] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        with conn:
            while data := conn.recv(65536):
                for _, body in decoder.feed(data):
                    req = decode_body(body)
                    self.requests.append(req)
                    frames = self.answer(req)
                    if frames is None:
                        return
                    for delay, frame in frames:
                        time.sleep(delay)
                        conn.sendall(frame)

    def close(self) -> None:
        self.sock.close()


def _ok(req: dict, result: dict, delay: float = 0.0) -> list:
    return [(delay, encode_client_response({"id": req["id"], "ok": True, "result": result}))]


def _outcome(make, address: str, **kw):
    try:
        with make([address], timeout=2, **kw) as c:
            return ("value", c.get("k"))
    except ClientError as e:
        return (type(e).__name__, getattr(e, "code", None), str(e))


@pytest.fixture
def serve():
    made = []

    def start(answer):
        made.append(ScriptedServer(answer))
        return made[-1]

    yield start
    for s in made:
        s.close()


def test_a_late_answer_is_skipped_and_the_retry_answered(serve):
    def answer(req):  # the first get answers after its attempt's time (0.5 s) is over
        late = sum(r.get("op") == "get" for r in srv.requests) == 1
        return _ok(req, {"value": b"late" if late else b"v"}, 0.7 if late else 0.0)
    srv = serve(answer)
    assert _outcome(SocketClient, srv.address) == ("value", b"v")
    assert [r["id"] for r in srv.requests] == [1, 2]  # one connection, the retry on it


def test_an_error_frame_is_the_servers_own_words(serve):
    srv = serve(lambda req: [(0, encode_error("version_mismatch", "speak version 1"))])
    got = {_outcome(make, srv.address) for make in (SocketClient, Client)}
    assert got == {("RequestError", "version_mismatch", "speak version 1")}, got


def test_closed_unread_gives_the_tls_hint_as_the_library_client(serve):
    srv = serve(lambda req: None)
    got = {_outcome(make, srv.address, refused_grace=0.3) for make in (SocketClient, Client)}
    assert len(got) == 1, got
    kind, _, message = got.pop()
    assert kind == "Unavailable" and "(if the cluster uses TLS: give --cacert" in message
