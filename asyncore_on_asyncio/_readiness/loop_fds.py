"""The fallback source: each fd registered with the event loop through add_reader/add_writer.

Used where there is no epoll (or when ``ASYNCORE_ON_ASYNCIO_READINESS=loop-fds``).
The event loop's callbacks only wake a waiting owner; what is ready comes from one
zero-timeout ``poll()`` of every watched fd (a ``select.poll`` object kept in step
with the records; where ``poll()`` does not exist, Windows, the same over
``select()``: :mod:`.pollster`), made by :meth:`LoopFdSource.collect`: exact at the
time of the cycle, as 3.11's own ``poll()`` or ``select()`` pass was, and at 3.11's cost.

What per-fd registration needs on top of :class:`..SourceBase`:

* An owner that is not being served parks a ready fd (unregisters it until its
  next scan), so that a level-triggered fd of an idle map cannot turn another
  map's waits into a busy loop.
* libuv stops watching an fd once it reported an error on it: an fd seen with
  POLLERR is registered afresh at the next scan.
* asyncio has no event for urgent data: on Linux a private epoll watches EPOLLPRI
  (edge-triggered, re-armed at each update so that a pending urgent byte is
  reported every cycle, as ``select()`` did); elsewhere (macOS, the BSDs,
  Windows) urgent data alone does not wake a cycle, but any cycle that runs
  reports it (``collect()`` asks for POLLPRI).
* An event loop that cannot watch fds (Windows' ``ProactorEventLoop``) raises
  :func:`..cannot_watch_fds`'s error at the first registration.
* libuv aborts the process if an fd it watches is closed by another thread; such a
  close ``dup2()``s a pipe over the fd number (:meth:`LoopFdSource.close_from_thread`)
  and the loop's thread unregisters and closes that placeholder.  asyncio's
  ``SelectSelector`` (Windows) fails its whole ``select()`` on such an fd: there the
  socket is detached and the loop's thread unregisters and closes it.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import socket
from collections.abc import Callable
from typing import Any, Final

from .._fork import UNPLUGGED, detach_epoll
from . import (
    POLL_REQUEST,
    POLLERR,
    POLLOUT,
    PRIORITY,
    READ,
    WRITE,
    Owner,
    Record,
    SourceBase,
    cannot_watch_fds,
)
from .pollster import Pollster, new_pollster

__all__ = ["LoopFdSource"]

_READING: Final = 1
_WRITING: Final = 2
_URGENT: Final = 4
"""Record.mask bits: add_reader, add_writer, the EPOLLPRI watch."""


class _PriorityWatch:
    """An epoll reporting EPOLLPRI (urgent data) for the fds added to it, edge-triggered."""

    _FLAGS: Final = getattr(select, "EPOLLPRI", 0) | getattr(select, "EPOLLET", 0)

    def __init__(self, loop: asyncio.AbstractEventLoop, on_priority: Callable[[int], None]) -> None:
        self._epoll = select.epoll()
        self._loop = loop
        self._on_priority = on_priority
        loop.add_reader(self._epoll.fileno(), self._drain)

    def add(self, fd: int) -> None:
        """Watch ``fd``, or report its pending urgent data again (re-arms the edge)."""
        try:
            self._epoll.register(fd, self._FLAGS)
        except FileExistsError:
            self._epoll.modify(fd, self._FLAGS)

    def remove(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            # Closed (EBADF) or closed and reused (ENOENT): the kernel forgot it already.
            pass

    def _drain(self) -> None:
        for fd, _ in self._epoll.poll(0):
            self._on_priority(fd)

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def detach(self, private_loop: bool) -> None:
        if private_loop:
            self._loop.remove_reader(self._epoll.fileno())
        self._loop = UNPLUGGED
        detach_epoll(self._epoll.fileno())


class LoopFdSource(SourceBase):
    """Records of one event loop, each fd registered with the loop itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._priority: _PriorityWatch | None = None
        self._pollster: Pollster = new_pollster()
        """Every watched fd with what its record wants (poll's registrations are a dict)."""
        self._placeholders: dict[int, int] = {}
        """fd -> write end of the pipe whose read end was dup2()ed over fd."""
        self._handed_over: set[int] = set()
        """Detached sockets' fds, for the loop's thread to unregister and close."""

    # -- the loop side ----------------------------------------------------------------------

    def _apply(self, rec: Record) -> None:
        events = rec.events
        fd = rec.fd
        loop = self.loop
        mask = rec.mask
        try:
            if events & READ:
                if not mask & _READING:
                    self.registers += 1
                    loop.add_reader(fd, self._hint, rec)
                    mask |= _READING
            elif mask & _READING:
                self.unregisters += 1
                loop.remove_reader(fd)
                mask &= ~_READING
            if events & WRITE and rec.blocked:
                if not mask & _WRITING:
                    self.registers += 1
                    loop.add_writer(fd, self._hint, rec)
                    mask |= _WRITING
            elif mask & _WRITING:
                self.unregisters += 1
                loop.remove_writer(fd)
                mask &= ~_WRITING
        except OSError as exc:
            # EPERM (a regular file) or EBADF (closed).
            rec.mask = mask
            self._unwatch(rec)
            self._refused(rec, exc)
            return
        except NotImplementedError as exc:
            rec.mask = mask
            rec.events = -1  # not applied: the next update tries (and explains) again
            raise cannot_watch_fds(loop) from exc
        if events & PRIORITY and rec.urgent and hasattr(select, "epoll"):
            if self._priority is None:
                self._priority = _PriorityWatch(loop, self._on_priority)
            try:
                self._priority.add(fd)  # also re-arms: see _on_priority
                mask |= _URGENT
            except OSError:
                # EPERM or EBADF: such an fd has no urgent data to report.
                pass
        elif mask & _URGENT:
            self._remove_priority(fd)
            mask &= ~_URGENT
        rec.mask = mask
        self._pollster.register(fd, POLL_REQUEST[events & 15])

    def _unwatch(self, rec: Record) -> None:
        try:
            self._pollster.unregister(rec.fd)
        except KeyError:
            # Not watched (yet): nothing to drop.
            pass
        mask, rec.mask = rec.mask, 0
        if mask & _READING:
            self.unregisters += 1
            self._quietly(self.loop.remove_reader, rec.fd)
        if mask & _WRITING:
            self.unregisters += 1
            self._quietly(self.loop.remove_writer, rec.fd)
        if mask & _URGENT:
            self._remove_priority(rec.fd)

    def _remove_priority(self, fd: int) -> None:
        if self._priority is not None:
            self._priority.remove(fd)

    @staticmethod
    def _quietly(remove: Callable[[int], Any], fd: int) -> None:
        try:
            remove(fd)
        except OSError:
            # The fd was closed behind our back; the selector has forgotten it already.
            pass

    # -- readiness --------------------------------------------------------------------------

    def _hint(self, rec: Record) -> None:
        """The loop's reader/writer callback; also the priority watch's: ``rec`` may be ready."""
        owner = rec.owner
        if owner.waiting:
            owner.readiness()
        elif not owner.in_cycle:
            self._park(rec)

    def _park(self, rec: Record) -> None:
        self._unwatch(rec)
        rec.events = -1
        rec.owner.parked(rec.fd)

    def _on_priority(self, fd: int) -> None:
        rec = self._records.get(fd)
        if rec is not None and rec.mask & _URGENT:
            rec.events = -1  # the next update re-applies it, which re-arms the edge
            rec.owner.parked(fd)
            self._hint(rec)

    def collect(self, owner: Owner) -> dict[int, int]:
        """Exact flags of ``owner``'s ready fds, from one zero-timeout ``poll()`` of all."""
        records = self._records
        ready: dict[int, int] = {}
        self.polls += 1
        for fd, flags in self._pollster.poll(0):
            rec = records.get(fd)
            if rec is not None and rec.owner is owner:
                ready[fd] = flags
                if flags & POLLERR:
                    self._park(rec)  # libuv stops watching an fd after an error: register afresh
        for rec in [rec for rec in self._writers.values() if rec.owner is owner]:
            if not ready.get(rec.fd, 0) & POLLOUT:
                rec.blocked = True  # an optimistic write that would block after all
                del self._writers[rec.fd]
                self._apply(rec)
        if self._unwatchable:
            self._collect_unwatchable(owner, ready)
        return ready

    # -- closing from another thread --------------------------------------------------------

    def remove_from_thread(self, fd: int, obj: object) -> None:
        """Nothing: only the loop's thread may unregister here (the caller hands it over)."""

    def close_from_thread(self, sock: Any, fd: int) -> bool:
        """Close ``sock``, registered here, from another thread; ``False``: just close it.

        On uvloop the file is released at once by ``dup2()``-ing a pipe over the fd
        number (never readable while its write end is open: no events), and the
        loop's thread unregisters and closes that placeholder.  On asyncio's
        ``SelectSelector`` (Windows) ``sock`` is detached and the loop's thread
        unregisters and closes its fd.
        """
        if isinstance(self.loop, asyncio.BaseEventLoop):
            # Its epoll, kqueue or poll selector forgets (or reports) a closed fd by itself.
            selector = getattr(self.loop, "_selector", None)
            return isinstance(selector, selectors.SelectSelector) and self._hand_over(sock, fd)
        placeholder, keep = os.pipe()
        try:
            os.dup2(placeholder, fd)
        finally:
            os.close(placeholder)
        detach = getattr(sock, "detach", None)
        if detach is not None:
            detach()
        else:
            sock.fd = -1  # a file_wrapper: its fd is the placeholder now
        self._placeholders[fd] = keep
        try:
            self.loop.call_soon_threadsafe(self._release_placeholder, fd)
        except RuntimeError:
            # That loop was closed meanwhile, and its registrations with it.
            if self._placeholders.pop(fd, None) is not None:
                os.close(fd)
                os.close(keep)
        return True

    def _hand_over(self, sock: Any, fd: int) -> bool:
        """Detach ``sock`` and have the loop's thread unregister and close its fd."""
        detach = getattr(sock, "detach", None)
        if detach is None:
            return False  # a file_wrapper: POSIX only, where the loop does not select()
        detach()
        self._handed_over.add(fd)
        try:
            self.loop.call_soon_threadsafe(self._close_handed_over, fd)
        except RuntimeError:
            # That loop was closed meanwhile, and its registrations with it.
            self._handed_over.discard(fd)
            socket.close(fd)
        return True

    def _close_handed_over(self, fd: int) -> None:
        if fd not in self._handed_over:
            return  # closed with the source meanwhile
        self._handed_over.discard(fd)
        rec = self._records.get(fd)  # still open: the number cannot have been reused
        if rec is not None:
            self.remove(rec)
            rec.owner.parked(fd)
        socket.close(fd)

    def _release_placeholder(self, fd: int) -> None:
        keep = self._placeholders.pop(fd, None)
        if keep is None:
            return
        rec = self._records.get(fd)
        if rec is not None:
            self.remove(rec)
            rec.owner.parked(fd)
        os.close(fd)
        os.close(keep)

    def detach(self, private_loop: bool) -> None:
        super().detach(private_loop)
        if self._priority is not None:
            self._priority.detach(private_loop)

    def _unregister_from_loop(self) -> None:
        for rec in self._records.values():
            if rec.mask & _READING:
                self._quietly(self.loop.remove_reader, rec.fd)
            if rec.mask & _WRITING:
                self._quietly(self.loop.remove_writer, rec.fd)

    def close(self) -> None:
        super().close()
        if self._priority is not None:
            self._priority.close()
            self._priority = None
        for fd, keep in list(self._placeholders.items()):
            del self._placeholders[fd]
            os.close(fd)
            os.close(keep)
        while self._handed_over:
            socket.close(self._handed_over.pop())
