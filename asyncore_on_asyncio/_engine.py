"""Which event loop serves dispatchers, and the per-loop engine state.

Each thread that calls ``loop()`` gets one event loop from the loop factory
(:func:`set_loop_factory`, else ``ASYNCORE_ON_ASYNCIO_LOOP``, else asyncio's
default; on Windows a ``SelectorEventLoop``, as asyncio's default there cannot
watch fds), kept with its registrations between calls so that ``loop(timeout,
count=1)`` from a host application is cheap, and closed when the thread ends.
``serve()`` uses whatever loop is running.  Every loop in use has one
:class:`Engine`: its readiness source (made when first needed) and the drivers of
the maps it serves.

The asyncore API reports changes here (:func:`map_changed`,
:func:`interest_changed`).  A change made in another thread than the loop's is
handed over with ``call_soon_threadsafe``, so the records are only ever changed by
their loop's thread; an fd about to be closed there is unregistered at once where
the source can do that from any thread (epoll can).

A forked child abandons every engine it inherited (:func:`_after_fork_in_child`,
:meth:`Engine.abandon`; why and how: :mod:`._fork`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

from ._errors import RERAISED
from ._fork import Forked, abandoned, at_fork_in_child, detach_loop
from ._readiness import Owner, SourceBase, make_source

__all__ = [
    "LOOP_ENV_VAR",
    "Engine",
    "asyncio_factory",
    "close_event_loop",
    "current_engine",
    "engine_for",
    "engine_or_none",
    "get_event_loop",
    "interest_changed",
    "map_changed",
    "set_loop_factory",
    "thread_engine",
    "uvloop_factory",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_ENV_VAR = "ASYNCORE_ON_ASYNCIO_LOOP"


class MapDriver(Owner, Protocol):
    """What the engine needs from the driver of one map (see :mod:`._driver`)."""

    map: dict[Any, Any]

    def changed(self, key: Any = None) -> None: ...


class Engine:
    """The readiness source and the map drivers of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._source: SourceBase | None = None
        self.drivers: dict[int, MapDriver] = {}
        self.thread_id = threading.get_ident()
        self.failures: list[tuple[BaseException, Any]] = []
        self.tasks: set[asyncio.Task[Any]] = set()  # started by spawn(), kept alive till done
        self.loop_ran_at = float("-inf")
        self.owns_loop = False
        """The loop is a thread's engine loop, made by us (not a loop running ``serve()``)."""
        self.forked = False
        """This process is a child forked after the engine was made: it is abandoned."""

    @property
    def source(self) -> SourceBase:
        """The readiness source of this loop, made on first use (it holds an fd)."""
        source = self._source
        if source is None:
            source = self._source = make_source(self.loop, self._readable)
        return source

    def _readable(self) -> bool:
        """The source may have readiness: run the waiting drivers.  Whether the readiness
        is in hand: a driver was waiting, or there are drivers and every one is in a
        cycle (the loop runs between two of a host-frame run's bursts) and collects its
        own fds next.  With no driver at all, nobody would: the source drains."""
        drivers = self.drivers.values()
        waiting = [driver for driver in drivers if driver.waiting]
        for driver in waiting:
            driver.readiness()
        return bool(waiting) or (bool(drivers) and all(driver.in_cycle for driver in drivers))

    def remove(self, fd: int, obj: object) -> None:
        """In the loop's thread: unregister ``fd`` if it is registered for ``obj``."""
        source = self._source
        if source is None:
            return
        rec = source.record(fd)
        if rec is not None and rec.obj is obj:
            source.remove(rec)

    def apply_change(self, map_id: int, key: Any, forget: int | None, obj: object) -> None:
        """In the loop's thread: forget fd ``forget`` if it is ``obj``'s; the map's ``key`` changed."""
        if forget is not None:
            self.remove(forget, obj)
        driver = self.drivers.get(map_id)
        if driver is None:
            return
        if driver.in_cycle or driver.map:
            driver.changed(key)
            return
        # Emptied between loop() calls: let the driver (and what it remembers) go.
        self.release(driver)
        del self.drivers[map_id]

    def release(self, driver: MapDriver) -> None:
        """Unregister every fd of ``driver``."""
        for rec in list(driver.records.values()):
            self.source.remove(rec)

    def run_loop(self) -> None:
        """Run the event loop until something stops it; :class:`._fork.Forked` if this
        process is a child forked meanwhile (or before), which never runs that loop again."""
        if self.forked:
            raise Forked
        try:
            self.loop.run_forever()
        finally:
            self.loop_ran_at = monotonic()
        if self.forked:
            raise Forked  # the fork hook stopped it in this child (a handler forked)

    def iterate(self) -> None:
        """Give the event loop one iteration."""
        self.loop.call_soon(self.loop.stop)
        self.run_loop()

    def close(self) -> None:
        """The loop is being closed (or no longer served): drop every registration."""
        if self._source is not None:
            self._source.close()
            self._source = None

    def abandon(self) -> None:
        """In a forked child: let go of the source and, if the loop is ours, of the loop
        (detached, stopped if it runs here, never closed); a run going on raises
        :class:`._fork.Forked` from its next cycle (see :mod:`._fork`)."""
        self.forked = True
        abandoned.append(self)
        here = self.thread_id == threading.get_ident()  # (the loops of other threads never run again)
        private = self.owns_loop and detach_loop(self.loop)
        if self._source is not None:
            self._source.detach(private and here)
        if private and here and self.loop.is_running():
            self.loop.stop()
        self.failures.append((Forked(), None))

    def report_failure(self, exc: BaseException, dispatcher: Any) -> None:
        """A spawned task failed: hand it to the next cycle of any driver of this loop."""
        self.failures.append((exc, dispatcher))
        for driver in list(self.drivers.values()):
            driver.changed()

    def raise_failures(self) -> None:
        """Deliver reported failures in the caller's frame, as handler exceptions are."""
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


