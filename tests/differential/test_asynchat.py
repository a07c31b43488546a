"""Differential tests of async_chat: terminator handling at every split of the input.

The socket scenarios feed a chat channel from a plain peer, each split being two
sends with one loop cycle after each (so one recv() per part: the kernel holds the
whole part before the cycle runs).  The hypothesis test needs no socket: a subclass
whose ``recv`` hands out the next chunk, driven by calling ``handle_read()``.
"""

from __future__ import annotations

import itertools
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import Run, assert_same_behaviour, frozen_modules, our_modules

# --------------------------------------------------------------------------- over sockets


def _split_everywhere(run: Run, chat: Any, peer: socket.socket, message: bytes) -> None:
    for i in range(1, len(message)):
        run.record("split", i)
        for part in (message[:i], message[i:]):
            peer.sendall(part)
            run.wait_pending(chat.socket, len(part))
            run.step()
            run.record("terminator", chat.get_terminator())


def _finish(run: Run, chat: Any, peer: socket.socket) -> bytes:
    chat.push(b"bye\n")
    chat.close_when_done()
    run.run_until(lambda: not run.map, "chat closed")
    return run.read_all(peer)


DOT_TERMINATOR = b"\r\n.\r\n"
# "\r\n" inside the data is a prefix of the terminator: find_prefix_at_end territory.
DOT_MESSAGE = b"a\r\nb\r\n.\r\nc\r\n.\r\n"


def scenario_multibyte_terminator(ac: Any, ach: Any, run: Run) -> Any:
    class Chat(ach.async_chat):  # type: ignore[misc]
        def collect_incoming_data(self, data: bytes) -> None:
            run.record("collect", data)

        def found_terminator(self) -> None:
            run.record("found", self.get_terminator())
            self.push(b"ok\n")

        def handle_close(self) -> None:
            run.record("handle_close")
            super().handle_close()

    mine, peer = run.tcp_pair()
    chat = Chat(mine, run.map)
    chat.set_terminator(DOT_TERMINATOR)
    _split_everywhere(run, chat, peer, DOT_MESSAGE)
    return _finish(run, chat, peer)


# A length-prefixed protocol: a b"\r\n"-terminated header giving the body's length,
# then an integer terminator for the body.
LENGTH_MESSAGE = b"5\r\nhello3\r\nabc"


def scenario_int_terminator(ac: Any, ach: Any, run: Run) -> Any:
    class Chat(ach.async_chat):  # type: ignore[misc]
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map)
            self.parts: list[bytes] = []
            self.set_terminator(b"\r\n")

        def collect_incoming_data(self, data: bytes) -> None:
            run.record("collect", data)
            self.parts.append(data)

        def found_terminator(self) -> None:
            run.record("found", self.get_terminator())
            data = b"".join(self.parts)
            self.parts = []
            if isinstance(self.get_terminator(), bytes):
                self.set_terminator(int(data))
            else:
                self.push(data[::-1] + b"\n")
                self.set_terminator(b"\r\n")

        def handle_close(self) -> None:
            run.record("handle_close")
            super().handle_close()

    mine, peer = run.tcp_pair()
    chat = Chat(mine, run.map)
    _split_everywhere(run, chat, peer, LENGTH_MESSAGE)
    return _finish(run, chat, peer)


def test_multibyte_terminator(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_multibyte_terminator, use_poll)
    assert outcome.result == b"ok\n" * (2 * (len(DOT_MESSAGE) - 1)) + b"bye\n"
    assert outcome.trace[-1] == ("handle_close",)


def test_int_terminator(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_int_terminator, use_poll)
    assert outcome.result == b"olleh\ncba\n" * (len(LENGTH_MESSAGE) - 1) + b"bye\n"
    assert ("found", 0) in outcome.trace


