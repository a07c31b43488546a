"""fds that change under the engine: closed behind a dispatcher's back, reused within a cycle,
swapped under a registered fd; and files (pipes, regular files) through file_dispatcher."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from asyncore_on_asyncio import asyncore
from tests import helpers
from tests.helpers import run_until, socketpair


class Reader(asyncore.dispatcher):
    def __init__(self, sock: Any, map: dict[int, Any], trace: list[Any], name: str = "r") -> None:
        super().__init__(sock, map=map)
        self.trace = trace
        self.name = name

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.trace.append((self.name, "read", self.recv(1000)))

    def handle_close(self) -> None:
        self.trace.append((self.name, "close"))
        self.close()


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def new_pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    pair = socketpair()
    pairs.append(pair)
    return pair


def reuse_fd(sock: socket.socket, fd: int) -> socket.socket:
    """Move ``sock`` to the (free) fd number ``fd``, as the kernel does when it reuses one."""
    if sock.fileno() == fd:
        return sock  # the kernel gave it that number already
    os.dup2(sock.fileno(), fd)
    moved = socket.socket(sock.family, sock.type, fileno=fd)
    moved.setblocking(False)
    sock.close()
    return moved


def registry_size() -> int:
    return helpers.registrations()


@pytest.mark.parametrize("use_poll", [False, True])
def test_socket_closed_behind_the_back_gets_handle_close(pairs: Any, use_poll: bool) -> None:
    a, _b = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}
    Reader(a, m, trace)
    asyncore.loop(timeout=0, use_poll=use_poll, map=m, count=1)
    a.close()  # behind the dispatcher's back
    # The first cycle is idle; an idle cycle makes the next scan check every socket.
    asyncore.loop(timeout=0.1, use_poll=use_poll, map=m, count=2)
    assert trace == [("r", "close")]
    assert m == {}
    assert registry_size() == 0


def test_fd_number_reused_after_close_behind_back_is_served(pairs: Any) -> None:
    a, _b = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}
    Reader(a, m, trace, "old")
    asyncore.loop(timeout=0, map=m, count=1)
    fd = a.fileno()
    m.clear()  # the program empties the map directly...
    a.close()  # ...and closes the socket: the registration is stale now
    c = reuse_fd(new_pair(pairs)[0], fd)
    d = pairs[-1][1]
    Reader(c, m, trace, "new")
    d.send(b"hello")
    run_until(lambda: trace, map=m, timeout=5)
    assert trace == [("new", "read", b"hello")]
    m[fd].close()


class Exposed(Reader):
    """A Reader that also wants to write and records its write and priority events."""

    def writable(self) -> bool:
        return True

    def handle_write(self) -> None:
        self.trace.append((self.name, "write"))

    def handle_expt(self) -> None:
        self.trace.append((self.name, "expt"))


@pytest.mark.parametrize("use_poll", [False, True])
def test_fd_reused_within_one_cycle_gets_no_stale_event(pairs: Any, use_poll: bool) -> None:
    """A handler closes another dispatcher with events pending (read, write, urgent) and a
    new socket takes its fd number at once: the pending events go neither to the newcomer
    nor to the closed victim (select(): the read, write and priority lists; poll(): one
    readwrite() per object)."""
    a, b = new_pair(pairs)
    c, d = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}
    replacement: list[Any] = []

    class Closer(Reader):
        def handle_read(self) -> None:
            super().handle_read()
            victim.close()
            e, f = new_pair(pairs)
            newcomer = Reader(reuse_fd(e, victim_fd), m, trace, "newcomer")
            replacement.append((newcomer, f))

    Closer(a, m, trace, "closer")
    victim = Exposed(c, m, trace, "victim")
    victim_fd = c.fileno()
    b.send(b"1")
    d.send(b"2")
    d.send(b"!", socket.MSG_OOB)
    run_until(lambda: _readable(a) and _urgent(c), map={})
    try:
        asyncore.loop(timeout=1, map=m, count=1, use_poll=use_poll)
        assert trace == [("closer", "read", b"1")]
        newcomer, f = replacement[0]
        assert newcomer.socket.fileno() == victim_fd
        f.send(b"3")
        run_until(lambda: len(trace) == 2, map=m, use_poll=use_poll)
        assert trace[1] == ("newcomer", "read", b"3")
    finally:
        asyncore.close_all(m)
    assert registry_size() == 0


def test_fd_reused_within_its_own_dispatch_gets_no_stale_event(pairs: Any) -> None:
    """The one-object case of the same (select() semantics, a single ready dispatcher):
    its handle_read() closes it and a new socket takes its fd number at once; the write
    and priority events collected with the read go neither to the closed dispatcher nor
    to the newcomer.  (poll() semantics differ on purpose: readwrite() is one call per
    object, which goes on after handle_read() returns, as 3.11's did.)"""
    a, b = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}
    replacement: list[Any] = []

    class SelfReplacing(Exposed):
        def handle_read(self) -> None:
            super().handle_read()
            fd = self.socket.fileno()
            self.close()
            e, f = new_pair(pairs)
            replacement.append((Reader(reuse_fd(e, fd), m, trace, "newcomer"), f))

    SelfReplacing(a, m, trace, "self")
    own_fd = a.fileno()
    b.send(b"1")
    b.send(b"!", socket.MSG_OOB)
    run_until(lambda: _urgent(a), map={})
    try:
        asyncore.loop(timeout=1, map=m, count=1)
        assert trace == [("self", "read", b"1")]
        newcomer, f = replacement[0]
        assert newcomer.socket.fileno() == own_fd
        f.send(b"3")
        run_until(lambda: len(trace) == 2, map=m)
        assert trace[1] == ("newcomer", "read", b"3")
    finally:
        asyncore.close_all(m)
    assert registry_size() == 0


