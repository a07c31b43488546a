"""asynchat: input splitting, output queueing, and the deliberate differences from 3.11.

Most tests are differential and need no sockets: the same byte chunks are fed through
``handle_read`` (with ``recv`` replaced by a script) to our ``async_chat`` and to the
frozen 3.11 copy (``pyasynchat``), and the ordered traces of callbacks, arguments and
observed buffer state must be equal.  The output side is compared the same way with a
scripted ``send``.  End-to-end tests at the bottom run real loopback sockets through
``asyncore.loop``.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import itertools
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncore_on_asyncio import _scan, asynchat, asyncore
from tests.helpers import drain, load_frozen, run_until, socketpair, wait_readable

# Hypothesis: no example database in the work tree, no deadline (two loop kinds, CI
# noise), and the autouse leak-guard fixtures are safe to share between examples.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def frozen() -> ModuleType:
    return load_frozen()[1]


IMPLEMENTATIONS = ("ours", "frozen")


def chat_module(name: str) -> ModuleType:
    return asynchat if name == "ours" else load_frozen()[1]


# --------------------------------------------------------------------------- input side

Reaction = Callable[[Any, str, int], None]
"""Called as ``reaction(chat, event, index)`` after each callback is recorded;
``event`` is ``"collect"`` or ``"found"``, ``index`` counts callbacks from 0."""


def reader_class(module: ModuleType) -> type:
    """An ``async_chat`` whose ``recv`` replays a script and which records a trace."""

    base: Any = module.async_chat

    class Reader(base):  # type: ignore[misc]
        def __init__(
            self,
            chunks: Iterable[object],
            reaction: Reaction | None = None,
            observe: bool = True,
        ) -> None:
            module.async_chat.__init__(self, map={})
            self.script = list(chunks)
            self.reaction = reaction
            self.observe = observe  # read ac_in_buffer inside callbacks?
            self.events = 0
            self.trace: list[tuple[Any, ...]] = []

        def recv(self, buffer_size: int) -> object:
            self.trace.append(("recv", buffer_size))
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item

        def _state(self) -> tuple[Any, ...]:
            return (self.ac_in_buffer, self.terminator) if self.observe else ()

        def _react(self, event: str) -> None:
            index = self.events
            self.events += 1
            if self.reaction is not None:
                self.reaction(self, event, index)

        def collect_incoming_data(self, data: bytes) -> None:
            self.trace.append(("collect", type(data).__name__, bytes(data), *self._state()))
            self._collect_incoming_data(data)
            self._react("collect")

        def found_terminator(self) -> None:
            self.trace.append(("found", self._get_data(), *self._state()))
            self._react("found")

        def handle_error(self) -> None:
            self.trace.append(("handle_error", repr(sys.exc_info()[1])))

        def handle_close(self) -> None:
            self.trace.append(("handle_close",))
            module.async_chat.handle_close(self)

    return Reader


def read_trace(
    name: str,
    chunks: Sequence[object],
    terminator: object,
    reaction: Reaction | None = None,
    observe: bool = True,
    configure: Callable[[Any], None] | None = None,
) -> list[tuple[Any, ...]]:
    """Feed ``chunks`` one ``handle_read`` each; return the trace."""
    chat = reader_class(chat_module(name))(chunks, reaction, observe)
    if configure is not None:
        configure(chat)
    chat.set_terminator(terminator)
    for _ in chunks:
        try:
            chat.handle_read()
        except Exception as exc:
            chat.trace.append(("raised", type(exc).__name__))
        chat.trace.append(("after", chat.ac_in_buffer, chat.terminator, list(chat.incoming)))
    trace: list[tuple[Any, ...]] = chat.trace
    return trace


def same_reads(
    chunks: Sequence[object],
    terminator: object,
    reaction: Reaction | None = None,
    observe: bool = True,
    configure: Callable[[Any], None] | None = None,
) -> list[tuple[Any, ...]]:
    """Run both implementations, assert equal traces, return ours."""
    ours = read_trace("ours", chunks, terminator, reaction, observe, configure)
    theirs = read_trace("frozen", chunks, terminator, reaction, observe, configure)
    assert ours == theirs
    return ours


def found_messages(trace: list[tuple[Any, ...]]) -> list[bytes]:
    return [entry[1] for entry in trace if entry[0] == "found"]


def cuts(data: bytes, positions: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(positions), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


STREAM = b"HELO x\r\n\r\nMAIL a\r\nDATA\r\nline\r.\r\n.\r\n\r\r\nQUIT\r\n"


@pytest.mark.loop_free
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"\r\n.\r\n"])
def test_string_terminator_split_at_every_boundary(terminator: bytes) -> None:
    *expected, tail = STREAM.split(terminator)
    for observe in (False, True):
        for i in range(len(STREAM) + 1):
            trace = same_reads(cuts(STREAM, [i]), terminator, observe=observe)
            assert found_messages(trace) == expected
            assert b"".join(trace[-1][3]) + trace[-1][1] == tail
        trace = same_reads([bytes([b]) for b in STREAM], terminator, observe=observe)
        assert found_messages(trace) == expected


@pytest.mark.loop_free
@pytest.mark.parametrize("terminator", [b"\r\n", b"\r\n.\r\n", b"abab"])
def test_string_terminator_split_at_every_pair_of_boundaries(terminator: bytes) -> None:
    stream = b"ab" + terminator + b"aba" + terminator + terminator + b"x" + terminator[:-1]
    *expected, _ = stream.split(terminator)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            trace = same_reads(cuts(stream, [i, j]), terminator, observe=(i + j) % 2 == 0)
            assert found_messages(trace) == expected


@pytest.mark.loop_free
def test_partial_terminator_stays_in_ac_in_buffer() -> None:
    trace = same_reads([b"hello\r\n.\r", b"\nworld\r\n.\r\n"], b"\r\n.\r\n")
    assert trace[:4] == [
        ("recv", 65536),
        ("collect", "bytes", b"hello", b"hello\r\n.\r", b"\r\n.\r\n"),
        ("after", b"\r\n.\r", b"\r\n.\r\n", [b"hello"]),
        ("recv", 65536),
    ]
    assert found_messages(trace) == [b"hello", b"world"]


@pytest.mark.loop_free
@pytest.mark.parametrize("tail", [b"", b"\r\n.", b"unfinished"], ids=["all-consumed", "partial-terminator", "partial-message"])
def test_a_read_keeps_no_reference_to_the_consumed_chunk(tail: bytes) -> None:
    """After handle_read(), the channel holds what is left of the received chunk (at most a
    partial terminator, or the unfinished message), not the chunk itself: a large read
    of many whole messages must not stay in memory until the next one."""
    chunk = b"line\r\n.\r\n" * 100_000 + tail
    chat = reader_class(asynchat)([chunk], observe=False)
    chat.set_terminator(b"\r\n.\r\n")
    before = sys.getrefcount(chunk) - 1  # the script's reference goes to the channel
    chat.handle_read()
    assert found_messages(chat.trace).count(b"line") == 100_000
    assert sys.getrefcount(chunk) == before
    assert chat.ac_in_buffer == (b"" if tail == b"unfinished" else tail)


@pytest.mark.loop_free
def test_empty_data_before_terminator_is_not_collected() -> None:
    trace = same_reads([b"\r\n\r\nx\r\n"], b"\r\n")
    assert [entry[0] for entry in trace] == ["recv", "found", "found", "collect", "found", "after"]


@pytest.mark.loop_free
@pytest.mark.parametrize("n", [1, 3, 5, 11, 12, 13])
def test_int_terminator(n: int) -> None:
    data = b"0123456789ab"
    for i in range(len(data) + 1):
        trace = same_reads(cuts(data, [i]), n)
        if n <= len(data):
            assert found_messages(trace) == [data[:n]]
            # After the count is reached the terminator is 0: the rest is collected only.
            assert trace[-1][2] == 0
            assert b"".join(trace[-1][3]) == data[n:]
        else:
            assert found_messages(trace) == []
            assert trace[-1][2] == n - len(data)


@pytest.mark.loop_free
def test_int_terminator_larger_than_ac_in_buffer_size() -> None:
    def small(chat: Any) -> None:
        chat.ac_in_buffer_size = 4

    data = bytes(range(30))
    trace = same_reads(cuts(data, range(4, 30, 4)), 25, configure=small)
    assert {entry[1] for entry in trace if entry[0] == "recv"} == {4}
    assert found_messages(trace) == [data[:25]]
    # The countdown is visible between reads, as in 3.11.
    assert [entry[2] for entry in trace if entry[0] == "after"][:3] == [21, 17, 13]


@pytest.mark.loop_free
@pytest.mark.parametrize("terminator", [0, None, b""])
def test_false_terminator_collects_everything(terminator: object) -> None:
    trace = same_reads([b"ab\r\n", b"", b"\r\ncd"], terminator)
    assert found_messages(trace) == []
    assert trace[-1][3] == [b"ab\r\n", b"\r\ncd"]


@pytest.mark.loop_free
def test_negative_int_terminator_is_rejected(frozen: ModuleType) -> None:
    for module in (asynchat, frozen):
        chat = reader_class(module)([])
        with pytest.raises(ValueError, match="must be positive"):
            chat.set_terminator(-1)


@pytest.mark.loop_free
def test_str_terminator_without_use_encoding_fails_like_311() -> None:
    trace = same_reads([b"a\r\n"], "\r\n")
    assert ("raised", "TypeError") in trace


@pytest.mark.loop_free
def test_missing_terminator_fails_like_311(frozen: ModuleType) -> None:
    for module in (asynchat, frozen):
        chat = reader_class(module)([b"x"])
        with pytest.raises(AttributeError):
            chat.handle_read()


def http_like(chat: Any, event: str, index: int) -> None:
    """Headers end at a blank line and give a body length; the body is an int terminator."""
    if event != "found":
        return
    message = chat.trace[-1][1]
    if chat.get_terminator() == b"\r\n\r\n":
        length = int(message.split(b":")[1])
        chat.set_terminator(length if length else b"\r\n\r\n")
    else:
        chat.set_terminator(b"\r\n\r\n")


HTTP_STREAM = b"len:5\r\n\r\nhelloLEN:0\r\n\r\nlen:3\r\n\r\n\r\n\r"


@pytest.mark.loop_free
def test_terminator_changed_inside_found_terminator() -> None:
    for observe in (False, True):
        for i in range(len(HTTP_STREAM) + 1):
            trace = same_reads(cuts(HTTP_STREAM, [i]), b"\r\n\r\n", http_like, observe)
            assert found_messages(trace) == [b"len:5", b"hello", b"LEN:0", b"len:3", b"\r\n\r"]


@pytest.mark.loop_free
def test_discard_buffers_inside_found_terminator_drops_the_rest() -> None:
    def discard_second(chat: Any, event: str, index: int) -> None:
        if event == "found" and chat.trace[-1][1] == b"b":
            chat.discard_buffers()

    trace = same_reads([b"a\nb\nc\nd", b"e\n"], b"\n", discard_second)
    assert found_messages(trace) == [b"a", b"b", b"e"]


@pytest.mark.loop_free
def test_close_inside_found_terminator_does_not_stop_processing() -> None:
    def close_first(chat: Any, event: str, index: int) -> None:
        if index == 0:
            chat.close()

    trace = same_reads([b"a\nb\nc\n"], b"\n", close_first)
    assert found_messages(trace) == [b"a", b"b", b"c"]


@pytest.mark.loop_free
def test_ac_in_buffer_assigned_inside_callbacks() -> None:
    def assign(chat: Any, event: str, index: int) -> None:
        if index == 1:  # in collect: 3.11 then slices the *new* buffer
            chat.ac_in_buffer = b"XYZ\nW"
        if index == 4:
            chat.ac_in_buffer = b"\r"

    for terminator in (b"\n", 2, b"\r\n"):
        same_reads([b"aa\nbb\ncc\ndd\n", b"ee\n"], terminator, assign)


@pytest.mark.loop_free
def test_the_same_chunk_assigned_back_is_split_again() -> None:
    """A found_terminator() that assigns ``ac_in_buffer`` the very bytes object it was read
    from makes 3.11 split it again: the chunk is not taken for consumed because it is the
    same object as before (the callbacks do not look at the buffer otherwise)."""

    def give_back(chat: Any, event: str, index: int) -> None:
        if index == 0:
            chat.saved = chat.ac_in_buffer  # the whole chunk: nothing consumed yet
        elif index == 1:
            chat.ac_in_buffer = chat.saved

    trace = same_reads([b"one\n"], b"\n", give_back, observe=False)
    assert found_messages(trace) == [b"one", b"one"]


@pytest.mark.loop_free
def test_ac_in_buffer_reads_as_bytes_everywhere() -> None:
    chat = reader_class(asynchat)([b"abc\nde\nf"])
    chat.set_terminator(b"\n")
    assert chat.ac_in_buffer == b""
    chat.handle_read()
    assert type(chat.ac_in_buffer) is bytes
    assert chat.ac_in_buffer == b""  # no partial terminator at the end: all collected
    seen = {"collect": 3, "found": 2}  # where each trace entry keeps ac_in_buffer
    assert [entry[seen[entry[0]]] for entry in chat.trace if entry[0] in seen] == [
        b"abc\nde\nf",
        b"de\nf",
        b"de\nf",
        b"f",
        b"f",
    ]


@pytest.mark.loop_free
def test_recv_errors(frozen: ModuleType) -> None:
    script = [BlockingIOError(), OSError(errno.EIO, "boom"), b"a\n"]
    trace = same_reads(script, b"\n")
    assert trace[:4] == [
        ("recv", 65536),
        ("after", b"", b"\n", []),
        ("recv", 65536),
        ("handle_error", repr(OSError(errno.EIO, "boom"))),
    ]
    assert found_messages(trace) == [b"a"]


@pytest.mark.loop_free
def test_handle_error_sees_the_active_exception() -> None:
    seen: list[BaseException | None] = []

    class Chat(reader_class(asynchat)):  # type: ignore[misc]
        def handle_error(self) -> None:
            seen.append(sys.exc_info()[1])

    chat = Chat([ConnectionRefusedError(errno.ECONNREFUSED, "no")])
    chat.set_terminator(b"\n")
    chat.handle_read()
    assert isinstance(seen[0], ConnectionRefusedError)


@pytest.mark.loop_free
def test_use_encoding_str_terminator_and_str_from_recv(frozen: ModuleType) -> None:
    def encode(chat: Any) -> None:
        chat.use_encoding = 1

    # Bytes input with a str terminator: identical to 3.11.
    trace = same_reads([b"caf\xe9\r\n"], "\r\n", configure=encode)
    assert found_messages(trace) == [b"caf\xe9"]

    # A recv() override returning str: 3.11 raised TypeError (bytes(str, encoding));
    # we encode the received text, on purpose.
    ours = read_trace("ours", ["caf\xe9\r\n"], "\r\n", configure=encode)
    assert found_messages(ours) == [b"caf\xe9"]
    theirs = read_trace("frozen", ["caf\xe9\r\n"], "\r\n", configure=encode)
    assert ("raised", "TypeError") in theirs

    def utf8(chat: Any) -> None:
        chat.use_encoding = 1
        chat.encoding = "utf-8"

    ours = read_trace("ours", ["caf\xe9\r\n"], "\r\n", configure=utf8)
    assert found_messages(ours) == ["caf\xe9".encode()]


# One action per callback, drawn by hypothesis; the same list drives both implementations.
ACTION = st.one_of(
    st.none(),
    st.tuples(
        st.just("set"),
        st.sampled_from([b"\n", b"\r\n", b"aab", b"abab", 0, 1, 3, 9, None, b"a", True]),
    ),
    st.tuples(st.just("discard")),
    st.tuples(st.just("read")),
    st.tuples(st.just("assign"), st.sampled_from([b"", b"\r", b"ab\n", b"aabab\r\n"])),
    st.tuples(st.just("close")),
    st.tuples(st.just("raise")),
)


def scripted(actions: list[Any]) -> Reaction:
    def reaction(chat: Any, event: str, index: int) -> None:
        action = actions[index] if index < len(actions) else None
        if action is None:
            return
        chat.trace.append(("action", *action))
        if action[0] == "set":
            chat.set_terminator(action[1])
        elif action[0] == "discard":
            chat.discard_buffers()
        elif action[0] == "read":
            chat.trace.append(("read", chat.ac_in_buffer))
        elif action[0] == "assign":
            chat.ac_in_buffer = action[1]
        elif action[0] == "close":
            chat.close()
        else:
            raise RuntimeError("from a callback")

    return reaction


@pytest.mark.loop_free
@FUZZ
@given(
    stream=st.binary(max_size=120).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
    positions=st.lists(st.integers(0, 120), max_size=10),
    terminator=st.sampled_from([b"\n", b"\r\n", b"\r\n\r\n", b"abab", b"aab", 0, 1, 4, 50, None]),
    actions=st.lists(ACTION, max_size=40),
    observe=st.booleans(),
)
def test_fuzz_reads_match_311(
    stream: bytes, positions: list[int], terminator: object, actions: list[Any], observe: bool
) -> None:
    chunks = cuts(stream, [min(p, len(stream)) for p in positions])
    same_reads(chunks, terminator, scripted(actions), observe)


@pytest.mark.loop_free
def test_many_messages_in_one_read() -> None:
    # 3.11 copies the rest of the buffer after every message (quadratic); ours walks
    # an offset. Here: every message arrives, once, in order.
    data = b"x\n" * 30000
    sizes: list[int] = []

    class Chat(asynchat.async_chat):
        def collect_incoming_data(self, data: bytes) -> None:
            sizes.append(len(data))

        def found_terminator(self) -> None:
            pass

    chat = Chat(map={})
    chat.recv = lambda buffer_size: data  # type: ignore[method-assign]
    chat.set_terminator(b"\n")
    chat.handle_read()
    assert sizes == [1] * 30000
    assert chat.ac_in_buffer == b""


# --------------------------------------------------------------------------- output side


class ListProducer:
    """A classic producer: ``more()`` returns the next item, then ``b""``."""

    def __init__(self, items: Iterable[Any], log: list[tuple[Any, ...]]) -> None:
        self.items = list(items)
        self.log = log

    def more(self) -> Any:
        item = self.items.pop(0) if self.items else b""
        self.log.append(("more", item))
        return item


def describe(entry: object) -> object:
    if entry is None or isinstance(entry, (bytes, str)):
        return entry
    if isinstance(entry, (bytearray, memoryview)):
        return ("buffer", bytes(entry))
    return type(entry).__name__


def sender_class(module: ModuleType) -> type:
    """A connected ``async_chat`` whose ``send`` follows a script of byte counts."""

    base: Any = module.async_chat

    class Sender(base):  # type: ignore[misc]
        ac_out_buffer_size = 8

        def __init__(self, budget: Iterable[object] = ()) -> None:
            module.async_chat.__init__(self, map={})
            self.connected = True
            self.budget = list(budget)
            self.trace: list[tuple[Any, ...]] = []
            self.wire = b""

        def send(self, data: Any) -> int:
            self.trace.append(("send", type(data).__name__, bytes(data)))
            item = self.budget.pop(0) if self.budget else len(data)
            if isinstance(item, BaseException):
                raise item
            sent: int = min(int(item), len(data))  # type: ignore[call-overload]
            self.wire += bytes(data[:sent])
            return sent

        def handle_close(self) -> None:
            self.trace.append(("handle_close",))
            module.async_chat.handle_close(self)

        def handle_error(self) -> None:
            self.trace.append(("handle_error", repr(sys.exc_info()[1])))

        def snapshot(self) -> None:
            self.trace.append(
                (
                    "fifo",
                    [describe(e) for e in self.producer_fifo],
                    self.connected,
                    bool(self.writable()),
                )
            )

    return Sender


def write_trace(
    name: str, ops: Sequence[tuple[Any, ...]], budget: Sequence[object], use_encoding: bool
) -> tuple[list[tuple[Any, ...]], bytes]:
    module = chat_module(name)
    chat = sender_class(module)(budget)
    chat.use_encoding = int(use_encoding)
    for op in ops:
        chat.trace.append(("op", *op))
        try:
            if op[0] == "push":
                chat.push(op[1])
            elif op[0] == "push_view":
                chat.push(memoryview(op[1]))
            elif op[0] == "producer":
                chat.push_with_producer(ListProducer(op[1], chat.trace))
            elif op[0] == "simple":
                chat.push_with_producer(module.simple_producer(op[1], op[2]))
            elif op[0] == "text":
                chat.push_with_producer(op[1])
            elif op[0] == "close_when_done":
                chat.close_when_done()
            else:
                chat.handle_write()
        except Exception as exc:
            chat.trace.append(("raised", type(exc).__name__))
        chat.snapshot()
    trace: list[tuple[Any, ...]] = chat.trace
    return trace, chat.wire


def same_writes(
    ops: Sequence[tuple[Any, ...]], budget: Sequence[object] = (), use_encoding: bool = False
) -> tuple[list[tuple[Any, ...]], bytes]:
    ours = write_trace("ours", ops, budget, use_encoding)
    theirs = write_trace("frozen", ops, budget, use_encoding)
    assert ours == theirs
    return ours


WRITE = ("write",)


@pytest.mark.loop_free
def test_push_larger_than_ac_out_buffer_size_is_split() -> None:
    data = bytes(range(20))
    trace, wire = same_writes([("push", data)], budget=[0])
    assert trace[-1] == ("fifo", [data[0:8], data[8:16], data[16:20]], True, True)
    trace, wire = same_writes([("push", data), WRITE, WRITE, WRITE], budget=[3, 8, 8, 8])
    assert wire == data
    assert trace[-1] == ("fifo", [], True, False)


@pytest.mark.loop_free
def test_partial_sends_resume_where_they_stopped() -> None:
    data = b"abcdefghijklmnopq"
    _, wire = same_writes([("push", data)] + [WRITE] * 12, budget=[1, 2, 0, 3, 5, 8, 1])
    assert wire == data


@pytest.mark.loop_free
def test_push_sends_at_once_when_connected() -> None:
    trace, wire = same_writes([("push", b"hi")])
    assert trace[1] == ("send", "bytes", b"hi")
    assert wire == b"hi"


@pytest.mark.loop_free
def test_push_rejects_str_with_a_formatted_message(frozen: ModuleType) -> None:
    for use_encoding in (0, 1):
        chat = sender_class(asynchat)()
        chat.use_encoding = use_encoding
        with pytest.raises(TypeError) as info:
            chat.push("text")
        assert info.value.args == ("data argument must be byte-ish (<class 'str'>)",)
        assert not chat.producer_fifo
    # 3.11 raised the same type with the format string and the type as two args.
    with pytest.raises(TypeError) as info:
        sender_class(frozen)().push("text")
    assert info.value.args == ("data argument must be byte-ish (%r)", str)


@pytest.mark.loop_free
def test_producers_empty_items_and_close_marker() -> None:
    ops = [
        ("push", b""),
        ("producer", [b"one", b"", b"two-long-item", b"3"]),
        ("simple", b"simple-producer-data", 6),
        ("push", b"after"),
        ("close_when_done",),
        ("push", b"never-sent"),
    ] + [WRITE] * 15
    trace, wire = same_writes(ops, budget=[0])
    # ListProducer stops at its first empty more(): "two-long-item" and "3" are never asked.
    assert wire == b"one" + b"simple-producer-data" + b"after"
    assert trace.count(("handle_close",)) == 1
    # An empty buffer still costs a send(b"") in 3.11; kept.
    assert ("send", "bytes", b"") in trace


@pytest.mark.loop_free
def test_text_through_producer_with_use_encoding() -> None:
    ops = [("text", "h\xe9llo w\xf6rld"), ("producer", ["caf\xe9"])] + [WRITE] * 8
    _, wire = same_writes(ops, budget=[2, 0, 5], use_encoding=True)
    assert wire == "h\xe9llo w\xf6rldcaf\xe9".encode("latin-1")


@pytest.mark.loop_free
def test_multibyte_encoding_partial_send_is_not_corrupted(frozen: ModuleType) -> None:
    text = "\xe9t\xe9 \u20ac\u20ac\u20ac fin \xe9"
    for budget in ([1] * 40, [3, 1, 4, 1, 5], [0, 2, 7], []):
        chat = sender_class(asynchat)(budget)
        chat.use_encoding = 1
        chat.encoding = "utf-8"
        chat.push_with_producer(text)
        for _ in range(40):
            chat.handle_write()
        assert chat.wire == text.encode("utf-8")
        assert not chat.producer_fifo
    # 3.11 slices the text by the number of bytes sent, and loses characters.
    chat = sender_class(frozen)([1] * 40)
    chat.use_encoding = 1
    chat.encoding = "utf-8"
    chat.push_with_producer(text)
    for _ in range(40):
        chat.handle_write()
    assert chat.wire != text.encode("utf-8")


@pytest.mark.loop_free
def test_false_producer_is_still_asked_for_more() -> None:
    class Sized(ListProducer):
        def __len__(self) -> int:
            return 0

    log: list[tuple[Any, ...]] = []
    chat = sender_class(asynchat)()
    chat.push_with_producer(Sized([b"abc", b"def"], log))
    chat.push(b"-tail")
    for _ in range(6):
        chat.handle_write()
    assert chat.wire == b"abcdef-tail"


@pytest.mark.loop_free
def test_send_error_goes_to_handle_error() -> None:
    trace, wire = same_writes([("push", b"abc"), WRITE], budget=[OSError(errno.EIO, "x")])
    assert ("handle_error", repr(OSError(errno.EIO, "x"))) in trace
    assert wire == b"abc"


@pytest.mark.loop_free
def test_nothing_is_sent_while_not_connected(frozen: ModuleType) -> None:
    for module in (asynchat, frozen):
        chat = sender_class(module)()
        chat.connected = False
        chat.push(b"abc")
        chat.close_when_done()
        assert chat.trace == []
        assert chat.writable()  # not connected: writable, so the connect completes


@pytest.mark.loop_free
def test_discard_buffers_drops_everything() -> None:
    chat = sender_class(asynchat)([0])
    chat.push(b"x" * 20)
    chat.incoming.append(b"partial")
    chat.ac_in_buffer = b"pending"
    chat.discard_buffers()
    assert (list(chat.producer_fifo), chat.incoming, chat.ac_in_buffer) == ([], [], b"")
    assert not chat.writable()


OUT_OP = st.one_of(
    st.tuples(st.just("push"), st.binary(max_size=20)),
    st.tuples(st.just("push_view"), st.binary(max_size=20)),
    st.tuples(st.just("producer"), st.lists(st.binary(max_size=12), max_size=4)),
    st.tuples(st.just("simple"), st.binary(max_size=30), st.integers(1, 9)),
    st.tuples(st.just("text"), st.text(alphabet="ab\xe9", max_size=12)),
    st.just(("close_when_done",)),
    st.just(WRITE),
)


@pytest.mark.loop_free
@FUZZ
@given(
    ops=st.lists(OUT_OP, max_size=15),
    budget=st.lists(st.one_of(st.integers(0, 10), st.just(OSError(errno.EIO, "x"))), max_size=30),
    use_encoding=st.booleans(),
)
def test_fuzz_writes_match_311(
    ops: list[tuple[Any, ...]], budget: list[object], use_encoding: bool
) -> None:
    same_writes([*ops] + [WRITE] * 25, budget, use_encoding)


# --------------------------------------------------------------------------- surface


@pytest.mark.loop_free
def test_simple_producer_matches_311(frozen: ModuleType) -> None:
    cases: list[tuple[Any, int]] = [
        (b"", 512),
        (b"abc", 512),
        (b"a" * 1500, 512),
        (b"abcdefg", 2),
        ("xyz", 2),
    ]
    for data, size in cases:
        ours = asynchat.simple_producer(data, size)
        theirs = frozen.simple_producer(data, size)
        for _ in range(len(data) + 2):
            assert ours.data == theirs.data
            assert ours.more() == theirs.more()
        assert ours.data == theirs.data == b""
    producer = asynchat.simple_producer(b"abcdef", 4)
    assert producer.buffer_size == 4
    assert producer.more() == b"abcd"
    producer.data = b"new"
    assert (producer.more(), producer.more()) == (b"new", b"")


@pytest.mark.loop_free
@pytest.mark.parametrize(
    ("haystack", "needle"),
    [
        (b"qwerty\r", b"\r\n"),
        (b"qwertydkjf", b"\r\n"),
        (b"ab\r\n.", b"\r\n.\r\n"),
        (b"", b"\r\n"),
        (b"aaa", b"aab"),
        (b"abab", b"ababc"),
        (b"x", b""),
        ("qwerty\r", "\r\n"),
    ],
)
def test_find_prefix_at_end(frozen: ModuleType, haystack: Any, needle: Any) -> None:
    assert asynchat.find_prefix_at_end(haystack, needle) == frozen.find_prefix_at_end(
        haystack, needle
    )


@pytest.mark.loop_free
@FUZZ
@given(haystack=st.binary(max_size=12), needle=st.binary(max_size=6))
def test_fuzz_find_prefix_at_end(haystack: bytes, needle: bytes) -> None:
    frozen = load_frozen()[1]
    if needle in haystack[-len(needle) :] and needle:
        return  # undefined when the needle itself ends the haystack
    assert asynchat.find_prefix_at_end(haystack, needle) == frozen.find_prefix_at_end(
        haystack, needle
    )


@pytest.mark.loop_free
def test_public_surface_matches_311(frozen: ModuleType) -> None:
    for name in ("async_chat", "simple_producer", "find_prefix_at_end"):
        ours, theirs = getattr(asynchat, name), getattr(frozen, name)
        assert (
            inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
        )
    for cls in (asynchat.async_chat, asynchat.simple_producer):
        assert cls.__module__ == "asynchat"
    assert issubclass(asynchat.async_chat, asyncore.dispatcher)
    for name, value in vars(frozen.async_chat).items():
        if name.startswith("__"):
            continue
        assert hasattr(asynchat.async_chat, name), name
        if not callable(value):
            assert getattr(asynchat.async_chat, name) == value, name
        else:
            ours_sig = inspect.signature(getattr(asynchat.async_chat, name))
            assert list(ours_sig.parameters) == list(inspect.signature(value).parameters), name
    assert asynchat.async_chat.ac_in_buffer_size == asynchat.async_chat.ac_out_buffer_size == 65536
    assert (asynchat.async_chat.use_encoding, asynchat.async_chat.encoding) == (0, "latin-1")
    # standard-asynchat's copy (standard-smtpd's dependency) imports warnings; 3.11's did not.
    star = {n for n in vars(frozen) if not n.startswith("_")} - {"warnings"}
    assert set(asynchat.__all__) == star  # 3.11's star-import names, and no more


@pytest.mark.loop_free
def test_fresh_instance_state() -> None:
    chat = asynchat.async_chat(map={})
    assert chat.ac_in_buffer == b""
    assert chat.incoming == []
    assert type(chat.producer_fifo).__name__ == "deque" and not chat.producer_fifo
    assert chat.readable() is True
    assert chat.writable() is True  # not connected yet
    with pytest.raises(NotImplementedError):
        chat.collect_incoming_data(b"x")
    with pytest.raises(NotImplementedError):
        chat.found_terminator()
    chat.set_terminator(b"\r\n")
    assert chat.get_terminator() == b"\r\n"
    chat._collect_incoming_data(b"ab")
    chat._collect_incoming_data(b"cd")
    assert chat._get_data() == b"abcd"
    assert chat.incoming == []


@pytest.mark.loop_free
def test_output_apis_report_interest_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(asynchat, "interest_changed", calls.append)
    chat = sender_class(asynchat)([0])
    chat.push(b"a")
    chat.push_with_producer(ListProducer([], chat.trace))
    chat.close_when_done()
    chat.discard_buffers()
    assert calls == [chat] * 4
    with pytest.raises(TypeError):
        chat.push("no")
    assert len(calls) == 4


@pytest.mark.loop_free
@pytest.mark.parametrize(("queued", "connected"), list(itertools.product([False, True], repeat=2)))
def test_writable_is_what_the_scan_reads(queued: bool, connected: bool) -> None:
    """Incremental scans do not call a stock async_chat's writable(): they read what its
    declaration to the scan names (``declare_stock(writable_unless_empty=...)``).  The
    method and the declaration must give the same answer in every state."""
    from asyncore_on_asyncio import _scan

    chat = asynchat.async_chat()
    if queued:
        chat.producer_fifo.append(b"x")
    chat.connected = connected
    queue = _scan._queue_of(chat)
    assert queue == "producer_fifo"
    assert chat.writable() is bool(getattr(chat, queue) or not chat.connected) is (queued or not connected)


# --------------------------------------------------------------------------- end to end


class LineChat(asynchat.async_chat):
    """Collects lines; ``reply`` decides what to push back for each one."""

    def __init__(
        self,
        sock: socket.socket,
        map: dict[int, Any],
        reply: Callable[[LineChat, bytes], None] | None = None,
    ) -> None:
        super().__init__(sock, map)
        self.set_terminator(b"\r\n")
        self.lines: list[bytes] = []
        self.closed = 0
        self.reply = reply

    def collect_incoming_data(self, data: bytes) -> None:
        self._collect_incoming_data(data)

    def found_terminator(self) -> None:
        line = self._get_data()
        self.lines.append(line)
        if self.reply is not None:
            self.reply(self, line)

    def handle_close(self) -> None:
        self.closed += 1
        self.close()


def echo_upper(chat: LineChat, line: bytes) -> None:
    if line == b"QUIT":
        chat.push(b"BYE\r\n")
        chat.close_when_done()
    else:
        chat.push(line.upper() + b"\r\n")


def test_line_server_over_loopback() -> None:
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()
    try:
        server = LineChat(server_sock, socket_map, echo_upper)
        client.sendall(b"hel")
        run_until(lambda: server.incoming == [b"hel"], map=socket_map)
        client.sendall(b"lo\r\nworld\r")
        run_until(lambda: server.ac_in_buffer == b"\r", map=socket_map)
        assert (server.lines, server.incoming) == ([b"hello"], [b"world"])
        client.sendall(b"\n\r\nQUIT\r\n")
        expected = b"HELLO\r\nWORLD\r\n\r\nBYE\r\n"
        assert drain(client, len(expected), map=socket_map) == expected
        run_until(lambda: not socket_map, map=socket_map)
        assert server.lines == [b"hello", b"world", b"", b"QUIT"]
        client.settimeout(5.0)
        assert client.recv(10) == b""  # closed once everything was sent
    finally:
        asyncore.close_all(socket_map)
        client.close()


def test_output_queued_by_a_handler_without_push_is_sent() -> None:
    """A handler may append to ``producer_fifo`` itself and leave the sending to the loop
    (3.11 code did): the cycle after the dispatch asks the channel again, sees the queue,
    and ``handle_write()`` sends it in that cycle (``timeout=0`` cycles: no full scan)."""
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()

    def queue_reversed(chat: LineChat, line: bytes) -> None:
        chat.producer_fifo.append(line[::-1] + b"\r\n")

    try:
        server = LineChat(server_sock, socket_map, queue_reversed)
        for word in (b"abc", b"hello", b"xy"):
            client.sendall(word + b"\r\n")
            wait_readable(server_sock)
            asyncore.loop(timeout=0, map=socket_map, count=1)
            assert list(server.producer_fifo) == [word[::-1] + b"\r\n"]  # queued, not sent
            asyncore.loop(timeout=0, map=socket_map, count=1)
            assert not server.producer_fifo
            wait_readable(client)
            assert client.recv(100) == word[::-1] + b"\r\n"
    finally:
        asyncore.close_all(socket_map)
        client.close()


def test_timeout_0_cycles_see_every_change_a_handler_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between verifying scans (kept away here), each ``timeout=0`` cycle asks again both
    the channel it dispatched (which queued a reply without ``push()``) and another
    channel that handler pushed to, whose socket is full: both outputs arrive."""
    monkeypatch.setattr(_scan, "_FULL_SCAN_INTERVAL", 1e9)
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()
    reader, other_sock = socketpair()
    payload = bytes(range(256)) * 8192  # 2 MiB: more than the socket buffers hold

    def reply_and_push(chat: LineChat, line: bytes) -> None:
        chat.producer_fifo.append(line[::-1] + b"\r\n")
        other.push(payload)

    try:
        server = LineChat(server_sock, socket_map, reply_and_push)
        other = LineChat(other_sock, socket_map)
        asyncore.loop(timeout=0, map=socket_map, count=1)  # the first scan sees every object
        client.sendall(b"abc\r\n")
        wait_readable(server_sock)
        asyncore.loop(timeout=0, map=socket_map, count=1)  # reply_and_push() runs
        assert other.producer_fifo  # the socket took part of it
        asyncore.loop(timeout=0, map=socket_map, count=1)
        assert not server.producer_fifo
        wait_readable(client)
        assert client.recv(100) == b"cba\r\n"
        reader.setblocking(False)
        received = bytearray()
        for _ in range(20_000):
            if len(received) == len(payload):
                break
            with contextlib.suppress(BlockingIOError):
                received += reader.recv(1 << 20)
            asyncore.loop(timeout=0, map=socket_map, count=1)
        assert len(received) == len(payload) and received == payload
    finally:
        asyncore.close_all(socket_map)
        client.close()
        reader.close()