def scenario_producers(ac: Any, ach: Any, run: Run) -> Any:
    """What push() and push_with_producer() queue, and how initiate_send() drains it:
    one send() per write event, in ac_out_buffer_size pieces; recv() in
    ac_in_buffer_size pieces; use_encoding's str terminator."""

    class Chat(ach.async_chat):  # type: ignore[misc]
        ac_in_buffer_size = 4
        ac_out_buffer_size = 8
        use_encoding = 1

        def collect_incoming_data(self, data: bytes) -> None:
            run.record("collect", data)

        def found_terminator(self) -> None:
            run.record("found")

        def send(self, data: bytes) -> int:
            sent = super().send(data)
            run.record("send", bytes(data), sent)
            return int(sent)

        def handle_close(self) -> None:
            run.record("handle_close")
            super().handle_close()

    mine, peer = run.tcp_pair()
    chat = Chat(mine, run.map)
    chat.set_terminator("\n")
    run.record("terminator", chat.get_terminator())
    peer.sendall(b"line1\nline2\n")
    run.wait_pending(mine, 12)
    run.run_until(lambda: run.trace.count(("found",)) == 2, "both lines read")

    chat.push(b"0123456789abcdefghij")  # longer than ac_out_buffer_size: queued in pieces
    run.record("queued", len(chat.producer_fifo))
    chat.push_with_producer(ach.simple_producer(b"x" * 20, buffer_size=7))
    chat.push(memoryview(b"mv"))
    chat.push(bytearray(b"ba"))
    chat.push(b"")
    chat.close_when_done()
    run.record("queued", len(chat.producer_fifo))
    run.run_until(lambda: not run.map, "chat closed")
    return run.read_all(peer)


def test_producers(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_producers, use_poll)
    assert outcome.result == b"0123456789abcdefghij" + b"x" * 20 + b"mvba"
    assert outcome.trace[0] == ("terminator", b"\n")


# --------------------------------------------------------------------------- no sockets


def feed(asynchat_mod: Any, plan: list[Any], chunks: list[bytes]) -> list[Any]:
    """Feed ``chunks`` to an async_chat through ``recv``; ``found_terminator`` switches
    to the next terminator of ``plan`` (and keeps the last one when ``plan`` runs out).
    Returns every collect_incoming_data/found_terminator call, in order."""
    calls: list[Any] = []
    pending = list(plan)

    class Chat(asynchat_mod.async_chat):  # type: ignore[misc]
        def recv(self, buffer_size: int) -> bytes:
            return chunks.pop(0)

        def collect_incoming_data(self, data: bytes) -> None:
            calls.append(("collect", bytes(data)))

        def found_terminator(self) -> None:
            calls.append(("found", self.get_terminator()))
            if pending:
                self.set_terminator(pending.pop(0))

    chat = Chat(sock=None, map={})
    chat.set_terminator(pending.pop(0))
    while chunks:
        chat.handle_read()
    calls.append(("terminator", chat.get_terminator()))
    return calls


SYMBOLS = st.sampled_from([b"a", b"b", b"\r", b"\n"])  # few symbols: many near-misses
small_bytes = st.lists(SYMBOLS, max_size=12).map(b"".join)
terminators = st.one_of(
    st.lists(SYMBOLS, min_size=1, max_size=5).map(b"".join),
    st.integers(min_value=0, max_value=10),
    st.none(),
    st.just(b""),
)


@st.composite
def chat_inputs(draw: st.DrawFn) -> tuple[list[Any], list[bytes]]:
    plan = draw(st.lists(terminators, min_size=1, max_size=8))
    stream = b""
    for term in plan:
        stream += draw(small_bytes)
        if isinstance(term, bytes):
            stream += term
        elif isinstance(term, int):
            stream += b"n" * term
    stream += draw(small_bytes)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return plan, chunks


# No event loop runs. The suite's autouse guards are function-scoped fixtures: they check
# the whole test, not each example.
@pytest.mark.loop_free
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chat_inputs())
def test_random_streams(inputs: tuple[list[Any], list[bytes]]) -> None:
    plan, chunks = inputs
    expected = feed(frozen_modules()[1], plan, list(chunks))
    assert feed(our_modules()[1], plan, list(chunks)) == expected
