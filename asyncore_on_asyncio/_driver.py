"""What ``loop()`` and ``poll()`` mean on asyncio: cycles, counts, timeouts, exceptions.

A *cycle* is what one ``select()`` pass was in asyncore: ask every dispatcher of
the map ``readable()``/``writable()``, bring the event loop's registrations in
line (:mod:`._interest`), let the event loop run until an fd is ready or
``timeout`` has passed, then dispatch what is ready, in map order.  With
``use_poll=False`` the dispatch follows ``select()``: every read event, then every
write event, then every priority event.  With ``use_poll=True`` it follows
``poll()``: one ``readwrite(obj, flags)`` per object.  Either way the flags come
from a zero-timeout ``poll()`` of just the fds the event loop reported, made right
before dispatching: the event loop says *when* to look, ``poll()`` says *what*,
exactly as 3.11 saw it (and a report made stale by an earlier handler is dropped).

The cycles run as callbacks inside the event loop, which runs once per
``loop()`` call (entering ``run_forever`` costs ~0.1 ms on uvloop: too much per
cycle).  A readiness callback only records the fd and schedules one coalesced
*step*; the step dispatches, scans and arms the next wait.  Every exception a
step meets (a handler's ``ExitNow``/``KeyboardInterrupt``/``SystemExit``, whatever
``handle_error``, ``readable()`` or ``writable()`` raise) is caught, the cycles
stop, and it is raised again from ``loop()`` (or ``serve()``): nothing reaches
asyncio's exception handler.  While a cycle waits, coroutines on the same loop run,
and a change made through our API (a new dispatcher, ``push()``, ``close()``,
``wakeup()``, another thread's change) makes the waiting cycle scan again at once.

``loop()`` called from a handler (a nested loop, legal in 3.11) cannot re-enter the
running event loop; it runs its cycles on a private ``poll()`` instead.
"""

from __future__ import annotations

import asyncio
import operator
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._classflags import PerClass
from ._dispatch import (
    POLLERR,
    READ_ONLY,
    confirm,
    dispatch_batch,
    fd_of_key,
    is_closed,
    run_nested,
    wanted,
)
from ._engine import Engine, engine_for, forget_engine, thread_engine, thread_engine_or_none
from ._handlers import POLLOUT
from ._interest import INVALID, PRIORITY, WRITE, Registration

__all__ = ["run", "serve"]

_HAS_POLL = hasattr(select, "poll")
_TIMER_SLACK = 0.0005
"""A deadline timer firing this early (seconds) counts as due."""
DISPATCH = -1.0
"""Returned by :meth:`_Driver.resume` instead of a delay: stop waiting and dispatch."""


