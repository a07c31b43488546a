"""Turning readiness into 3.11's callbacks, in the order 3.11's ``select()`` or ``poll()`` loop used.

:func:`dispatch_batch` calls the handlers of one cycle: with ``poll()`` semantics one
``readwrite(obj, flags)`` per object in map order; with ``select()`` semantics the
flags become select()'s three sets and every read event goes first, then every write
event, then every priority event.  :func:`run_nested` is 3.11's loop on a private
``poll()`` (``select()`` where there is no ``poll()``), for ``loop()`` called
from inside a handler.

The four handler functions are a parameter (:class:`Handlers`, default
:data:`STOCK`, ``_handlers``' own): the report (:mod:`._report`) passes timed
twins of them, and the order stays this module's alone.  Compiled, this module sorts
the events into sets in C; the calls themselves are made by ``_handlers.call_each``,
interpreted (see there why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from ._handlers import Handling, _exception, call_each, call_each_polled, read, readwrite, write
from ._predicates import wanted
from ._readiness import (
    POLL_REQUEST,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    PRIORITY,
    READ,
    WRITE,
)
from ._readiness.pollster import new_pollster
from ._scan import Batch, fd_of_key

__all__ = ["SELECT_READ", "SELECT_WRITE", "STOCK", "DispatchBatch", "Handlers", "Handling", "dispatch_batch", "run_nested"]


class Handlers(NamedTuple):
    """What a dispatch calls for each kind of event (``_handlers``' contract)."""

    read: Callable[[Any], None]
    write: Callable[[Any], None]
    exception: Callable[[Any], None]
    readwrite: Callable[[Any, int], None]


STOCK: Handlers = Handlers(read, write, _exception, readwrite)

DispatchBatch = Callable[[Handling, dict[Any, Any], Batch, dict[int, int], bool], None]
""":func:`dispatch_batch`'s signature without ``handlers``: what a driver calls each cycle."""

SELECT_READ: Final = POLLIN | POLLHUP | POLLERR
"""The poll() flags select() reports as readable (Linux's mapping: a hang-up or error is)."""
SELECT_WRITE: Final = POLLOUT | POLLERR
"""The poll() flags select() reports as writable (an error is)."""


def dispatch_batch(
    holder: Handling,
    map: dict[Any, Any],
    batch: Batch,
    revents: dict[int, int],
    use_poll: bool,
    handlers: Handlers = STOCK,
) -> None:
    """Call the handlers for ``batch`` in 3.11's order; an event goes only to the object it was for.

    ``revents`` holds the non-zero ``poll()`` flags by fd.  With ``use_poll`` each object
    gets one ``readwrite()``; otherwise the flags become ``select()``'s three sets
    (Linux's mapping: a hang-up or error is readable, an error writable).  While a
    handler runs, ``holder.handling`` names its object.
    """
    if use_poll:
        _dispatch_poll(holder, map, batch, revents, handlers.readwrite)
    else:
        _dispatch_select(holder, map, batch, revents, handlers)


def _dispatch_poll(
    holder: Handling,
    map: dict[Any, Any],
    batch: Batch,
    revents: dict[int, int],
    readwrite: Callable[[Any, int], None],
) -> None:
    polled = []
    for key, fd, obj, _ in batch:
        flags = revents.get(fd, 0)
        if flags:
            polled.append((key, obj, flags))
    call_each_polled(holder, map, polled, readwrite)


def _dispatch_select(
    holder: Handling, map: dict[Any, Any], batch: Batch, revents: dict[int, int], handlers: Handlers
) -> None:
    read, write, exception, readwrite = handlers
    select_read, select_write = SELECT_READ, SELECT_WRITE
    reads = []
    writes = []
    exceptional = []
    invalid = []
    for entry in batch:  # (the entries themselves go into the sets: no tuple per event)
        _, fd, _, events = entry
        flags = revents.get(fd, 0)
        if not flags:
            continue
        if flags & POLLNVAL:
            invalid.append(entry)
            continue
        if events & READ and flags & select_read:
            reads.append(entry)
        if events & WRITE and flags & select_write:
            writes.append(entry)
        if events & PRIORITY and flags & POLLPRI:
            exceptional.append(entry)
    if reads:
        call_each(holder, map, reads, read)
    if writes:
        call_each(holder, map, writes, write)
    if exceptional:
        call_each(holder, map, exceptional, exception)
    if invalid:
        # select() would fail with EBADF; this is what poll() reports (POLLNVAL).
        call_each_polled(holder, map, [(key, obj, POLLNVAL) for key, _, obj, _ in invalid], readwrite)


class _Nested:
    handling: object = None


def run_nested(
    map: dict[Any, Any],
    timeout: float | None,
    use_poll: bool,
    count: int | None,
    dispatch: DispatchBatch = dispatch_batch,
) -> None:
    """3.11's cycles on a private ``poll()`` (or ``select()``), for a ``loop()`` called from inside a handler."""
    write_bits = WRITE | (0 if use_poll else PRIORITY)
    holder = _Nested()
    while map and (count is None or count > 0):
        batch: Batch = []
        for key, obj in list(map.items()):
            events = wanted(obj, write_bits)
            fd = None if not events else key if type(key) is int else fd_of_key(key)
            if fd is not None:
                batch.append((key, fd, obj, events))
        pollster = new_pollster()
        for _, fd, _, events in batch:
            pollster.register(fd, POLL_REQUEST[events])
        revents = dict(pollster.poll(None if timeout is None else int(timeout * 1000)))
        dispatch(holder, map, batch, revents, use_poll)
        if count is not None:
            count -= 1
