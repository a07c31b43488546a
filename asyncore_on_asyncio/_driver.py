"""What ``loop()`` and ``poll()`` mean on asyncio: cycles, counts, timeouts, bursts, exceptions.

A *cycle* is what one ``select()`` pass was in asyncore: scan the map
(:mod:`._scan`: ``readable()``/``writable()``, applied to the readiness source as a
difference), collect the exact flags of what is ready (:mod:`._readiness`), wait
if nothing is and ``timeout`` allows, then dispatch in 3.11's order
(:mod:`._dispatch`).  Readiness is read from the engine's own source without an
event-loop iteration, so cycles that find work at once cost what a ``select()``
pass cost:

* **Bursts.**  After a dispatch the next cycle runs at once, without returning to
  the event loop, until :data:`BURST_SECONDS` have passed since the burst began;
  then the event loop gets one iteration, so coroutines on the same loop wait at
  most about a millisecond plus one cycle.
* **Waiting.**  A cycle that finds nothing ready waits inside the event loop: the
  source's reader (the epoll fd) or the deadline timer runs it again, and so does a
  change made through our API (a new dispatcher, ``push()``, ``close()``,
  ``wakeup()``, another thread's change), which makes it scan again first.
  Coroutines run meanwhile.
* **Host-loop stepping.**  ``loop(timeout=0, count=1)`` called again and again by
  a host application runs its cycle in the caller's frame without entering the
  event loop; the event loop gets one iteration when it has not run for
  :data:`STEP_INTERVAL`, so coroutines on it still progress, at a cost spread over
  the calls of a millisecond.

``loop()`` runs cycles in its caller's frame until one has to wait; from then on
they run as event-loop callbacks until the run ends.  ``serve()`` runs them as
callbacks from the first one, so that tasks started with it run before anything
is dispatched.
Every exception such a callback meets (a handler's ``ExitNow``/
``KeyboardInterrupt``/``SystemExit``, whatever ``handle_error``, ``readable()`` or
``writable()`` raise) is caught, the cycles stop, and it is raised again from
``loop()`` (or ``serve()``): nothing reaches asyncio's exception handler.

``loop()`` called from a handler (a nested loop, legal in 3.11) cannot re-enter the
running event loop; it runs its cycles on a private ``poll()`` instead.

**The path of an event** (epoll source, compiled or not).  A byte arrives on a waiting
dispatcher's socket: the kernel makes the source's epoll readable, and the event loop
calls the source's reader, :meth:`._readiness.epoll.EpollSource._readable`, which asks
:meth:`._engine.Engine._readable` to run each waiting driver's :meth:`Driver.readiness`,
hence :meth:`Driver._step` and :meth:`Driver.cycles`.  A cycle scans
(:meth:`._scan.Scanner.scan`: ``readable()``/``writable()`` through
:mod:`._predicates`), collects (:meth:`._readiness.epoll.EpollSource.collect`:
``epoll_wait()`` into a kept buffer, each reported fd checked by ``_take``, the
optimistic writers by ``_collect_writers``), orders the ready entries in map order
(:meth:`._scan.Scanner.batch`) and dispatches them: a batch of one object in
:meth:`Driver._dispatch_one`, others in :func:`._dispatch.dispatch_batch`, which sorts
them into select()'s sets and has :func:`._handlers.call_each` call each set's handler;
either way :func:`._handlers.read` calls the dispatcher's ``handle_read_event()`` and so
its ``handle_read()``.  A run in the caller's frame (``loop()`` finding work at once) enters
at :meth:`Driver.cycles` directly.  The fallback source (:mod:`._readiness.loop_fds`)
differs only at the start: the loop calls its per-fd reader, ``_hint``, which calls the
owner's :meth:`Driver.readiness`.

**Fork.**  A child forked by a handler comes back into the cycle that dispatched it.  Its
inherited engine is abandoned at fork (:mod:`._fork`), the next cycle raises
:class:`._fork.Forked` through the failure check every cycle makes anyway, and ``run()``
goes on in the child with the rest of the run (same map, timeout, remaining count) on a
fresh engine loop.  Nothing is added to a cycle.

**Instruments.**  A run chooses, once in :meth:`Driver.begin`, the function that
scans and the one that dispatches: the scanner's and :func:`._dispatch.dispatch_batch`,
or the timed twins of :data:`instruments` when the report (:mod:`._report`) is on.
Off, a cycle does no work for it at all.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable
from time import monotonic
from typing import Any, Final, Protocol

try:
    import cython
except ImportError:  # the pure engine, where Cython is not installed
    from . import _cython_fallback as cython

from ._dispatch import SELECT_READ, SELECT_WRITE, DispatchBatch, dispatch_batch, run_nested
from ._engine import (
    Engine,
    dispatching,
    engine_for,
    forget_engine,
    thread_engine,
    thread_engine_or_none,
    thread_loops,
)
from ._fork import Forked
from ._handlers import _exception, read, readwrite, write
from ._readiness import POLLNVAL, POLLPRI, PRIORITY, READ, WRITE, Record
from ._scan import BatchEntry, Scanner

if cython.compiled:
    from cython.cimports.cpython.dict import PyDict_GetItemWithError
    from cython.cimports.cpython.long import PyLong_FromVoidPtr
    from cython.cimports.cpython.object import PyObject

__all__ = ["BURST_SECONDS", "STEP_INTERVAL", "Instruments", "instruments", "run", "serve"]

BURST_SECONDS: Final = 0.001
"""A burst of cycles run without an event-loop iteration ends after this many seconds."""
STEP_INTERVAL: Final = 0.001
"""Cycles run outside the event loop give it one iteration at least this often (seconds)."""

_HAS_POLL = hasattr(select, "poll")
_set_running_loop = asyncio._set_running_loop
_get_running_loop = asyncio._get_running_loop
_TIMER_SLACK = 0.0005
"""A deadline timer firing this early (seconds) counts as due."""



class Instruments(Protocol):
    """What measures the cycles (the report): twins of the scan and the dispatch."""

    def dispatch(
        self, holder: Any, map: dict[Any, Any], batch: Any, revents: dict[int, int], use_poll: bool
    ) -> None: ...

    def scan_of(self, scanner: Scanner) -> Callable[[float], None]: ...


instruments: Instruments | None = None
"""Set by :func:`._report.enable` (runs begun later use it); ``None``: nothing measures."""

_DONE: Final = 0
_WAIT: Final = 1
_YIELD: Final = 2


class Driver:
    """Runs cycles over one map on one engine; the readiness source's owner of its fds."""

    def __init__(self, engine: Engine, map: dict[Any, Any]) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.map = map
        self.records: dict[int, Record] = {}
        self.in_cycle = False
        self.waiting = False
        self.dispatching = False
        self.cycles_began = 0.0
        """``monotonic()`` when the latest call of :meth:`cycles` began."""
        self.scanner = Scanner(self, engine.source, map)
        self._failures = engine.failures
        """The engine's list of failures to raise in a cycle's frame (the same list)."""
        self._measured_by: Instruments | None = None
        self._scan: Callable[[float], None] | None = None
        """The report's timed twin of the scan (``None``: the scanner's own, called directly)."""
        self._dispatch_batch: DispatchBatch = dispatch_batch
        self._timeout: float | None = None
        self._use_poll = False
        self._count: int | None = None
        self._deadline: float | None = None
        self._mid_cycle = False
        self._rescan = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._wake_at: float | None = None
        self._step_handle: asyncio.Handle | None = None
        self._on_done: Callable[[BaseException | None], None] | None = None

    # -- what the source and the notifications call ---------------------------------------

    def readiness(self) -> None:
        if self.waiting:
            self._step()

    def wake(self) -> None:
        """Run the next step soon (coalesced), from the event loop."""
        if self.waiting and self._step_handle is None:
            self._step_handle = self.loop.call_soon(self._step)

    def parked(self, fd: int) -> None:
        self.scanner.parked(fd)

    def changed(self, key: Any = None) -> None:
        """The entry ``key`` of the map changed (``None``: anything may have): scan it again.

        A waiting cycle scans at once; otherwise the next cycle does.
        """
        self.scanner.mark(key)
        if self.waiting:
            self._rescan = True
            self.wake()

    # -- a run: begin, cycles, continue in the loop, end ----------------------------------

    def begin(self, timeout: float | None, use_poll: bool, count: int | None) -> None:
        self._timeout = timeout if timeout is None or timeout > 0.0 else 0.0
        self._count = count
        write_bits = WRITE | (0 if use_poll else PRIORITY)
        if write_bits != self.scanner.write_bits:
            self.scanner.write_bits = write_bits
            self.scanner.mark()
        self._use_poll = use_poll
        self._mid_cycle = False
        self.in_cycle = True
        measuring = instruments
        if measuring is not self._measured_by:  # kept between runs: loop(count=1) is cheap
            self._measured_by = measuring
            if measuring is None:
                self._scan, self._dispatch_batch = None, dispatch_batch
            else:
                self._scan, self._dispatch_batch = measuring.scan_of(self.scanner), measuring.dispatch

    def end(self) -> None:
        """The run is over (done, failed, cancelled or interrupted)."""
        self.in_cycle = False
        self.waiting = False
        self._mid_cycle = False
        self._on_done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._step_handle is not None:
            self._step_handle.cancel()
            self._step_handle = None

    def cycles(self) -> int:
        """Run cycles here until the run is done, one has to wait, or a burst is over."""
        time = monotonic
        scanner = self.scanner
        scan = self._scan
        source = scanner.source
        now = self.cycles_began = time()
        burst_end = now + BURST_SECONDS
        while True:
            if self._failures:
                self.engine.raise_failures()  # spawned tasks' failures, in this frame
            if not self.map:
                return _DONE
            if not self._mid_cycle:
                if scan is None:
                    scanner.scan(now)
                else:
                    scan(now)
                self._deadline = None if self._timeout is None else now + self._timeout
                self._mid_cycle = True
            elif self._rescan:
                self._rescan = False
                if scan is None:
                    scanner.scan(time())
                else:
                    scan(time())
            ready = source.collect(self)
            if not ready:
                deadline = self._deadline
                if deadline is None:
                    return _WAIT
                if self._timeout:  # (timeout=0: the deadline has passed)
                    if time() < deadline:
                        return _WAIT
                    scanner.idle()  # it waited in vain: a good time to check everything
            self._mid_cycle = False
            if ready and (batch := scanner.batch(ready)):
                self.dispatching = True
                try:
                    if len(batch) == 1 and self._measured_by is None:
                        self._dispatch_one(batch[0], ready)  # the common case, without a call
                    else:
                        self._dispatch_batch(dispatching, self.map, batch, ready, self._use_poll)
                finally:
                    self.dispatching = False
                    dispatching.handling = None
            if self._count is not None:
                self._count -= 1
                if self._count <= 0:
                    return _DONE
            if not self.map:
                return _DONE
            now = time()
            if now >= burst_end:
                return _YIELD

    def _dispatch_one(self, entry: BatchEntry, revents: dict[int, int]) -> None:
        """:func:`._dispatch.dispatch_batch` for a batch of one object, with the stock handlers.

        The same calls in the same order (one ``readwrite()`` with poll(); with select() read,
        write, then priority, or ``readwrite(obj, POLLNVAL)`` alone for a closed fd), each
        only while the map still holds the object under its key.  Here, in the driver, the
        common cycle makes no call between the engine and the handlers (compiled: C calls
        the handler functions directly).
        """
        key, fd, obj, events = entry
        flags = revents.get(fd, 0)
        map = self.map
        if self._use_poll or flags & POLLNVAL:
            if flags and _holds(map, key, obj):
                dispatching.handling = obj
                readwrite(obj, flags if self._use_poll else POLLNVAL)
            return
        if events & READ and flags & SELECT_READ and _holds(map, key, obj):
            dispatching.handling = obj
            read(obj)
        if events & WRITE and flags & SELECT_WRITE and _holds(map, key, obj):
            dispatching.handling = obj
            write(obj)
        if events & PRIORITY and flags & POLLPRI and _holds(map, key, obj):
            dispatching.handling = obj
            _exception(obj)

    def continue_in_loop(self, state: int, on_done: Callable[[BaseException | None], None]) -> None:
        """Go on as event-loop callbacks; ``on_done(exc)`` when the run ends (``None``: done)."""
        self._on_done = on_done
        if state == _WAIT:
            self._arm()
        else:
            self.waiting = True
            self.wake()

    def _step(self) -> None:
        if self._step_handle is not None:
            self._step_handle.cancel()
            self._step_handle = None
        if not self.waiting:
            return
        self.waiting = False
        try:
            state = self.cycles()
        except BaseException as exc:
            self._finish(exc)
            return
        if state == _DONE:
            self._finish(None)
        elif state == _WAIT:
            self._arm()
        else:
            self.waiting = True  # a burst is over: the loop runs once, then we go on
            self.wake()

    def _arm(self) -> None:
        """Wait for readiness, a change, or the cycle's deadline.

        One timer serves many cycles: a busy map arms a later deadline every cycle,
        and the pending timer, firing early, just re-arms for the rest.  Deadlines
        are ``time.monotonic()`` values (the default loop's clock; uvloop's counts
        whole milliseconds), turned into delays for the loop.
        """
        self.waiting = True
        deadline = self._wake_at = self._deadline
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_due <= deadline:
                return
            self._timer.cancel()
        self._set_timer(deadline)

    def _set_timer(self, due: float) -> None:
        self._timer_due = due
        self._timer = self.loop.call_later(max(0.0, due - monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        wake_at = self._wake_at
        if wake_at is None or not self.waiting:
            return
        if wake_at - monotonic() > _TIMER_SLACK:
            self._set_timer(wake_at)
            return
        self._step()

    def _finish(self, exc: BaseException | None) -> None:
        on_done = self._on_done
        self.end()
        if on_done is not None:
            on_done(exc)


def _holds(map: dict[Any, Any], key: Any, obj: object) -> bool:
    """Does ``map`` still hold ``obj`` under ``key``?  (Compiled, a dict is asked in C.)"""
    if cython.compiled and type(map) is dict:
        return PyDict_GetItemWithError(map, key) is cython.cast(cython.pointer(PyObject), obj)
    return map.get(key) is obj


def _id_of(map: object) -> int:
    """``id(map)`` (compiled, without calling the builtin: ``run()`` asks it at every call)."""
    if cython.compiled:
        address: int = PyLong_FromVoidPtr(cython.cast(cython.p_void, map))  # what id() returns
        return address
    return id(map)


def _driver_for(engine: Engine, map: dict[Any, Any]) -> Driver:
    driver = engine.drivers.get(id(map))
    if isinstance(driver, Driver) and driver.map is map:
        return driver
    if isinstance(driver, Driver):
        engine.release(driver)  # a dead map whose id() was reused
    new = Driver(engine, map)
    engine.drivers[id(map)] = new
    return new


def _retire(engine: Engine, driver: Driver) -> None:
    engine.release(driver)
    if engine.drivers.get(id(driver.map)) is driver:
        del engine.drivers[id(driver.map)]


# -- the entry points -----------------------------------------------------------------------


def run(map: dict[Any, Any], timeout: float | None, use_poll: bool, count: int | None) -> None:
    """Blocking: run cycles on this thread's engine loop until ``map`` is empty or ``count`` is spent."""
    if not map or (count is not None and count <= 0):
        return
    use_poll = use_poll and _HAS_POLL
    running = _get_running_loop()
    if running is not None:
        if _inside_a_handler(running):
            run_nested(map, timeout, use_poll, count, dispatch_batch if instruments is None else instruments.dispatch)
            return
        raise RuntimeError(
            "asyncore.loop()/poll() cannot block inside a running asyncio event loop; "
            "use 'await asyncore_on_asyncio.serve(map)' there instead"
        )
    engine = _this_threads_engine()  # made in this thread: its thread_id is ours
    drivers = engine.drivers
    found = drivers.get(_id_of(map))
    driver = found if type(found) is Driver and found.map is map else _driver_for(engine, map)
    driver.begin(timeout, use_poll, count)
    forked = False
    try:
        while True:
            # The cycles run in this frame, their handlers seeing the engine loop as the
            # running loop (as they do when cycles run inside it): get_running_loop() and
            # create_task() work there, and a nested loop() is recognised.
            _set_running_loop(driver.loop)
            try:
                state = driver.cycles()
            finally:
                _set_running_loop(None)
            if state == _WAIT:
                _wait_in_loop(engine, driver)
                break
            if state == _DONE:
                # The clock read when these cycles began: a run that is done took at most
                # one burst, and a host loop stepping loop(0, count=1) is spared a call.
                if driver.cycles_began - engine.loop_ran_at >= STEP_INTERVAL:
                    engine.iterate()
                break
            if monotonic() - engine.loop_ran_at >= STEP_INTERVAL:
                engine.iterate()
    except Forked:
        if not engine.forked:
            raise
        forked = True  # a handler forked and this is the child: on with state of its own
    finally:
        driver.end()
    if forked:
        run(map, timeout, use_poll, driver._count)  # the rest of the run (see _fork)
    elif not map:
        _retire(engine, driver)


def _this_threads_engine() -> Engine:
    """:func:`._engine.thread_engine`, with its common case (the loop made and still open)
    answered here, in C when compiled: asyncio's own ``is_closed()`` is read as the flag
    it returns instead of called."""
    holder = getattr(thread_loops, "holder", None)
    if holder is not None:
        loop: Any = holder.loop
        if not (loop._closed if holder.closed_is_a_flag else loop.is_closed()):
            engine: Engine = holder.engine
            return engine
    return thread_engine()


def _wait_in_loop(engine: Engine, driver: Driver) -> None:
    """Run the engine loop until the driver's run ends; raise what ended it."""
    loop = engine.loop
    outcome: list[BaseException | None] = []

    def done(exc: BaseException | None) -> None:
        outcome.append(exc)
        loop.stop()

    driver.continue_in_loop(_WAIT, done)
    engine.run_loop()
    if outcome and outcome[0] is not None:
        raise outcome[0]


async def serve(map: dict[Any, Any], timeout: float | None, use_poll: bool) -> None:
    """Drive ``map``'s dispatchers on the running event loop until the map is empty
    (:func:`asyncore_on_asyncio.serve`, which also knows the default map)."""
    loop = asyncio.get_running_loop()
    engine = engine_for(loop)
    existing = engine.drivers.get(id(map))
    if isinstance(existing, Driver) and existing.map is map and existing.in_cycle:
        raise RuntimeError("this map is already being served on this event loop")
    if not map:
        return
    try:
        driver = _driver_for(engine, map)
    except BaseException:
        _forget_unless_used(engine)  # the loop cannot watch fds, say: keep nothing of it
        raise
    driver.begin(timeout, use_poll and _HAS_POLL, None)
    finished: asyncio.Future[None] = loop.create_future()

    def done(exc: BaseException | None) -> None:
        if finished.done():
            return
        if exc is None:
            finished.set_result(None)
        else:
            finished.set_exception(exc)

    try:
        # From the first cycle on as callbacks: tasks started together with serve() run
        # before anything is dispatched (a wait_connected() is in place in time).
        driver.continue_in_loop(_YIELD, done)
        await finished
    finally:
        driver.end()
        _retire(engine, driver)
        _forget_unless_used(engine)


def _forget_unless_used(engine: Engine) -> None:
    if not engine.drivers and engine is not thread_engine_or_none():
        forget_engine(engine)  # closes its source: the loop keeps no fd or reader of ours


def _inside_a_handler(loop: asyncio.AbstractEventLoop) -> bool:
    engine = engine_for(loop)
    return any(isinstance(d, Driver) and d.dispatching for d in list(engine.drivers.values()))