class _Driver:
    """Runs cycles over one map on one engine; the registry's :class:`~._interest.Owner`."""

    def __init__(self, engine: Engine, map: dict[Any, Any]) -> None:
        self.engine = engine
        self.map = map
        self.waiting = False
        self.in_cycle = False
        self.dispatching = False
        self.rescan = False
        self.ready: dict[int, int] = {}
        self.registered: dict[int, Registration] = {}
        self._stamp = 0
        # Incremental scanning, while every object's predicates are known (see scan()).
        self._full_scan_needed = True
        self._next_full_scan = 0.0
        self._dirty: set[Any] = set()
        self._entries: dict[Any, tuple[Any, int, Any, int]] = {}
        self._position: dict[Any, int] = {}
        self._by_fd: dict[int, Any] = {}
        self._next_position = 0
        self._incremental = False
        # The previous full scan, for the next one to see whether anything changed.
        self._steady = False
        self._keys: list[Any] = []
        self._objs: list[Any] = []
        self._wanted: list[int] = []
        self._optimistic: dict[int, Registration] = {}
        self._unregistrable: dict[int, Registration] = {}
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self._step_handle: asyncio.Handle | None = None
        # Set by start(): the parameters of the running loop()/serve().
        self._timeout: float | None = None
        self._use_poll = False
        self._count: int | None = None
        self._on_done: Callable[[BaseException | None], None] | None = None

    # -- the Owner protocol of the registry, and change notifications ---------------------

    def wake(self) -> None:
        """End the current wait: schedule one step (coalesced)."""
        if self.waiting and self._step_handle is None:
            self._step_handle = self.engine.loop.call_soon(self._step)

    def parked(self, fd: int) -> None:
        """The registry undid ``fd``'s registration outside a scan: scan its entry again."""
        key = self._by_fd.get(fd)
        if key is None:
            self._full_scan_needed = True
        else:
            self._dirty.add(key)

    def changed(self, key: Any = None) -> None:
        """The entry ``key`` of the map changed (``None``: anything may have): scan it again.

        A waiting cycle scans at once; otherwise the next cycle does.
        """
        if key is None:
            self._full_scan_needed = True
        else:
            self._dirty.add(key)
        if self.waiting:
            self.rescan = True
            self.wake()

    # -- the cycle machine ----------------------------------------------------------------

    def start(
        self,
        timeout: float | None,
        use_poll: bool,
        count: int | None,
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        """Begin cycles; ``on_done(None)`` when they end, ``on_done(exc)`` when one raised.

        The first scan runs now, in the caller's frame, so its exceptions propagate.
        """
        self._timeout = timeout
        self._use_poll = use_poll
        self._count = count
        self._on_done = on_done
        self.in_cycle = True
        try:
            self._arm(self.begin())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the cycles without dispatching (cancellation, an interrupt, an error)."""
        self.in_cycle = False
        self.waiting = False
        self._on_done = None
        for handle in (self._timer, self._soon, self._step_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = self._step_handle = None

    def _arm(self, delay: float | None) -> None:
        """Wait for readiness, a change, or ``delay`` seconds (``None``: no limit).

        One timer serves many cycles: a busy loop arms a later deadline every cycle,
        and the pending timer, firing early, just re-arms for the rest.  A zero delay
        (readiness already known) uses its own zero timer, which runs after the loop's
        next poll, so reads that are ready by then join this cycle.
        """
        self.rescan = False
        self.waiting = True
        loop = self.engine.loop
        if delay is None:
            self._wake_at = None
        elif delay <= 0:
            if self._soon is None:
                self._soon = loop.call_later(0, self._on_soon)
        else:
            when = loop.time() + delay
            self._wake_at = when
            timer = self._timer
            if timer is not None:
                if timer.when() <= when:
                    return
                timer.cancel()
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_soon(self) -> None:
        self._soon = None
        self.wake()

    def _on_timer(self) -> None:
        self._timer = None
        wake_at = self._wake_at
        if wake_at is None or not self.waiting:
            return
        remaining = wake_at - self.engine.loop.time()
        if remaining > _TIMER_SLACK:
            self._timer = self.engine.loop.call_later(remaining, self._on_timer)
            return
        self.wake()

    def _step(self) -> None:
        self._step_handle = None
        self.waiting = False
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        try:
            delay = self.resume()
            if delay != DISPATCH:
                self._arm(delay)
                return
            if not self.dispatch() and self.map and not self._timed_out():
                # Nothing was ready after all (a stale report, see _dispatch.confirm, or a
                # timer firing a little early): keep waiting, this is no cycle yet.
                self._arm(self._delay())
                return
            if self._count is not None:
                self._count -= 1
            if not self.map or self._count == 0:
                self._finish(None)
                return
            self._arm(self.begin())
        except BaseException as exc:
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        on_done = self._on_done
        self.stop()
        if on_done is not None:
            on_done(exc)

    def begin(self) -> float | None:
        """Start a cycle: scan, and return how long to wait (``None``: no limit).

        Readiness recorded since the last dispatch is kept: it is confirmed at dispatch.
        """
        self.scan()
        timeout = self._timeout
        self._deadline = None if timeout is None else self.engine.loop.time() + max(0.0, timeout)
        return self._delay()

    def resume(self) -> float | None:
        """After a wait: :data:`DISPATCH` when the cycle should dispatch now, else the next delay."""
        self.engine.raise_failures()
        if self.ready or not self.map:
            return DISPATCH
        if self._timed_out():
            self._full_scan_needed = True  # an idle cycle: time to check everything
            return DISPATCH
        if not self.rescan:
            return DISPATCH  # a timer a little early: dispatch() finds nothing and re-arms
        self.scan()
        return self._delay()

    def _timed_out(self) -> bool:
        deadline = self._deadline
        return deadline is not None and self.engine.loop.time() >= deadline

    def _delay(self) -> float | None:
        if self.ready:
            # Let the loop poll once more, so reads ready now join this cycle.
            return 0.0
        deadline = self._deadline
        return None if deadline is None else max(0.0, deadline - self.engine.loop.time())

    # -- scanning and dispatching ---------------------------------------------------------

    def scan(self) -> None:
        """Ask the dispatchers what they want and bring the registrations in line.

        A full scan asks every object of the map, in map order, as 3.11 did before
        each ``select()``.  When every object's ``readable()``/``writable()`` is one of
        ours (``dispatcher``, ``dispatcher_with_send``, ``async_chat``, not overridden),
        their answers can only change through our API or inside their own handlers, so
        later scans ask only the objects that changed (:meth:`changed`) or were
        dispatched: the cost of a cycle no longer grows with idle connections.  A full
        scan still runs after an idle cycle, at least once a second, and when the map's
        size shows a change made behind our back.  Between verifying scans (at least
        once a second) a registration made for the same object is trusted to still
        hold its socket, so a socket closed behind a dispatcher's back is noticed
        within a second.
        """
        if (
            self._incremental
            and not self._full_scan_needed
            and self.engine.loop.time() < self._next_full_scan
            and self._scan_changed()
        ):
            return
        self._scan_all()

    def _scan_all(self) -> None:
        # The hot path of maps with user-defined predicates: every object, every cycle.
        map = self.map
        keys = list(map)
        objs = list(map.values())
        write_bits = WRITE | (0 if self._use_poll else PRIORITY)
        # readable() then writable(), object by object in map order, as 3.11 asked them;
        # a listener never writes.  READ_ONLY | write_bits == READ_WRITE.
        wanted = [
            (READ_ONLY if obj.readable() else 0)
            | (write_bits if obj.writable() and not obj.accepting else 0)
            for obj in objs
        ]
        now = self.engine.loop.time()
        # Sockets are checked (closed behind our back? swapped?) on a verifying scan;
        # in between, a registration made for the same object is trusted.
        verify = self._full_scan_needed or now >= self._next_full_scan
        if (
            not verify
            and not self._dirty
            and self._steady
            and keys == self._keys
            # Identity first, then __eq__: only an __eq__ that calls two dispatchers equal
            # could hide an object put into the map behind our API (add_channel() marks
            # the key dirty), and then only until the next verifying scan.
            and objs == self._objs
        ):
            self._apply_answers(wanted)
            return
        self._apply_scan(keys, objs, wanted, verify)
        if verify:
            self._next_full_scan = now + _FULL_SCAN_INTERVAL

    def _apply_answers(self, wanted: list[int]) -> None:
        """The same objects under the same fds as at the previous scan: apply what changed.

        Only the answers that differ from the previous scan's (found at C speed) touch
        their registration; the others hold.  What a scan does besides registering is
        done for all: optimistic writes are offered, and fds that cannot be registered
        (closed, regular files) are reported.
        """
        previous = self._wanted
        self._wanted = wanted
        registry = self.engine.registry
        optimistic = self._optimistic
        unregistrable = self._unregistrable
        if wanted != previous:
            registered = self.registered
            keys, objs = self._keys, self._objs
            stamp = self._stamp
            for index in _differences(wanted, previous):
                fd = keys[index]
                obj = objs[index]
                events = wanted[index]
                reg = registered.get(fd)
                if not events:
                    if reg is not None:
                        registry.discard(self, fd, obj)
                    optimistic.pop(fd, None)
                    unregistrable.pop(fd, None)
                    continue
                if reg is None or reg.obj is not obj:
                    reg, events = self._sync(fd, obj, reg, events)
                else:
                    registry.refresh(reg, events)
                reg.seen = stamp
                reg.key = fd
                reg.wanted = events
                reg.index = index
                self._classify(reg)
        ready = self.ready
        for reg in optimistic.values():
            if not reg.writing:
                ready[reg.fd] = ready.get(reg.fd, 0) | WRITE
        for reg in list(unregistrable.values()):
            registry.apply(reg, reg.wanted)

    def _sync(self, fd: int, obj: Any, reg: Registration | None, events: int) -> tuple[Registration, int]:
        """Check ``obj``'s socket, then register ``fd`` afresh or refresh ``reg``.

        A socket closed behind the dispatcher's back makes the events INVALID; a
        registration made for another object or socket is replaced.  Returns the
        registration and the events it now carries.
        """
        sock = getattr(obj, "socket", None)
        if sock is not None and is_closed(sock):
            events = INVALID
        registry = self.engine.registry
        if reg is None or reg.obj is not obj or reg.sock is not sock:
            return registry.register(self, fd, obj, sock, events, _observes_urgent(obj)), events
        registry.refresh(reg, events)
        return reg, events

    def _classify(self, reg: Registration) -> None:
        # Which lists of the steady path (_apply_answers) ``reg`` belongs to now.
        fd = reg.fd
        if reg.wanted & WRITE:
            self._optimistic[fd] = reg
        else:
            self._optimistic.pop(fd, None)
        if reg.events == -1:
            self._unregistrable[fd] = reg
        else:
            self._unregistrable.pop(fd, None)

    def _apply_scan(self, keys: list[Any], objs: list[Any], wanted: list[int], verify: bool) -> None:
        registered = self.registered
        refresh = self.engine.registry.refresh
        stamp = self._stamp = self._stamp + 1
        dirty = self._dirty
        # No tuple per object here: allocating one per object per cycle doubled the cost
        # of this loop (the garbage collector runs every few hundred allocations).  What
        # dispatch() needs is kept on the registration instead (key, wanted, index).
        index = -1
        count = 0
        all_known = True
        int_keys = True
        for key, obj, events in zip(keys, objs, wanted):
            index += 1
            if type(key) is int:
                fd = key
            else:
                int_keys = False
                key_fd = fd_of_key(key)
                if key_fd is None:
                    all_known = False
                    continue
                fd = key_fd
            if all_known and not _known(obj):
                all_known = False
            if not events:
                continue
            reg = registered.get(fd)
            if reg is None or reg.obj is not obj or verify or key in dirty:
                reg, events = self._sync(fd, obj, reg, events)
            else:
                refresh(reg, events)
            reg.seen = stamp
            reg.key = key
            reg.wanted = events
            reg.index = index
            count += 1
        if len(registered) != count:
            self.engine.registry.sweep(self, stamp)
        self._full_scan_needed = False
        dirty.clear()
        self._incremental = all_known
        # For the next scan: with the same objects under the same fds, only the answers
        # that changed need applying (_apply_answers).
        self._steady = int_keys
        self._keys, self._objs, self._wanted = keys, objs, wanted
        self._optimistic = {}
        self._unregistrable = {}
        regs = registered.values()
        for reg in regs:
            if reg.wanted & WRITE or reg.events == -1:
                self._classify(reg)
        if all_known:
            entries = [(reg.key, reg.fd, reg.obj, reg.wanted) for reg in regs]
            self._entries = {entry[0]: entry for entry in entries}
            self._by_fd = {entry[1]: entry[0] for entry in entries}
            self._position = {key: index for index, key in enumerate(self.map)}
            self._next_position = len(self._position)

    def _scan_changed(self) -> bool:
        """Scan only the changed entries; ``False`` if a full scan is needed instead."""
        registered = self.registered
        registry = self.engine.registry
        entries = self._entries
        by_fd = self._by_fd
        position = self._position
        write_extra = 0 if self._use_poll else PRIORITY
        map = self.map
        dirty = self._dirty
        self._dirty = set()
        for key in dirty:
            obj = map.get(key)
            old = entries.get(key)
            if old is not None and obj is old[2]:
                # The common case: a dispatcher that just ran, or was pushed to, asks again.
                events = wanted(obj, write_extra)
                fd = old[1]
                reg = registered.get(fd)
                if events and reg is not None and reg.obj is obj:
                    if events != old[3]:
                        entries[key] = (key, fd, obj, events)
                    registry.refresh(reg, events)
                    continue
            old = entries.pop(key, None)
            if old is not None and by_fd.get(old[1]) is key:
                del by_fd[old[1]]
            if obj is None:
                position.pop(key, None)
                if old is not None:
                    registry.discard(self, old[1], old[2])
                continue
            key_fd = key if type(key) is int else fd_of_key(key)
            if key_fd is None or not _known(obj):
                return False
            fd = key_fd
            if key not in position:
                position[key] = self._next_position
                self._next_position += 1
            events = wanted(obj, write_extra)
            if old is not None and old[1] != fd:
                registry.discard(self, old[1], old[2])
            if not events:
                registry.discard(self, fd, obj)
                continue
            _, events = self._sync(fd, obj, registered.get(fd), events)
            entries[key] = (key, fd, obj, events)
            by_fd[fd] = key
        # Every key of the map is known iff nothing was added or removed behind our back.
        return len(position) == len(map)

    def dispatch(self) -> bool:
        """Dispatch this cycle's events in map order, as ``select()`` or ``poll()`` would have.

        Returns whether any fd was still ready (``False``: nothing was dispatched).
        """
        ready = self.ready
        if not ready:
            return False
        self.ready = {}
        if self._incremental:
            by_fd = self._by_fd
            keys = [by_fd[fd] for fd in ready if fd in by_fd]
            keys.sort(key=self._position.__getitem__)
            entries = self._entries
            batch = [entries[key] for key in keys]
            # Their handlers may change what they want: ask them again next cycle.
            self._dirty.update(keys)
        else:
            # What the latest scan wanted of the ready fds, in map order.
            registered, stamp = self.registered, self._stamp
            regs = [reg for fd in ready if (reg := registered.get(fd)) is not None and reg.seen == stamp]
            regs.sort(key=_scan_index)
            batch = [(reg.key, reg.fd, reg.obj, reg.wanted) for reg in regs]
        revents = confirm(batch, ready)
        registry = self.engine.registry
        for fd, flags in revents.items():
            if flags & POLLERR:
                # uvloop (libuv) stops watching an fd after reporting an error on it.
                registry.rearm(fd)
        for _, fd, _, events in batch:
            if events & WRITE and not revents.get(fd, 0) & POLLOUT:
                # An optimistic write (see _interest) that would block after all.
                registry.block_writer(fd)
        if not revents:
            return False
        self.dispatching = True
        try:
            dispatch_batch(self.map, batch, revents, self._use_poll)
        finally:
            self.dispatching = False
        return True


_scan_index = operator.attrgetter("index")


def _differences(new: list[int], old: list[int], block: int = 64) -> Iterator[int]:
    """The indices where two lists of the same length differ, few of them expected.

    Blocks are compared at C speed; only a block that differs is looked into.
    """
    for start in range(0, len(new), block):
        end = start + block
        if new[start:end] != old[start:end]:
            for index in range(start, min(end, len(new))):
                if new[index] != old[index]:
                    yield index


_FULL_SCAN_INTERVAL = 1.0
"""Seconds between verifying scans: they check every dispatcher's socket (closed
behind its back? swapped without del_channel()?) and, in incremental mode, every
entry of the map (changes made behind our back that kept the map's size)."""

def _stock_predicates(cls: type) -> bool:
    """Are both ``readable()`` and ``writable()`` ones whose answer only changes through
    this package's API or the object's own handlers?"""
    from . import asynchat, asyncore

    return getattr(cls, "readable", None) in (
        asyncore.dispatcher.readable,
        asynchat.async_chat.readable,
    ) and getattr(cls, "writable", None) in (
        asyncore.dispatcher.writable,
        asyncore.dispatcher_with_send.writable,
        asynchat.async_chat.writable,
    )


_has_stock_predicates = PerClass(_stock_predicates)


def _known(obj: Any) -> bool:
    """Are ``obj``'s predicates ours, on its class and not replaced on the instance?"""
    if not _has_stock_predicates(type(obj)):
        return False
    attrs = getattr(obj, "__dict__", None)
    return attrs is None or ("readable" not in attrs and "writable" not in attrs)


_URGENT_HANDLERS = frozenset({"handle_expt_event", "handle_expt", "log_info"})


def _overrides_urgent_handling(cls: type) -> bool:
    from . import asyncore

    stock = asyncore.dispatcher
    return any(getattr(cls, name, None) is not getattr(stock, name) for name in _URGENT_HANDLERS)


_class_observes_urgent = PerClass(_overrides_urgent_handling)


def _observes_urgent(obj: Any) -> bool:
    """Would urgent data make ``obj`` do anything observable?

    3.11's stock ``handle_expt_event()`` calls ``handle_expt()``, whose warning
    ``log_info()`` drops (``"warning"`` is in ``ignore_log_types``).  For such an
    object, waking up for urgent data alone changes nothing but the CPU spent, so
    its fd is not watched for it (urgent data that arrives with other events is
    still dispatched).  Decided when the dispatcher is registered.
    """
    if _class_observes_urgent(type(obj)):
        return True
    attrs = getattr(obj, "__dict__", None)
    if attrs and not _URGENT_HANDLERS.isdisjoint(attrs):
        return True
    try:
        return "warning" not in getattr(obj, "ignore_log_types", ())
    except TypeError:
        return True


def _driver_for(engine: Engine, map: dict[Any, Any]) -> _Driver:
    driver = engine.drivers.get(id(map))
    if isinstance(driver, _Driver) and driver.map is map:
        return driver
    if isinstance(driver, _Driver):
        engine.registry.release(driver)  # a dead map whose id() was reused
    new = _Driver(engine, map)
    engine.drivers[id(map)] = new
    return new


def _retire(engine: Engine, driver: _Driver) -> None:
    engine.registry.release(driver)
    if engine.drivers.get(id(driver.map)) is driver:
        del engine.drivers[id(driver.map)]


# -- the entry points -----------------------------------------------------------------------


def run(map: dict[Any, Any], timeout: float | None, use_poll: bool, count: int | None) -> None:
    """Blocking: run cycles on this thread's engine loop until ``map`` is empty or ``count`` is spent."""
    if not map or (count is not None and count <= 0):
        return
    use_poll = use_poll and _HAS_POLL
    running = asyncio._get_running_loop()
    if running is not None:
        if _inside_a_handler(running):
            run_nested(map, timeout, use_poll, count)
            return
        raise RuntimeError(
            "asyncore.loop()/poll() cannot block inside a running asyncio event loop; "
            "use 'await asyncore_on_asyncio.serve(map)' there instead"
        )
    engine = thread_engine()
    engine.thread_id = threading.get_ident()
    driver = _driver_for(engine, map)
    loop = engine.loop
    outcome: list[BaseException | None] = []

    def done(exc: BaseException | None) -> None:
        outcome.append(exc)
        loop.stop()

    driver.start(timeout, use_poll, count, done)
    try:
        loop.run_forever()
    finally:
        # An interrupt (a signal) can end run_forever between two steps.
        driver.stop()
    if outcome and outcome[0] is not None:
        raise outcome[0]
    if not map:
        _retire(engine, driver)


async def serve(
    map: dict[Any, Any] | None = None, timeout: float | None = 30.0, use_poll: bool = False
) -> None:
    """Drive ``map``'s dispatchers on the running event loop until the map is empty.

    The async counterpart of ``asyncore.loop()``: the same cycles, run by callbacks
    on the running loop, so it keeps serving other tasks.  Several maps may be
    served at once.  Exceptions propagate as from ``loop()``.  When the task is
    cancelled, or ends by an exception, the map's fds are unregistered and its
    dispatchers are left open in the map (``asyncore.close_all(map)`` closes them).
    """
    if map is None:
        from . import asyncore

        map = asyncore.socket_map
    loop = asyncio.get_running_loop()
    engine = engine_for(loop)
    existing = engine.drivers.get(id(map))
    if isinstance(existing, _Driver) and existing.map is map and existing.in_cycle:
        raise RuntimeError("this map is already being served on this event loop")
    if not map:
        return
    driver = _driver_for(engine, map)
    finished: asyncio.Future[None] = loop.create_future()

    def done(exc: BaseException | None) -> None:
        if finished.done():
            return
        if exc is None:
            finished.set_result(None)
        else:
            finished.set_exception(exc)

    driver.start(timeout, use_poll and _HAS_POLL, None, done)
    try:
        await finished
    finally:
        driver.stop()
        _retire(engine, driver)
        if not engine.drivers and not len(engine.registry) and engine is not thread_engine_or_none():
            forget_engine(engine)


# -- loop() called from a handler ------------------------------------------------------------


def _inside_a_handler(loop: asyncio.AbstractEventLoop) -> bool:
    engine = engine_for(loop)
    return any(isinstance(d, _Driver) and d.dispatching for d in list(engine.drivers.values()))


