"""Per-fd registrations with one asyncio event loop: the only caller of add_/remove_reader/writer.

Theory of operation
-------------------
asyncore asks every dispatcher ``readable()`` and ``writable()`` before each wait
and hands the answers to ``select()``.  On asyncio the equivalent is a set of
``add_reader``/``add_writer`` registrations, and re-registering every fd on every
cycle would cost two syscalls per dispatcher per cycle.  So this module keeps,
per event loop, one :class:`Registration` per integer fd and applies only the
*difference* between what was registered and what is wanted now: an fd whose
interest did not change costs nothing.

Write interest is optimistic: an fd that wants to write is reported ready at once
and the driver's zero-timeout poll() confirms it; only an fd that turns out not to
be writable gets an ``add_writer`` (:meth:`Registry.block_writer`), kept while it
wants to write.  Toggling a writer around every message would cost more than the
message.

A registration remembers the object and the socket object it was made for.  If
the map now holds another object, or the dispatcher another socket, under the
same fd number, the old fd was closed behind our back and the number reused: the
kernel has already forgotten the old registration, so we drop ours and register
afresh instead of trusting a stale one.

Readiness callbacks only record what is ready in the owner (one map's driver) and
wake it; they never call user code, so nothing can be raised into asyncio's
exception handler.  If an owner is not waiting (its ``loop()`` returned), a
callback parks the registration: it is removed and re-made by the owner's next
cycle, so a level-triggered fd of an idle map cannot turn another map's waits
into a busy loop.  What a callback reports may be stale by the time the owner
dispatches (asyncio may run a callback queued before a handler drained the fd);
the driver confirms readiness with a zero-timeout poll() before dispatching.

libuv stops watching an fd once it has reported an error on it (uvloop then
needs the fd removed and added again); the driver asks for :meth:`Registry.rearm`
when it sees POLLERR, and the next sync registers the fd afresh.

Two kinds of fd cannot be registered.  Regular files (``add_reader`` fails with
EPERM under epoll and libuv) are *always ready*, as ``select()`` reports them.  An
fd that is already closed (EBADF) is reported as *invalid*, like ``POLLNVAL``.

asyncio has no event for urgent (out-of-band) TCP data, which ``select()`` reports
in its exceptional set.  On Linux a private epoll object watches EPOLLPRI
(edge-triggered, re-armed after each delivery so a pending urgent byte is reported
every cycle, as with ``select()``); its own fd is registered with the event loop.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["INVALID", "PRIORITY", "READ", "WRITE", "Owner", "Registration", "Registry"]

READ: Final = 1
WRITE: Final = 2
PRIORITY: Final = 4
INVALID: Final = 8


class Owner(Protocol):
    """What the registry needs from the driver of one map on one loop."""

    waiting: bool
    """Readiness is being waited for: record it and wake the owner."""
    in_cycle: bool
    """The owner's loop()/serve() is running: readiness is recorded for its next dispatch."""
    ready: dict[int, int]
    registered: dict[int, Registration]

    def wake(self) -> None: ...

    def parked(self, fd: int) -> None:
        """``fd``'s registration was undone outside a scan: the next scan must redo it."""
        ...


class Registration:
    """What is registered for one fd, and for which object and socket.

    ``events`` is what was last applied (-1: apply again at the next scan); ``seen``
    the stamp of the owner's latest full scan that wanted this fd; that scan also
    stored the map ``key``, the ``wanted`` events and the ``index`` (map order) of the
    object.  ``urgent``: the object does something observable with urgent data, so
    PRIORITY interest is watched (otherwise urgent data alone does not wake the owner).
    """

    __slots__ = (
        "always_ready",
        "events",
        "fd",
        "index",
        "invalid",
        "key",
        "obj",
        "owner",
        "priority",
        "reading",
        "seen",
        "sock",
        "urgent",
        "wanted",
        "writing",
    )

    def __init__(self, fd: int, obj: object, sock: object, owner: Owner, urgent: bool) -> None:
        self.fd = fd
        self.obj = obj
        self.sock = sock
        self.owner = owner
        self.urgent = urgent
        self.reading = False
        self.writing = False
        self.events = -1
        self.seen = 0
        self.key: object = fd
        self.wanted = 0
        self.index = 0
        self.priority = False
        self.always_ready = False
        self.invalid = False