def test_handler_closes_other_dispatcher_with_pending_event(pairs: Any) -> None:
    a, b = new_pair(pairs)
    c, d = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}

    class Killer(Reader):
        def handle_read(self) -> None:
            super().handle_read()
            other.close()
            self.close()

    Killer(a, m, trace, "killer")
    other = Reader(c, m, trace, "other")
    b.send(b"1")
    d.send(b"2")
    for s in (a, c):
        run_until(lambda s=s: _readable(s), map={})
    asyncore.loop(timeout=1, map=m)
    assert trace == [("killer", "read", b"1")]
    assert m == {} and registry_size() == 0


def test_socket_swapped_under_registered_fd(pairs: Any) -> None:
    """STARTTLS-style: del_channel(); set_socket(new object on the same fd)."""
    a, b = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}
    r = Reader(a, m, trace)
    asyncore.loop(timeout=0, map=m, count=1)
    fd = a.fileno()
    r.del_channel()
    swapped = socket.socket(a.family, a.type, fileno=a.detach())
    assert swapped.fileno() == fd
    r.set_socket(swapped, m)
    b.send(b"after swap")
    run_until(lambda: trace, map=m)
    assert trace == [("r", "read", b"after swap")]
    r.close()
    assert registry_size() == 0


@pytest.mark.parametrize("use_poll", [False, True])
def test_file_dispatcher_on_regular_file_reads_to_end(use_poll: bool) -> None:
    data = os.urandom(3000)
    chunks: list[bytes] = []

    class FileReader(asyncore.file_dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            chunks.append(self.recv(256))

        def handle_close(self) -> None:
            chunks.append(b"<close>")
            self.close()

    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        m: dict[int, Any] = {}
        FileReader(f, map=m)
        asyncore.loop(timeout=5, use_poll=use_poll, map=m)
    # recv() calls handle_close() on EOF, then handle_read() stores the b"" it returned.
    assert chunks[-2:] == [b"<close>", b""]
    assert b"".join(chunks[:-2]) == data
    assert all(len(c) == 256 for c in chunks[:-3])


def test_file_dispatcher_on_pipe() -> None:
    r, w = os.pipe()
    got: list[bytes] = []

    class PipeReader(asyncore.file_dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            got.append(self.recv(100))

        def handle_close(self) -> None:
            got.append(b"<eof>")
            self.close()

    m: dict[int, Any] = {}
    PipeReader(r, map=m)
    os.close(r)  # file_dispatcher owns a dup
    os.write(w, b"abc")
    run_until(lambda: got, map=m)
    os.write(w, b"def")
    run_until(lambda: len(got) == 2, map=m)
    os.close(w)
    asyncore.loop(timeout=5, map=m)
    assert got == [b"abc", b"def", b"<eof>", b""]


@pytest.mark.loop_free
def test_file_wrapper() -> None:
    r, w = os.pipe()
    fw = asyncore.file_wrapper(w)
    os.close(w)
    assert fw.fileno() != w or fw.fileno() >= 0
    assert fw.send(b"xy") == 2
    assert os.read(r, 2) == b"xy"
    assert fw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    with pytest.raises(NotImplementedError):
        fw.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    fw.close()
    fw.close()
    assert fw.fileno() == -1
    os.close(r)


@pytest.mark.loop_free
def test_unclosed_file_wrapper_warns() -> None:
    r, w = os.pipe()
    fw = asyncore.file_wrapper(r)
    with pytest.warns(ResourceWarning, match="unclosed file"):
        fw.__del__()
    assert fw.fd == -1
    os.close(r)
    os.close(w)


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _urgent(sock: socket.socket) -> bool:
    import select

    return bool(select.select([], [], [sock], 0)[2])


@pytest.mark.parametrize("use_poll", [False, True])
def test_closed_behind_back_is_noticed_while_the_loop_is_busy(pairs: Any, use_poll: bool) -> None:
    """No idle cycle comes while other dispatchers keep it busy; the periodic verifying
    scan (at least once a second) still finds the closed socket."""
    a, _b = new_pair(pairs)
    c, d = new_pair(pairs)
    trace: list[Any] = []
    m: dict[int, Any] = {}

    class Busy(asyncore.dispatcher_with_send):
        def handle_read(self) -> None:
            self.send(self.recv(100))

    Busy(c, map=m)
    Reader(a, m, trace)
    asyncore.loop(timeout=0, use_poll=use_poll, map=m, count=1)
    a.close()
    d.send(b"ping")
    deadline = time.monotonic() + 5
    while not trace and time.monotonic() < deadline:
        asyncore.loop(timeout=1, use_poll=use_poll, map=m, count=1)
        with contextlib.suppress(BlockingIOError):
            d.send(d.recv(100))  # keep the echo going: no cycle is idle
    assert trace == [("r", "close")]
    asyncore.close_all(m)


@pytest.mark.parametrize("use_poll", [False, True])
def test_closed_socket_is_reported_every_cycle_until_handled(pairs: Any, use_poll: bool) -> None:
    """As poll() kept reporting POLLNVAL, a dispatcher whose handle_close() does not close
    hears about its dead socket again at every cycle (not just once)."""
    a, _b = new_pair(pairs)
    closes: list[int] = []

    class Stubborn(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_close(self) -> None:
            closes.append(1)

    m: dict[int, Any] = {}
    d = Stubborn(a, map=m)
    asyncore.loop(timeout=0, use_poll=use_poll, map=m, count=1)
    a.close()
    asyncore.loop(timeout=0.05, use_poll=use_poll, map=m, count=5)
    assert len(closes) >= 3, closes
    d.del_channel()
    assert registry_size() == 0
