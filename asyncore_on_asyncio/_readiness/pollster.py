"""A ``select.poll`` object, or where ``poll()`` does not exist (Windows) the same interface over ``select()``.

The per-fd fallback source (:mod:`.loop_fds`) and a nested ``loop()``
(:func:`.._dispatch.run_nested`) ask the kernel for exact readiness with a
pollster: ``register(fd, mask)``, ``unregister(fd)`` (``KeyError`` if not
registered) and ``poll(milliseconds)``.  :func:`new_pollster` gives
``select.poll()`` where it exists; elsewhere :class:`SelectPollster`, which asks
``select.select()`` as 3.11's ``poll()`` function did there:

* POLLIN asks the read set, POLLOUT the write set and POLLPRI the exceptional
  set, and they answer POLLIN, POLLOUT and POLLPRI.  ``select()`` has no hang-up
  or error flag: a hung-up socket is readable, and on Windows a failed
  ``connect()`` is exceptional (the dispatcher's ``handle_expt_event()`` finds
  the error in SO_ERROR and closes, as in 3.11).
* An fd closed behind our back makes ``select()`` fail (EBADF; WSAENOTSOCK on
  Windows); each fd is then asked alone, the closed ones are reported as
  POLLNVAL, as ``poll()`` reports them, and the others are asked again together.
* ``select()``'s own limits stay: fds of at most FD_SETSIZE - 1 (1023 on
  Linux) and, on Windows, at most 512 sockets per call (``ValueError``).
* With nothing registered it sleeps the timeout (Windows' ``select()`` refuses
  three empty sets), as 3.11's ``poll()`` function did.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Protocol

from .._handlers import POLLIN, POLLNVAL, POLLOUT, POLLPRI

__all__ = ["Pollster", "SelectPollster", "new_pollster"]


class Pollster(Protocol):
    """What is used of a ``select.poll`` object."""

    def register(self, fd: int, eventmask: int = ..., /) -> None: ...

    def unregister(self, fd: int, /) -> None: ...

    def poll(self, timeout: float | None = ..., /) -> list[tuple[int, int]]: ...


class SelectPollster:
    """``select.poll``'s interface, answered by ``select.select()`` (see the module docstring)."""

    def __init__(self) -> None:
        self._masks: dict[int, int] = {}

    def register(self, fd: int, eventmask: int = POLLIN | POLLPRI | POLLOUT, /) -> None:
        self._masks[fd] = eventmask

    def unregister(self, fd: int, /) -> None:
        del self._masks[fd]

    def poll(self, timeout: float | None = None, /) -> list[tuple[int, int]]:
        """Ready fds and their flags; ``timeout`` in milliseconds (``None`` or negative: no limit)."""
        seconds = None if timeout is None or timeout < 0 else timeout / 1000
        masks = self._masks
        readers = [fd for fd, mask in masks.items() if mask & POLLIN]
        writers = [fd for fd, mask in masks.items() if mask & POLLOUT]
        exceptional = [fd for fd, mask in masks.items() if mask & POLLPRI]
        if not (readers or writers or exceptional):
            if seconds is None:
                threading.Event().wait()  # poll() with nothing to wait for waits for ever
            elif seconds:
                time.sleep(seconds)
            return []
        try:
            return _select(readers, writers, exceptional, seconds, {})
        except OSError:
            closed = {fd: POLLNVAL for fd in masks if not _selectable(fd)}
            if not closed:
                raise
        # Nothing waits now: the closed fds are ready.
        readers, writers, exceptional = (
            [fd for fd in fds if fd not in closed] for fds in (readers, writers, exceptional)
        )
        return _select(readers, writers, exceptional, 0, closed)


def _select(
    readers: list[int], writers: list[int], exceptional: list[int], seconds: float | None, ready: dict[int, int]
) -> list[tuple[int, int]]:
    """``ready`` plus what one ``select()`` of the three sets finds, as poll() flags."""
    if readers or writers or exceptional:
        r, w, x = select.select(readers, writers, exceptional, seconds)
        for fds, flag in ((r, POLLIN), (w, POLLOUT), (x, POLLPRI)):
            for fd in fds:
                ready[fd] = ready.get(fd, 0) | flag
    return list(ready.items())


def _selectable(fd: int) -> bool:
    try:
        select.select([fd], [], [], 0)
    except OSError:
        return False
    return True


def new_pollster() -> Pollster:
    """``select.poll()``, or a :class:`SelectPollster` where ``poll()`` does not exist."""
    if hasattr(select, "poll"):
        return select.poll()
    return SelectPollster()