class _PriorityWatch:
    """An epoll object reporting EPOLLPRI (urgent data) for the fds added to it."""

    _FLAGS: Final = getattr(select, "EPOLLPRI", 0) | getattr(select, "EPOLLET", 0)

    def __init__(self, loop: asyncio.AbstractEventLoop, on_priority: Callable[[int], None]) -> None:
        self._epoll = select.epoll()
        self._loop = loop
        self._on_priority = on_priority
        loop.add_reader(self._epoll.fileno(), self._drain)

    def add(self, fd: int) -> None:
        try:
            self._epoll.register(fd, self._FLAGS)
        except FileExistsError:
            self._epoll.modify(fd, self._FLAGS)
        except OSError:
            # EPERM (regular file) or EBADF: such an fd has no urgent data to report.
            pass

    def rearm(self, fd: int) -> None:
        """Report urgent data again if it is still pending (level semantics on top of ET)."""
        try:
            self._epoll.modify(fd, self._FLAGS)
        except OSError:
            # The fd was closed since: nothing left to watch.
            pass

    def remove(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except OSError:
            # Closed (EBADF) or closed and reused (ENOENT): the kernel already forgot it.
            pass

    def _drain(self) -> None:
        for fd, events in self._epoll.poll(0):
            if events & select.EPOLLPRI:
                self._on_priority(fd)

    def close(self) -> None:
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


class Registry:
    """Registrations of one asyncio event loop, diffed against what owners want."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._registrations: dict[int, Registration] = {}
        self._priority: _PriorityWatch | None = None
        self._rearm: set[int] = set()

    def __len__(self) -> int:
        return len(self._registrations)

    def registration(self, fd: int) -> Registration | None:
        return self._registrations.get(fd)

    def register(
        self, owner: Owner, fd: int, obj: object, sock: object, events: int, urgent: bool
    ) -> Registration:
        """Register ``fd`` for ``owner``, replacing a registration made for another object.

        ``events`` is READ|WRITE|PRIORITY, or INVALID for a socket known to be closed.
        Readiness that needs no wait (regular files, invalid fds, optimistic writes) is
        put in ``owner.ready`` at once.  With ``urgent`` false, PRIORITY is not watched.
        """
        old = self._registrations.get(fd)
        if old is not None:
            self._drop(old)
            if old.owner is not owner:
                old.owner.parked(fd)
        reg = Registration(fd, obj, sock, owner, urgent)
        self._registrations[fd] = owner.registered[fd] = reg
        self.apply(reg, events)
        return reg

    def discard(self, owner: Owner, fd: int, obj: object) -> None:
        """Unregister ``fd`` if ``owner`` registered it for ``obj``."""
        reg = owner.registered.get(fd)
        if reg is not None and reg.obj is obj:
            self._drop(reg)

    def sweep(self, owner: Owner, stamp: int) -> None:
        """Unregister the fds of ``owner`` that its latest scan (``stamp``) did not want."""
        for reg in [reg for reg in owner.registered.values() if reg.seen != stamp]:
            self._drop(reg)

    def release(self, owner: Owner) -> None:
        """Unregister every fd of ``owner``."""
        for reg in list(owner.registered.values()):
            self._drop(reg)

    def forget(self, fd: int, obj: object) -> None:
        """Unregister ``fd`` if it is registered for ``obj`` (called before the fd is closed)."""
        reg = self._registrations.get(fd)
        if reg is not None and reg.obj is obj:
            self._drop(reg)

    def drop_fd(self, fd: int) -> None:
        """Unregister ``fd`` whoever it was registered for; its owner scans it again."""
        reg = self._registrations.get(fd)
        if reg is not None:
            self._drop(reg)
            reg.owner.parked(fd)

    def rearm(self, fd: int) -> None:
        """Register ``fd`` afresh at the next scan (its watcher may have stopped)."""
        reg = self._registrations.get(fd)
        if reg is not None:
            self._unregister(reg)
            reg.owner.parked(fd)

    def close(self) -> None:
        """Unregister everything (the loop is about to be closed)."""
        for reg in list(self._registrations.values()):
            self._drop(reg)
        if self._priority is not None:
            self._priority.close()
            self._priority = None

    # -- applying a diff ------------------------------------------------------------------

    def refresh(self, reg: Registration, events: int) -> None:
        """Keep ``reg`` in line with ``events``: nothing to do in the common, unchanged case."""
        if reg.events != events:
            self.apply(reg, events)
        elif events & WRITE and not reg.writing:
            # Optimistic, as in apply(): the driver's poll() confirms it.
            reg.owner.ready[reg.fd] = reg.owner.ready.get(reg.fd, 0) | WRITE

    def apply(self, reg: Registration, events: int) -> None:
        """Bring ``reg`` in line with ``events``, touching the loop only for what changed."""
        reg.events = events
        if events & INVALID or reg.invalid:
            self._unregister(reg)  # sets reg.events = -1: reported again at every scan
            reg.owner.ready[reg.fd] = INVALID
            return
        if reg.always_ready:
            reg.events = -1  # reported again at every scan
            ready = events & (READ | WRITE)
            if ready:
                reg.owner.ready[reg.fd] = reg.owner.ready.get(reg.fd, 0) | ready
            return
        fd = reg.fd
        loop = self.loop
        try:
            want = bool(events & READ)
            if want != reg.reading:
                if want:
                    loop.add_reader(fd, self._deliver, reg, READ)
                else:
                    loop.remove_reader(fd)
                reg.reading = want
            if events & WRITE:
                if not reg.writing:
                    # Optimistic: a socket is writable far more often than not, and
                    # add_/remove_writer for every message would cost more than the
                    # message.  The driver confirms with poll() and calls block_writer()
                    # for an fd that is not writable after all.
                    reg.owner.ready[fd] = reg.owner.ready.get(fd, 0) | WRITE
            elif reg.writing:
                loop.remove_writer(fd)
                reg.writing = False
        except PermissionError:
            # EPERM: a regular file, which select() reports as always ready.
            self._unregister(reg)
            reg.always_ready = True
            self.apply(reg, events)
            return
        except OSError:
            # EBADF and kin: the fd is closed; report it as poll() reports POLLNVAL.
            self._unregister(reg)
            reg.invalid = True
            reg.owner.ready[fd] = INVALID
            return
        want = bool(events & PRIORITY) and reg.urgent
        if want != reg.priority:
            watch = self._priority_watch()
            if watch is not None:
                if want:
                    watch.add(fd)
                else:
                    watch.remove(fd)
                reg.priority = want
        elif want and fd in self._rearm:
            self._rearm.discard(fd)
            watch = self._priority
            if watch is not None:
                watch.rearm(fd)

    def block_writer(self, fd: int) -> None:
        """``fd`` wants to write but is not writable: have the loop wake us when it is."""
        reg = self._registrations.get(fd)
        if reg is None or reg.writing or reg.always_ready or reg.invalid:
            return
        try:
            self.loop.add_writer(fd, self._deliver, reg, WRITE)
        except OSError:
            # Closed since the poll: the next cycle sees it (closed socket or gone from the map).
            return
        reg.writing = True

    def _priority_watch(self) -> _PriorityWatch | None:
        if self._priority is None and hasattr(select, "epoll"):
            self._priority = _PriorityWatch(self.loop, self._on_priority)
        return self._priority

    def _unregister(self, reg: Registration) -> None:
        """Remove the OS-level registrations of ``reg``, keeping the record."""
        fd = reg.fd
        reg.events = -1
        if reg.reading:
            reg.reading = False
            self._remove(self.loop.remove_reader, fd)
        if reg.writing:
            reg.writing = False
            self._remove(self.loop.remove_writer, fd)
        if reg.priority:
            reg.priority = False
            self._rearm.discard(fd)
            if self._priority is not None:
                self._priority.remove(fd)

    @staticmethod
    def _remove(remove: Callable[[int], Any], fd: int) -> None:
        try:
            remove(fd)
        except OSError:
            # The fd was closed behind our back; the selector has forgotten it already.
            pass

    def _drop(self, reg: Registration) -> None:
        self._unregister(reg)
        if self._registrations.get(reg.fd) is reg:
            del self._registrations[reg.fd]
        if reg.owner.registered.get(reg.fd) is reg:
            del reg.owner.registered[reg.fd]

    # -- readiness callbacks (run inside the event loop; never call user code) -------------

    def _deliver(self, reg: Registration, event: int) -> None:
        """The loop's reader/writer callback (``event`` READ or WRITE), and the priority watch's."""
        owner = reg.owner
        ready = owner.ready
        fd = reg.fd
        ready[fd] = ready.get(fd, 0) | event  # confirmed at dispatch, kept till then
        if owner.waiting:
            owner.wake()
        elif not owner.in_cycle:
            # Nobody is waiting for this map: park until its next cycle re-registers.
            self._unregister(reg)
            owner.parked(fd)

    def _on_priority(self, fd: int) -> None:
        reg = self._registrations.get(fd)
        if reg is not None and reg.priority:
            self._rearm.add(fd)
            reg.events = -1  # so that the next scan re-applies it, which re-arms
            reg.owner.parked(fd)
            self._deliver(reg, PRIORITY)
