"""What ``loop()`` and ``poll()`` mean on asyncio: cycles, counts, timeouts, which event loop.

A *cycle* is what one ``select()`` pass was in asyncore: ask every dispatcher of
the map ``readable()``/``writable()``, make the event loop's registrations match
(:mod:`._interest`), run the event loop until at least one fd is ready or
``timeout`` has passed, then dispatch what is ready, in map order.  With
``use_poll=False`` the dispatch follows ``select()``: every read event, then every
write event, then every priority event.  With ``use_poll=True`` it follows
``poll()``: one ``readwrite(obj, flags)`` per object, with the exact ``POLL*``
flags taken from a zero-timeout ``poll()`` of just the fds that are ready.

Handlers run in the caller's frame, never inside an asyncio callback, so their
exceptions follow asyncore's rules and nothing reaches asyncio's exception
handler.  While a cycle waits, the event loop runs: coroutines on the same loop
make progress, and a change made by our own API (a new dispatcher, ``push()``,
``close()``, another thread's write) wakes the wait so the new interest is used
at once, within the same cycle.

Each thread that calls ``loop()`` gets one event loop from the loop factory
(:func:`set_loop_factory`, or ``ASYNCORE_ON_ASYNCIO_LOOP``), kept with its
registrations between calls so that ``loop(timeout, count=1)`` from a host
application is cheap.  ``serve()`` drives a map on an already running loop.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from ._errors import RERAISED
from ._handlers import POLLIN, POLLOUT, POLLPRI, _exception, read, readwrite, write
from ._interest import INVALID, PRIORITY, READ, WRITE, Registration, Registry

__all__ = [
    "LOOP_ENV_VAR",
    "close_event_loop",
    "get_event_loop",
    "interest_changed",
    "map_changed",
    "run",
    "serve",
    "set_loop_factory",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_ENV_VAR = "ASYNCORE_ON_ASYNCIO_LOOP"
_POLLERR: int = getattr(select, "POLLERR", 0x008)
_POLLHUP: int = getattr(select, "POLLHUP", 0x010)
_POLLNVAL: int = getattr(select, "POLLNVAL", 0x020)
_HAS_POLL = hasattr(select, "poll")
DISPATCH = -1.0
"""Returned by :meth:`_Driver.resume` instead of a delay: stop waiting and dispatch."""

# -- choosing the event loop --------------------------------------------------------------

_factory: LoopFactory | None = None


def set_loop_factory(factory: LoopFactory | None) -> None:
    """Choose how event loops for ``loop()`` are made (``None``: asyncio's default, or the env var).

    The calling thread's idle engine loop is closed so that its next ``loop()`` uses
    the new factory; other threads switch when their loop is next made.
    """
    global _factory
    if factory is not None and not callable(factory):
        raise TypeError(f"loop factory must be callable or None, not {type(factory).__name__}")
    close_event_loop()
    _factory = factory


def _factory_from_env() -> LoopFactory:
    choice = os.environ.get(LOOP_ENV_VAR, "").strip().lower()
    if choice in ("", "asyncio", "default"):
        return asyncio.new_event_loop
    if choice == "uvloop":
        return uvloop_factory()
    raise ValueError(f"{LOOP_ENV_VAR}={choice!r}: expected 'asyncio' or 'uvloop'")


def uvloop_factory() -> LoopFactory:
    """``uvloop.new_event_loop``, or a clear error if uvloop is not installed."""
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(
            "uvloop was requested but is not installed; "
            "install it with: pip install 'asyncore-on-asyncio[uvloop]'"
        ) from exc
    factory: LoopFactory = uvloop.new_event_loop
    return factory


class _ThreadLoop:
    """Owns one thread's engine loop; closes it when the thread's storage is freed."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        engine = self.engine
        _forget_engine(engine)
        engine.registry.close()
        if not engine.loop.is_closed():
            engine.loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


_local = threading.local()


def _thread_engine() -> _Engine:
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None or holder.engine.loop.is_closed():
        factory = _factory if _factory is not None else _factory_from_env()
        loop = factory()
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop factory returned {loop!r}, not an asyncio event loop")
        holder = _ThreadLoop(_engine_for(loop))
        _local.holder = holder
    return holder.engine


def get_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop that ``loop()`` drives in this thread (the running loop, if any)."""
    running = asyncio._get_running_loop()
    if running is not None:
        return running
    return _thread_engine().loop


def close_event_loop() -> None:
    """Close this thread's engine loop, dropping its registrations; ``loop()`` makes a new one."""
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None:
        return
    if holder.engine.loop.is_running():
        raise RuntimeError("cannot close the engine loop while it is running")
    del _local.holder
    holder.close()


@atexit.register
def _close_main_thread_loop() -> None:
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is not None and not holder.engine.loop.is_running():
        del _local.holder
        holder.close()


# -- engines: one per event loop ----------------------------------------------------------


class _Engine:
    """The registry and the map drivers of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.registry = Registry(loop)
        self.drivers: dict[int, _Driver] = {}
        self.thread_id = threading.get_ident()
        self.failures: list[tuple[BaseException, Any]] = []

    def driver_for(self, map: dict[Any, Any]) -> _Driver:
        driver = self.drivers.get(id(map))
        if driver is None or driver.map is not map:
            if driver is not None:
                self.registry.release(driver)
            driver = self.drivers[id(map)] = _Driver(self, map)
        return driver

    def retire(self, driver: _Driver) -> None:
        self.registry.release(driver)
        if self.drivers.get(id(driver.map)) is driver:
            del self.drivers[id(driver.map)]

    def apply_change(self, map_id: int, fd: int | None, obj: object) -> None:
        """Run in the loop's thread: forget ``fd`` if it belongs to ``obj``, rescan ``map_id``."""
        if fd is not None:
            self.registry.forget(fd, obj)
        driver = self.drivers.get(map_id)
        if driver is not None:
            driver.changed()

    def report_failure(self, exc: BaseException, dispatcher: Any) -> None:
        """A spawned task failed: hand it to the next cycle of any driver of this loop."""
        self.failures.append((exc, dispatcher))
        for driver in list(self.drivers.values()):
            driver.changed()

    def raise_failures(self) -> None:
        while self.failures:
            exc, dispatcher = self.failures.pop(0)
            if dispatcher is None:
                raise exc
            try:
                raise exc
            except RERAISED:
                raise
            except BaseException:
                dispatcher.handle_error()


_engines: dict[asyncio.AbstractEventLoop, _Engine] = {}
_engines_lock = threading.Lock()


def _engine_for(loop: asyncio.AbstractEventLoop) -> _Engine:
    engine = _engines.get(loop)
    if engine is None:
        with _engines_lock:
            engine = _engines.setdefault(loop, _Engine(loop))
    return engine


def _forget_engine(engine: _Engine) -> None:
    with _engines_lock:
        if _engines.get(engine.loop) is engine:
            del _engines[engine.loop]


def engine_of_running_loop() -> _Engine | None:
    running = asyncio._get_running_loop()
    return None if running is None else _engine_for(running)


def current_engine() -> _Engine:
    """The engine of the running loop, or of this thread's engine loop."""
    return engine_of_running_loop() or _thread_engine()


# -- notifications from the asyncore API --------------------------------------------------


def map_changed(map: dict[Any, Any], fd: int | None = None, obj: object = None) -> None:
    """A dispatcher was added to or removed from ``map``; ``fd`` is being closed for ``obj``.

    The registration of ``fd`` is dropped now (before the caller closes it) if this
    thread runs the loop it is registered with, or as soon as that loop's thread
    gets to it otherwise; a wait on ``map`` wakes to see the change.
    """
    if not _engines:
        return
    me = threading.get_ident()
    map_id = id(map)
    for engine in list(_engines.values()):
        reg = None if fd is None else engine.registry.registration(fd)
        owned = reg is not None and reg.obj is obj
        if not owned and map_id not in engine.drivers:
            continue
        if engine.thread_id == me:
            engine.apply_change(map_id, fd if owned else None, obj)
        else:
            try:
                engine.loop.call_soon_threadsafe(engine.apply_change, map_id, fd if owned else None, obj)
            except RuntimeError:
                # That loop is closed: it has no registrations left to drop.
                pass


def interest_changed(obj: object) -> None:
    """``obj``'s ``readable()``/``writable()`` may have changed: a waiting cycle re-asks at once."""
    map = getattr(obj, "_map", None)
    if isinstance(map, dict):
        map_changed(map)


# -- one map on one loop ------------------------------------------------------------------


class _Driver:
    """Runs cycles over one map on one engine; the registry's :class:`~._interest.Owner`."""

    def __init__(self, engine: _Engine, map: dict[Any, Any]) -> None:
        self.engine = engine
        self.map = map
        self.waiting = False
        self.in_cycle = False
        self.ready: dict[int, int] = {}
        self.registered: dict[int, Registration] = {}
        self.rescan = False
        self.snapshot: list[tuple[Any, int, Any, Any, int]] = []
        self._deadline: float | None = None
        self._stop: Callable[[], object] | None = None

    # Owner protocol
    def wake(self) -> None:
        stop = self._stop
        if stop is not None:
            self._stop = None
            stop()

    def changed(self) -> None:
        """Interest or membership changed: end the current wait and re-scan."""
        if self.waiting:
            self.rescan = True
            self.wake()

    def scan(self, use_poll: bool) -> None:
        """Ask every dispatcher what it wants and make the registrations match."""
        wanted: list[tuple[Any, int, Any, Any, int]] = []
        for key, obj in list(self.map.items()):
            if type(key) is int:
                fd = key
            else:
                fd = key.fileno()
                if type(fd) is not int:
                    # Not (yet) a usable fd; asked again next cycle.
                    continue
            is_r = obj.readable()
            is_w = obj.writable()
            if is_w and obj.accepting:
                is_w = False
            if not (is_r or is_w):
                continue
            sock = getattr(obj, "socket", None)
            if sock is not None and _is_closed(sock):
                wanted.append((key, fd, obj, sock, INVALID))
                continue
            events = (READ | PRIORITY if is_r else 0) | (WRITE if is_w else 0)
            if is_w and not use_poll:
                events |= PRIORITY
            wanted.append((key, fd, obj, sock, events))
        self.snapshot = wanted
        self.engine.registry.sync(self, wanted)

    def dispatch(self, use_poll: bool) -> None:
        """Dispatch this cycle's events in map order, as ``select()`` or ``poll()`` would have."""
        ready = self.ready
        if not ready:
            return
        self.ready = {}
        batch = [(key, fd, obj, events) for key, fd, obj, _, events in self.snapshot if fd in ready]
        revents = _confirm(batch, ready)
        for fd, flags in revents.items():
            if flags & _POLLERR:
                # uvloop (libuv) stops watching an fd after reporting an error on it.
                self.engine.registry.rearm(fd)
        get = self.map.get
        if use_poll:
            for key, fd, obj, _ in batch:
                flags = revents[fd]
                if flags and get(key) is obj:
                    readwrite(obj, flags)
            return
        selected = [
            (key, obj, _select_bits(events, revents[fd])) for key, fd, obj, events in batch if revents[fd]
        ]
        for key, obj, bits in selected:
            if bits & READ and get(key) is obj:
                read(obj)
        for key, obj, bits in selected:
            if bits & WRITE and get(key) is obj:
                write(obj)
        for key, obj, bits in selected:
            if bits & PRIORITY and get(key) is obj:
                _exception(obj)
        for key, obj, bits in selected:
            if bits & INVALID and get(key) is obj:
                # select() would fail with EBADF; this is what poll() reports (POLLNVAL).
                readwrite(obj, _POLLNVAL)

    # A cycle, split so that the blocking and the async wait share everything else.
    def begin(self, timeout: float | None, use_poll: bool) -> float | None:
        """Start a cycle; return how long to wait (``None``: no limit).

        Readiness recorded since the last dispatch is kept: it is confirmed at dispatch.
        """
        self.scan(use_poll)
        loop = self.engine.loop
        self._deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        return self._delay()

    def resume(self, use_poll: bool) -> float | None:
        """After a wait: :data:`DISPATCH` when the cycle should dispatch now, else the next delay."""
        self.engine.raise_failures()
        if self.ready or not self.rescan or not self.map:
            return DISPATCH
        deadline = self._deadline
        if deadline is not None and self.engine.loop.time() >= deadline:
            return DISPATCH
        self.scan(use_poll)
        return self._delay()

    def _delay(self) -> float | None:
        if self.ready:
            return 0.0
        deadline = self._deadline
        return None if deadline is None else max(0.0, deadline - self.engine.loop.time())

    def arm(self, delay: float | None, stop: Callable[[], object]) -> asyncio.TimerHandle | None:
        """Start a wait of at most ``delay`` seconds; ``stop`` ends it."""
        self.rescan = False
        self._stop = stop
        self.waiting = True
        return None if delay is None else self.engine.loop.call_later(delay, self.wake)

    def disarm(self, timer: asyncio.TimerHandle | None) -> None:
        self.waiting = False
        self._stop = None
        if timer is not None:
            timer.cancel()


def _is_closed(sock: Any) -> bool:
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return False
    try:
        fd = fileno()
    except (OSError, ValueError):
        return True
    return type(fd) is int and fd < 0


def _confirm(batch: list[tuple[Any, int, Any, int]], ready: dict[int, int]) -> dict[int, int]:
    """What a zero-timeout ``poll()`` says now about the fds the event loop reported.

    The event loop tells *when* to look; this tells *what*, with the exact flags that
    3.11's ``select()``/``poll()`` saw.  It also drops stale reports (a callback that
    asyncio queued before a handler drained the fd).
    """
    pollster = select.poll()
    for _, fd, _, events in batch:
        if not ready[fd] & INVALID:
            pollster.register(fd, _poll_request(events))
    revents = dict(pollster.poll(0))
    return {fd: _POLLNVAL if ready[fd] & INVALID else revents.get(fd, 0) for _, fd, _, _ in batch}


def _poll_request(events: int) -> int:
    return (POLLIN if events & READ else 0) | (POLLOUT if events & WRITE else 0) | (
        POLLPRI if events & PRIORITY else 0
    )


def _select_bits(events: int, revents: int) -> int:
    """Which of select()'s three sets an fd is in, given poll() revents (Linux's mapping)."""
    if revents & _POLLNVAL:
        return INVALID
    bits = 0
    if events & READ and revents & (POLLIN | _POLLHUP | _POLLERR):
        bits |= READ
    if events & WRITE and revents & (POLLOUT | _POLLERR):
        bits |= WRITE
    if events & PRIORITY and revents & POLLPRI:
        bits |= PRIORITY
    return bits


# -- the two entry points ------------------------------------------------------------------


def run(map: dict[Any, Any], timeout: float | None, use_poll: bool, count: int | None) -> None:
    """Blocking: run cycles on this thread's engine loop until ``map`` is empty or ``count`` is spent."""
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "asyncore.loop()/poll() cannot block inside a running asyncio event loop; "
            "use 'await asyncore_on_asyncio.serve(map)' there instead"
        )
    if not map:
        return
    use_poll = use_poll and _HAS_POLL
    engine = _thread_engine()
    engine.thread_id = threading.get_ident()
    driver = engine.driver_for(map)
    loop = engine.loop
    driver.in_cycle = True
    try:
        while map and (count is None or count > 0):
            delay = driver.begin(timeout, use_poll)
            while delay != DISPATCH:
                timer = driver.arm(delay, loop.stop)
                try:
                    loop.run_forever()
                finally:
                    driver.disarm(timer)
                delay = driver.resume(use_poll)
            driver.dispatch(use_poll)
            if count is not None:
                count -= 1
    finally:
        driver.in_cycle = False
    if not map:
        engine.retire(driver)


