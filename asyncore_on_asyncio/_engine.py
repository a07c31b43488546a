"""Which event loop serves dispatchers, and the per-loop engine state.

Each thread that calls ``loop()`` gets one event loop from the loop factory
(:func:`set_loop_factory`, else ``ASYNCORE_ON_ASYNCIO_LOOP``, else asyncio's
default), kept with its registrations between calls so that ``loop(timeout,
count=1)`` from a host application is cheap, and closed when the thread ends.
``serve()`` uses whatever loop is running.  Every loop in use has one
:class:`Engine`: its fd registry and the drivers of the maps it serves.

The asyncore API reports changes here (:func:`map_changed`,
:func:`interest_changed`); a change made in another thread than the loop's is
handed over with ``call_soon_threadsafe``, so the registry is only ever touched by
its loop's thread.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import RERAISED
from ._interest import Owner, Registry

__all__ = [
    "LOOP_ENV_VAR",
    "Engine",
    "close_event_loop",
    "current_engine",
    "engine_for",
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
    """The registry and the map drivers of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.registry = Registry(loop)
        self.drivers: dict[int, MapDriver] = {}
        self.thread_id = threading.get_ident()
        self.failures: list[tuple[BaseException, Any]] = []
        # fd -> write end of the pipe whose read end was dup2()ed over fd (see close_socket).
        self.placeholders: dict[int, int] = {}
        self.tasks: set[asyncio.Task[Any]] = set()  # started by spawn(), kept alive till done

    def apply_change(self, map_id: int, key: Any, forget: int | None, obj: object) -> None:
        """In the loop's thread: forget fd ``forget`` if it is ``obj``'s; the map's ``key`` changed."""
        if forget is not None:
            self.registry.forget(forget, obj)
        driver = self.drivers.get(map_id)
        if driver is None:
            return
        if driver.in_cycle or driver.map:
            driver.changed(key)
            return
        # Emptied between loop() calls: let the driver (and what it remembers) go.
        self.registry.release(driver)
        del self.drivers[map_id]

    def release_placeholder(self, fd: int) -> None:
        """In the loop's thread: unregister ``fd`` (a placeholder now), then close it."""
        keep = self.placeholders.pop(fd, None)
        if keep is not None:
            self.registry.drop_fd(fd)
            os.close(fd)
            os.close(keep)

    def close(self) -> None:
        """The loop is being closed: drop every registration and placeholder."""
        self.registry.close()
        for fd, keep in list(self.placeholders.items()):
            del self.placeholders[fd]
            os.close(fd)
            os.close(keep)

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


def engine_for(loop: asyncio.AbstractEventLoop) -> Engine:
    engine = _engines.get(loop)
    if engine is None:
        with _engines_lock:
            engine = _engines.setdefault(loop, Engine(loop))
            _publish()
    return engine


def forget_engine(engine: Engine) -> None:
    with _engines_lock:
        if _engines.get(engine.loop) is engine:
            del _engines[engine.loop]
            _publish()


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


def factory_from_env() -> LoopFactory:
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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        engine = self.engine
        forget_engine(engine)
        engine.close()
        if not engine.loop.is_closed():
            engine.loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            # Best effort while a thread or the interpreter ends.
            pass


_local = threading.local()


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
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    if holder is None or holder.engine.loop.is_closed():
        factory = _factory if _factory is not None else factory_from_env()
        loop = _quiet_new_loop(factory)
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop factory returned {loop!r}, not an asyncio event loop")
        holder = _ThreadLoop(engine_for(loop))
        _local.holder = holder
    return holder.engine


def thread_engine_or_none() -> Engine | None:
    holder: _ThreadLoop | None = getattr(_local, "holder", None)
    return None if holder is None else holder.engine


