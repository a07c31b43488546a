"""Many connections in one process: an accept storm, and more concurrent connections than
``select()`` can handle (FD_SETSIZE 1024).

The clients are plain non-blocking sockets driven from the test's own thread between loop
cycles (``run_until``'s predicate), so nothing races the dispatchers and every wait has a
deadline. Each client sends one line; the server's handler (an ``async_chat``) echoes it.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from asyncore_on_asyncio import asynchat, asyncore
from tests.helpers import LOOPBACK, load_frozen, run_until, socketpair

from ._support import registrations

pytestmark = pytest.mark.slow

DEADLINE = 30.0


class EchoLine(asynchat.async_chat):
    """Echoes every line; with ``hang_up`` closes once the first line is echoed."""

    def __init__(self, sock: socket.socket, map: dict[int, Any], hang_up: bool) -> None:
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")
        self.parts: list[bytes] = []
        self.hang_up = hang_up

    def collect_incoming_data(self, data: bytes) -> None:
        self.parts.append(data)

    def found_terminator(self) -> None:
        self.push(b"".join(self.parts) + b"\n")
        self.parts = []
        if self.hang_up:
            self.close_when_done()

    def handle_close(self) -> None:
        self.close()


class Server(asyncore.dispatcher):
    def __init__(self, map: dict[int, Any], backlog: int, hang_up: bool, batch: bool) -> None:
        super().__init__(map=map)
        self.hang_up = hang_up
        self.batch = batch
        self.accepted = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.bind((LOOPBACK, 0))
        self.listen(backlog)

    def handle_accept(self) -> None:
        if not self.batch:
            super().handle_accept()  # 3.11's: one accept() per read event
            return
        while (pair := self.accept()) is not None:
            self.handle_accepted(*pair)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.accepted += 1
        EchoLine(sock, self._map, self.hang_up)


class Clients:
    """``n`` plain non-blocking clients: connect all at once, send one line each when the
    connection is writable, collect the echo (and, if asked, wait for EOF)."""

    def __init__(self, address: Any, n: int) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.index: dict[int, int] = {}
        self.got: dict[int, bytearray] = {}
        self.eof: set[int] = set()
        self.sent: set[int] = set()
        self.pollster = select.poll()
        try:
            for i in range(n):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                fd = sock.fileno()
                self.socks[fd] = sock
                sock.setblocking(False)
                err = sock.connect_ex(address)
                assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
                self.index[fd] = i
                self.got[fd] = bytearray()
                self.pollster.register(fd, select.POLLOUT)
        except BaseException:
            self.close()
            raise

    def line(self, fd: int) -> bytes:
        return b"client %d says hello\n" % self.index[fd]

    def pump(self) -> None:
        """Do whatever the clients can do now without blocking."""
        for fd, flags in self.pollster.poll(0):
            sock = self.socks[fd]
            if flags & (select.POLLERR | select.POLLNVAL):
                raise AssertionError(f"client {self.index[fd]}: poll flags {flags:#x}")
            if fd not in self.sent:
                line = self.line(fd)
                assert sock.send(line) == len(line)  # a few bytes into an empty buffer
                self.sent.add(fd)
                self.pollster.modify(fd, select.POLLIN)
                continue
            data = sock.recv(4096)
            if data:
                self.got[fd] += data
            else:
                self.eof.add(fd)
                self.pollster.unregister(fd)

    def all_echoed(self) -> bool:
        self.pump()
        return all(len(self.got[fd]) >= len(self.line(fd)) for fd in self.socks)

    def all_closed(self) -> bool:
        self.pump()
        return len(self.eof) == len(self.socks)

    def check(self) -> None:
        wrong = [self.index[fd] for fd in self.socks if bytes(self.got[fd]) != self.line(fd)]
        assert wrong == [], f"{len(wrong)} clients got a wrong echo, e.g. {wrong[:5]}"

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


# --------------------------------------------------------------------------- accept storm


STORM = 1000


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_accept_storm(use_poll: bool) -> None:
    """1000 clients connect at once to one listening dispatcher (3.11's default
    handle_accept: one accept per event); all are accepted, each gets its line back,
    and each handler closes after its echo."""
    m: dict[int, Any] = {}
    server = Server(m, backlog=STORM + 24, hang_up=True, batch=False)

    def step_until(predicate: Any) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            assert time.monotonic() < deadline, "accept storm did not finish in time"
            asyncore.loop(timeout=0.05, use_poll=use_poll, map=m, count=1)

    clients = Clients(server.socket.getsockname(), STORM)
    try:
        step_until(lambda: clients.all_closed() and len(m) == 1)
        clients.check()
    finally:
        clients.close()
        server.close()
        asyncore.close_all(m)
    assert server.accepted == STORM
    assert registrations() == 0


# --------------------------------------------------------------------------- beyond FD_SETSIZE


CONCURRENT = 2000
FD_SETSIZE = 1024


@contextlib.contextmanager
def fd_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit for the duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target < needed:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {needed} fds needed", pytrace=False)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def frozen_select_fails_beyond_fd_setsize() -> str:
    """The frozen 3.11 asyncore's select() loop on a dispatcher whose fd is past 1023."""
    frozen, _ = load_frozen()
    mine, peer = socketpair()
    fm: dict[int, Any] = {}
    try:
        assert mine.fileno() >= FD_SETSIZE
        frozen.dispatcher(mine, map=fm)
        with pytest.raises(ValueError) as info:
            frozen.loop(timeout=0.01, use_poll=False, map=fm, count=1)
        return str(info.value)
    finally:
        frozen.close_all(fm)
        peer.close()


def test_concurrent_connections_beyond_fd_setsize() -> None:
    """2000 connections held open at once (4000+ fds); every one echoes its line through
    our select()-mode loop, which 3.11's select() cannot even start at that scale."""
    with fd_limit(2 * CONCURRENT + 200):
        m: dict[int, Any] = {}
        server = Server(m, backlog=CONCURRENT + 48, hang_up=False, batch=True)
        clients = Clients(server.socket.getsockname(), CONCURRENT)
        try:
            run_until(clients.all_echoed, timeout=DEADLINE, map=m)
            clients.check()
            assert len(m) == CONCURRENT + 1  # every connection is still open
            highest = max(m)
            assert highest >= 2 * CONCURRENT
            frozen_error = frozen_select_fails_beyond_fd_setsize()
            for sock in clients.socks.values():
                sock.shutdown(socket.SHUT_WR)
            run_until(lambda: clients.all_closed() and len(m) == 1, timeout=DEADLINE, map=m)
        finally:
            clients.close()
            server.close()
            asyncore.close_all(m)
    assert server.accepted == CONCURRENT
    assert frozen_error == "filedescriptor out of range in select()"
    assert registrations() == 0