async def serve(map: dict[Any, Any] | None = None, timeout: float | None = 30.0, use_poll: bool = False) -> None:
    """Drive ``map``'s dispatchers on the running event loop until the map is empty.

    The async counterpart of ``asyncore.loop()``: the same cycles, but each wait
    is an ``await``, so the loop keeps serving other tasks.  Several maps may be
    served at once.  Exceptions propagate as from ``loop()``.  When the task is
    cancelled, or ends by an exception, the map's fds are unregistered and its
    dispatchers are left open in the map (``asyncore.close_all(map)`` closes them).
    """
    if map is None:
        from . import asyncore

        map = asyncore.socket_map
    loop = asyncio.get_running_loop()
    engine = _engine_for(loop)
    if id(map) in engine.drivers and engine.drivers[id(map)].in_cycle:
        raise RuntimeError("this map is already being served on this event loop")
    use_poll = use_poll and _HAS_POLL
    driver = engine.driver_for(map)
    driver.in_cycle = True
    try:
        while map:
            delay = driver.begin(timeout, use_poll)
            while delay != DISPATCH:
                waiter: asyncio.Future[None] = loop.create_future()
                timer = driver.arm(delay, functools.partial(_resolve, waiter))
                try:
                    await waiter
                finally:
                    driver.disarm(timer)
                delay = driver.resume(use_poll)
            driver.dispatch(use_poll)
    finally:
        driver.in_cycle = False
        engine.retire(driver)
        if not engine.drivers and not len(engine.registry) and engine is not _thread_engine_or_none():
            _forget_engine(engine)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _thread_engine_or_none() -> _Engine | None:
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    return None if holder is None else holder.engine
