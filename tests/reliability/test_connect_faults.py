"""Faults around connection set-up, differential against the frozen 3.11 asyncore: a connect
that never completes, given up by the program after its own timeout, and connections
that die between the kernel's handshake and the dispatcher's ``accept()``.

A true black hole (a route that silently drops SYNs) cannot be made on loopback without
privileges (iptables/nftables). What is used instead: a listener with ``listen(0)`` whose
accept queue already holds one connection that is never accepted; Linux then drops every
further SYN to it (``ListenOverflows``), so the connecting socket stays in SYN_SENT and keeps
retransmitting, exactly as its side of a black-holed connect would. Covered: the program's
own timeout (``connecting`` stays true, no handler runs, the loop keeps serving other
dispatchers, ``close()`` gives up cleanly), and the kernel's timeout (``TCP_USER_TIMEOUT``,
which Linux checks when the first SYN retransmission is due, after about 1 s) reaching the
dispatcher as ETIMEDOUT. Not covered: ICMP errors from a real network, and the default
give-up after all SYN retries (about two minutes).
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from types import ModuleType
from typing import Any

import pytest

from tests.differential.harness import Run, assert_same_behaviour, tracing

from ._support import registrations

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])

USER_TIMEOUT = 0.5
"""Seconds the program waits for its connect before giving up."""


# --------------------------------------------------------------------------- black hole


def blackholed_listener(run: Run) -> Any:
    """A listening socket on 127.0.0.1 that drops every new SYN: its accept queue
    (``listen(0)``: room for one) is full and nothing ever accepts."""
    lsock = run.listener(backlog=0)
    filler = run.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    filler.settimeout(5.0)
    filler.connect(lsock.getsockname())  # completes: it takes the queue's only place
    return lsock.getsockname()


def scenario_connect_user_timeout(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """A dispatcher connects into the black hole while an echo dispatcher in the same map
    serves a line; after USER_TIMEOUT the program gives up on the connect and closes."""

    class Client(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "client"

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")

        def handle_read(self) -> None:
            run.record(self.role, "handle_read")

    class Echo(tracing(ac.dispatcher_with_send, run)):  # type: ignore[misc]
        role = "echo"

        def handle_read(self) -> None:
            data = self.recv(100)
            run.record(self.role, "echoed", data)
            self.send(data)

    address = blackholed_listener(run)
    client = Client(map=run.map)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    started = time.monotonic()
    client.connect(address)
    run.record("connect returned", client.connected, client.connecting)

    mine, peer = run.tcp_pair()
    Echo(mine, run.map)
    peer.sendall(b"still served")
    run.wait_pending(mine, 12)
    run.step()
    run.record("peer got", run.read_exactly(peer, 12))

    run.run_until(lambda: time.monotonic() - started >= USER_TIMEOUT, "the user timeout")
    err = client.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    run.record("gave up", client.connected, client.connecting, errno.errorcode.get(err, err))
    client.close()
    run.record("after close", client in run.map.values(), client.socket.fileno())
    return None


@USE_POLL
def test_connect_into_black_hole_with_user_timeout(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_connect_user_timeout, use_poll)
    assert outcome.trace == [
        ("connect returned", False, True),
        ("echo", "echoed", b"still served"),
        ("peer got", b"still served"),
        ("gave up", False, True, 0),
        ("after close", False, -1),
    ]
    assert registrations() == 0


KERNEL_TIMEOUT_MS = 300


def scenario_connect_kernel_timeout(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """The same black hole, with ``TCP_USER_TIMEOUT`` set on the socket: the kernel gives up
    and the dispatcher's connect fails with ETIMEDOUT (default handle_error: log, close)."""

    class Client(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "client"

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")

        def handle_read(self) -> None:
            run.record(self.role, "handle_read")

    address = blackholed_listener(run)
    client = Client(map=run.map)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, KERNEL_TIMEOUT_MS)
    started = time.monotonic()
    client.connect(address)
    run.run_until(lambda: not run.map, "the kernel gave up", deadline=5.0)
    elapsed = time.monotonic() - started
    return elapsed >= KERNEL_TIMEOUT_MS / 1000, client.connected, client.socket.fileno()


