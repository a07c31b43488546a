"""os.fork() while dispatchers exist: neither the parent nor the child is disturbed, as in 3.11.

3.11 kept nothing between two ``select()`` passes, so a program could fork at any time.
The engine keeps an epoll and an event loop, kernel objects a child shares with its
parent: these tests fork for real (``os.fork()``, as the programs do) and check that
the parent goes on serving every connection, that its registrations are what they
were, and that a child serves what it inherited on state of its own, on both loops and
both readiness sources.  Every child ends in ``os._exit()``: its status says whether it
did its part.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import asyncore
from asyncore_on_asyncio._engine import LOOP_ENV_VAR
from asyncore_on_asyncio._readiness import READINESS_ENV_VAR
from tests.helpers import registrations, run_until, watched

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform has no os.fork()"),
    # These tests read the epolls a child inherits (/proc/self/fdinfo).  Without epoll (the
    # macOS-like run hides it) the event loop's selector stands for kqueue, which a child
    # does not inherit at all, while the stand-in, a real epoll, is inherited: the run
    # cannot model a fork there.
    pytest.mark.skipif(not hasattr(select, "epoll"), reason="the platform has no epoll (see above)"),
]

ANSWER_TIMEOUT = 5.0
"""How long a client waits for an answer (a server that stopped serving fails the test)."""


@pytest.fixture(params=["epoll", "loop-fds"])
def readiness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both readiness sources, whatever the run's environment chose (read when the
    engine's source is made, inside the test)."""
    if request.param == "epoll" and not hasattr(select, "epoll"):
        pytest.skip("the platform has no epoll")
    monkeypatch.setenv(READINESS_ENV_VAR, request.param)
    return str(request.param)


# --------------------------------------------------------------------------- processes


