"""Calling a dispatcher's event handlers with asyncore's error contract.

These are asyncore's public ``read``, ``write``, ``_exception`` and ``readwrite``:
programs that run their own poller call them directly, and the driver calls them
for every event it dispatches.  A handler's exception goes to the object's
``handle_error()`` while the exception is still being handled (so a bare ``raise``
inside ``handle_error`` re-raises it); the exceptions in :data:`RERAISED` and
anything ``handle_error`` itself raises propagate.

:data:`error_hook`, ``None`` unless the report (:mod:`._report`) is on, is called
with the object just before its ``handle_error()``, the exception still set.

:func:`call_each` and :func:`call_each_polled` make one cycle's calls in the order the
compiled dispatch (:mod:`._dispatch`) decided; they stay interpreted so that the handlers
are called from Python.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import DISCONNECTED, RERAISED

__all__ = [
    "POLLERR",
    "POLLHUP",
    "POLLIN",
    "POLLNVAL",
    "POLLOUT",
    "POLLPRI",
    "POLL_CLOSE",
    "Handling",
    "_exception",
    "call_each",
    "call_each_polled",
    "read",
    "readwrite",
    "write",
]

# Linux values; select.POLL* may be missing on platforms without poll().
POLLIN: int = getattr(select, "POLLIN", 0x001)
POLLPRI: int = getattr(select, "POLLPRI", 0x002)
POLLOUT: int = getattr(select, "POLLOUT", 0x004)
POLLERR: int = getattr(select, "POLLERR", 0x008)
POLLHUP: int = getattr(select, "POLLHUP", 0x010)
POLLNVAL: int = getattr(select, "POLLNVAL", 0x020)
POLL_CLOSE: int = POLLERR | POLLHUP | POLLNVAL
"""Poll flags that make ``readwrite`` call ``handle_close()``."""

error_hook: Callable[[Any], None] | None = None
"""Told of every ``handle_error()`` these functions are about to call (only on that path)."""


def read(obj: Any) -> None:
    """Call ``obj.handle_read_event()``; a failure goes to ``obj.handle_error()``."""
    try:
        obj.handle_read_event()
    except RERAISED:
        raise
    except BaseException:
        if error_hook is not None:
            error_hook(obj)
        obj.handle_error()


def write(obj: Any) -> None:
    """Call ``obj.handle_write_event()``; a failure goes to ``obj.handle_error()``."""
    try:
        obj.handle_write_event()
    except RERAISED:
        raise
    except BaseException:
        if error_hook is not None:
            error_hook(obj)
        obj.handle_error()


def _exception(obj: Any) -> None:
    """Call ``obj.handle_expt_event()``; a failure goes to ``obj.handle_error()``."""
    try:
        obj.handle_expt_event()
    except RERAISED:
        raise
    except BaseException:
        if error_hook is not None:
            error_hook(obj)
        obj.handle_error()


def readwrite(obj: Any, flags: int) -> None:
    """Dispatch one ``poll()`` result: read, write, priority, then close, in that order.

    ``flags`` are raw ``select.POLL*`` bits.  An ``OSError`` whose errno means
    "disconnected" becomes ``handle_close()``; any other failure ``handle_error()``.
    """
    try:
        if flags & POLLIN:
            obj.handle_read_event()
        if flags & POLLOUT:
            obj.handle_write_event()
        if flags & POLLPRI:
            obj.handle_expt_event()
        if flags & POLL_CLOSE:
            obj.handle_close()
    except OSError as exc:
        if exc.errno in DISCONNECTED:
            obj.handle_close()
        else:
            if error_hook is not None:
                error_hook(obj)
            obj.handle_error()
    except RERAISED:
        raise
    except BaseException:
        if error_hook is not None:
            error_hook(obj)
        obj.handle_error()


# -- a cycle's calls, in the order the dispatch (compiled) decided ---------------------------


class Handling(Protocol):
    handling: object
    """The object whose handler runs now (set here, for the caller's notifications)."""


def call_each(
    holder: Handling, map: dict[Any, Any], entries: list[tuple[Any, int, Any, int]], handler: Callable[[Any], None]
) -> None:
    """``handler(obj)`` for each ``(key, fd, obj, events)`` of ``entries`` while ``map`` still
    holds ``obj`` under ``key`` (an earlier handler may have closed it), naming it in
    ``holder.handling``.

    Interpreted on purpose, like :mod:`._predicates`: a handler called from here is a Python
    to Python call, which costs CPython 3.12+ less than one made from compiled code.
    """
    get = map.get
    for key, _, obj, _ in entries:
        if get(key) is obj:
            holder.handling = obj
            handler(obj)


def call_each_polled(
    holder: Handling, map: dict[Any, Any], polled: list[tuple[Any, Any, int]], handler: Callable[[Any, int], None]
) -> None:
    """:func:`call_each` for ``(key, obj, flags)`` triples: ``handler(obj, flags)``."""
    get = map.get
    for key, obj, flags in polled:
        if get(key) is obj:
            holder.handling = obj
            handler(obj, flags)
