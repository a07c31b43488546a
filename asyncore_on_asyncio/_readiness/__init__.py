"""Where readiness comes from: the one place that talks to the kernel or the event loop about fds.

A *source* keeps one :class:`Record` per dispatcher fd of every map served on one
event loop, with what the scan wants (``events``) and what the kernel or the loop
holds now (``mask``), and touches them only when the two differ.  The driver
(:mod:`.._driver`) sees only this small interface and never knows which source it
has:

``register(owner, fd, obj, sock, events, urgent)``
    a record for ``fd`` (replacing one made for another object or socket);
``update(record, events)``
    what the object wants now (READ | WRITE | PRIORITY, or INVALID for a socket
    known to be closed); nothing happens when it did not change;
``remove(record)``
    unregister, always before the fd is closed;
``collect(owner)``
    the exact ``poll()`` flags of ``owner``'s fds that are ready now;
``remove_from_thread(fd, obj)``
    unregister at once from a thread that does not run the loop, where the source
    can do that safely (epoll can);
``close()``.

Two sources exist.  :class:`.epoll.EpollSource` (Linux) holds every fd in one
private epoll whose own fd is the loop's only reader for dispatchers;
:class:`.loop_fds.LoopFdSource` (anywhere) registers each fd with the loop through
``add_reader``/``add_writer``.  :func:`make_source` picks epoll where it exists;
elsewhere (macOS, the BSDs, Windows) the fallback is the path, and
``ASYNCORE_ON_ASYNCIO_READINESS=loop-fds`` forces it on Linux.  Both need an event
loop that can watch fds: one that cannot (Windows' ``ProactorEventLoop``, asyncio's
default there) gets :func:`cannot_watch_fds`'s error instead of a bare
``NotImplementedError``.

Both share the rules kept here (:class:`SourceBase`): write interest is
optimistic (an fd that wants to write is asked whether it is writable at each
collect, and watched for writability only while a write would block: a
``writable()`` that turns true and false with every message costs no
registration), a regular file is always ready, as ``select()`` says (epoll and
libuv refuse it with EPERM), and an fd found closed is reported as ``POLLNVAL``.
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import Callable
from typing import Any, Final, Protocol

from .._fork import UNPLUGGED
from .._handlers import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI

__all__ = [
    "ALWAYS_READY",
    "INVALID",
    "INVALID_FD",
    "POLLERR",
    "POLLHUP",
    "POLLIN",
    "POLLNVAL",
    "POLLOUT",
    "POLLPRI",
    "POLL_REQUEST",
    "PRIORITY",
    "READ",
    "READINESS_ENV_VAR",
    "WATCHED",
    "WRITE",
    "Owner",
    "Record",
    "SourceBase",
    "cannot_watch_fds",
    "make_source",
]

READ: Final = 1
WRITE: Final = 2
PRIORITY: Final = 4
INVALID: Final = 8



def _poll_request(events: int) -> int:
    return (
        (POLLIN if events & READ else 0)
        | (POLLOUT if events & WRITE else 0)
        | (POLLPRI if events & PRIORITY else 0)
    )


POLL_REQUEST: Final = tuple(_poll_request(events) for events in range(16))
"""What to ask ``poll()`` for, by READ | WRITE | PRIORITY (| INVALID) bits."""

# Record.kind
WATCHED: Final = 0
ALWAYS_READY: Final = 1
INVALID_FD: Final = 2

READINESS_ENV_VAR = "ASYNCORE_ON_ASYNCIO_READINESS"


class Owner(Protocol):
    """What a source needs from the driver of one map (see :mod:`.._driver`)."""

    in_cycle: bool
    """A ``loop()``/``serve()`` of this map is running: readiness is its business."""
    waiting: bool
    """Its cycle waits inside the event loop: readiness should run it now."""
    records: dict[int, Record]

    def readiness(self) -> None:
        """Called by the source's own event-loop callback: something may be ready."""
        ...

    def wake(self) -> None:
        """Schedule the owner's next step (it may have readiness to collect)."""
        ...

    def parked(self, fd: int) -> None:
        """``fd``'s registration was undone outside a scan: the next scan must redo it."""
        ...


