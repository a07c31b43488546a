"""Hostile peers against ``async_chat``: a terminator that never comes, an int terminator
bigger than any buffer, and a slowloris crowd that sends its lines one byte at a time.

The first two are differential against the frozen 3.11 asynchat (results compared; how the
stream is cut into reads depends on kernel timing, so per-read events are summarised, not
traced). The documented behaviour (MIGRATION.md, "asynchat: ... warts kept"): nothing bounds
memory when a terminator never arrives; ``ac_in_buffer`` never holds more than one read plus
a partial terminator, but a handler that collects with asynchat's ``_collect_incoming_data`` helper keeps everything
in ``incoming``, which grows by exactly the bytes received.
"""

from __future__ import annotations

import errno
import socket
import time
from types import ModuleType
from typing import Any

import pytest

from asyncore_on_asyncio import asynchat, asyncore
from tests.differential.harness import Run, assert_same_behaviour, tracing
from tests.helpers import LOOPBACK

from ._support import fd_limit, registrations, sender

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])

IN_BUFFER = 65536
"""``async_chat.ac_in_buffer_size``: the most one read asks for."""


# --------------------------------------------------------------------------- no terminator


TERMINATOR = b"\r\n\r\n"
NEAR_MISS = b"a" * 997 + b"\r\n\r"
"""1000 bytes ending in three quarters of the terminator, followed by more "a": the reads cut
this stream anywhere, often inside a near miss, which must stay in ``ac_in_buffer``."""

NEVER_TERMINATED = NEAR_MISS * 8192  # 8,192,000 bytes
CHECKPOINTS = (1_000_000, 4_000_000, len(NEVER_TERMINATED))