_engines: dict[asyncio.AbstractEventLoop, Engine] = {}
_engines_lock = threading.Lock()
_engine_list: tuple[Engine, ...] = ()
"""A snapshot of ``_engines``' values, safe to iterate from any thread (notifications)."""


def _publish() -> None:
    global _engine_list
    _engine_list = tuple(_engines.values())
    dispatching.sole = len(_engine_list) == 1


def engine_for(loop: asyncio.AbstractEventLoop) -> Engine:
    engine = _engines.get(loop)
    if engine is None:
        with _engines_lock:
            engine = _engines.setdefault(loop, Engine(loop))
            _publish()
    return engine


def engine_or_none(loop: asyncio.AbstractEventLoop) -> Engine | None:
    """``loop``'s engine, if it has one (none is made)."""
    return _engines.get(loop)


def forget_engine(engine: Engine) -> None:
    """The engine no longer serves its loop: drop it, and its source (fd and reader) with it."""
    with _engines_lock:
        if _engines.get(engine.loop) is engine:
            del _engines[engine.loop]
            _publish()
    engine.close()


# -- choosing the event loop --------------------------------------------------------------

_factory: LoopFactory | None = None


def set_loop_factory(factory: LoopFactory | None) -> None:
    """Choose how event loops for ``loop()`` are made (``None``: the env var, else asyncio's).

    The calling thread's idle engine loop is closed so that its next ``loop()`` uses
    the new factory; other threads switch when their loop is next made.
    """
    global _factory
    if factory is not None and not callable(factory):
        raise TypeError(f"loop factory must be callable or None, not {type(factory).__name__}")
    close_event_loop()
    _factory = factory


def asyncio_factory() -> LoopFactory:
    """asyncio's loop for ``loop()``: its default, except on Windows, where that default
    (the ``ProactorEventLoop``) cannot watch fds: a ``SelectorEventLoop`` there."""
    if sys.platform == "win32":
        return asyncio.SelectorEventLoop
    return asyncio.new_event_loop


