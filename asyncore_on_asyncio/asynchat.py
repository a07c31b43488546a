r"""Python 3.11's ``asynchat``: chat-style (command/response) protocols on asyncore.

``async_chat`` is a dispatcher that splits its input stream at a *terminator* and
sends queued output through a FIFO of buffers and producers.  Subclasses supply
``collect_incoming_data(data)`` (called with each piece of input that precedes the
terminator) and ``found_terminator()`` (called each time the terminator is consumed).

Terminators (``set_terminator``):

* ``bytes``: input is split at that byte string, which is never passed to
  ``collect_incoming_data``.  A ``str`` is encoded with ``encoding`` when
  ``use_encoding`` is true (otherwise it is stored as is and reading fails with
  ``TypeError``, exactly as in 3.11: mixing text and bytes is an application bug).
* ``int`` *n*: the next *n* bytes are collected, then ``found_terminator()`` is called
  and the terminator becomes ``0``.  A negative *n* raises ``ValueError``.
* ``None``, ``0`` or any false value: all input is collected; ``found_terminator()``
  is never called.

``found_terminator()`` may change the terminator, call ``discard_buffers()`` or
``close()``, or read and assign ``ac_in_buffer``; the rest of the data already read is
then processed under the new state, as in 3.11 (closing does not stop it).

Output: ``push(data)`` queues bytes-like data (split into ``ac_out_buffer_size``
pieces) and tries to send at once; ``push_with_producer(p)`` queues an object whose
``more()`` returns the next piece (empty when exhausted); ``close_when_done()``
queues ``None``, which closes the channel once everything before it is sent.

Differences from 3.11, each deliberate (see MIGRATION.md):

* Input is consumed through an offset into the received chunk instead of re-slicing
  the buffer after every message, so a chunk holding many small messages costs
  linear rather than quadratic time; a partial terminator left at the end of a chunk
  (shorter than the terminator) is all that is searched again on the next read.
  ``ac_in_buffer`` is a property that materialises the unconsumed bytes whenever it
  is read, and assigning it (``self.ac_in_buffer = b''``) works as before.  The
  callback sequence, its arguments and the value of ``ac_in_buffer`` seen inside
  each callback are unchanged.  A subclass that redefines ``ac_in_buffer`` as a
  class attribute would hide the property and is not supported.
* ``simple_producer`` likewise walks its data with an offset (``data`` is a
  property); ``more()`` returns the same pieces as before.
* With ``use_encoding``, a ``str`` returned by an overridden ``recv()`` is encoded
  with ``encoding`` (3.11 called ``bytes(str, encoding)`` on the *type* ``str`` and
  raised ``TypeError``).
* With ``use_encoding`` and an encoding that is not one byte per character, a
  partially sent ``str`` chunk resumes at the right character (3.11 sliced the
  text by the number of *bytes* sent and corrupted the stream).
* ``push()`` of a non-bytes-like object raises ``TypeError`` with a formatted
  message (3.11 passed the format string and the type as two arguments).
* ``readable()`` returns ``True`` (3.11: ``1``); ``writable()`` returns a ``bool``
  (3.11: the ``producer_fifo`` deque itself when it is not empty).
* A producer whose truth value is false (for example one with ``__len__`` returning
  0) is still asked for ``more()``; 3.11 dropped it, pushed one chunk of its output
  and could delete the *next* fifo entry instead.
* ``push()``, ``push_with_producer()``, ``close_when_done()`` and
  ``discard_buffers()`` tell the event loop driver that ``writable()`` may have
  changed, so a loop blocked waiting for events notices new output at once.
* New, off by default: ``coalesce_pushes`` sends the replies pushed while one read
  is split in one ``send()`` (see its docstring).

Unchanged on purpose: an empty buffer in the fifo is dropped and ``send(b"")`` is
still called for it (it reports a dead peer); nothing bounds the input kept while a
terminator never arrives (``ac_in_buffer`` itself never exceeds one read plus a
partial terminator, but the default ``collect_incoming_data`` keeps everything in
``incoming``).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any, AnyStr, Protocol

from . import _scan, asyncore
from ._classflags import PerClass, replaced_on_instance
from ._engine import dispatching, interest_changed
from .asyncore import _flush_before_close

COALESCE_ENV_VAR = "ASYNCORE_ON_ASYNCIO_COALESCE_PUSHES"

# Exactly what ``from asynchat import *`` bound on 3.11 (it had no __all__).
__all__ = ["async_chat", "asyncore", "deque", "find_prefix_at_end", "simple_producer"]


class _Producer(Protocol):
    def more(self) -> bytes | str: ...


_Terminator = bytes | str | int | None
# Anything that slices is sent as data; anything else must have more().
_Pushable = bytes | bytearray | memoryview | str | _Producer
_FifoEntry = _Pushable | None


class async_chat(asyncore.dispatcher):
    """A dispatcher for line- or length-framed protocols.

    Subclasses implement ``collect_incoming_data()`` and ``found_terminator()``.
    """

    __module__ = "asynchat"

    ac_in_buffer_size: int = 65536
    ac_out_buffer_size: int = 65536

    # Text needs an explicit opt-in: str data on a bytes channel is usually a bug.
    use_encoding: int = 0
    encoding: str = "latin-1"

    coalesce_pushes: bool = os.environ.get(COALESCE_ENV_VAR, "") not in ("", "0")
    """Opt-in (not in 3.11): send the replies pushed while one read is split in one ``send()``.

    3.11 calls ``send()`` once per ``push()``.  When a read holds many messages, that is
    one system call per reply, the main cost of a pipelined protocol.  With this set
    (on a class or an instance, or for every channel by the environment variable
    ``ASYNCORE_ON_ASYNCIO_COALESCE_PUSHES=1``), the first reply of a read is sent at
    once, as before, and the rest are held until ``handle_read()`` returns (or
    ``close()`` or ``discard_buffers()`` is called), then sent together, up to
    ``ac_out_buffer_size`` bytes per ``send()``.  The bytes and their order on the wire are the same.  What differs:
    ``producer_fifo`` still holds those replies inside the handler, and a failing send
    is noticed after the last callback of the read instead of in the middle.  Only
    channels that keep 3.11's ``send()`` and ``initiate_send()`` coalesce; do not set it
    on a channel whose handlers also write to its socket directly, or replace its
    socket (STARTTLS) while replies are held.
    """

    # No default: as in 3.11, reading fails until set_terminator() has been called.
    terminator: _Terminator

    # Received bytes not yet given to a callback are self.__in_buf[self.__in_pos:].
    __in_buf: bytes
    __in_pos: int
    # Pushes made so far by the read being split, while coalescing (-1: not coalescing).
    __held: int = -1

    def __init__(
        self, sock: socket.socket | None = None, map: asyncore._Map | None = None
    ) -> None:
        self.__in_buf = b""
        self.__in_pos = 0
        self.incoming: list[bytes] = []
        self.producer_fifo: deque[_FifoEntry] = deque()
        asyncore.dispatcher.__init__(self, sock, map)

    # ------------------------------------------------------------------ input buffer

    @property
    def ac_in_buffer(self) -> bytes:
        """The received bytes not yet passed to ``collect_incoming_data``."""
        pos = self.__in_pos
        if pos:
            # Materialise once and keep the result, so repeated reads are cheap.
            self.__in_buf = self.__in_buf[pos:]
            self.__in_pos = 0
        return self.__in_buf

    @ac_in_buffer.setter
    def ac_in_buffer(self, value: bytes) -> None:
        self.__in_buf = value
        self.__in_pos = 0

    def __advance(self, count: int) -> None:
        # ``ac_in_buffer = ac_in_buffer[count:]`` on whatever the buffer is *now*:
        # a callback may have replaced it since the caller looked.
        self.__in_pos = min(self.__in_pos + count, len(self.__in_buf))

    def __keep_last(self, count: int) -> None:
        # ``ac_in_buffer = ac_in_buffer[-count:]`` on the current buffer (count > 0).
        self.__in_pos = max(self.__in_pos, len(self.__in_buf) - count)

    # ------------------------------------------------------------------ subclass API

    def collect_incoming_data(self, data: bytes) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data: bytes) -> None:
        self.incoming.append(data)

    def _get_data(self) -> bytes:
        data = b"".join(self.incoming)
        del self.incoming[:]
        return data

    def found_terminator(self) -> None:
        raise NotImplementedError("must be implemented in subclass")

    def set_terminator(self, term: _Terminator) -> None:
        """Set the input delimiter: a byte string, a byte count, or ``None``."""
        if isinstance(term, str) and self.use_encoding:
            term = term.encode(self.encoding)
        elif isinstance(term, int) and term < 0:
            raise ValueError("the number of received bytes must be positive")
        self.terminator = term

    def get_terminator(self) -> _Terminator:
        return self.terminator

    # ------------------------------------------------------------------ events

    def handle_read(self) -> None:
        """Read once, then feed the buffered input to the callbacks, one terminator at a time.

        Every step re-reads the buffer state and the terminator, because each
        callback may have changed them.  Where 3.11 sliced the buffer after a
        callback it sliced the buffer *as the callback left it*; ``__advance`` and
        ``__keep_last`` do the same to the current buffer.  On return no consumed
        byte is kept: the buffer holds at most a partial terminator.
        """
        try:
            data: Any = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        if isinstance(data, str) and self.use_encoding:
            data = data.encode(self.encoding)
        # bytes + str raises TypeError here, as in 3.11.  (An empty buffer has offset 0.)
        buf = self.__in_buf
        self.__in_buf = buf[self.__in_pos :] + data if buf else b"" + data
        self.__in_pos = 0
        coalescing = self.coalesce_pushes and self.__held < 0 and _sends_like_3_11(self)
        if coalescing:
            self.__held = 0
            # dispatcher.close() sends them first, also when called directly as
            # asyncore.dispatcher.close(self), as 3.11-era subclasses do.
            _flush_before_close[id(self)] = self.__send_held
        try:
            while True:
                buf = self.__in_buf
                pos = self.__in_pos
                size = len(buf) - pos
                if size <= 0:
                    if pos:  # all consumed: drop the chunk
                        self.__in_buf = b""
                        self.__in_pos = 0
                    return
                term: Any = self.get_terminator()
                if type(term) is not bytes or not term:  # a byte string, the common case, is found below
                    if not term:
                        self.__collect_all()
                        continue
                    if isinstance(term, int):
                        if size < term:
                            self.__collect_all()
                            self.terminator = self.terminator - size  # type: ignore[operator]
                        else:
                            self.collect_incoming_data(buf[pos : pos + term])
                            self.__advance(term)
                            self.terminator = 0
                            self.found_terminator()
                        continue
                # A str terminator (use_encoding off) raises TypeError here, as in 3.11.
                index = buf.find(term, pos)
                if index != -1:
                    if index > pos:
                        # An empty piece before the terminator is never reported.
                        self.collect_incoming_data(buf[pos:index])
                    end = index + len(term)
                    if self.__in_buf is buf and self.__in_pos == pos:
                        self.__in_pos = end  # the buffer is as it was: the common case
                    else:
                        self.__advance(end - pos)
                    self.found_terminator()
                    if end == len(buf) and self.__in_buf is buf and self.__in_pos == end:
                        # The chunk ended with this terminator and the callbacks left it: done.
                        self.__in_buf = b""
                        self.__in_pos = 0
                        return
                    continue
                partial = _partial_terminator_at_end(buf, pos, term)
                if not partial:
                    self.__collect_all()
                    continue
                if partial != size:
                    self.collect_incoming_data(buf[pos : len(buf) - partial])
                    self.__keep_last(partial)
                self.__in_buf = self.__in_buf[self.__in_pos :]  # keep only the partial terminator
                self.__in_pos = 0
                return
        finally:
            if coalescing:
                self.__send_held()

    def __collect_all(self) -> None:
        # The argument is the very object ``ac_in_buffer`` reads as during the call.
        self.collect_incoming_data(self.ac_in_buffer)
        self.ac_in_buffer = b""

    def handle_write(self) -> None:
        self.initiate_send()

    def handle_close(self) -> None:
        self.close()

    # ------------------------------------------------------------------ output

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes-like ``data`` for sending and try to send some now."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be byte-ish ({type(data)!r})")
        step = self.ac_out_buffer_size
        fifo = self.producer_fifo
        if len(data) > step:
            fifo.extend(data[i : i + step] for i in range(0, len(data), step))
        else:
            fifo.append(data)
        # A read is being split while coalescing (its __send_held() is registered there).
        if _flush_before_close and (held := self.__held) >= 0:
            self.__held = held + 1
            if held:
                return  # sent by __send_held(); the first push of a read goes out now
        try:
            self.initiate_send()
        finally:
            if dispatching.handling is not self or not dispatching.sole:  # interest_changed()'s test, inline
                interest_changed(self)

    def push_with_producer(self, producer: _Pushable) -> None:
        """Queue an object whose ``more()`` returns data until it returns ``b''``."""
        self.producer_fifo.append(producer)
        try:
            self.initiate_send()
        finally:
            interest_changed(self)

    def readable(self) -> bool:
        # Always: the terminator can be any length, so no input-size bound applies.
        return True

    def writable(self) -> bool:
        return True if self.producer_fifo else not self.connected

    def close_when_done(self) -> None:
        """Close the channel once everything queued so far has been sent."""
        self.producer_fifo.append(None)
        interest_changed(self)

    def initiate_send(self) -> None:
        """Send from the head of the fifo: at most one ``send()`` call per invocation."""
        while self.producer_fifo and self.connected:
            # Any: entries are duck-typed; slicing decides buffer versus producer.
            first: Any = self.producer_fifo[0]
            if type(first) is bytes and 0 < len(first) <= self.ac_out_buffer_size:
                # The common case, the loop below in short: one whole buffer to send.
                try:
                    sent = self.send(first)
                except OSError:
                    self.handle_error()
                    return
                if sent == len(first):
                    del self.producer_fifo[0]
                elif sent:
                    self.producer_fifo[0] = first[sent:]
                return
            if first is None:
                del self.producer_fifo[0]
                self.handle_close()
                return
            limit = self.ac_out_buffer_size
            try:
                chunk = first[:limit]
            except TypeError:
                more = first.more()
                if more:
                    self.producer_fifo.appendleft(more)
                else:
                    del self.producer_fifo[0]
                continue
            empty = not first
            if empty:
                del self.producer_fifo[0]
            data = chunk
            if isinstance(chunk, str) and self.use_encoding:
                data = chunk.encode(self.encoding)
            try:
                sent = self.send(data)
            except OSError:
                self.handle_error()
                return
            if not sent or empty:
                return
            if len(data) != len(chunk):
                # Multi-byte encoding: the unsent bytes, then the text not yet chunked.
                rest = first[len(chunk) :]
                if rest:
                    self.producer_fifo[0] = rest
                else:
                    del self.producer_fifo[0]
                if sent < len(data):
                    self.producer_fifo.appendleft(data[sent:])
            elif sent < len(data) or limit < len(first):
                self.producer_fifo[0] = first[sent:]
            else:
                del self.producer_fifo[0]
            return

    def __send_held(self) -> None:
        """Send what the pushes held back while coalescing would have sent one by one.

        Called when ``handle_read()`` returns, and by ``discard_buffers()`` and
        ``dispatcher.close()`` (through ``asyncore._flush_before_close``, only while
        replies are held): what 3.11 had already sent goes out first.

        Each held push stands for one ``initiate_send()`` 3.11 would have made: runs of
        non-empty ``bytes`` entries at the head of the fifo go out joined (at most
        ``ac_out_buffer_size`` bytes, one entry per held push), anything else through
        ``initiate_send()`` itself.  Stops when the kernel takes less than offered.
        """
        held = self.__held
        self.__held = -1
        _flush_before_close.pop(id(self), None)
        if held < 2:
            return
        budget = held - 1  # the first push was sent when it was made
        fifo = self.producer_fifo
        limit = self.ac_out_buffer_size
        while budget > 0 and fifo and self.connected:
            pieces: list[bytes] = []
            size = 0
            for entry in fifo:
                if type(entry) is not bytes or not entry or size + len(entry) > limit:
                    break
                pieces.append(entry)
                size += len(entry)
                if len(pieces) == budget:
                    break
            if len(pieces) < 2:
                budget -= 1
                self.initiate_send()
                continue
            try:
                sent = self.send(b"".join(pieces))
            except OSError:
                self.handle_error()
                break
            budget -= len(pieces)
            for entry in pieces:
                if sent < len(entry):
                    if sent:
                        fifo[0] = entry[sent:]
                    budget = 0  # the kernel is full: wait for handle_write()
                    break
                fifo.popleft()
                sent -= len(entry)
        interest_changed(self)

    def discard_buffers(self) -> None:
        """Drop all buffered input, collected data and queued output."""
        # Replies held by coalesce_pushes were already sent in 3.11: send them, not drop them.
        self.__send_held()
        self.ac_in_buffer = b""
        del self.incoming[:]
        self.producer_fifo.clear()
        interest_changed(self)


class simple_producer:
    """A producer that hands out ``data`` in pieces of at most ``buffer_size``."""

    __module__ = "asynchat"

    # The data not yet handed out is self.__data[self.__pos:].
    __data: bytes
    __pos: int

    def __init__(self, data: bytes, buffer_size: int = 512) -> None:
        self.data = data
        self.buffer_size = buffer_size

    @property
    def data(self) -> bytes:
        """The data not yet returned by ``more()``."""
        if self.__pos:
            self.__data = self.__data[self.__pos :]
            self.__pos = 0
        return self.__data

    @data.setter
    def data(self, value: bytes) -> None:
        self.__data = value
        self.__pos = 0

    def more(self) -> bytes:
        pos = self.__pos
        size = self.buffer_size
        if len(self.__data) - pos > size:
            self.__pos = pos + size
            return self.__data[pos : pos + size]
        rest = self.data
        self.data = b""
        return rest


# The scan reads producer_fifo and connected as writable() does, instead of calling it.
_scan.declare_stock(readable=async_chat.readable, writable=async_chat.writable, writable_unless_empty="producer_fifo")


def _stock_senders(cls: type) -> bool:
    return getattr(cls, "send", None) is asyncore.dispatcher.send and (
        getattr(cls, "initiate_send", None) is async_chat.initiate_send
    )


_has_stock_senders = PerClass(_stock_senders)


def _sends_like_3_11(chat: async_chat) -> bool:
    """Does ``chat`` use 3.11's ``send()`` and ``initiate_send()`` (the condition to coalesce)?"""
    if not _has_stock_senders(type(chat)):
        return False
    return not (replaced_on_instance(chat, "send") or replaced_on_instance(chat, "initiate_send"))


def find_prefix_at_end(haystack: AnyStr, needle: AnyStr) -> int:
    """Return the length of the longest proper prefix of ``needle`` that ends ``haystack``.

    Only meaningful when ``needle`` does not occur at the end of ``haystack``;
    ``find_prefix_at_end(b"qwerty\\r", b"\\r\\n") == 1``.
    """
    if not needle:
        return -1  # what 3.11 returned for an empty needle
    for length in range(len(needle) - 1, 0, -1):
        if haystack.endswith(needle[:length]):
            return length
    return 0


def _partial_terminator_at_end(buf: bytes, start: int, term: bytes) -> int:
    # find_prefix_at_end(buf[start:], term) without copying buf: only the last
    # len(term) - 1 bytes can hold a proper prefix of term.
    for length in range(len(term) - 1, 0, -1):
        if buf.endswith(term[:length], start):
            return length
    return 0
