"""One private epoll per event loop: every dispatcher fd of every map served there.

Why this shape
--------------
3.11 asked the kernel once per cycle, with ``select()``, about exactly the fds
that wanted something.  Registering each fd with the event loop instead
(``add_reader``/``add_writer``) made every cycle cost an event-loop iteration and
every connection a registration pair inside the loop, and told us only *that* an
fd was ready, not with which flags.  Here the engine keeps its own level-triggered
epoll holding each fd with the mask its dispatcher wants, and each cycle asks it
``epoll.poll(0)`` itself: exact ``(fd, flags)`` pairs, for the ready fds only.

The dispatchers are still registered with the event loop: through the epoll's own
fd, which is pollable and becomes readable when any fd in it is ready.  That fd is
the loop's only reader for dispatchers (one ``add_reader`` for the loop's whole
life), so a waiting cycle and the loop's coroutines are woken by the same wait,
uvloop needs no special code, and libuv never sees a dispatcher's fd: closing a
socket from any thread cannot upset it.

epoll facts this module relies on
---------------------------------
* Level-triggered registrations report again at every poll until drained, as
  ``select()`` did; a pending urgent byte (EPOLLPRI) too.
* EPOLL* and POLL* bits are equal on Linux, so epoll's flags are what 3.11's
  ``poll()`` saw.  EPOLLERR and EPOLLHUP are reported whatever the mask.
* A regular file cannot be registered (EPERM): :class:`..SourceBase` reports it
  always ready, as ``select()`` did.
* The kernel drops a closed fd from the epoll only when its *last* duplicate is
  closed.  Until then the entry keeps being reported under the old number and
  cannot be removed (EBADF once the number is closed, ENOENT once it is reused).
  Such a stale entry is detected (a report for an fd we hold no record of, or a
  failed DEL/MOD) and the epoll is rebuilt from the records, which drops it; a
  report cannot turn into a busy loop.
* An epoll is one kernel object however many processes hold its fd: a forked child's
  ``epoll_ctl`` would change the parent's registrations.  The child detaches it at fork
  (:mod:`.._fork`) and registers its fds in an epoll of its own.
* ``epoll_ctl`` is safe from any thread.  :meth:`EpollSource.remove_from_thread`
  lets ``close()`` from another thread unregister before it closes the fd; a lock
  keeps the kernel and the records in step.

Close order, for every path (``close()``, ``del_channel()``, a socket swapped under
the same fd): the record is removed (DEL) first, then the caller closes the fd.

Compiled (``epoll.pxd``), :meth:`EpollSource.collect` calls ``epoll_wait()`` and
``poll()`` itself, into buffers it keeps, instead of going through ``select``'s
objects (a list of tuples per call, a new ``select.poll`` per cycle); the flags and
their order are the same.  Both calls have a zero timeout, so the kernel never sleeps in
them and they cannot fail with EINTR (the retry ``select``'s wrappers make, PEP 475, is
not needed).  An ``_epoll`` that is not a ``select.epoll`` (a test's wrapper) is still
called through Python.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import threading
from collections.abc import Callable
from typing import Final

try:
    import cython
except ImportError:  # the pure engine, where Cython is not installed
    from .. import _cython_fallback as cython

from .._fork import detach_epoll
from . import (
    INVALID,
    POLLIN,
    POLLOUT,
    POLLPRI,
    PRIORITY,
    READ,
    WATCHED,
    WRITE,
    Owner,
    Record,
    SourceBase,
    cannot_watch_fds,
)

if cython.compiled:
    from cython.cimports.asyncore_on_asyncio._readiness._kernel import (
        epoll_event,
        epoll_wait,
        poll,
        pollfd,
    )
    from cython.cimports.libc.errno import errno as c_errno

__all__ = ["EpollSource"]

_EPOLL_TYPE: Final = getattr(select, "epoll", None)
"""Compiled, only a real epoll is polled from C (a test's stand-in goes through Python).
(The module is imported where there is no epoll too: ``CORE`` asks every compiled module.)"""
_EPOLLIN: Final = getattr(select, "EPOLLIN", POLLIN)
_EPOLLPRI: Final = getattr(select, "EPOLLPRI", POLLPRI)
_EPOLLOUT: Final = getattr(select, "EPOLLOUT", POLLOUT)


def _epoll_mask(events: int, urgent: bool, blocked: bool) -> int:
    return (
        (_EPOLLIN if events & READ else 0)
        | (_EPOLLPRI if events & PRIORITY and urgent else 0)
        | (_EPOLLOUT if events & WRITE and blocked else 0)
    )


_MASKS: Final = tuple(
    _epoll_mask(events, bool(index & 16), bool(index & 32))
    for index in range(64)
    for events in (index & 15,)
)
"""``_epoll_mask(events, urgent, blocked)`` at ``events | urgent << 4 | blocked << 5``."""


_KERNEL_BITS: Final = READ | INVALID
"""The wanted events that change the kernel's mask of a watched fd that is not blocked."""
_KERNEL_BITS_URGENT: Final = _KERNEL_BITS | PRIORITY


class EpollSource(SourceBase):
    """The records of one event loop, held in one private level-triggered epoll."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[], bool]) -> None:
        SourceBase.__init__(self, loop)
        self._on_readable = on_readable
        self._lock = threading.Lock()
        self._stale = False
        self._capacity = 0  # compiled: the sizes of the event and pollfd buffers
        self._pollfd_capacity = 0
        self._epoll = select.epoll()
        self._epoll_fd = self._epoll.fileno()
        try:
            loop.add_reader(self._epoll.fileno(), self._readable)
        except NotImplementedError as exc:
            self._epoll.close()
            raise cannot_watch_fds(loop) from exc

    def update(self, rec: Record, events: int) -> None:
        # The hot case first: a watched fd that is not blocked only turns its wish to write
        # on or off (writable() follows a buffer): nothing in the kernel changes.
        old = rec.events
        if (
            old >= 0
            and rec.kind == WATCHED
            and not rec.blocked
            and not (events ^ old) & (_KERNEL_BITS_URGENT if rec.urgent else _KERNEL_BITS)
        ):
            rec.events = events
            if events & WRITE:
                self._writers[rec.fd] = rec
            else:
                self._writers.pop(rec.fd, None)
            return
        SourceBase.update(self, rec, events)

    # -- the kernel side --------------------------------------------------------------------

    def _apply(self, rec: Record) -> None:
        want = _MASKS[rec.events & 15 | rec.urgent << 4 | rec.blocked << 5]
        if want == rec.mask:
            return
        with self._lock:
            self._ctl(rec, want)

    def _ctl(self, rec: Record, want: int) -> None:
        """Make the kernel hold ``want`` for ``rec`` (called with the lock held).

        ``rec.mask`` is read again here: a ``close()`` in another thread may have
        unregistered the fd since the caller looked (registering it again, even with
        no events, would leave an entry no record holds).  The fd number may name
        another file at each call while another thread closes and opens files, so a
        failed call is retried a few times with what it told us.
        """
        held = rec.mask
        if want == held:
            return
        epoll = self._epoll
        fd = rec.fd
        for _ in range(4):
            try:
                if not held:
                    self.registers += 1
                    epoll.register(fd, want)
                elif want:
                    self.modifies += 1
                    epoll.modify(fd, want)
                else:
                    self.unregisters += 1
                    epoll.unregister(fd)
            except FileExistsError:
                held = want  # this file is in the epoll already: modify its entry
                continue
            except FileNotFoundError:
                # ENOENT: the number now names another file; the old file's entry may live
                # on (a dup keeps it open): rebuild, and register this file afresh.
                self._stale = True
                held = 0
                if want:
                    continue
            except OSError as exc:
                # EPERM (a regular file) or EBADF (closed; a dup may keep its entry alive).
                self._stale = self._stale or not isinstance(exc, PermissionError)
                self._refused(rec, exc)
                return
            rec.mask = want
            return
        # The number named another file at every call: another thread is closing and
        # opening files, and this record's own file is closed (an open one keeps its
        # number).  Treated as closed, as for EBADF.
        self._stale = True
        self._refused(rec, OSError(errno.EBADF, "the fd was closed and reused meanwhile"))

    def _unwatch(self, rec: Record) -> None:
        if rec.mask:
            with self._lock:
                self._ctl(rec, 0)

    def remove_from_thread(self, fd: int, obj: object) -> None:
        """Unregister ``fd`` now if it is held for ``obj``; the loop's thread forgets the record."""
        rec = self._records.get(fd)
        if rec is not None and rec.obj is obj and rec.mask:
            with self._lock:
                self._ctl(rec, 0)

    def _rebuild(self) -> None:
        """A new epoll from the records: entries of fds closed behind our back are gone."""
        with self._lock:
            self._stale = False
            old = self._epoll
            self._epoll = select.epoll()
            self._epoll_fd = self._epoll.fileno()
            for rec in list(self._records.values()):
                want, rec.mask = rec.mask, 0
                if want:
                    self._ctl(rec, want)
            self.loop.remove_reader(old.fileno())
            self.loop.add_reader(self._epoll.fileno(), self._readable)
            old.close()

    # -- readiness --------------------------------------------------------------------------

    def collect(self, owner: Owner) -> dict[int, int]:
        """The exact flags of ``owner``'s ready fds: one ``epoll.poll(0)``, plus optimistic
        writers and unwatchable fds.  Another owner's ready fd wakes that owner, or is
        parked (unregistered until its next scan) if its map is not being served."""
        if self._stale:
            self._rebuild()
        ready: dict[int, int] = {}
        records = self._records
        if cython.compiled and type(self._epoll) is _EPOLL_TYPE:
            count = self._wait(len(records) + 1)
            for index in range(count):
                self._take(owner, ready, self._events[index].data.fd, self._events[index].events)
        else:  # _take(), inline: the pure engine's hot loop
            self.polls += 1
            for fd, flags in self._epoll.poll(0, len(records) + 1):
                rec = records.get(fd)
                if rec is None:
                    self._stale = True  # the entry of an fd closed behind our back
                elif rec.owner is owner:
                    ready[fd] = flags
                elif rec.mask:
                    self._elsewhere(rec)
        if self._writers:
            self._collect_writers(owner, ready)
        if self._unwatchable:
            self._collect_unwatchable(owner, ready)
        if self._stale:
            self._rebuild()
        return ready

    def _take(self, owner: Owner, ready: dict[int, int], fd: int, flags: int) -> None:
        """Compiled only (an inline C function): one reported ``(fd, flags)``.  ``owner``'s
        goes into ``ready``, another owner's is woken or parked, an fd with no record
        marks the epoll stale."""
        rec = self._records.get(fd)
        if rec is None:
            self._stale = True  # the entry of an fd closed behind our back
        elif rec.owner is owner:
            ready[fd] = flags
        elif rec.mask:
            self._elsewhere(rec)

    def _wait(self, maxevents: int) -> int:
        """Compiled only: ``epoll_wait()`` with no timeout into ``_events``; how many."""
        if maxevents > self._capacity:
            self._event_buffer = bytearray(maxevents * cython.sizeof(epoll_event))
            self._events = cython.cast(cython.pointer(epoll_event), cython.cast(cython.p_char, self._event_buffer))
            self._capacity = maxevents
        self.polls += 1
        count: int = epoll_wait(self._epoll_fd, self._events, maxevents, 0)
        if count < 0:
            raise OSError(c_errno, os.strerror(c_errno))
        return count

    def _collect_writers(self, owner: Owner, ready: dict[int, int]) -> None:
        """One zero-timeout ``poll()`` of ``owner``'s optimistic writers; watch those that would block."""
        if cython.compiled:
            self._poll_writers(owner, ready)
            return
        writers = [rec for rec in self._writers.values() if rec.owner is owner]
        if not writers:
            return
        pollster = select.poll()
        for rec in writers:
            pollster.register(rec.fd, POLLOUT)
        self.writer_polls += 1
        writable = pollster.poll(0)
        for fd, flags in writable:
            ready[fd] = ready.get(fd, 0) | flags
        if len(writable) == len(writers):
            return  # the common case: all of them can write
        can_write = {fd for fd, _ in writable}
        for rec in writers:
            if rec.fd not in can_write:
                self._would_block(rec)

    def _poll_writers(self, owner: Owner, ready: dict[int, int]) -> None:
        """Compiled only: :meth:`_collect_writers`' ``poll()``, from a buffer kept here."""
        writers = self._writers
        if len(writers) > self._pollfd_capacity:
            self._pollfd_buffer = bytearray(len(writers) * cython.sizeof(pollfd))
            self._pollfds = cython.cast(cython.pointer(pollfd), cython.cast(cython.p_char, self._pollfd_buffer))
            self._pollfd_capacity = len(writers)
        fds = self._pollfds
        count = 0
        for rec in writers.values():
            if rec.owner is owner:
                fds[count].fd = rec.fd
                fds[count].events = POLLOUT
                count += 1
        if not count:
            return
        self.writer_polls += 1
        if poll(fds, count, 0) < 0:
            raise OSError(c_errno, os.strerror(c_errno))
        for index in range(count):
            flags = fds[index].revents
            fd = fds[index].fd
            if flags:
                ready[fd] = ready.get(fd, 0) | flags
            else:
                self._would_block(writers[fd])

    def _would_block(self, rec: Record) -> None:
        """A write to ``rec``'s fd would block: watch it for writability instead of asking."""
        if self._records.get(rec.fd) is rec:
            rec.blocked = True
            del self._writers[rec.fd]
            self._apply(rec)

    def _elsewhere(self, rec: Record) -> None:
        owner = rec.owner
        if owner.in_cycle:
            owner.wake()
            return
        # Nobody serves that map now: a level-triggered fd would keep the epoll readable.
        self._unwatch(rec)
        rec.events = -1
        owner.parked(rec.fd)

    def _readable(self) -> None:
        """The epoll's fd is readable (the event loop's reader callback)."""
        if not self._on_readable():
            self._drain()

    def _drain(self) -> None:
        """Readiness nobody has in hand: wake the owners serving, park the others' ready fds."""
        if self._stale:
            self._rebuild()
        records = self._records
        self.polls += 1
        for fd, _ in self._epoll.poll(0, len(records) + 1):
            rec = records.get(fd)
            if rec is None:
                self._stale = True
            elif rec.mask:
                self._elsewhere(rec)
        if self._stale:
            self._rebuild()

    def close(self) -> None:
        SourceBase.close(self)
        self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def detach(self, private_loop: bool) -> None:
        super().detach(private_loop)
        detach_epoll(self._epoll.fileno())

    def _unregister_from_loop(self) -> None:
        self.loop.remove_reader(self._epoll.fileno())