def get_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop that ``loop()`` drives in this thread (the running loop, if any)."""
    running = asyncio._get_running_loop()
    if running is not None:
        return running
    return thread_engine().loop


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


def engine_of_running_loop() -> Engine | None:
    running = asyncio._get_running_loop()
    return None if running is None else engine_for(running)


def current_engine() -> Engine:
    """The engine of the running loop, or of this thread's engine loop."""
    return engine_of_running_loop() or thread_engine()


# -- notifications from the asyncore API --------------------------------------------------


def map_changed(map: dict[Any, Any], key: Any = None, obj: object = None, closing: bool = False) -> None:
    """The entry ``key`` of ``map`` (``None``: any) changed; ``closing``: ``obj`` leaves it.

    When ``closing``, the registration of fd ``key`` is dropped now (before the caller
    closes it) if this thread runs the loop it is registered with, or as soon as that
    loop's thread gets to it otherwise.  A wait on ``map`` wakes to see the change.
    """
    map_id = id(map)
    me = threading.get_ident()
    for engine in _engine_list:
        forget = None
        if closing and type(key) is int:
            reg = engine.registry.registration(key)
            if reg is not None and reg.obj is obj:
                forget = key
        if forget is None and map_id not in engine.drivers:
            continue
        if engine.thread_id == me:
            engine.apply_change(map_id, key, forget, obj)
        else:
            try:
                engine.loop.call_soon_threadsafe(engine.apply_change, map_id, key, forget, obj)
            except RuntimeError:
                # That loop is closed: it has no registrations left to drop.
                pass


def close_socket(sock: Any, fd: int | None) -> None:
    """Close a dispatcher's socket, whose fd ``fd`` a loop in another thread may still watch.

    libuv aborts the process if an fd it has a pending registration change for is
    closed behind its back, and only the loop's own thread may unregister it.  So when
    another thread's uvloop (any loop but asyncio's selector loops) watches ``fd``,
    the socket's file is released at once by ``dup2()``-ing a pipe over the fd
    number, and the loop's thread unregisters and closes that placeholder.  The peer
    sees the close immediately either way.
    """
    engine = None if fd is None else _foreign_watcher(fd)
    if engine is None or fd is None:
        sock.close()
        return
    placeholder, keep = os.pipe()  # never readable while ``keep`` is open: no events
    try:
        os.dup2(placeholder, fd)
    finally:
        os.close(placeholder)
    detach = getattr(sock, "detach", None)
    if detach is not None:
        detach()
    else:
        sock.fd = -1  # a file_wrapper: its fd is the placeholder now
    engine.placeholders[fd] = keep
    try:
        engine.loop.call_soon_threadsafe(engine.release_placeholder, fd)
    except RuntimeError:
        # That loop was closed meanwhile, and its registrations with it.
        if engine.placeholders.pop(fd, None) is not None:
            os.close(fd)
            os.close(keep)


def _foreign_watcher(fd: int) -> Engine | None:
    me = threading.get_ident()
    for engine in _engine_list:
        if (
            engine.thread_id != me
            and not isinstance(engine.loop, asyncio.BaseEventLoop)
            and engine.registry.registration(fd) is not None
        ):
            return engine
    return None


handling: object = None
"""The object whose event handler a cycle is running now (set by :mod:`._dispatch`).

Its predicates are asked again after the handler anyway, so a change it makes to
itself (the ``push()`` of an echo) needs no notification."""


def interest_changed(obj: object) -> None:
    """``obj``'s ``readable()``/``writable()`` may have changed: a waiting cycle re-asks at once.

    Called for every ``push()``: the common cases are kept short.
    """
    if obj is handling:
        return
    map = getattr(obj, "_map", None)
    if not _engine_list or map is None:
        return
    map_id = id(map)
    for engine in _engine_list:
        driver = engine.drivers.get(map_id)
        if driver is None:
            continue
        key = getattr(obj, "_fileno", None)
        if engine.thread_id == threading.get_ident():
            driver.changed(key)
            continue
        try:
            engine.loop.call_soon_threadsafe(engine.apply_change, map_id, key, None, obj)
        except RuntimeError:
            # That loop is closed: nothing waits there.
            pass
