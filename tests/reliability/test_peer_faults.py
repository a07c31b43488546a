"""Peer faults mid-transfer, differential: each scenario runs on the frozen 3.11 asyncore and
on ours (tests/differential/harness.py), in both ``use_poll`` modes, and the callback
traces, results and output must be identical.

Faults: the peer resets (SO_LINGER 0, so the kernel sends RST) while the dispatcher still
has megabytes to send, or while unread data sits in its receive queue; the peer half-closes
(shutdown SHUT_WR) with data still buffered; a send fails with ECONNRESET or EPIPE.

Determinism: before a cycle that must see the fault, the scenario waits (outside the map)
until the kernel reports it (POLLERR/POLLHUP), then runs one cycle or runs until the map is
empty. Traces of streams whose cutting into send()/recv() calls depends on kernel timing
are compared with each run of I/O events collapsed into one marker.
"""

from __future__ import annotations

import errno
import socket
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.differential.harness import Run, assert_same_behaviour, tracing
from tests.helpers import fill

from ._support import collapse_runs, read_available, registrations, wait_for_error

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])

LARGE = 4 * 1024 * 1024
"""Bytes a dispatcher_with_send is asked to send before its peer resets."""

PEER_READS = 512 * 1024
"""Bytes the peer reads before it resets: the transfer is well under way."""