def factory_from_env() -> LoopFactory:
    choice = os.environ.get(LOOP_ENV_VAR, "").strip().lower()
    if choice in ("", "asyncio", "default"):
        return asyncio_factory()
    if choice == "uvloop":
        return uvloop_factory()
    raise ValueError(f"{LOOP_ENV_VAR}={choice!r}: expected 'asyncio' or 'uvloop'")


def uvloop_factory() -> LoopFactory:
    """``uvloop.new_event_loop``, or a clear error if uvloop is not installed."""
    if sys.platform == "win32":
        raise RuntimeError("uvloop was requested, but uvloop does not support Windows; use asyncio")
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(
            "uvloop was requested but is not installed; install it with: pip install uvloop "
            "(or, in a checkout of asyncore-on-asyncio: pip install '.[uvloop]')"
        ) from exc
    factory: LoopFactory = uvloop.new_event_loop
    return factory


class _ThreadLoop:
    """Owns one thread's engine loop; closes it when the thread's storage is freed."""

    __slots__ = ("closed_is_a_flag", "engine", "loop")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.closed_is_a_flag = type(self.loop).is_closed is asyncio.BaseEventLoop.is_closed
        """The loop's ``is_closed()`` is asyncio's own, which returns ``loop._closed``."""
        engine.owns_loop = True

    def close(self) -> None:
        engine = self.engine
        if engine.forked:
            return  # let go of at fork: never closed (see _fork)
        forget_engine(engine)
        if not engine.loop.is_closed():
            engine.loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            # Best effort while a thread or the interpreter ends.
            pass


thread_loops = threading.local()
"""Per thread: ``holder``, the :class:`_ThreadLoop` of its engine loop once made."""


def _quiet_new_loop(factory: LoopFactory) -> asyncio.AbstractEventLoop:
    """``factory()``, without asyncio's "Using selector: ..." DEBUG record: 3.11's asyncore
    made no event loop, and a legacy program's DEBUG log must read as it did."""

    def drop_selector_notice(record: logging.LogRecord) -> bool:
        return record.msg != "Using selector: %s"

    logger = logging.getLogger("asyncio")
    logger.addFilter(drop_selector_notice)
    try:
        return factory()
    finally:
        logger.removeFilter(drop_selector_notice)


def thread_engine() -> Engine:
    """This thread's engine loop (made by the factory on first use) and its engine."""
    holder: _ThreadLoop | None = getattr(thread_loops, "holder", None)
    if holder is None or holder.engine.loop.is_closed():
        factory = _factory if _factory is not None else factory_from_env()
        loop = _quiet_new_loop(factory)
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop factory returned {loop!r}, not an asyncio event loop")
        holder = _ThreadLoop(engine_for(loop))
        thread_loops.holder = holder
    return holder.engine


def thread_engine_or_none() -> Engine | None:
    holder: _ThreadLoop | None = getattr(thread_loops, "holder", None)
    return None if holder is None else holder.engine


def get_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop that ``loop()`` drives in this thread (the running loop, if any)."""
    running = asyncio._get_running_loop()
    if running is not None:
        return running
    return thread_engine().loop


def close_event_loop() -> None:
    """Close this thread's engine loop, dropping its registrations; ``loop()`` makes a new one."""
    holder: _ThreadLoop | None = getattr(thread_loops, "holder", None)
    if holder is None:
        return
    if holder.engine.loop.is_running():
        raise RuntimeError("cannot close the engine loop while it is running")
    del thread_loops.holder
    holder.close()


@atexit.register
def _close_main_thread_loop() -> None:
    holder: _ThreadLoop | None = getattr(thread_loops, "holder", None)
    if holder is not None and not holder.engine.loop.is_running():
        del thread_loops.holder
        holder.close()


def _after_fork_in_child() -> None:
    """Abandon every inherited engine; this thread's next ``loop()`` makes a fresh one."""
    global _engines_lock
    _engines_lock = threading.Lock()  # another thread may have held it at the fork
    holder: _ThreadLoop | None = getattr(thread_loops, "holder", None)
    if holder is not None:
        del thread_loops.holder
        abandoned.append(holder)
    engines = list(_engines.values())
    _engines.clear()
    _publish()
    for engine in engines:
        engine.abandon()