@pytest.mark.loop_free
def test_push_sends_immediately_without_the_loop() -> None:
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()
    try:
        server = LineChat(server_sock, socket_map)
        server.push(b"now")
        wait_readable(client)
        assert client.recv(10) == b"now"
    finally:
        asyncore.close_all(socket_map)
        client.close()


def test_big_push_then_close_when_done() -> None:
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()
    payload = bytes(range(256)) * 4096 + b"end"  # 1 MiB: many partial sends
    try:
        server = LineChat(server_sock, socket_map)
        server.push(payload)
        server.close_when_done()
        assert server_sock.fileno() in socket_map  # still flushing
        assert drain(client, len(payload), map=socket_map, timeout=20.0) == payload
        run_until(lambda: not socket_map, map=socket_map)
        client.settimeout(5.0)
        assert client.recv(10) == b""
        assert server.closed == 1  # the None queued by close_when_done calls handle_close()
    finally:
        asyncore.close_all(socket_map)
        client.close()


def test_chat_to_chat_with_producers_and_counted_body() -> None:
    socket_map: dict[int, Any] = {}
    left, right = socketpair()
    body = bytes(range(256)) * 800  # 204800 bytes: an int terminator > ac_in_buffer_size
    received: list[bytes] = []

    class Receiver(asynchat.async_chat):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(sock, socket_map)
            self.set_terminator(b"\n")

        def collect_incoming_data(self, data: bytes) -> None:
            self._collect_incoming_data(data)

        def found_terminator(self) -> None:
            data = self._get_data()
            received.append(data)
            if data.startswith(b"LEN "):
                self.set_terminator(int(data[4:]))
            else:
                self.set_terminator(b"\n")

    sender = LineChat(left, socket_map)
    receiver = Receiver(right)
    try:
        sender.push(b"LEN %d\n" % len(body))
        sender.push_with_producer(asynchat.simple_producer(body, 4096))
        log: list[tuple[Any, ...]] = []
        sender.push_with_producer(ListProducer([b"after ", b"the body\n"], log))
        sender.push(b"")
        sender.push(b"last\n")
        sender.close_when_done()
        # The sender closes once its queue is flushed; the receiver closes on that EOF.
        run_until(lambda: not socket_map, map=socket_map, timeout=20.0)
        assert received == [b"LEN 204800", body, b"after the body", b"last"]
        assert sender.closed == 1
        assert not receiver.connected
    finally:
        asyncore.close_all(socket_map)


def test_peer_closing_mid_message() -> None:
    socket_map: dict[int, Any] = {}
    client, server_sock = socketpair()
    try:
        server = LineChat(server_sock, socket_map)
        client.sendall(b"one\r\npartial line\r")
    finally:
        client.close()
    run_until(lambda: not socket_map, map=socket_map)
    assert server.lines == [b"one"]
    assert server.closed == 1
    assert server.incoming == [b"partial line"]
    assert server.ac_in_buffer == b"\r"  # the partial terminator is kept


def test_peer_reset_closes_the_channel() -> None:
    socket_map: dict[int, Any] = {}
    errors: list[BaseException | None] = []

    class Chat(LineChat):
        def handle_error(self) -> None:
            errors.append(sys.exc_info()[1])
            self.close()

    client, server_sock = socketpair()
    server = Chat(server_sock, socket_map)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sendall(b"one\r\nhalf")
        client.close()  # linger 0: RST
        run_until(lambda: not socket_map, map=socket_map)
        assert errors == []  # ECONNRESET means "closed", not an error
        assert server.closed == 1
        # Data that arrived before the reset is still delivered, as with select().
        assert server.lines == [b"one"]
        assert server.incoming == [b"half"]
    finally:
        server.close()