def fork() -> int:
    """``os.fork()``; the parent's threads (pytest-timeout's, the clients') are known."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*is multi-threaded, use of fork\(\)", DeprecationWarning)
        return os.fork()


def exit_child(body: Callable[[], object]) -> NoReturn:
    """In a child: run ``body``, then leave at once: status 0 if it returned, 1 if it raised."""
    status = 1
    try:
        body()
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def reap(pids: list[int], timeout: float = 10.0) -> dict[int, int]:
    """Wait for the children (killed at the deadline): pid -> exit code (-9: killed).
    Those reaped leave ``pids``."""
    deadline = time.monotonic() + timeout
    codes = {}
    while pids:
        pid = pids.pop()
        pidfd = os.pidfd_open(pid)
        try:
            if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                os.kill(pid, signal.SIGKILL)
            codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        finally:
            os.close(pidfd)
    return codes


def epoll_tables() -> dict[int, frozenset[tuple[int, int]]]:
    """Every epoll this process holds (its own, the event loop's): fd -> {(target fd, events)}."""
    tables = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself used, gone by now
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                fields = [line.split() for line in info]
            tables[int(name)] = frozenset(
                (int(f[1]), int(f[3], 16)) for f in fields if f[:1] == ["tfd:"]
            )
    return tables


def assert_inherited_epolls_detached() -> None:
    """In a child, before it made anything: every epoll it holds is a private one in which
    nothing is wanted (the engine's and its event loop's were shared with the parent, and
    still hold the parent's interest: see _fork)."""
    tables = epoll_tables()
    assert tables, "the parent held epolls: the child inherits their fds"
    always = select.EPOLLERR | select.EPOLLHUP  # reported whatever is asked
    wanted = {fd: entries for fd, entries in tables.items() if any(events & ~always for _, events in entries)}
    assert not wanted, wanted


# --------------------------------------------------------------------------- the server


class Echo(asyncore.dispatcher):
    """Answers each request with ``b"<pid> <request>\\n"``; ``b"stop"`` raises ExitNow,
    ``b"quit"`` answers ``b"bye\\n"`` and closes every dispatcher of its map."""

    def __init__(self, sock: socket.socket, map: dict[int, Any], on_request: Callable[[], None] | None = None) -> None:
        super().__init__(sock, map=map)
        self.on_request = on_request

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        data = self.recv(4096)
        if not data:
            return
        if data == b"stop":
            raise asyncore.ExitNow("stop")
        if data == b"quit":
            self.send(b"bye\n")
            asyncore.close_all(self._map)
            return
        if self.on_request is not None:
            self.on_request()
        self.send(b"%d %s\n" % (os.getpid(), data))

    def handle_close(self) -> None:
        self.close()


class Listener(asyncore.dispatcher):
    def __init__(self, map: dict[int, Any], on_accept: Callable[[socket.socket], object]) -> None:
        super().__init__(map=map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.on_accept = on_accept

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.on_accept(sock)


class Stopper(asyncore.dispatcher):
    """Raises ExitNow from the cycle after ``stop`` is set (over an always-writable socket:
    no registration of the parent is needed for it, so a broken parent still stops)."""

    def __init__(self, map: dict[int, Any]) -> None:
        self.peer, sock = socket.socketpair()
        super().__init__(sock, map=map)
        self.stop = threading.Event()

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return self.stop.is_set()

    def handle_write(self) -> None:
        raise asyncore.ExitNow("the clients are done")

    def close(self) -> None:
        super().close()
        self.peer.close()


# --------------------------------------------------------------------------- the clients


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=ANSWER_TIMEOUT)


def ask(sock: socket.socket, request: bytes) -> bytes | None:
    """Send ``request``; the answer line, or None (time-out, or the server closed)."""
    sock.sendall(request)
    answer = b""
    try:
        while not answer.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return None
            answer += chunk
    except TimeoutError:
        return None
    return answer


def ask_new(address: tuple[str, int], request: bytes) -> bytes | None:
    with connect(address) as sock:
        return ask(sock, request)


@contextlib.contextmanager
def clients(script: Callable[[], None], stopper: Stopper, start: bool = True) -> Iterator[threading.Thread]:
    """Run ``script`` in a thread that stops the parent's loop when it ends, however."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            script()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            stopper.stop.set()
            asyncore_on_asyncio.wakeup(stopper)

    thread = threading.Thread(target=run, daemon=True)
    if start:
        thread.start()
    yield thread
    thread.join(2 * ANSWER_TIMEOUT)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def serve_until_stopped(map: dict[int, Any], parent: int, timeout: float = 0.05) -> None:
    """The parent's loop(): cycles that wait (``timeout`` at most each), until the Stopper fires.

    A child forked by a handler comes back here when the loop() it inherited returns:
    it leaves with status 0 if that loop() returned because its map emptied."""
    outcome = "raised"
    try:
        asyncore.loop(timeout=timeout, map=map)
        outcome = "returned"
    except asyncore.ExitNow:
        outcome = "stopped"
    finally:
        if os.getpid() != parent:
            if outcome == "raised":
                traceback.print_exc()
            os._exit(0 if outcome == "returned" and not map else 1)
    assert outcome == "stopped"


def only_listener_left(map: dict[int, Any], server: Listener) -> None:
    for obj in list(map.values()):
        if obj is not server:
            obj.close()


# --------------------------------------------------------------------------- the patterns


def test_a_handler_forks_per_request(readiness: str) -> None:
    """CGI style: each request forks a child that closes everything it inherited and
    exits; the parent answers, 20 clients in turn, and its registrations are unchanged."""
    map: dict[int, Any] = {}
    children: list[int] = []

    def fork_a_child() -> None:
        pid = fork()
        if pid == 0:
            exit_child(lambda: (assert_inherited_epolls_detached(), asyncore.close_all(map)))
        children.append(pid)

    server = Listener(map, lambda sock: Echo(sock, map, fork_a_child))
    address = server.socket.getsockname()
    stopper = Stopper(map)
    asyncore.loop(timeout=0.01, count=1, map=map)  # registered, the loop has run
    before = (epoll_tables(), registrations(), watched(server._fileno))
    answers: list[bytes | None] = []

    def twenty_clients() -> None:
        for i in range(20):
            answers.append(ask_new(address, b"request %d" % i))
            if answers[-1] is None:
                break  # the parent stopped serving: no need to wait for the others

    try:
        with clients(twenty_clients, stopper):
            serve_until_stopped(map, os.getpid())
        assert answers == [b"%d request %d\n" % (os.getpid(), i) for i in range(20)]
        assert set(reap(children).values()) == {0}
        only_listener_left(map, server)
        stopper.close()
        after = (epoll_tables(), registrations(), watched(server._fileno))
        assert after == before
    finally:
        reap(children, timeout=0)
        asyncore.close_all(map)


def test_pre_fork_workers_serve_the_inherited_listener(readiness: str) -> None:
    """Pre-fork: the listener is bound and served once, then workers are forked, each
    running loop() on the inherited map; the parent closes its listener; 40 clients."""
    map: dict[int, Any] = {}
    server = Listener(map, lambda sock: Echo(sock, map))
    address = server.socket.getsockname()
    asyncore.loop(timeout=0.01, count=1, map=map)
    pids = []
    try:
        for _ in range(2):
            pid = fork()
            if pid == 0:
                exit_child(lambda: asyncore.loop(map=map))
            pids.append(pid)
        server.close()
        answers = []
        for i in range(40):
            answers.append(ask_new(address, b"request %d" % i))
            if answers[-1] is None:
                break
        served = [answer.split()[0] for answer in answers if answer is not None]
        assert len(served) == 40, answers
        assert {int(pid) for pid in served} <= set(pids)
        assert [ask_new(address, b"quit") for _ in pids] == [b"bye\n"] * len(pids)
        expected = {pid: 0 for pid in pids}
        assert reap(pids) == expected
    finally:
        reap(pids, timeout=0)
        asyncore.close_all(map)


DAEMON = """
import os, socket, sys
from asyncore_on_asyncio import asyncore

class Echo(asyncore.dispatcher):
    def writable(self):
        return False
    def handle_read(self):
        data = self.recv(4096)
        if data == b"quit":
            self.send(b"bye\\n")
            asyncore.close_all()
        elif data:
            self.send(b"%d %s\\n" % (os.getpid(), data))
    def handle_close(self):
        self.close()

class Listener(asyncore.dispatcher):
    def handle_accepted(self, sock, addr):
        Echo(sock)

server = Listener()
server.create_socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
asyncore.loop(timeout=0.01, count=1)
pid = os.fork()
if pid:
    print(server.socket.getsockname()[1], pid, flush=True)
    if sys.argv[1] == "os._exit":
        os._exit(0)
    sys.exit(0)  # atexit closes the parent's engine loop, finalizers run
asyncore.loop()
print("done", flush=True)
"""


@pytest.mark.parametrize("exit", ["sys.exit", "os._exit"])
def test_a_daemon_forks_after_its_loop_ran_and_the_parent_exits(readiness: str, loop_kind: str, exit: str) -> None:
    """A program that ran loop() forks into the background; the parent exits at once (the
    normal way, or at once with ``os._exit()``); the child serves."""
    env = dict(os.environ, **{LOOP_ENV_VAR: loop_kind, READINESS_ENV_VAR: readiness})
    with subprocess.Popen([sys.executable, "-c", DAEMON, exit], stdout=subprocess.PIPE, env=env) as parent:
        assert parent.stdout is not None
        port, daemon = (int(word) for word in parent.stdout.readline().split())
        try:
            assert parent.wait(ANSWER_TIMEOUT) == 0
            address = ("127.0.0.1", port)
            answers = []
            for i in range(20):
                answers.append(ask_new(address, b"request %d" % i))
                if answers[-1] is None:
                    break
            assert answers == [b"%d request %d\n" % (daemon, i) for i in range(20)]
            assert ask_new(address, b"quit") == b"bye\n"
            # The daemon holds the pipe until it exits: its last line, then EOF.
            assert select.select([parent.stdout], [], [], ANSWER_TIMEOUT)[0]
            assert parent.stdout.read() == b"done\n"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGKILL)


@pytest.mark.parametrize("frame", ["loop-callback", "loop-frame"])
def test_a_child_serves_its_connection_while_the_parent_serves_the_others(readiness: str, frame: str) -> None:
    """The first connection's handler forks; the child closes everything else, returns, and
    the inherited loop() goes on in the child, serving that connection until it closes,
    while the parent serves the others.  ``frame``: where the fork happens, in a cycle run
    by the event loop (after a wait) or in loop()'s own frame (the first cycle)."""
    map: dict[int, Any] = {}
    children: list[int] = []
    where: list[str] = []
    parent = os.getpid()

    def on_accept(sock: socket.socket) -> None:
        if children:
            Echo(sock, map)
            return
        pid = fork()
        if pid == 0:
            for obj in list(map.values()):
                obj.close()  # the child's copies: the listener, the Stopper
            first[0].close()  # the client's end (the client lives in this test's process)
            Echo(sock, map)
            return  # and the inherited loop() goes on, in the child
        children.append(pid)
        sock.close()
        ran_by_the_loop = any(f.name == "run_loop" for f in traceback.extract_stack())  # Engine.run_loop
        where.append("loop-callback" if ran_by_the_loop else "loop-frame")

    server = Listener(map, on_accept)
    address = server.socket.getsockname()
    stopper = Stopper(map)
    asyncore.loop(timeout=0.01, count=1, map=map)
    before = (epoll_tables(), registrations(), watched(server._fileno))
    first: list[socket.socket] = []
    answers: list[tuple[str, bytes | None]] = []

    def exchange() -> None:
        a = first[0]
        answers.append(("a", ask(a, b"a1")))
        with connect(address) as b, connect(address) as c:
            for name, sock, request in [("b", b, b"b1"), ("a", a, b"a2"), ("c", c, b"c1"), ("a", a, b"a3"), ("b", b, b"b2")]:
                answers.append((name, ask(sock, request)))
            a.close()  # the child's map empties: its loop() returns
            answers.append(("c", ask(c, b"c2")))

    def start() -> None:
        first.append(connect(address))
        thread.start()

    try:
        with clients(exchange, stopper, start=False) as thread:
            if frame == "loop-callback":
                # By the event loop once the first cycle found nothing and waits: the cycle
                # that accepts runs as its callback.
                asyncore_on_asyncio.get_event_loop().call_soon(start)
            else:
                start()  # ready at once: the first cycle accepts, in loop()'s frame
            serve_until_stopped(map, parent)
        assert where == [frame]
        child = children[0]
        expected = [("a", b"a1"), ("b", b"b1"), ("a", b"a2"), ("c", b"c1"), ("a", b"a3"), ("b", b"b2"), ("c", b"c2")]
        assert answers == [
            (name, b"%d %s\n" % (child if name == "a" else parent, request)) for name, request in expected
        ]
        assert reap(children) == {child: 0}
        only_listener_left(map, server)
        stopper.close()
        after = (epoll_tables(), registrations(), watched(server._fileno))
        assert after == before
    finally:
        reap(children, timeout=0)
        asyncore.close_all(map)


CGI = """
import json, os, sys
from asyncore_on_asyncio import asyncore
sys.path.insert(0, sys.argv[1])
from tests.test_fork import epoll_tables

class Handler(asyncore.dispatcher):
    def writable(self):
        return False
    def handle_read(self):
        data = self.recv(4096)
        if data == b"quit":
            asyncore.close_all()
            return
        if not data:
            return
        pid = os.fork()
        if pid == 0:
            asyncore.close_all()
            sys.exit(0)  # out of loop(), then the interpreter's finalization, as a script ends
        os.waitpid(pid, 0)
        after = epoll_tables()
        missing = {fd: sorted(entries - after.get(fd, frozenset())) for fd, entries in before.items()}
        print(json.dumps({fd: entries for fd, entries in missing.items() if entries}), flush=True)
        self.send(b"%d %s\\n" % (os.getpid(), data))
    def handle_close(self):
        self.close()

class Listener(asyncore.dispatcher):
    def handle_accepted(self, sock, addr):
        Handler(sock)

server = Listener()
server.create_socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
asyncore.loop(timeout=0.01, count=1)
before = epoll_tables()
print(server.socket.getsockname()[1], flush=True)
asyncore.loop()
"""


def test_children_that_exit_the_normal_way_leave_the_parent_alone(readiness: str, loop_kind: str) -> None:
    """CGI style, the children leaving by ``sys.exit()`` (finalizers, atexit): after each
    one, every registration the parent's epolls held before the first fork is still there."""
    env = dict(os.environ, **{LOOP_ENV_VAR: loop_kind, READINESS_ENV_VAR: readiness})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with subprocess.Popen([sys.executable, "-c", CGI, root], stdout=subprocess.PIPE, env=env) as server:
        assert server.stdout is not None
        try:
            address = ("127.0.0.1", int(server.stdout.readline()))
            for i in range(5):
                with connect(address) as sock:
                    answer = ask(sock, b"request %d" % i)
                    assert server.stdout.readline() == b"{}\n"  # nothing the parent held is gone
                    assert answer == b"%d request %d\n" % (server.pid, i)
            with connect(address) as sock:
                sock.sendall(b"quit")
            assert server.wait(ANSWER_TIMEOUT) == 0
        finally:
            server.kill()


def test_a_coroutine_forks_and_the_child_serves_on(readiness: str) -> None:
    """The fork happens in a coroutine that a handler started on the engine loop (spawn()),
    while loop() waits with a long timeout: in the child the coroutine ends, the inherited
    loop is left, and loop() goes on serving the connection; the parent serves the others."""
    map: dict[int, Any] = {}
    children: list[int] = []
    parent = os.getpid()
    first: list[socket.socket] = []

    async def fork_for(sock: socket.socket) -> None:
        pid = fork()
        if pid == 0:
            for obj in list(map.values()):
                obj.close()
            first[0].close()
            Echo(sock, map)
            return
        children.append(pid)
        sock.close()

    def on_accept(sock: socket.socket) -> None:
        if children or first[1:]:
            Echo(sock, map)
            return
        first.append(sock)  # (once)
        asyncore_on_asyncio.spawn(fork_for(sock))

    server = Listener(map, on_accept)
    address = server.socket.getsockname()
    stopper = Stopper(map)
    answers: list[tuple[str, bytes | None]] = []

    def exchange() -> None:
        a = first[0]
        answers.append(("a", ask(a, b"a1")))
        with connect(address) as b:
            answers.append(("b", ask(b, b"b1")))
            a.close()
            answers.append(("b", ask(b, b"b2")))

    try:
        with clients(exchange, stopper, start=False) as thread:
            first.append(connect(address))
            thread.start()
            serve_until_stopped(map, parent, timeout=30.0)
        child = children[0]
        assert answers == [("a", b"%d a1\n" % child), ("b", b"%d b1\n" % parent), ("b", b"%d b2\n" % parent)]
        assert reap(children) == {child: 0}
    finally:
        reap(children, timeout=0)
        asyncore.close_all(map)


def test_a_run_that_ends_with_the_forking_cycle_ends_in_the_child_too(readiness: str) -> None:
    """loop(timeout=0, count=1) whose one cycle (in loop()'s frame) dispatches a handler that
    forks: in the child that run ends as in the parent (its count is spent), and the loop
    it inherited never runs there: a callback the parent scheduled on it runs only in the
    parent."""
    map: dict[int, Any] = {}
    children: list[int] = []
    parent = os.getpid()
    ran: list[int] = []

    def fork_a_child() -> None:
        asyncore_on_asyncio.get_event_loop().call_soon(lambda: ran.append(os.getpid()))
        pid = fork()
        if pid:
            children.append(pid)

    client, server = socket.socketpair()
    Echo(server, map, fork_a_child)
    client.sendall(b"request")
    try:
        try:
            asyncore.loop(timeout=0, count=1, map=map)  # the request is there: one cycle, here
        finally:
            if os.getpid() != parent:
                os._exit(0 if ran == [] else 1)
        run_until(lambda: ran, map=map)  # at the parent's next event-loop iteration
        assert ran == [parent]
        expected = {pid: 0 for pid in children}
        assert len(expected) == 1
        assert reap(children) == expected
    finally:
        reap(children, timeout=0)
        asyncore.close_all(map)
        client.close()
