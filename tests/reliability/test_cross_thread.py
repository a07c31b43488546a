"""Dispatchers added to and removed from a map by another thread while ``loop()`` runs in
this one, with a long ``timeout``: every change must wake the waiting cycle.

The worker thread, for each round: adds a dispatcher that must receive 5 bytes and then
closes itself (added there, removed here); adds an idle dispatcher and removes it again
from the worker with ``del_channel()`` (added and removed there). Sockets are only ever
closed in the loop's thread (the removed ones after ``loop()`` returns): closing an fd in
one thread while another thread's event loop may be registering it is not exercised here.
A missed wakeup would cost the 30 s timeout of a cycle, so the overall deadline catches it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from asyncore_on_asyncio import asyncore
from tests.helpers import socketpair

from ._support import registrations

ROUNDS = 200
LOOP_TIMEOUT = 30.0
"""loop()'s timeout: much longer than the whole test may take."""
DEADLINE = 20.0


class Collect(asyncore.dispatcher):
    def __init__(self, sock: Any, map: dict[int, Any], expect: int) -> None:
        super().__init__(sock, map=map)
        self.expect = expect
        self.got = b""
        self.done = threading.Event()
        self.thread: int | None = None

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        self.thread = threading.get_ident()
        self.got += self.recv(100)
        if len(self.got) >= self.expect:
            self.close()
            self.done.set()

    def handle_close(self) -> None:
        self.close()


SPURIOUS: list[str] = []


class Idle(asyncore.dispatcher):
    """Wants to read, but its peer never sends: any event it gets is a bug."""

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        SPURIOUS.append(f"read on fd {self._fileno}")

    def handle_close(self) -> None:
        SPURIOUS.append(f"close on fd {self._fileno}")
        self.close()


def test_map_changed_from_another_thread_while_loop_runs_here() -> None:
    SPURIOUS.clear()
    m: dict[int, Any] = {}
    keeper_sock, keeper_peer = socketpair()
    keeper = Idle(keeper_sock, map=m)  # keeps the map non-empty until the worker is done
    served: list[Collect] = []
    removed: list[Any] = []  # sockets of dispatchers removed by the worker, closed here
    errors: list[BaseException] = []
    loop_started = threading.Event()

    def worker() -> None:
        try:
            loop_started.wait(DEADLINE)
            end = time.monotonic() + DEADLINE
            for _ in range(ROUNDS):
                a, b = socketpair()
                c = Collect(a, m, 5)
                idle_a, idle_b = socketpair()
                idle = Idle(idle_a, map=m)
                b.send(b"hello")
                idle.del_channel()  # removed by this thread while the loop may be waiting on it
                removed.extend((idle_a, idle_b))
                ok = c.done.wait(max(0.0, end - time.monotonic()))
                b.close()
                served.append(c)
                if not ok:
                    raise AssertionError(f"round {len(served)}: not served before the deadline")
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            keeper.del_channel()  # the map is now empty: loop() must return

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        loop_started.set()
        asyncore.loop(timeout=LOOP_TIMEOUT, map=m)
        elapsed = time.monotonic() - t0
    finally:
        thread.join(DEADLINE)
        for sock in (*removed, keeper_sock, keeper_peer):
            sock.close()
    assert not thread.is_alive()
    assert errors == []
    assert SPURIOUS == []
    assert elapsed < DEADLINE
    assert len(served) == ROUNDS
    me = threading.get_ident()
    assert all(c.got == b"hello" and c.thread == me for c in served)
    assert m == {}
    assert registrations() == 0
