"""loop() in several threads, and changes made from another thread than the loop's."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncore_on_asyncio
from asyncore_on_asyncio import _engine, asynchat, asyncore
from tests.helpers import socketpair


class Echo(asyncore.dispatcher_with_send):
    def handle_read(self) -> None:
        data = self.recv(4096)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class Collect(asyncore.dispatcher):
    def __init__(self, sock: socket.socket, map: dict[int, Any], expect: int) -> None:
        super().__init__(sock, map=map)
        self.got = b""
        self.expect = expect

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.got += self.recv(65536)
        if len(self.got) >= self.expect:
            self.close()

    def handle_close(self) -> None:
        self.close()


def wait_until_served(m: dict[int, Any], timeout: float = 5.0) -> None:
    """Block until some thread's loop() is waiting on ``m``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for engine in list(_engine._engines.values()):
            driver = engine.drivers.get(id(m))
            if driver is not None and driver.waiting:
                return
        time.sleep(0.001)
    raise AssertionError("no loop() started waiting on the map")


def in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            asyncore_on_asyncio.close_event_loop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_threads_run_their_own_maps_at_once() -> None:
    """Three threads, three maps, three event loops: each echoes 100 kB through itself."""
    results: dict[int, bytes] = {}
    loops: dict[int, Any] = {}

    def worker(i: int) -> Callable[[], None]:
        def run() -> None:
            loops[i] = asyncore_on_asyncio.get_event_loop()
            m: dict[int, Any] = {}
            a, b = socketpair()
            Echo(a, map=m)
            payload = bytes([i]) * 100_000
            collector = Collect(b, m, len(payload))
            sender = asyncore.dispatcher_with_send(b.dup(), map=m)
            sender.send(payload)
            deadline = time.monotonic() + 10
            while collector._fileno is not None:
                asyncore.loop(timeout=0.1, map=m, count=1)
                assert time.monotonic() < deadline
            results[i] = collector.got
            asyncore.close_all(m)

        return run

    threads = [in_thread(worker(i)) for i in range(3)]
    for thread, errors in threads:
        thread.join(20)
        assert not thread.is_alive()
        assert errors == []
    assert len({id(loop) for loop in loops.values()}) == 3
    assert {i: len(v) for i, v in results.items()} == {0: 100_000, 1: 100_000, 2: 100_000}
    assert all(set(v) == {i} for i, v in results.items())


def test_dispatcher_added_from_another_thread_is_served_at_once() -> None:
    m: dict[int, Any] = {}
    idle_a, idle_b = socketpair()
    Collect(idle_a, m, 10**9)  # keeps the map non-empty; never gets data
    a, b = socketpair()
    collected: list[Collect] = []
    started = threading.Event()

    def serve() -> None:
        started.set()
        asyncore.loop(timeout=30, map=m)

    thread, errors = in_thread(serve)
    started.wait(5)
    wait_until_served(m)
    t0 = time.monotonic()
    collected.append(Collect(a, m, 5))  # registered by the other thread's wait
    b.send(b"hello")
    deadline = time.monotonic() + 5
    while collected[0]._fileno is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    assert collected[0].got == b"hello"
    assert elapsed < 5
    m[idle_a.fileno()].close()  # the last dispatcher: the 30 s loop() must return
    thread.join(5)
    assert not thread.is_alive(), "loop() did not return when another thread emptied the map"
    assert errors == []
    idle_b.close()
    b.close()


def test_closing_last_dispatcher_from_another_thread_ends_loop() -> None:
    m: dict[int, Any] = {}
    a, b = socketpair()
    d = Collect(a, m, 10**9)
    thread, errors = in_thread(lambda: asyncore.loop(timeout=30, map=m))
    wait_until_served(m)
    t0 = time.monotonic()
    d.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 5
    assert errors == []
    b.close()


def test_blocked_wait_wakes_on_write_from_another_thread() -> None:
    m: dict[int, Any] = {}
    a, b = socketpair()
    d = Collect(a, m, 3)
    thread, errors = in_thread(lambda: asyncore.loop(timeout=30, map=m))
    wait_until_served(m)
    t0 = time.monotonic()
    b.send(b"abc")
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - t0 < 5
    assert d.got == b"abc" and errors == []
    b.close()