class Record:
    """One fd: for which owner, object and socket, what is wanted and what is held.

    ``events`` is what the scan wants (-1: apply again at the next update); ``kind``
    WATCHED, ALWAYS_READY (a regular file) or INVALID_FD (closed); ``mask``
    what the kernel or the loop holds (its meaning is the source's; 0: nothing);
    ``blocked``: a write would block, so writability is watched, not checked.  The
    scan also keeps there the map ``key``, the ``index`` (map order) and the ``seen``
    stamp of the latest full scan that wanted this fd.
    """

    __slots__ = (
        "blocked",
        "events",
        "fd",
        "index",
        "key",
        "kind",
        "mask",
        "obj",
        "owner",
        "seen",
        "sock",
        "urgent",
    )

    def __init__(self, fd: int, obj: object, sock: object, owner: Owner, urgent: bool) -> None:
        self.fd = fd
        self.obj = obj
        self.sock = sock
        self.owner = owner
        self.urgent = urgent
        self.events = -1
        self.mask = 0
        self.kind = WATCHED
        self.blocked = False
        self.key: object = fd
        self.index = 0
        self.seen = 0


class SourceBase:
    """Records, optimistic writes and unwatchable fds: what both sources share.

    A subclass brings the kernel or loop side: :meth:`_apply` (make ``mask`` what
    the record needs now) and :meth:`_unwatch` (drop it, keeping the record).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._records: dict[int, Record] = {}
        self._writers: dict[int, Record] = {}
        """Records that want to write and are not watched for it (optimistic)."""
        self._unwatchable: dict[int, Record] = {}
        """Regular files and closed fds: reported at every collect."""
        # What the source asked of the kernel or the loop (read by .._statistics):
        self.registers = 0
        self.modifies = 0
        self.unregisters = 0
        self.polls = 0
        self.writer_polls = 0

    def __len__(self) -> int:
        return len(self._records)

    def record(self, fd: int) -> Record | None:
        return self._records.get(fd)

    def register(self, owner: Owner, fd: int, obj: object, sock: object, events: int, urgent: bool) -> Record:
        """A record of ``fd`` for ``obj``'s ``sock``, replacing any other; ``update``d to ``events``."""
        old = self._records.get(fd)
        if old is not None:
            self.remove(old)
            if old.owner is not owner:
                old.owner.parked(fd)
        rec = Record(fd, obj, sock, owner, urgent)
        self._records[fd] = owner.records[fd] = rec
        self.update(rec, events)
        return rec

    def update(self, rec: Record, events: int) -> None:
        """Make ``rec`` want ``events``, touching the kernel only for what changed.

        A watched record that already wants ``events`` is left as it is: a caller may
        skip the call then (the incremental scan does)."""
        if events == rec.events and rec.kind == WATCHED:
            return
        rec.events = events
        fd = rec.fd
        if events & INVALID:
            rec.kind = INVALID_FD
        if rec.kind != WATCHED:
            self._unwatch(rec)  # reported at every collect (see _collect_unwatchable)
            self._unwatchable[fd] = rec
            self._writers.pop(fd, None)
            return
        if not events & WRITE:
            rec.blocked = False
        self._apply(rec)
        if rec.kind != WATCHED:  # the kernel refused it just now
            self.update(rec, events)
            return
        if events & WRITE and not rec.blocked:
            self._writers[fd] = rec
        else:
            self._writers.pop(fd, None)

    def remove(self, rec: Record) -> None:
        """Forget ``rec`` (if it is still the record of its fd), unregistering it first."""
        fd = rec.fd
        self._unwatch(rec)
        if self._records.get(fd) is rec:
            del self._records[fd]
            self._writers.pop(fd, None)
            self._unwatchable.pop(fd, None)
        if rec.owner.records.get(fd) is rec:
            del rec.owner.records[fd]

    def close(self) -> None:
        """Unregister everything (the loop is about to be closed)."""
        for rec in list(self._records.values()):
            self.remove(rec)

    def detach(self, private_loop: bool) -> None:
        """In a forked child: let go of the loop and of every kernel object shared with the
        parent (see :mod:`.._fork`).  Whatever still calls this source touches neither.

        ``private_loop``: the loop's selector was detached already, and what we registered
        there is dropped (libuv would apply the changes it queued before the fork in its
        last poll); otherwise the loop is the program's, and is not touched."""
        if private_loop:
            self._unregister_from_loop()
        self.loop = UNPLUGGED

    def _unregister_from_loop(self) -> None:
        """Drop every reader and writer this source holds in the loop (records unchanged)."""
        raise NotImplementedError

    # -- what a subclass provides -----------------------------------------------------------

    def collect(self, owner: Owner) -> dict[int, int]:
        """The exact ``poll()`` flags of ``owner``'s fds that are ready now."""
        raise NotImplementedError

    def remove_from_thread(self, fd: int, obj: object) -> None:
        """From a thread that does not run the loop: unregister ``fd`` now if it is held
        for ``obj``, where this source can do that safely (the loop's thread forgets the
        record later either way)."""
        raise NotImplementedError

    def close_from_thread(self, sock: Any, fd: int) -> bool:
        """Close ``sock``, whose fd ``fd`` is registered here, from another thread, if that
        needs more than ``sock.close()``; ``False``: the caller just closes it."""
        return False

    def _apply(self, rec: Record) -> None:
        """Make the kernel or the loop hold what ``rec`` needs now (``rec.mask``)."""
        raise NotImplementedError

    def _unwatch(self, rec: Record) -> None:
        """Drop what the kernel or the loop holds for ``rec``, keeping the record."""
        raise NotImplementedError

    def _refused(self, rec: Record, exc: OSError) -> None:
        """The kernel or the loop refused ``rec``'s fd: a regular file, or a closed fd."""
        rec.mask = 0
        rec.kind = ALWAYS_READY if isinstance(exc, PermissionError) else INVALID_FD

    # -- collecting -------------------------------------------------------------------------

    def _collect_unwatchable(self, owner: Owner, ready: dict[int, int]) -> None:
        for rec in self._unwatchable.values():
            if rec.owner is not owner:
                continue
            if rec.kind == INVALID_FD:
                ready[rec.fd] = POLLNVAL
                continue
            flags = (POLLIN if rec.events & READ else 0) | (POLLOUT if rec.events & WRITE else 0)
            if flags:
                ready[rec.fd] = ready.get(rec.fd, 0) | flags