@USE_POLL
def test_connect_into_black_hole_with_kernel_timeout(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_connect_kernel_timeout, use_poll)
    assert outcome.trace == [("client", "handle_error", "TimeoutError"), ("client", "handle_close")]
    assert "TimeoutError" in outcome.stdout
    assert outcome.result == (True, False, -1)
    assert registrations() == 0


# --------------------------------------------------------------------------- dead before accept


def reset_before_accept(run: Run, address: Any) -> None:
    """A client completes the handshake, then resets (SO_LINGER 0) before anyone accepts:
    the connection sits in the accept queue, already dead."""
    client = socket.create_connection(address, timeout=5.0)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def accepting_server(ac: ModuleType, run: Run) -> Any:
    class Handler(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "handler"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "handle_read")
            self.recv(10)

    class Server(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "server"

        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            run.record(self.role, "handle_accepted", type(addr).__name__)
            handler = Handler(sock, run.map)
            run.record("handler", "created", handler.connected)

    server = Server(map=run.map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    return server


def scenario_reset_before_accept(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """On Linux accept() succeeds with a socket that is already reset (ENOTCONN on
    getpeername, so the dispatcher starts unconnected); its first event is the error."""
    server = accepting_server(ac, run)
    reset_before_accept(run, server.socket.getsockname())
    run.wait_ready(server.socket, readable=True)
    run.step()
    run.run_until(lambda: len(run.map) == 1, "the dead connection's dispatcher closed")
    good = run.keep(socket.create_connection(server.socket.getsockname(), timeout=5.0))
    run.wait_ready(server.socket, readable=True)
    run.step()
    good.sendall(b"x")
    mark = len(run.trace)
    run.run_until(lambda: ("handler", "handle_read") in run.trace[mark:], "a good one served")
    return len(run.map)


@USE_POLL
def test_connection_reset_before_accept(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_reset_before_accept, use_poll)
    assert outcome.trace[:3] == [
        ("server", "handle_accept"),
        ("server", "handle_accepted", "tuple"),
        ("handler", "created", False),
    ]
    assert ("handler", "handle_close") in outcome.trace
    assert outcome.result == 2
    assert registrations() == 0


class AbortingListener(socket.socket):
    """A listening socket whose next ``accept()`` fails with ECONNABORTED, as BSD kernels
    (and Linux under some races) report a connection that died in the accept queue."""

    aborts = 1

    def accept(self) -> tuple[socket.socket, Any]:
        if self.aborts:
            self.aborts -= 1
            raise ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")
        return super().accept()


def scenario_econnaborted(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """3.11's ``dispatcher.accept()`` returns None on ECONNABORTED and ``handle_accept()``
    then does nothing: no handle_error, no handle_accepted; the next accept works."""
    server = accepting_server(ac, run)
    plain = server.socket
    server.del_channel()
    aborting = AbortingListener(plain.family, plain.type, plain.proto, fileno=plain.detach())
    server.set_socket(aborting)
    run.keep(socket.create_connection(server.socket.getsockname(), timeout=5.0))
    run.wait_ready(server.socket, readable=True)
    run.step()
    run.record("aborts left", aborting.aborts, len(run.map))
    run.step()  # the connection is still queued: accepted now
    return len(run.map)


@USE_POLL
def test_econnaborted_on_accept(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_econnaborted, use_poll)
    assert outcome.trace == [
        ("server", "handle_accept"),
        ("aborts left", 0, 1),
        ("server", "handle_accept"),
        ("server", "handle_accepted", "tuple"),
        ("handler", "created", True),
    ]
    assert outcome.result == 2
    assert registrations() == 0
