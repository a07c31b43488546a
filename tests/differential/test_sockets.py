"""Differential scenarios over TCP sockets on loopback.

Each ``scenario_*`` function runs once on 3.11's asyncore and once on ours; the
test asserts the two traces (and results, and stdout) are identical.  See
``harness.py`` for the rules that keep a trace independent of kernel timing.
"""

from __future__ import annotations

import collections
import select
import socket
from typing import Any

from tests.helpers import fill, refused_address

from .harness import Run, assert_same_behaviour, tracing

# --------------------------------------------------------------------------- echo


ECHO_PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: many recv()s, many partial send()s


def scenario_echo(ac: Any, ach: Any, run: Run) -> Any:
    """Client, server and handler dispatchers all in one map; the client closes once echoed."""
    traced: Any = tracing(ac.dispatcher, run)

    class Handler(traced):  # type: ignore[misc]
        role = "handler"

        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.pending = b""

        def writable(self) -> bool:
            return bool(self.pending)

        def handle_read(self) -> None:
            data = self.recv(8192)
            run.record(self.role, "read", len(data))
            self.pending += data

        def handle_write(self) -> None:
            sent = self.send(self.pending)
            run.record(self.role, "write", sent)
            self.pending = self.pending[sent:]

    class Server(traced):  # type: ignore[misc]
        role = "server"

        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            run.record(self.role, "handle_accepted")
            Handler(sock, run.map)

    class Client(traced):  # type: ignore[misc]
        role = "client"

        def __init__(self, address: Any) -> None:
            super().__init__(map=run.map)
            self.out = ECHO_PAYLOAD
            self.got = bytearray()
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.connect(address)

        def writable(self) -> bool:
            return not self.connected or bool(self.out)

        def handle_write(self) -> None:
            sent = self.send(self.out[:65536])
            run.record(self.role, "write", sent)
            self.out = self.out[sent:]

        def handle_read(self) -> None:
            data = self.recv(8192)
            run.record(self.role, "read", len(data))
            self.got += data
            if len(self.got) == len(ECHO_PAYLOAD):
                self.close()

    server = Server(map=run.map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.set_reuse_addr()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    client = Client(server.socket.getsockname())
    run.run_until(lambda: len(run.map) == 1, "client and handler closed")
    sizes = len(run.map)
    server.close()
    return bytes(client.got) == ECHO_PAYLOAD, sizes


def per_role_milestones(trace: list[tuple[Any, ...]]) -> Any:
    """Timing-free view of a multi-dispatcher trace.

    How a stream is cut into recv()/send() calls, and how one object's reads and
    writes interleave with another's, depends on the kernel's timing; so: per role,
    the ordered non-I/O events, plus the total bytes each role read and wrote.
    """
    events: dict[str, list[Any]] = collections.defaultdict(list)
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    for role, name, *args in trace:
        if name in ("read", "write"):
            totals[role, name] += args[0]
        else:
            events[role].append((name, *args))
    return dict(events), dict(totals)


def test_echo(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_echo, use_poll, normalise=per_role_milestones)
    events, totals = outcome.trace
    assert outcome.result == (True, 1)
    assert events["client"][0] == ("handle_connect",)
    assert totals["handler", "read"] == totals["client", "write"] == len(ECHO_PAYLOAD)


# --------------------------------------------------------------------------- HTTP-like


REQUEST = b"GET /x HTTP/1.0\r\nHost: test\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"y" * 10000


def scenario_http(ac: Any, ach: Any, run: Run) -> Any:
    """dispatcher_with_send client; the plain server reads the request, responds, closes."""

    class Client(tracing(ac.dispatcher_with_send, run)):  # type: ignore[misc]
        role = "client"
        body = b""

        def handle_connect(self) -> None:
            super().handle_connect()
            self.send(REQUEST)

        def handle_write(self) -> None:
            run.record(self.role, "handle_write", len(self.out_buffer))
            super().handle_write()

        def handle_read(self) -> None:
            data = self.recv(4096)
            run.record(self.role, "read", len(data))
            self.body += data

    lsock = run.listener()
    client = Client(map=run.map)
    client.debug = True  # dispatcher_with_send.send() logs what it sends
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(lsock.getsockname())
    run.record("connecting", client.connected, client.connecting)
    conn, _ = lsock.accept()
    run.keep(conn)
    run.wait_ready(client.socket, writable=True)
    run.step()  # connect completes; handle_connect sends the request
    request = run.read_exactly(conn, len(REQUEST))
    conn.sendall(RESPONSE)
    conn.close()
    run.wait_pending(client.socket, len(RESPONSE))
    run.run_until(lambda: not run.map, "client closed")
    return request, client.body == RESPONSE


def test_http(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_http, use_poll)
    assert outcome.result == (REQUEST, True)
    assert outcome.trace[1:3] == [("client", "handle_connect"), ("client", "handle_write", 0)]
    assert outcome.stdout == f"info: sending {REQUEST!r}\n"


def scenario_connect_with_greeting(ac: Any, ach: Any, run: Run) -> Any:
    """The server's greeting is already there when the connect completes: the first
    cycle has the socket readable and writable.  3.11 runs handle_connect (from the
    read event), handle_read, then handle_write."""

    class Client(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "client"

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(100))

        def handle_write(self) -> None:
            run.record(self.role, "handle_write", self.connected, self.connecting)
            self.send(b"hello yourself")

        def writable(self) -> bool:
            return not self.connected

    lsock = run.listener()
    client = Client(map=run.map)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(lsock.getsockname())
    conn, _ = lsock.accept()
    run.keep(conn)
    conn.sendall(b"220 hello")
    run.wait_pending(client.socket, 9)
    run.step()
    answer = run.read_exactly(conn, 14)
    client.close()
    return answer


def test_connect_with_greeting(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_connect_with_greeting, use_poll)
    assert outcome.trace == [
        ("client", "handle_connect"),
        ("client", "read", b"220 hello"),
        ("client", "handle_write", True, False),
    ]
    assert outcome.result == b"hello yourself"


# --------------------------------------------------------------------------- refused


def scenario_refused(ac: Any, ach: Any, run: Run) -> Any:
    """Connect to a closed port: handle_error (ConnectionRefusedError) then handle_close."""

    class Client(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "client"

        def handle_read(self) -> None:
            run.record(self.role, "read", len(self.recv(100)))

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")

    client = Client(map=run.map)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(refused_address())
    run.wait_ready(client.socket, readable=True, writable=True)
    run.step()
    return len(run.map), client.connected, client.connecting, client.socket.fileno()


def test_refused(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_refused, use_poll)
    assert outcome.trace[0] == ("client", "handle_error", "ConnectionRefusedError")
    assert "ConnectionRefusedError" in outcome.stdout


# --------------------------------------------------------------------------- peer reset


def scenario_reset_while_reading(ac: Any, ach: Any, run: Run) -> Any:
    """The plain peer sends, then closes with SO_LINGER 0 (RST) while we wait to read."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(4096))

    mine, peer = run.tcp_pair()
    reader = Reader(mine, run.map)
    peer.sendall(b"hello")
    run.wait_pending(mine, 5)
    run.step()
    run.reset(peer)
    run.wait_ready(mine, readable=True)
    run.step()
    return len(run.map), reader.connected


def _fill_send_buffer(sock: socket.socket) -> None:
    """Send until the kernel takes not one more byte, and stays so (late ACKs can free room)."""
    while True:
        fill(sock)
        select.select([], [sock], [], 0.05)
        try:
            sock.send(b"z")
        except BlockingIOError:
            return


def scenario_reset_while_sending(ac: Any, ach: Any, run: Run) -> Any:
    """RST arrives while a dispatcher_with_send has output the kernel would not take."""

    class Sender(tracing(ac.dispatcher_with_send, run)):  # type: ignore[misc]
        role = "sender"

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(4096))

        def handle_write(self) -> None:
            run.record(self.role, "handle_write", len(self.out_buffer))
            super().handle_write()

    mine, peer = run.tcp_pair()
    _fill_send_buffer(mine)
    sender = Sender(mine, run.map)
    sender.send(b"w" * 1000)  # EWOULDBLOCK: stays in out_buffer
    run.record("buffered", len(sender.out_buffer))
    run.reset(peer)
    run.wait_ready(mine, readable=True)
    run.step()
    return len(run.map), sender.connected


def test_reset_while_reading(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_reset_while_reading, use_poll)
    assert outcome.trace[0] == ("reader", "read", b"hello")
    assert outcome.result == (0, False)


def test_reset_while_sending(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_reset_while_sending, use_poll)
    assert outcome.trace[0] == ("buffered", 1000)
    assert outcome.result == (0, False)


# --------------------------------------------------------------------------- half close


def scenario_half_close(ac: Any, ach: Any, run: Run) -> Any:
    """The peer sends 250 bytes and shuts down writing; we read 100 at a time, see EOF,
    answer on the still-open half, and close."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"

        def writable(self) -> bool:
            return False

        got = b""

        def handle_read(self) -> None:
            data = self.recv(100)
            run.record(self.role, "read", len(data))
            self.got += data

        def handle_close(self) -> None:
            run.record(self.role, "handle_close")
            run.record(self.role, "sent", self.send(b"bye"))
            self.close()

    mine, peer = run.tcp_pair()
    reader = Reader(mine, run.map)
    peer.sendall(bytes(range(250)))
    peer.shutdown(socket.SHUT_WR)
    run.wait_pending(mine, 250)
    run.run_until(lambda: not run.map, "reader closed")
    return reader.got == bytes(range(250)), run.read_all(peer)


def test_half_close(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_half_close, use_poll)
    assert outcome.result == (True, b"bye")
    assert outcome.trace == [
        ("reader", "read", 100),
        ("reader", "read", 100),
        ("reader", "read", 50),
        ("reader", "handle_close"),
        ("reader", "sent", 3),
        ("reader", "read", 0),
    ]


# --------------------------------------------------------------------------- many accepts


N_CLIENTS = 50


def scenario_accept_many(ac: Any, ach: Any, run: Run) -> Any:
    """50 plain clients connect (they sit in the backlog); the server accepts them all,
    then sees each close."""
    traced: Any = tracing(ac.dispatcher, run)

    class Handler(traced):  # type: ignore[misc]
        role = "handler"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(100))

    class Server(traced):  # type: ignore[misc]
        role = "server"

        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            run.record(self.role, "handle_accepted")
            Handler(sock, run.map)

    server = Server(map=run.map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    clients = [
        run.keep(socket.create_connection(server.socket.getsockname())) for _ in range(N_CLIENTS)
    ]
    run.run_until(lambda: len(run.map) == N_CLIENTS + 1, "all accepted")
    sizes = [len(run.map)]
    for c in clients:
        c.close()
    run.run_until(lambda: len(run.map) == 1, "all handlers closed")
    sizes.append(len(run.map))
    server.close()
    return sizes


def event_counts(trace: list[tuple[Any, ...]]) -> Any:
    """Which handler sees its close first depends on the kernel; count events instead."""
    return sorted(collections.Counter(trace).items(), key=repr)


def test_accept_many(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_accept_many, use_poll, normalise=event_counts)
    assert outcome.result == [N_CLIENTS + 1, 1]
    counts = dict(outcome.trace)
    assert counts[("server", "handle_accept")] == N_CLIENTS
    assert counts[("server", "handle_accepted")] == N_CLIENTS
