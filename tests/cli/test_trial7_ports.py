"""issue 16 follow-up B: ports_free matches what raftd can bind."""
import socket

from raftctl.commands.local import ports_free


def _port_in_time_wait() -> int:
    """A port whose only use is a TIME-WAIT connection (server closed first)."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port), timeout=2)
    conn, _ = lst.accept()
    conn.close()          # the server side closes first: it holds TIME-WAIT
    lst.close()
    cli.close()
    return port


def test_a_port_left_in_time_wait_counts_as_free():
    port = _port_in_time_wait()
    assert ports_free(port, 1)