def scenario_terminator_never_comes(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    class Chat(tracing(ach.async_chat, run)):  # type: ignore[misc]
        role = "chat"
        received = 0
        longest_in_buffer_after_read = 0
        largest_piece = 0

        def handle_read(self) -> None:
            super().handle_read()
            held = len(self.ac_in_buffer)
            self.longest_in_buffer_after_read = max(self.longest_in_buffer_after_read, held)

        def collect_incoming_data(self, data: bytes) -> None:
            self.received += len(data)
            self.largest_piece = max(self.largest_piece, len(data))
            self._collect_incoming_data(data)  # asynchat's helper: append to self.incoming

        def found_terminator(self) -> None:
            run.record(self.role, "found_terminator")

    mine, peer = run.tcp_pair()
    chat = Chat(mine, map=run.map)
    chat.set_terminator(TERMINATOR)
    pump = sender(peer, NEVER_TERMINATED)
    held = []  # at each checkpoint: bytes in ``incoming`` minus bytes collected so far

    def has_read(n: int) -> bool:
        pump()
        return chat.received + len(chat.ac_in_buffer) >= n

    for checkpoint in CHECKPOINTS:
        run.run_until(lambda c=checkpoint: has_read(c), f"{checkpoint} bytes read")
        held.append(sum(map(len, chat.incoming)) - chat.received)
    return (
        chat.received + len(chat.ac_in_buffer) == len(NEVER_TERMINATED),
        held == [0] * len(CHECKPOINTS),
        chat.longest_in_buffer_after_read < len(TERMINATOR),
        chat.largest_piece <= IN_BUFFER + len(TERMINATOR) - 1,
    )


@USE_POLL
def test_terminator_that_never_comes(use_poll: bool) -> None:
    """8 MB without the terminator, full of near misses: ``incoming`` grows by every byte
    read (8 MB held), ``ac_in_buffer`` holds at most 3 bytes between reads, no piece handed
    to ``collect_incoming_data`` is larger than one read plus the 3 bytes kept from the read
    before; found_terminator never runs."""
    outcome = assert_same_behaviour(scenario_terminator_never_comes, use_poll)
    assert outcome.trace == []
    assert outcome.result == (True, True, True, True)


# --------------------------------------------------------------------------- huge int terminator


ANNOUNCED = 50 * 1024 * 1024
SENT = 5 * 1024 * 1024


def scenario_huge_int_terminator(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    class Counter(tracing(ach.async_chat, run)):  # type: ignore[misc]
        """Counts what it is given instead of keeping it, as a bounded handler would."""

        role = "counter"
        received = 0
        pieces = 0
        largest_piece = 0

        def collect_incoming_data(self, data: bytes) -> None:
            self.received += len(data)
            self.pieces += 1
            self.largest_piece = max(self.largest_piece, len(data))

        def found_terminator(self) -> None:
            run.record(self.role, "found_terminator")

    mine, peer = run.tcp_pair()
    counter = Counter(mine, map=run.map)
    counter.set_terminator(ANNOUNCED)
    pump = sender(peer, bytes(SENT))
    run.run_until(lambda: pump() and counter.received == SENT, "5 MiB collected")
    return (
        counter.get_terminator(),
        counter.pieces >= SENT // IN_BUFFER,
        counter.largest_piece <= IN_BUFFER,
        len(counter.ac_in_buffer),
    )


@USE_POLL
def test_int_terminator_larger_than_any_buffer(use_poll: bool) -> None:
    """50 MiB announced, 5 MiB sent: collected in pieces of at most one read (64 KiB), never
    gathered into one buffer; the terminator counts down to the 45 MiB still expected."""
    outcome = assert_same_behaviour(scenario_huge_int_terminator, use_poll)
    assert outcome.trace == []
    assert outcome.result == (ANNOUNCED - SENT, True, True, 0)


# --------------------------------------------------------------------------- slowloris


SLOW_CLIENTS = 1000
DEADLINE = 20.0
FAST_DEADLINE = 2.0
"""Seconds the fast client may wait for its echo while the slow lines trickle in. It is
served in the first cycle or two after its line arrives; this bound only catches a server
that waits for the slow lines first."""


class LineEcho(asynchat.async_chat):
    def __init__(self, sock: socket.socket, map: dict[int, Any], server: Slowloris) -> None:
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")
        self.server = server
        self.parts: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.server.bytes_in += len(data)
        self.parts.append(data)

    def found_terminator(self) -> None:
        self.server.bytes_in += 1
        self.push(b"".join(self.parts) + b"\n")
        self.parts = []

    def handle_close(self) -> None:
        self.close()


class Slowloris(asyncore.dispatcher):
    def __init__(self, map: dict[int, Any]) -> None:
        super().__init__(map=map)
        self.bytes_in = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.bind((LOOPBACK, 0))
        self.listen(SLOW_CLIENTS + 24)

    def handle_accept(self) -> None:
        while (pair := self.accept()) is not None:
            LineEcho(pair[0], self._map, self)


def connect_all(address: Any, n: int, socks: list[socket.socket]) -> None:
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(sock)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one byte, one segment
        err = sock.connect_ex(address)
        assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)


def received_line(sock: socket.socket, into: bytearray) -> bool:
    try:
        into += sock.recv(4096)
    except BlockingIOError:
        pass
    return into.endswith(b"\n")


@pytest.mark.slow
@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_slowloris(use_poll: bool) -> None:
    """1000 connections each send a 16-byte line one byte at a time, round-robin (every
    round waits until the server has read the round's 1000 bytes). Halfway through, a fast
    client sends a whole line and gets its echo within FAST_DEADLINE; at the end every slow
    client gets exactly its own line back."""
    lines = [b"slow client %03d\n" % i for i in range(SLOW_CLIENTS)]
    width = len(lines[0])
    assert all(len(line) == width for line in lines)
    m: dict[int, Any] = {}
    socks: list[socket.socket] = []

    def step_until(predicate: Any, what: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
            asyncore.loop(timeout=0.05, use_poll=use_poll, map=m, count=1)

    with fd_limit(2 * SLOW_CLIENTS + 200):
        server = Slowloris(m)
        try:
            connect_all(server.socket.getsockname(), SLOW_CLIENTS, socks)
            step_until(lambda: len(m) == SLOW_CLIENTS + 1, "all slow clients accepted")
            fast_latency: float | None = None
            for offset in range(width):
                for sock, line in zip(socks, lines):
                    assert sock.send(line[offset : offset + 1]) == 1
                total = (offset + 1) * SLOW_CLIENTS
                step_until(lambda t=total: server.bytes_in >= t, f"round {offset} read")
                assert server.bytes_in == total
                if offset == width // 2:
                    fast = socket.create_connection(server.socket.getsockname(), timeout=5.0)
                    socks.append(fast)
                    fast.setblocking(False)
                    started = time.monotonic()
                    fast.sendall(b"fast client\n")
                    echo = bytearray()
                    step_until(
                        lambda f=fast, e=echo: received_line(f, e), "fast echo", FAST_DEADLINE
                    )
                    fast_latency = time.monotonic() - started
                    assert echo == b"fast client\n"
                    server.bytes_in -= len(echo)
            echoes = [bytearray() for _ in lines]

            def all_echoed() -> bool:
                for sock, echo in zip(socks, echoes):
                    if not echo.endswith(b"\n"):
                        received_line(sock, echo)
                return all(echo.endswith(b"\n") for echo in echoes)

            step_until(all_echoed, "every slow echo")
            wrong = [i for i, (line, echo) in enumerate(zip(lines, echoes)) if echo != line]
            assert wrong == [], f"{len(wrong)} slow clients got a wrong echo, e.g. {wrong[:5]}"
            for sock in socks:
                sock.close()
            step_until(lambda: len(m) == 1, "every handler closed")
        finally:
            for sock in socks:
                sock.close()
            server.close()
            asyncore.close_all(m)
    assert fast_latency is not None and fast_latency < FAST_DEADLINE
    assert registrations() == 0
