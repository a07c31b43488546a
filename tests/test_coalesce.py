"""``async_chat.coalesce_pushes``: replies pushed while one read is split go out together.

Off by default (3.11 sends once per ``push()``).  When on, the bytes on the wire and
their order must be exactly what 3.11 sends, on every path: producers and
``close_when_done()`` in the fifo, ``close()`` inside a handler, an exception in a
handler, a peer that does not read (partial sends), a subclass with its own ``send()``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from asyncore_on_asyncio import asynchat
from tests.helpers import drain, load_frozen, run_until, socketpair, wait_readable


class CountingSocket:
    """A socket whose ``send()`` calls are counted (the channel's own send() stays 3.11's)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends: list[int] = []

    def send(self, data: bytes) -> int:
        sent = self._sock.send(data)
        self.sends.append(sent)
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def make_echo(module: Any, coalesce: bool, on_line: Callable[[Any, bytes], None] | None = None) -> type:
    class Echo(module.async_chat):  # type: ignore[misc,name-defined]
        def __init__(self, sock: Any, map: dict[int, Any]) -> None:
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            self.buffer: list[bytes] = []
            self.coalesce_pushes = coalesce

        def collect_incoming_data(self, data: bytes) -> None:
            self.buffer.append(data)

        def found_terminator(self) -> None:
            line = b"".join(self.buffer)
            self.buffer = []
            if on_line is not None:
                on_line(self, line)
            else:
                self.push(line.upper() + b"\n")

    return Echo


def read_to_eof(sock: socket.socket, map: dict[int, Any], module: Any) -> bytes:
    received = bytearray()
    eof = False

    def closed() -> bool:
        nonlocal eof
        while not eof:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            eof = not data
            received.extend(data)
        return eof

    run_until(closed, map=map, module=module)
    return bytes(received)


def serve_lines(
    module: Any,
    coalesce: bool,
    payload: bytes,
    expect: int | None,
    on_line: Callable[[Any, bytes], None] | None = None,
) -> tuple[bytes, list[int]]:
    """Send ``payload`` in one write; read ``expect`` bytes back (``None``: up to EOF)."""
    client, server = socketpair()
    m: dict[int, Any] = {}
    chat = make_echo(module, coalesce, on_line)(server, m)
    counting = CountingSocket(server)
    chat.socket = counting
    try:
        client.sendall(payload)
        wait_readable(server)
        if expect is None:
            data = read_to_eof(client, m, module.asyncore)
        else:
            data = drain(client, expect, map=m, module=module.asyncore)
    finally:
        module.asyncore.close_all(m)
        client.close()
    return data, counting.sends


LINES = b"".join(b"line %d\n" % i for i in range(50))
ECHOED = LINES.upper()


def test_off_by_default_one_send_per_push() -> None:
    assert asynchat.async_chat.coalesce_pushes is False
    data, sends = serve_lines(asynchat, False, LINES, len(ECHOED))
    assert data == ECHOED
    assert len(sends) == 50


def test_replies_of_one_read_go_out_in_one_send_after_the_first() -> None:
    data, sends = serve_lines(asynchat, True, LINES, len(ECHOED))
    assert data == ECHOED
    # The first reply at once (as 3.11), the other 49 joined when handle_read returns.
    assert sends == [len(b"LINE 0\n"), len(ECHOED) - len(b"LINE 0\n")]


def test_bytes_match_3_11_with_producers_and_close_when_done() -> None:
    """Entries that are not plain bytes (producers, empty buffers, close_when_done's None)
    keep their place: the stream and the close are exactly 3.11's."""

    def on_line(chat: Any, line: bytes) -> None:
        number = int(line.split()[1])
        if number == 49:
            chat.push(b"bye\n")
            chat.close_when_done()
            return
        if number % 7 == 3:
            chat.push_with_producer(chat_module.simple_producer(b"<produced %d>" % number, 4))
        elif number % 11 == 5:
            chat.push(b"")
        chat.push(line.upper() + b"\n")

    _, frozen_chat = load_frozen()
    results = []
    for chat_module, coalesce in ((frozen_chat, False), (asynchat, False), (asynchat, True)):
        results.append(serve_lines(chat_module, coalesce, LINES, None, on_line)[0])
    assert results[0].endswith(b"bye\n")
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_close_in_a_handler_sends_the_held_replies_first() -> None:
    def on_line(chat: Any, line: bytes) -> None:
        chat.push(line.upper() + b"\n")
        if line == b"line 30":
            chat.close()

    expected = b"".join(b"LINE %d\n" % i for i in range(31))
    data, _ = serve_lines(asynchat, True, LINES, None, on_line)
    assert data == expected


