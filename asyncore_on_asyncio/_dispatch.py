"""Turning readiness into 3.11's callbacks: what each object wants, what is ready, in which order.

The driver (:mod:`._driver`) decides *when* a cycle dispatches; this module decides
*what*: :func:`confirm` asks a zero-timeout ``poll()`` for the exact flags of the fds
the event loop reported, and :func:`dispatch_batch` calls the handlers in the order
3.11's ``select()`` or ``poll()`` loop did.  :func:`run_nested` is that loop on a
private ``poll()``, for ``loop()`` called from inside a handler.
"""

from __future__ import annotations

import select
from typing import Any

from . import _engine
from ._handlers import POLLIN, POLLOUT, POLLPRI, _exception, read, readwrite, write
from ._interest import INVALID, PRIORITY, READ, WRITE

__all__ = [
    "POLLERR",
    "POLLHUP",
    "POLLNVAL",
    "READ_ONLY",
    "READ_WRITE",
    "Snapshot",
    "confirm",
    "dispatch_batch",
    "fd_of_key",
    "is_closed",
    "run_nested",
    "wanted",
]

POLLERR: int = getattr(select, "POLLERR", 0x008)
POLLHUP: int = getattr(select, "POLLHUP", 0x010)
POLLNVAL: int = getattr(select, "POLLNVAL", 0x020)
READ_ONLY = READ | PRIORITY
READ_WRITE = READ | WRITE | PRIORITY

Snapshot = list[tuple[Any, int, Any, int]]
"""(map key, fd, object, wanted events) for each map entry that wants something."""


def wanted(obj: Any, write_extra: int) -> int:
    """READ|WRITE|PRIORITY bits for ``obj``, asking ``readable()`` then ``writable()`` as 3.11.

    A listening socket is never writable; READ_ONLY | WRITE | write_extra == READ_WRITE.
    """
    return (READ_ONLY if obj.readable() else 0) | (
        WRITE | write_extra if obj.writable() and not obj.accepting else 0
    )


def fd_of_key(key: Any) -> int | None:
    fd = key.fileno()
    # Not (yet) a usable fd: skipped, asked again next cycle.
    return fd if type(fd) is int and fd >= 0 else None


def is_closed(sock: Any) -> bool:
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return False
    try:
        fd = fileno()
    except (OSError, ValueError):
        return True
    return type(fd) is int and fd < 0


def confirm(batch: Snapshot, ready: dict[int, int]) -> dict[int, int]:
    """What a zero-timeout ``poll()`` says now about the fds the event loop reported.

    The event loop tells *when* to look; this tells *what*, with the exact flags that
    3.11's ``select()``/``poll()`` saw.  It also drops stale reports (a callback that
    asyncio queued before a handler drained the fd).  Returns the non-zero flags only;
    an fd known to be closed gets ``POLLNVAL``.
    """
    pollster = select.poll()
    register = pollster.register
    request = _POLL_REQUEST
    invalid = []
    for _, fd, _, events in batch:
        if ready[fd] & INVALID:
            invalid.append(fd)
        else:
            register(fd, request[events])
    revents = dict(pollster.poll(0))
    for fd in invalid:
        revents[fd] = POLLNVAL
    return revents


def _poll_request(events: int) -> int:
    return (
        (POLLIN if events & READ else 0)
        | (POLLOUT if events & WRITE else 0)
        | (POLLPRI if events & PRIORITY else 0)
    )


_POLL_REQUEST = tuple(_poll_request(events) for events in range(16))
"""``_poll_request(events)`` for every combination of READ, WRITE, PRIORITY and INVALID."""


_SELECT_READ = POLLIN | POLLHUP | POLLERR
_SELECT_WRITE = POLLOUT | POLLERR


def dispatch_batch(map: dict[Any, Any], batch: Snapshot, revents: dict[int, int], use_poll: bool) -> None:
    """Call the handlers for ``batch`` in 3.11's order; an event goes only to the object it was for.

    ``revents`` holds the non-zero ``poll()`` flags by fd.  With ``use_poll`` each object
    gets one ``readwrite()``; otherwise the flags become ``select()``'s three sets
    (Linux's mapping: a hang-up or error is readable, an error writable) and every read
    event goes first, then every write event, then every priority event.  While a
    handler runs, :data:`._engine.handling` names its object.
    """
    outer = _engine.handling  # not None when a handler runs a nested loop()
    try:
        if use_poll:
            _dispatch_poll(map, batch, revents)
        else:
            _dispatch_select(map, batch, revents)
    finally:
        _engine.handling = outer


def _dispatch_poll(map: dict[Any, Any], batch: Snapshot, revents: dict[int, int]) -> None:
    get = map.get
    flags_of = revents.get
    for key, fd, obj, _ in batch:
        flags = flags_of(fd, 0)
        if flags and get(key) is obj:
            _engine.handling = obj
            readwrite(obj, flags)


def _dispatch_select(map: dict[Any, Any], batch: Snapshot, revents: dict[int, int]) -> None:
    get = map.get
    flags_of = revents.get
    reads = []
    writes = []
    exceptional = []
    invalid = []
    for key, fd, obj, events in batch:
        flags = flags_of(fd, 0)
        if not flags:
            continue
        if flags & POLLNVAL:
            invalid.append((key, obj))
            continue
        if events & READ and flags & _SELECT_READ:
            reads.append((key, obj))
        if events & WRITE and flags & _SELECT_WRITE:
            writes.append((key, obj))
        if events & PRIORITY and flags & POLLPRI:
            exceptional.append((key, obj))
    for key, obj in reads:
        if get(key) is obj:
            _engine.handling = obj
            read(obj)
    for key, obj in writes:
        if get(key) is obj:
            _engine.handling = obj
            write(obj)
    for key, obj in exceptional:
        if get(key) is obj:
            _engine.handling = obj
            _exception(obj)
    for key, obj in invalid:
        if get(key) is obj:
            # select() would fail with EBADF; this is what poll() reports (POLLNVAL).
            _engine.handling = obj
            readwrite(obj, POLLNVAL)


def run_nested(map: dict[Any, Any], timeout: float | None, use_poll: bool, count: int | None) -> None:
    """3.11's cycles on a private ``poll()``, for a ``loop()`` called from inside a handler."""
    write_extra = 0 if use_poll else PRIORITY
    while map and (count is None or count > 0):
        batch: Snapshot = []
        for key, obj in list(map.items()):
            fd = key if type(key) is int else fd_of_key(key)
            events = 0 if fd is None else wanted(obj, write_extra)
            if fd is not None and events:
                batch.append((key, fd, obj, events))
        pollster = select.poll()
        for _, fd, _, events in batch:
            pollster.register(fd, _POLL_REQUEST[events])
        revents = dict(pollster.poll(None if timeout is None else int(timeout * 1000)))
        dispatch_batch(map, batch, revents, use_poll)
        if count is not None:
            count -= 1
