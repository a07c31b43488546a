"""``os.fork()`` while dispatchers exist: what the child inherits, and how it lets go.

Why this module exists
----------------------
3.11 kept nothing between two ``select()`` passes, so programs forked freely: a
handler forking a child per request, a server forking workers after binding its
listener, a daemon forking into the background after its loop ran.  The engine keeps
state between cycles, and some of it is a kernel object that a child shares with its
parent: an epoll is one object however many processes hold its fd.  Three of them:

* the epoll source's private epoll (and the fallback's urgent-data epoll);
* each engine loop's own selector: asyncio's epoll, libuv's backend epoll, in which
  the fallback source registers every dispatcher fd;
* nothing else of ours: sockets are shared in 3.11 too, as the program meant.

A registration removed, changed or added by the child (its ``close()``, a fresh
dispatcher) would be removed, changed or added for the parent, whose loop then stops
hearing of its fds.  So, in the child, at once (``os.register_at_fork(after_in_child=...)``,
before any code of the child runs), the engine lets go of every inherited engine
(:meth:`._engine.Engine.abandon`):

* Each epoll above is **detached**: a private epoll is ``dup2()``-ed over its fd number
  (:func:`detach_epoll`).  Closing the child's copy of an epoll fd never touches the
  parent's; ``dup2()`` closes it and leaves a harmless object under the number, so
  nothing that still holds it (the rest of a run, asyncio's ``close()`` or ``__del__``
  removing its self-pipe's reader, libuv applying a watcher change queued before the
  fork) can reach the parent's.  The source's own epoll is replaced by an empty one; a
  loop's, by one holding the same fds with no events wanted, because libuv aborts when
  it modifies a registration it finds missing (one ``epoll_ctl`` per fd the loop
  watches: a few with the epoll source, every dispatcher's with the fallback).  An abandoned source is also **unplugged** from its loop
  (:data:`UNPLUGGED`): it cannot call ``add_reader``/``remove_reader`` any more.
* The engine leaves the registry and the thread forgets its engine loop: the child's
  next cycle makes a fresh loop and source and registers the child's fds afresh.
  The abandoned loops are kept referenced for the child's life (:data:`abandoned`),
  never closed.
* A run that was going on when a handler forked learns it at its next cycle: the hook
  posts a :class:`Forked` to the engine's failures, which every cycle already checks
  (so this costs a cycle nothing), and ``loop()`` goes on in the child with the same
  map, timeout and remaining count on the fresh loop.  If its cycles ran inside the
  engine loop's ``run_forever()``, that loop is stopped first and left: asyncio's
  returns after the callbacks already due in its current iteration; uvloop's after one
  more libuv iteration, whose zero-timeout poll finds the detached epoll, where nothing
  is wanted (only a hang-up or an error is reported, to callbacks that do nothing).

What asyncio itself does at fork: its own hook (``asyncio.events``, registered before
ours, so it runs first) forgets the running loop and the policy's loop in the child.
Coroutines of the engine loop therefore do not follow into the child; a child that
wants coroutines starts its own loop (``loop()`` makes the fresh one for dispatchers).
``serve()`` running on a loop of the program's own raises :class:`Forked` in the child:
the engine leaves that loop alone (it is the program's, shared as asyncio leaves it).

What remains, when the fork happened inside the engine loop's ``run_forever()``:

* The callbacks that loop had already taken in that iteration still run in the child
  before it leaves (asyncio: the rest of the iteration's ready handles; uvloop: the rest
  of libuv's batch and ready queue).  Ours do nothing there; another coroutine's step
  due in that iteration runs once in the child.
* uvloop's last iteration in the child applies the watcher changes libuv queued before
  the fork.  The source drops its own first (on the detached epoll, so nothing of ours
  is queued), but uvloop queues one of its own at the start of every ``run_forever()``
  (its signal socket), applied at the run's first poll: a fork in a callback before that
  poll (a coroutine started by ``spawn()`` that forks) leaves it queued.  libuv batches
  such changes through an io_uring whose rings are memory it shares with the parent
  (libuv re-creates them only in ``uv_loop_fork()``, which uvloop does not call for
  ``os.fork()``): the child's submission goes to its detached epoll, but a parent
  batching changes at the same microsecond would share the ring with it.  Measured with
  ``strace -f`` over tests/test_fork.py: no child enters the inherited ring except in
  that case (three entries, uvloop, fork from a coroutine).
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
from collections.abc import Callable
from typing import Any

__all__ = ["UNPLUGGED", "Forked", "abandoned", "at_fork_in_child", "detach_epoll", "detach_loop"]


class Forked(RuntimeError):
    """Raised in a forked child where a run of the parent's would go on in the inherited state."""

    def __init__(self) -> None:
        super().__init__(
            "this process was forked while its event loop served dispatchers: in the child, "
            "loop() goes on with a fresh event loop, but a run on a loop of the program's own "
            "(serve()) and its coroutines do not follow; start a new loop in the child"
        )


abandoned: list[object] = []
"""What the child let go of: kept alive, never closed (see the module's docstring)."""


def detach_epoll(fd: int, keep_fds: bool = False) -> None:
    """Put a private epoll under ``fd``, an epoll shared with the parent: an empty one, or
    (``keep_fds``) one holding the same fds with no events wanted.  An event loop that
    modifies a registration it holds then changes the child's copy; libuv aborts if the
    fd is missing (its final poll applies the watcher changes queued before the fork)."""
    private = select.epoll()
    try:
        for target in _targets(fd) if keep_fds else ():
            try:
                private.register(target, 0)
            except OSError:
                # A number closed (or closed and reused) since it was registered: no entry to keep.
                pass
        os.dup2(private.fileno(), fd, inheritable=False)
    finally:
        private.close()


def _targets(fd: int) -> list[int]:
    """The fds registered in epoll ``fd`` (``/proc``; without it, none)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            return [int(line.split()[1]) for line in info if line.startswith("tfd:")]
    except OSError:
        return []


def detach_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Detach ``loop``'s own selector where it is an epoll we can name: asyncio's selector
    loops and uvloop (libuv's backend fd).  Other loops are left as they are (``False``)."""
    if not hasattr(select, "epoll"):
        return False  # no epoll to detach with (macOS' kqueue is not inherited at all)
    selector = getattr(loop, "_selector", None)
    if hasattr(selectors, "EpollSelector") and isinstance(selector, selectors.EpollSelector):
        detach_epoll(selector.fileno(), keep_fds=True)
        return True
    backend = getattr(loop, "_get_backend_id", None)
    if backend is not None:
        detach_epoll(backend(), keep_fds=True)
        return True
    return False


class _Unplugged:
    """Stands in for the event loop of an abandoned source: registering does nothing."""

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        pass

    def remove_reader(self, fd: Any) -> bool:
        return False

    add_writer = add_reader
    remove_writer = remove_reader

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        raise RuntimeError("the event loop was abandoned at fork")  # as a closed loop does


UNPLUGGED: Any = _Unplugged()


def at_fork_in_child(hook: Callable[[], None]) -> None:
    """Call ``hook`` in every child forked from now on, before the child's own code runs."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=hook)