def test_close_through_dispatcher_close_also_sends_them() -> None:
    """Subclasses written for 3.11 often call ``asyncore.dispatcher.close(self)`` directly."""

    def on_line(chat: Any, line: bytes) -> None:
        chat.push(line.upper() + b"\n")
        if line == b"line 30":
            asynchat.asyncore.dispatcher.close(chat)

    expected = b"".join(b"LINE %d\n" % i for i in range(31))
    data, _ = serve_lines(asynchat, True, LINES, None, on_line)
    assert data == expected


def test_discard_buffers_in_a_handler_keeps_the_held_replies() -> None:
    """3.11 had sent them before discard_buffers() dropped what was still queued."""

    def on_line(chat: Any, line: bytes) -> None:
        chat.push(line.upper() + b"\n")
        if line == b"line 30":
            chat.discard_buffers()  # also drops lines 31.. of this read, as in 3.11
            chat.close_when_done()

    expected = b"".join(b"LINE %d\n" % i for i in range(31))
    _, frozen_chat = load_frozen()
    assert serve_lines(frozen_chat, False, LINES, None, on_line)[0] == expected
    assert serve_lines(asynchat, True, LINES, None, on_line)[0] == expected


def test_exception_in_a_handler_sends_the_held_replies_before_handle_error() -> None:
    client, server = socketpair()
    m: dict[int, Any] = {}
    seen_by_peer: list[bytes] = []

    class Failing(make_echo(asynchat, True)):  # type: ignore[misc]
        def found_terminator(self) -> None:
            super().found_terminator()
            if self.producer_fifo and b"LINE 9" in self.producer_fifo[-1]:
                raise RuntimeError("boom")

        def handle_error(self) -> None:
            wait_readable(client)
            seen_by_peer.append(client.recv(1 << 16))
            self.close()

    Failing(server, m)
    try:
        client.sendall(LINES)
        wait_readable(server)
        run_until(lambda: bool(seen_by_peer), map=m)
    finally:
        asynchat.asyncore.close_all(m)
        client.close()
    assert seen_by_peer == [b"".join(b"LINE %d\n" % i for i in range(10))]


def test_a_peer_that_does_not_read_gets_everything_later_in_order() -> None:
    """Partial sends: what the kernel does not take stays in the fifo, in order."""
    replies = [bytes([65 + i % 26]) * 5_000 for i in range(100)]

    def on_line(chat: Any, line: bytes) -> None:
        number = int(line.split()[1])
        if number == 0:
            # Small kernel buffers, so that the joined send is cut short.
            chat.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        chat.push(replies[number])

    payload = b"".join(b"line %d\n" % i for i in range(100))
    data, sends = serve_lines(asynchat, True, payload, sum(map(len, replies)), on_line)
    assert data == b"".join(replies)
    assert sends[1] < 13 * 5_000  # the joined send was partial ...
    assert len(sends) < 100  # ... and the rest still went out in few sends


def test_a_channel_with_its_own_send_is_not_coalesced() -> None:
    calls: list[int] = []

    class OwnSend(make_echo(asynchat, True)):  # type: ignore[misc]
        def send(self, data: bytes) -> int:
            calls.append(len(data))
            sent: int = super().send(data)
            return sent

    client, server = socketpair()
    m: dict[int, Any] = {}
    OwnSend(server, m)
    try:
        client.sendall(LINES)
        wait_readable(server)
        assert drain(client, len(ECHOED), map=m) == ECHOED
    finally:
        asynchat.asyncore.close_all(m)
        client.close()
    assert len(calls) == 50


@pytest.mark.loop_free
@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("", False)])
def test_environment_variable_sets_the_default(value: str, expected: bool) -> None:
    env = dict(os.environ, ASYNCORE_ON_ASYNCIO_COALESCE_PUSHES=value)
    out = subprocess.run(
        [sys.executable, "-c", "from asyncore_on_asyncio import asynchat; print(asynchat.async_chat.coalesce_pushes)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == str(expected)