def cannot_watch_fds(loop: asyncio.AbstractEventLoop) -> NotImplementedError:
    """The error for an event loop whose ``add_reader()`` is not implemented: the cause and the fix."""
    kind = type(loop).__name__
    return NotImplementedError(
        f"asyncore_on_asyncio cannot serve dispatchers on {kind}: it cannot watch file "
        f"descriptors ({kind}.add_reader() is not implemented; on Windows asyncio's default "
        "ProactorEventLoop is such a loop). Use a selector event loop: for loop(), "
        "asyncore_on_asyncio.set_loop_factory(asyncio.SelectorEventLoop) (or no factory: the "
        "default makes one); for serve(), run it on one, e.g. "
        "asyncio.Runner(loop_factory=asyncio.SelectorEventLoop).run(main())"
    )


def make_source(loop: asyncio.AbstractEventLoop, on_readable: Callable[[], bool]) -> SourceBase:
    """The readiness source for ``loop``: epoll where it exists, else per-fd registrations.

    The epoll source calls ``on_readable()`` (in the loop) when it may have readiness
    for a waiting owner; it returns whether that readiness is in hand (an owner was
    waiting, or every owner is in a cycle and collects its fds itself).  The fallback runs
    the owner of each fd directly.
    """
    choice = os.environ.get(READINESS_ENV_VAR, "").strip().lower()
    if choice not in ("", "epoll", "loop-fds"):
        raise ValueError(f"{READINESS_ENV_VAR}={choice!r}: expected 'epoll' or 'loop-fds'")
    if choice != "loop-fds" and hasattr(select, "epoll"):
        from .epoll import EpollSource

        return EpollSource(loop, on_readable)
    from .loop_fds import LoopFdSource

    return LoopFdSource(loop)
