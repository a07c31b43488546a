"""Python 3.11's ``asyncore`` API, served by an asyncio event loop.

Every public name of the 3.11 module is here with the same signature, defaults
and behaviour: ``dispatcher`` and ``dispatcher_with_send``, ``file_wrapper`` and
``file_dispatcher``, ``loop``, ``poll``/``poll2``/``poll3``, ``read``, ``write``,
``readwrite``, ``_exception``, ``close_all``, ``compact_traceback``, ``ExitNow``
and ``socket_map``.  Like 3.11 the module has no ``__all__``.

What differs is underneath: ``loop()`` runs cycles on an asyncio event loop (the
default loop or uvloop, see :func:`asyncore_on_asyncio.set_loop_factory`) instead
of calling ``select()``, so there is no FD_SETSIZE limit and coroutines can share
the loop.  The few observable differences (an event is never delivered to a
different object that took over the fd number during the cycle; a socket closed
behind its dispatcher's back gets ``handle_close()`` instead of crashing
``select()``; the module emits no DeprecationWarning) are listed in MIGRATION.md.
"""

from __future__ import annotations

import os
import select  # also a 3.11 module global that legacy code reaches as asyncore.select
import socket
import sys
import time  # noqa: F401 - likewise
import warnings
from collections.abc import Callable