def collapse_io(trace: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return collapse_runs(trace, {"handle_write", "read"})


# --------------------------------------------------------------------------- reset while sending


def scenario_reset_while_sending_large(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """A dispatcher_with_send streams 4 MiB; the peer reads 512 KiB of it, then resets."""

    class Sender(tracing(ac.dispatcher_with_send, run)):  # type: ignore[misc]
        role = "sender"

        def handle_read(self) -> None:
            run.record(self.role, "got", self.recv(4096))

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")
            super().handle_write()

    mine, peer = run.tcp_pair()
    sender = Sender(mine, run.map)
    sender.send(b"s" * LARGE)  # sends up to 64 KiB at once; the rest waits in out_buffer
    received = bytearray()

    def peer_has_enough() -> bool:
        read_available(peer, received)
        return len(received) >= PEER_READS

    run.run_until(peer_has_enough, "the peer received 512 KiB")
    run.record("mid-transfer", len(sender.out_buffer) > 0, set(received) == {ord("s")})
    run.reset(peer)
    wait_for_error(mine)
    run.step()
    return len(run.map), sender.connected, sender.socket.fileno()


@USE_POLL
def test_reset_while_sending_large_buffer(use_poll: bool) -> None:
    outcome = assert_same_behaviour(
        scenario_reset_while_sending_large, use_poll, normalise=collapse_io
    )
    assert outcome.trace[:2] == [("sender", "handle_write*"), ("mid-transfer", True, True)]
    assert ("sender", "handle_close") in outcome.trace
    assert outcome.result == (0, False, -1)
    assert registrations() == 0


# --------------------------------------------------------------------------- reset while reading


CHUNK = 16 * 1024


def scenario_reset_while_reading(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """48 KiB arrive; the dispatcher reads 16 KiB; the peer resets with 32 KiB still unread."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", len(self.recv(CHUNK)))

    mine, peer = run.tcp_pair()
    reader = Reader(mine, run.map)
    peer.sendall(bytes(3 * CHUNK))  # fits the receive buffer: nothing needs the loop
    run.wait_pending(mine, 3 * CHUNK)
    run.step()
    run.reset(peer)
    wait_for_error(mine)
    run.run_until(lambda: not run.map, "reader closed")
    return reader.connected, reader.socket.fileno()


@USE_POLL
def test_reset_with_unread_data(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_reset_while_reading, use_poll)
    assert outcome.trace[0] == ("reader", "read", CHUNK)
    assert ("reader", "handle_close") in outcome.trace
    assert outcome.result == (False, -1)
    assert registrations() == 0


def scenario_reset_while_peer_streams(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """The peer fills both socket buffers, the dispatcher starts reading, the peer resets
    while its own send queue still holds data."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", len(self.recv(CHUNK)))

    mine, peer = run.tcp_pair()
    reader = Reader(mine, run.map)
    sent = fill(peer)
    run.wait_ready(mine, readable=True)
    run.step(3)
    run.record("peer had more to send", sent > 3 * CHUNK)
    run.reset(peer)
    wait_for_error(mine)
    run.run_until(lambda: not run.map, "reader closed")
    return reader.connected, reader.socket.fileno()


@USE_POLL
def test_reset_while_peer_streams(use_poll: bool) -> None:
    outcome = assert_same_behaviour(
        scenario_reset_while_peer_streams, use_poll, normalise=collapse_io
    )
    assert outcome.trace[:2] == [("reader", "read*"), ("peer had more to send", True)]
    assert ("reader", "handle_close") in outcome.trace
    assert outcome.result == (False, -1)


# --------------------------------------------------------------------------- half close


HALF_CLOSE_DATA = bytes(range(256)) * 192  # 48 KiB: fits the receive buffer


def scenario_half_close_buffered(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """The peer sends 48 KiB and shuts down writing before the dispatcher reads any of it;
    the dispatcher reads 4 KiB a cycle, sees EOF, answers on the open half, and closes."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"
        got = b""

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            data = self.recv(4096)
            run.record(self.role, "read", len(data))
            self.got += data

        def handle_close(self) -> None:
            run.record(self.role, "handle_close", len(self.got))
            run.record(self.role, "sent", self.send(b"bye"))
            self.close()

    mine, peer = run.tcp_pair()
    reader = Reader(mine, run.map)
    peer.sendall(HALF_CLOSE_DATA)
    peer.shutdown(socket.SHUT_WR)
    run.wait_pending(mine, len(HALF_CLOSE_DATA))
    run.run_until(lambda: not run.map, "reader closed")
    return reader.got == HALF_CLOSE_DATA, run.read_all(peer)


@USE_POLL
def test_half_close_with_buffered_data(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_half_close_buffered, use_poll)
    assert outcome.result == (True, b"bye")
    reads = [e for e in outcome.trace if e[1] == "read"]
    assert [n for _, _, n in reads[:12]] == [4096] * 12
    assert ("reader", "handle_close", len(HALF_CLOSE_DATA)) in outcome.trace


N_LINES = 4000


def scenario_half_close_async_chat(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
    """async_chat: 4000 lines and an unterminated tail arrive, then EOF; every line is
    found, the tail is still in ``incoming`` at handle_close, whose answer is pushed."""

    class Chat(ach.async_chat):  # type: ignore[misc]
        ac_in_buffer_size = 4096

        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.incoming: list[bytes] = []
            self.lines = 0

        def collect_incoming_data(self, data: bytes) -> None:
            self.incoming.append(data)

        def found_terminator(self) -> None:
            line = b"".join(self.incoming)
            self.incoming = []
            if line != b"line %d" % self.lines:
                run.record("chat", "bad line", self.lines, line)
            self.lines += 1

        def handle_close(self) -> None:
            run.record("chat", "handle_close", self.lines, b"".join(self.incoming))
            self.push(b"got %d\n" % self.lines)
            self.close()

    mine, peer = run.tcp_pair()
    Chat(mine, run.map)
    data = b"".join(b"line %d\n" % i for i in range(N_LINES)) + b"tail"
    peer.sendall(data)
    peer.shutdown(socket.SHUT_WR)
    run.wait_pending(mine, len(data))
    run.run_until(lambda: not run.map, "chat closed")
    return len(data), run.read_all(peer)


@USE_POLL
def test_half_close_async_chat(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_half_close_async_chat, use_poll)
    assert outcome.trace == [("chat", "handle_close", N_LINES, b"tail")]
    assert outcome.result[1] == b"got %d\n" % N_LINES


# --------------------------------------------------------------------------- send fails


def _errno_name(exc: BaseException | None) -> str | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return None


def _fault(kind: str, mine: socket.socket, peer: socket.socket, run: Run) -> None:
    if kind == "econnreset":
        run.reset(peer)
        wait_for_error(mine)
    elif kind == "epipe-after-reset":
        run.reset(peer)
        wait_for_error(mine)
        mine.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # consumes the pending ECONNRESET
    elif kind == "epipe-after-shutdown":
        mine.shutdown(socket.SHUT_WR)
    else:
        raise ValueError(kind)


FAULTS = ["econnreset", "epipe-after-reset", "epipe-after-shutdown"]
EXPECTED_ERRNO = {
    "econnreset": "ECONNRESET",
    "epipe-after-reset": "EPIPE",
    "epipe-after-shutdown": "EPIPE",
}


def make_send_scenario(kind: str, api: str) -> Any:
    """``api``: which call meets the fault.

    * ``loop``: ``dispatcher.send`` from ``handle_write``, inside a loop cycle;
    * ``with_send``: ``dispatcher_with_send.send`` called from outside the loop;
    * ``push``: ``async_chat.push`` called from outside the loop.
    """

    def scenario(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
        base = {
            "loop": ac.dispatcher,
            "with_send": ac.dispatcher_with_send,
            "push": ach.async_chat,
        }[api]

        class Sender(tracing(base, run)):  # type: ignore[misc]
            role = "sender"
            armed = False

            def readable(self) -> bool:
                return False  # the fault must meet send(), not recv()

            def writable(self) -> bool:
                return self.armed

            def handle_write(self) -> None:
                run.record(self.role, "sent", self.send(b"x" * 100))

            def handle_close(self) -> None:
                run.record(self.role, "handle_close", _errno_name(sys.exc_info()[1]))
                self.close()

        mine, peer = run.tcp_pair()
        sender = Sender(mine, run.map)
        _fault(kind, mine, peer, run)
        if api == "loop":
            sender.armed = True
            run.step()
        elif api == "with_send":
            ac.dispatcher_with_send.send(sender, b"y" * 100)
        else:
            sender.push(b"z" * 100)
        run.record("after", len(run.map), sender.socket.fileno())
        return None

    scenario.__name__ = f"scenario_send_{kind}_{api}"
    return scenario


@USE_POLL
@pytest.mark.parametrize("api", ["loop", "with_send", "push"])
@pytest.mark.parametrize("kind", FAULTS)
def test_send_failure_becomes_handle_close(kind: str, api: str, use_poll: bool) -> None:
    outcome = assert_same_behaviour(make_send_scenario(kind, api), use_poll)
    # dispatcher.send() calls handle_close() inside its except block, as 3.11 did.
    assert outcome.trace[0] == ("sender", "handle_close", EXPECTED_ERRNO[kind])
    assert outcome.trace[-1] == ("after", 0, -1)
    assert registrations() == 0