def test_send_from_another_thread_goes_out_at_once() -> None:
    """dispatcher_with_send.send() from another thread: the rest is flushed by the loop's
    thread without waiting for its timeout tick."""
    m: dict[int, Any] = {}
    a, b = socketpair()
    sender = Echo(a, map=m)
    thread, errors = in_thread(lambda: asyncore.loop(timeout=30, map=m))
    wait_until_served(m)
    payload = b"z" * 2_000_000  # more than the socket buffers take at once
    t0 = time.monotonic()
    sender.send(payload)
    received = bytearray()
    b.setblocking(True)
    b.settimeout(5)
    while len(received) < len(payload):
        received += b.recv(1 << 20)
    assert time.monotonic() - t0 < 5
    assert received == payload
    sender.close()
    thread.join(5)
    assert not thread.is_alive() and errors == []
    b.close()


def test_dispatchers_closed_from_another_thread_while_loop_waits() -> None:
    """Thousands of dispatchers added and closed by a worker while loop() serves the map.

    On uvloop, closing an fd that the loop's thread has a pending registration change
    for used to abort the process inside libuv; close() now hands such an fd over."""
    m: dict[int, Any] = {}
    keep_a, keep_b = socketpair()
    keeper = Collect(keep_a, m, 10**9)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            wait_until_served(m)
            for _ in range(3000):
                a, b = socket.socketpair()
                d = Collect(a, m, 10**9)
                d.close()
                assert a.fileno() == -1
                b.settimeout(5)
                assert b.recv(1) == b""  # the peer sees the close at once
                b.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            keeper.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    asyncore.loop(timeout=30, map=m)
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert m == {}
    keep_b.close()


def test_push_after_moving_into_another_threads_map_is_written_by_that_thread_at_once() -> None:
    """A handler moves its own async_chat into a map that another thread's loop() serves,
    waits until that thread has asked it (nothing to send yet), then pushes more than the
    socket takes: the other thread is told and writes the rest at once, not after its 30 s
    timeout.  (A push from an object's own handler goes unannounced only while one engine
    exists: the driver that dispatched it asks it again; another thread's driver would not.)"""
    home: dict[int, Any] = {}
    away: dict[int, Any] = {}
    keep_a, keep_b = socketpair()
    Collect(keep_a, away, 10**9)  # keeps ``away`` non-empty; never gets data
    a, b = socketpair()
    payload = b"q" * 4_000_000
    asked_away = threading.Event()
    moved: list[bool] = []
    server: list[threading.Thread] = []

    class Mover(asynchat.async_chat):
        def writable(self) -> bool:
            wants = super().writable()
            if not wants and threading.current_thread() in server:
                asked_away.set()  # the other thread's scan: registered without write interest
            return wants

        def collect_incoming_data(self, data: bytes) -> None:
            pass

        def found_terminator(self) -> None:
            sock = self.socket
            self.del_channel()
            self._map = away  # as in 3.11, add_channel(map) alone would leave _map as it was
            self.set_socket(sock)
            moved.append(asked_away.wait(5))
            self.push(payload)

    mover = Mover(a, map=home)
    mover.set_terminator(b"\n")
    thread, errors = in_thread(lambda: asyncore.loop(timeout=30, map=away))
    server.append(thread)
    received = bytearray()
    try:
        wait_until_served(away)
        b.sendall(b"go\n")
        asyncore.loop(timeout=5, map=home, count=1)
        assert moved == [True] and home == {}
        b.setblocking(True)
        b.settimeout(5)
        while len(received) < len(payload):
            chunk = b.recv(1 << 20)
            assert chunk, "the mover closed before sending everything"
            received += chunk
    except TimeoutError:
        raise AssertionError(f"{len(received)} of {len(payload)} bytes arrived; the rest waits") from None
    finally:
        asyncore.close_all(home)
        asyncore.close_all(away)
        thread.join(5)
        b.close()
        keep_b.close()
    assert received == payload
    assert not thread.is_alive() and errors == []