# The 3.11 module imported these errno names at top level; legacy code uses asyncore.EWOULDBLOCK...
from errno import (  # noqa: F401
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNRESET,
    EINPROGRESS,
    EINVAL,
    EISCONN,
    ENOTCONN,
    EPIPE,
    ESHUTDOWN,
    EWOULDBLOCK,
    errorcode,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from . import _arguments, _driver, _engine, _scan, _waiters
from ._errors import DISCONNECTED as _DISCONNECTED
from ._errors import RERAISED as _reraised_exceptions
from ._errors import ExitNow  # noqa: F401 - public API
from ._errors import strerror as _strerror
from ._handlers import _exception, read, readwrite, write  # noqa: F401 - public API

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# Inside ``dispatcher`` the name ``socket`` is the attribute, not the module: its
# annotations use these aliases.
_Socket = socket.socket
_AF_INET = socket.AF_INET
_SOCK_STREAM = socket.SOCK_STREAM
_HAS_POLL = hasattr(select, "poll")
_Map = dict[int, Any]
"""A socket map: fd -> dispatcher (any object with the dispatcher interface)."""
_Address = tuple[Any, ...] | str | bytes
"""What ``bind()`` and ``connect()`` take, as ``socket.socket``'s methods do."""


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


socket_map: dict[int, dispatcher] = {}
"""The default map.  ``loop()`` reads this module global at each call, so rebinding it works."""

_flush_before_close: dict[int, Callable[[], None]] = {}
"""id(dispatcher) -> what ``close()`` must call first: set by asynchat while an
``async_chat`` holds replies back (``coalesce_pushes``), and only then."""


def poll(timeout: float | None = 0.0, map: _Map | None = None) -> None:
    """Run one cycle, dispatching as ``select()`` reported events (reads, writes, then priority).

    On an empty map it returns at once; otherwise a ``timeout`` that ``select()``
    refuses raises what ``select()`` raises (ValueError, TypeError, OverflowError).
    """
    if map is None:
        map = socket_map
    if map:
        _driver.run(map, _arguments.select_timeout(timeout), False, 1)


def poll2(timeout: float | None = 0.0, map: _Map | None = None) -> None:
    """Run one cycle, dispatching as ``poll()`` reported events (``readwrite`` per object).

    As 3.11, ``timeout`` becomes ``int(timeout * 1000)`` milliseconds first, even
    for an empty map (so NaN raises ValueError); a negative timeout waits forever.
    Where ``select.poll`` does not exist (Windows) it raises AttributeError, as 3.11's
    did; ``loop(use_poll=True)`` uses ``select()`` semantics there instead.
    """
    milliseconds = _arguments.poll_milliseconds(timeout)
    if not _HAS_POLL:
        select.poll  # noqa: B018 - AttributeError where poll() does not exist (Windows), as in 3.11
    if map is None:
        map = socket_map
    if map:
        _driver.run(map, _arguments.poll_seconds(milliseconds), True, 1)


poll3 = poll2


def loop(
    timeout: float | None = 30.0,
    use_poll: bool = False,
    map: _Map | None = None,
    count: int | None = None,
) -> None:
    """Run cycles until ``map`` is empty, or for ``count`` cycles.

    Each cycle waits at most ``timeout`` seconds for an event.  ``use_poll``
    selects ``poll()``-style dispatch.  Raises RuntimeError inside a running
    asyncio loop: use ``await asyncore_on_asyncio.serve(map)`` there.

    The arguments are judged as 3.11 judged them, before the first cycle: an
    empty map returns at once; ``count`` is counted down by one while it is
    above 0 (``count=1.5`` runs two cycles); a bad ``timeout`` raises what
    ``poll()``/``poll2()`` raise.
    """
    if map is None:
        map = socket_map
    use_poll = bool(use_poll)
    if not map:
        return
    # The common argument types are judged here, without a call (host loops call this often).
    cycles = (count if count > 0 else 0) if type(count) is int else _arguments.cycles(count)
    if cycles == 0:
        return
    if use_poll and _HAS_POLL:
        seconds = _arguments.poll_seconds(_arguments.poll_milliseconds(timeout))
    elif (type(timeout) is float or type(timeout) is int) and 0 <= timeout < _arguments.PLAIN_LIMIT:
        seconds = timeout + 0.0
    else:
        seconds = _arguments.select_timeout(timeout)
    _driver.run(map, seconds, use_poll, cycles)


class dispatcher:
    """A non-blocking socket with event handlers, registered in a socket map."""

    __module__ = "asyncore"

    debug = False
    connected = False
    accepting = False
    connecting = False
    closing = False
    addr: Any = None
    """The peer's address (or the one bound or connected to); ``Any``, as ``socket`` returns it."""
    ignore_log_types: frozenset[str] = frozenset({"warning"})

    socket: _Socket
    """The socket (a ``file_wrapper`` in a ``file_dispatcher``); ``None`` until one is set."""
    _fileno: int | None
    _map: _Map

    def __init__(self, sock: _Socket | None = None, map: _Map | None = None) -> None:
        self._map = socket_map if map is None else map
        self._fileno = None
        if not sock:
            # Typed as a socket for the code that runs once one is set, which is nearly all.
            self.socket = None  # type: ignore[assignment]
            return
        # A socket from a blocking source must not block the loop.
        sock.setblocking(False)
        self.set_socket(sock, map)
        self.connected = True
        try:
            self.addr = sock.getpeername()
        except OSError as exc:
            if exc.errno not in (ENOTCONN, EINVAL):
                # Broken in an unknown way: keep it out of the map, then tell the caller.
                self.del_channel(map)
                raise
            self.connected = False

    def __repr__(self) -> str:
        cls = type(self)
        status = [f"{cls.__module__}.{cls.__qualname__}"]
        if self.accepting and self.addr:
            status.append("listening")
        elif self.connected:
            status.append("connected")
        if self.addr is not None:
            try:
                status.append("%s:%d" % self.addr)
            except TypeError:
                status.append(repr(self.addr))
        return "<%s at %#x>" % (" ".join(status), id(self))

    # -- the map ------------------------------------------------------------------------

    def add_channel(self, map: _Map | None = None) -> None:
        if map is None:
            map = self._map
        map[self._fileno] = self  # type: ignore[index]  # None if no socket is set: as 3.11
        _engine.map_changed(map, self._fileno)
        if _engine.channel_hook is not None:
            _engine.channel_hook(self, True)

    def del_channel(self, map: _Map | None = None) -> None:
        fd = self._fileno
        if map is None:
            map = self._map
        if fd in map:
            del map[fd]
        # Unregister with the cached fd, before anyone closes it.
        _engine.map_changed(map, fd, self, closing=True)
        self._fileno = None
        if _waiters.used:
            _waiters.dispatcher_removed(self)
        if _engine.channel_hook is not None:
            _engine.channel_hook(self, False)

    def create_socket(self, family: int = _AF_INET, type: int = _SOCK_STREAM) -> None:
        self.family_and_type = family, type
        sock = socket.socket(family, type)
        sock.setblocking(False)
        self.set_socket(sock)

    def set_socket(self, sock: _Socket, map: _Map | None = None) -> None:
        self.socket = sock
        self._fileno = sock.fileno()
        self.add_channel(map)

    def set_reuse_addr(self) -> None:
        try:
            flags = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, flags | 1)
        except OSError:
            pass

    # -- predicates, asked before every wait ---------------------------------------------

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    # -- socket operations --------------------------------------------------------------

    def listen(self, num: int) -> None:
        self.accepting = True
        _engine.interest_changed(self)
        if os.name == "nt" and num > 5:
            num = 5
        return self.socket.listen(num)

    def bind(self, addr: _Address) -> None:
        self.addr = addr
        return self.socket.bind(addr)

    def connect(self, address: _Address) -> None:
        self.connected = False
        self.connecting = True
        err = self.socket.connect_ex(address)
        if err in (EINPROGRESS, EALREADY, EWOULDBLOCK) or (err == EINVAL and os.name == "nt"):
            self.addr = address
            return
        if err not in (0, EISCONN):
            raise OSError(err, errorcode.get(err, _strerror(err)))
        self.addr = address
        self.handle_connect_event()

    def accept(self) -> tuple[_Socket, Any] | None:
        """Return ``(conn, address)``, or ``None`` if no connection is waiting after all."""
        try:
            conn, addr = self.socket.accept()
        except TypeError:
            return None
        except OSError as exc:
            if exc.errno in (EWOULDBLOCK, ECONNABORTED, EAGAIN):
                return None
            raise
        return conn, addr

    def send(self, data: ReadableBuffer) -> int:
        try:
            return self.socket.send(data)
        except OSError as exc:
            if exc.errno == EWOULDBLOCK:
                return 0
            if exc.errno in _DISCONNECTED:
                self.handle_close()
                return 0
            raise

    def recv(self, buffer_size: int) -> bytes:
        try:
            data = self.socket.recv(buffer_size)
        except OSError as exc:
            if exc.errno in _DISCONNECTED:
                self.handle_close()
                return b""
            raise
        if not data:
            # End of stream: the peer closed its side.
            self.handle_close()
            return b""
        return data

    def close(self) -> None:
        if _flush_before_close:
            flush = _flush_before_close.pop(id(self), None)
            if flush is not None:
                flush()  # an async_chat's replies held back by coalesce_pushes
        self.connected = False
        self.accepting = False
        self.connecting = False
        fd = self._fileno
        self.del_channel()
        if self.socket is not None:
            try:
                _engine.close_socket(self.socket, fd)
            except OSError as exc:
                if exc.errno not in (ENOTCONN, EBADF):
                    raise

    # -- logging ------------------------------------------------------------------------

    def log(self, message: Any) -> None:
        sys.stderr.write(f"log: {message}\n")

    def log_info(self, message: Any, type: str = "info") -> None:
        if type not in self.ignore_log_types:
            print(f"{type}: {message}")

    # -- events, as the loop delivers them ----------------------------------------------

    def handle_read_event(self) -> None:
        if self.accepting:
            # A listening socket's read event is a connection to accept.
            self.handle_accept()
            return
        if not self.connected and self.connecting:
            self.handle_connect_event()
        self.handle_read()

    def handle_connect_event(self) -> None:
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, _strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False
        if _waiters.used:
            _waiters.dispatcher_connected(self)

    def handle_write_event(self) -> None:
        if self.accepting:
            # Listening sockets are never writable; ignore the event.
            return
        if not self.connected and self.connecting:
            self.handle_connect_event()
        self.handle_write()

    def handle_expt_event(self) -> None:
        # An exceptional condition is either a socket error or urgent (OOB) data.
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            self.handle_close()
        else:
            self.handle_expt()

    def handle_error(self) -> None:
        """Log the exception being handled as one compact line, then ``handle_close()``."""
        _, exc_type, exc_value, tbinfo = compact_traceback()
        try:
            self_repr = repr(self)
        except BaseException:
            self_repr = "<__repr__(self) failed for object at %0x>" % id(self)
        self.log_info(
            f"uncaptured python exception, closing channel {self_repr} "
            f"({exc_type}:{exc_value} {tbinfo})",
            "error",
        )
        self.handle_close()

    # -- handlers meant to be overridden ------------------------------------------------

    def handle_expt(self) -> None:
        self.log_info("unhandled incoming priority event", "warning")

    def handle_read(self) -> None:
        self.log_info("unhandled read event", "warning")

    def handle_write(self) -> None:
        self.log_info("unhandled write event", "warning")

    def handle_connect(self) -> None:
        self.log_info("unhandled connect event", "warning")

    def handle_accept(self) -> None:
        pair = self.accept()
        if pair is not None:
            self.handle_accepted(*pair)

    def handle_accepted(self, sock: _Socket, addr: Any) -> None:
        sock.close()
        self.log_info("unhandled accepted event", "warning")

    def handle_close(self) -> None:
        self.log_info("unhandled close event", "warning")
        self.close()