at_fork_in_child(_after_fork_in_child)


def engine_of_running_loop() -> Engine | None:
    running = asyncio._get_running_loop()
    return None if running is None else engine_for(running)


def current_engine() -> Engine:
    """The engine of the running loop, or of this thread's engine loop."""
    return engine_of_running_loop() or thread_engine()


# -- notifications from the asyncore API --------------------------------------------------

channel_hook: Callable[[Any, bool], None] | None = None
"""``None`` unless the report (:mod:`._report`) is on: told ``(dispatcher, True)`` by every
``add_channel()`` and ``(dispatcher, False)`` by every ``del_channel()``."""


def map_changed(map: dict[Any, Any], key: Any = None, obj: object = None, closing: bool = False) -> None:
    """The entry ``key`` of ``map`` (``None``: any) changed; ``closing``: ``obj`` leaves it.

    When ``closing``, the registration of fd ``key`` is dropped now (before the caller
    closes it) if this thread runs the loop it is registered with or the source can
    do it from any thread, and as soon as that loop's thread gets to it otherwise.
    A wait on ``map`` wakes to see the change.
    """
    map_id = id(map)
    me = threading.get_ident()
    for engine in _engine_list:
        forget = None
        source = engine._source
        if closing and type(key) is int and source is not None:
            rec = source.record(key)
            if rec is not None and rec.obj is obj:
                forget = key
        if forget is None and map_id not in engine.drivers:
            continue
        if engine.thread_id == me:
            engine.apply_change(map_id, key, forget, obj)
            continue
        if forget is not None and source is not None:
            source.remove_from_thread(forget, obj)
        try:
            engine.loop.call_soon_threadsafe(engine.apply_change, map_id, key, forget, obj)
        except RuntimeError:
            # That loop is closed: it has no registrations left to drop.
            pass


def close_socket(sock: Any, fd: int | None) -> None:
    """Close a dispatcher's socket, whose fd ``fd`` a loop in another thread may still watch.

    The source of that loop decides (see :meth:`._readiness.loop_fds.LoopFdSource.close_from_thread`);
    epoll has unregistered it already and the socket is simply closed.
    """
    if fd is not None:
        me = threading.get_ident()
        for engine in _engine_list:
            source = engine._source
            if engine.thread_id != me and source is not None and source.record(fd) is not None:
                if source.close_from_thread(sock, fd):
                    return
                break
    sock.close()


class Dispatching:
    """Whose handler runs now: the drivers' dispatch sets ``handling``, ``None`` between batches.

    One for the process: ``handling`` is trusted only while ``sole`` (one engine, so one
    thread dispatches); two threads' dispatches overwriting it cost wake-ups, never lose one.
    """

    def __init__(self) -> None:
        self.handling: object = None
        self.sole = False
        """There is exactly one engine (kept by the engine registry)."""


dispatching = Dispatching()


def interest_changed(obj: object) -> None:
    """``obj``'s ``readable()``/``writable()`` may have changed: a waiting cycle re-asks at once.

    Called for every ``push()``: the common case is one test.  A change that ``obj``'s
    own handler makes, with one engine in the process, needs no notification: the
    driver that dispatched ``obj`` asks it again after the handler.  With more
    engines the drivers of ``obj``'s map in other threads are told, and the one in
    this thread marks it to be asked again.
    """
    if dispatching.handling is obj and dispatching.sole:
        return
    map = getattr(obj, "_map", None)
    if not _engine_list or map is None:
        return
    map_id = id(map)
    me = threading.get_ident()
    for engine in _engine_list:
        driver = engine.drivers.get(map_id)
        if driver is None:
            continue
        key = getattr(obj, "_fileno", None)
        if engine.thread_id == me:
            driver.changed(key)
            continue
        try:
            engine.loop.call_soon_threadsafe(engine.apply_change, map_id, key, None, obj)
        except RuntimeError:
            # That loop is closed: nothing waits there.
            pass