class dispatcher_with_send(dispatcher):
    """A dispatcher whose ``send()`` buffers what the socket does not take at once."""

    __module__ = "asyncore"

    def __init__(self, sock: _Socket | None = None, map: _Map | None = None) -> None:
        dispatcher.__init__(self, sock, map)
        self.out_buffer = b""

    def initiate_send(self) -> None:
        sent = dispatcher.send(self, self.out_buffer[:65536])
        self.out_buffer = self.out_buffer[sent:]

    def handle_write(self) -> None:
        self.initiate_send()

    def writable(self) -> bool:
        return (not self.connected) or len(self.out_buffer)  # type: ignore[return-value]

    def send(self, data: ReadableBuffer) -> None:  # type: ignore[override]
        if self.debug:
            self.log_info(f"sending {data!r}")
        self.out_buffer = self.out_buffer + data
        self.initiate_send()
        if self.out_buffer:
            _engine.interest_changed(self)


_scan.declare_stock(
    readable=dispatcher.readable,
    writable=dispatcher.writable,
    quiet_urgent={name: getattr(dispatcher, name) for name in ("handle_expt_event", "handle_expt", "log_info")},
)
_scan.declare_stock(writable=dispatcher_with_send.writable)


def compact_traceback() -> tuple[tuple[str, str, str], type[BaseException] | None, BaseException | None, str]:
    """Summarise the exception being handled: ``((file, function, line), type, value, info)``."""
    exc_type, exc_value, tb = sys.exc_info()
    if tb is None:
        raise AssertionError("traceback does not exist")
    frames: list[tuple[str, str, str]] = []
    walker: TracebackType | None = tb
    while walker is not None:
        code = walker.tb_frame.f_code
        frames.append((code.co_filename, code.co_name, str(walker.tb_lineno)))
        walker = walker.tb_next
    info = " ".join(f"[{file}|{function}|{line}]" for file, function, line in frames)
    return frames[-1], exc_type, exc_value, info


def close_all(map: _Map | None = None, ignore_all: bool = False) -> None:
    """Close every object of ``map`` (EBADF is ignored; other errors unless ``ignore_all``), then clear it."""
    if map is None:
        map = socket_map
    for obj in list(map.values()):
        try:
            obj.close()
        except OSError as exc:
            if exc.errno != EBADF and not ignore_all:
                raise
        except _reraised_exceptions:
            raise
        except BaseException:
            if not ignore_all:
                raise
    map.clear()


if os.name == "posix":

    class file_wrapper:
        """Makes a file descriptor look enough like a socket for a dispatcher; owns a dup of it."""

        __module__ = "asyncore"

        def __init__(self, fd: int) -> None:
            self.fd = os.dup(fd)

        def __del__(self) -> None:
            if self.fd >= 0:
                warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
            self.close()

        def recv(self, *args: Any) -> bytes:
            return os.read(self.fd, *args)

        def send(self, *args: Any) -> int:
            return os.write(self.fd, *args)

        read = recv
        write = send

        def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int:
            if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
                return 0
            raise NotImplementedError("Only asyncore specific behaviour implemented.")

        def close(self) -> None:
            if self.fd < 0:
                return
            fd, self.fd = self.fd, -1
            os.close(fd)

        def fileno(self) -> int:
            return self.fd

    class file_dispatcher(dispatcher):
        """A dispatcher over a file descriptor (pipe, tty, regular file...) instead of a socket.

        Regular files cannot be watched by epoll or libuv; like ``select()``, the
        loop treats them as always ready, so a reader gets the file to its end.
        """

        __module__ = "asyncore"

        socket: file_wrapper  # type: ignore[assignment]  # not a socket, but enough of one

        def __init__(self, fd: int | _HasFileno, map: _Map | None = None) -> None:
            dispatcher.__init__(self, None, map)
            self.connected = True
            number: Any = fd
            try:
                number = number.fileno()
            except AttributeError:
                pass
            self.set_file(number)
            os.set_blocking(number, False)

        def set_file(self, fd: int) -> None:
            self.socket = file_wrapper(fd)
            self._fileno = self.socket.fileno()
            self.add_channel()
