"""The handler report and slow-handler warnings: which dispatcher class to migrate first.

Off by default, and then free: nothing here runs.  :func:`enable` (public as
``asyncore_on_asyncio.enable_report``, also reached through the runner's
``--report`` and ``ASYNCORE_ON_ASYNCIO_REPORT``) sets four hooks, none of them read
per event while it is off (the first once per ``loop()`` call, the second only on the
``handle_error`` path, the third in ``add_channel()``/``del_channel()``):

* :data:`._driver.instruments`: runs begun from then on scan and dispatch through
  :meth:`Collector.scan_of` and :meth:`Collector.dispatch`, which call the engine's
  own scan and :func:`._dispatch.dispatch_batch` (so 3.11's order is kept by the one
  place that knows it) with timed twins of ``read``/``write``/``_exception``/``readwrite``;
* :data:`._handlers.error_hook`: told of each ``handle_error()`` just before it runs,
  while ``sys.exc_info()`` holds the exception;
* :data:`._engine.channel_hook`: told of ``add_channel()``/``del_channel()``;
* ``atexit`` and, if it was ``SIG_DFL``, ``SIGTERM``: the report is written when the
  program ends (normally, by ``SystemExit`` or an unhandled ``KeyboardInterrupt``, or
  by ``SIGTERM``, after which the process still dies by ``SIGTERM``).

User classes are never touched: events are classified from the dispatcher's state
before the call (``accepting``, ``connecting``), a close is its ``del_channel()``
during one of its own events.

What the counts mean, per class (``module.qualname``):

``instances``  times one of its objects entered a map (``add_channel()``) while in none;
``peak``       most of them in maps at once;
``cycles``     cycles in which at least one of its objects had an event dispatched;
``events``     ``read``, ``write``, ``expt``: events delivered (an accepting dispatcher's
               read is an ``accept``); ``connect``: events that found it connecting (they
               count as their read or write too); ``close``: it left its map during one
               of its events; ``error``: ``handle_error()`` calls (``errors``: by type);
``predicates`` ``stock`` or ``own`` ``readable()``/``writable()``, or ``instance`` where
               the class's are stock but objects replaced them on themselves (seen when
               the shares are sampled): objects with their own
               make every scan of their map a full one; the time of those full scans is
               split among the classes with own predicates in the map, by their share
               of its objects (sampled again once the scans took 20 times what a
               sampling takes, 4 times if the map's size changed, and when a class's
               first object enters a map: an object that replaces its predicates on
               itself, of a class already seen, may wait for the next sampling);
``handler_s``  time in its event calls (handlers, ``handle_error`` included): total and
               p50/p99/max from a log-scale histogram (8 buckets an octave: ±6 %);
``slow``       event calls longer than the threshold.

The first class is the one to migrate first: slow calls first, then the most loop time
(handlers plus forced scans).  JSON (a file name ending in ``.json``)::

    {"version": 1, "elapsed_s": float, "cycles": int, "slow_handler_s": float | null,
     "forced_scans_unattributed_s": float,
     "migrate_first": {"class": str, "reason": str} | null,
     "classes": [{"class": str, "instances": int, "peak": int, "cycles": int,
                  "events": {"read": int, "write": int, "connect": int, "accept": int,
                             "close": int, "expt": int, "error": int},
                  "errors": {exception type name: int},
                  "predicates": {"readable": "stock" | "own" | "instance", "writable": ...},
                  "forced_scans": int, "forced_scan_s": float,
                  "handler_s": {"calls": int, "total": float, "p50": float, "p99": float,
                                "max": float},
                  "slow": int, "cost_s": float}, ...]}
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, Any

from . import _driver, _engine, _handlers
from ._classflags import replaced_on_instance
from ._dispatch import Handlers, dispatch_batch
from ._handlers import POLLIN, POLLOUT, POLLPRI
from ._report_stats import ClassStats, Histogram
from ._report_text import KINDS, duration, render_text
from ._scan import Scanner, _known

__all__ = [
    "KINDS",
    "REPORT_ENV_VAR",
    "SLOW_HANDLER_ENV_VAR",
    "Collector",
    "Histogram",
    "enable",
    "enable_from_env",
    "render_text",
]

REPORT_ENV_VAR = "ASYNCORE_ON_ASYNCIO_REPORT"
SLOW_HANDLER_ENV_VAR = "ASYNCORE_ON_ASYNCIO_SLOW_HANDLER"
DEFAULT_SLOW_HANDLER = 0.1
WARNING_INTERVAL = 10.0
"""Seconds between two warnings about the same handler (class and method)."""
logger = logging.getLogger("asyncore_on_asyncio")

_SAMPLING_BUDGET = 20
_RESIZED_BUDGET = 4
"""The shares of the forced scans are sampled again once the scans since the last
sampling took 20 times what it took (a sampling walks the map once), 4 times if the
map's size changed since: at most 5 % (25 % while the map changes) more, and often in
a small program; and at once when a class's first object entered a map (a bounded number
of times), so that no class that forces scans is missed for lack of a sampling."""
_clock = time.perf_counter


class _PerThread(threading.local):
    current: object = None
    """The object whose event call runs now."""
    cycle: tuple[int, int, int] = (0, 0, 0)
    """This thread's cycle: its id, how many other objects of its batch wait for a handler,
    and how many other objects its map has."""
    classes: set[ClassStats] | None = None
    """The classes with an event in this thread's cycle: each counts the cycle once, when
    it ends (not by comparing cycle ids, which another thread's or a nested loop's cycle,
    recorded in between, would make count twice)."""


class Collector:
    """Counts what the hooks see; one per process, shared by every thread (one lock)."""

    def __init__(self, slow_handler: float | None) -> None:
        self.slow_handler = slow_handler
        self.started = _clock()
        self._cycle_ids = itertools.count(1)
        self._last_cycle = 0
        self.unattributed_scan_s = 0.0
        self.new_classes = 0
        """Classes whose first object entered a map: a new one may force full scans."""
        self._stats: dict[type, ClassStats] = {}
        self._lock = threading.RLock()
        self._local = _PerThread()
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}
        self.handlers = Handlers(self._read, self._write, self._exception, self._readwrite)

    def stats(self, cls: type) -> ClassStats:
        entry = self._stats.get(cls)
        if entry is None:
            with self._lock:
                entry = self._stats.setdefault(cls, ClassStats(cls))
        return entry

    # -- the driver's instruments ---------------------------------------------------------

    def dispatch(
        self, holder: Any, map: dict[Any, Any], batch: Any, revents: dict[int, int], use_poll: bool
    ) -> None:
        """:func:`._dispatch.dispatch_batch` with timed handlers; counts the cycle."""
        local = self._local
        outer = local.cycle  # a loop() nested in a handler has a cycle of its own
        cycle = next(self._cycle_ids)  # atomic: every thread's ids differ
        if cycle > self._last_cycle:
            self._last_cycle = cycle
        local.cycle = (cycle, len(batch) - 1, len(map) - 1)
        outer_classes, local.classes = local.classes, set()
        try:
            dispatch_batch(holder, map, batch, revents, use_poll, self.handlers)
        finally:
            classes, local.classes = local.classes, outer_classes
            local.cycle = outer
            with self._lock:
                for stats in classes:
                    stats.cycles += 1

    @property
    def cycles(self) -> int:
        """Cycles that dispatched something, in every thread."""
        return self._last_cycle

    def scan_of(self, scanner: Scanner) -> Callable[[float], None]:
        """``scanner.scan``, timing the full scans that objects with own predicates force."""
        plain = scanner.scan
        map = scanner.map
        shares: list[tuple[ClassStats, float]] = []
        scanned, sampling = 0.0, -1.0  # forced-scan time since the last sampling; its cost
        size = -1  # the map's size at the last sampling
        classes = -1  # ``new_classes`` at the last sampling

        def scan(now: float) -> None:
            nonlocal shares, scanned, sampling, size, classes
            if scanner._incremental:
                plain(now)
                return
            start = _clock()
            plain(now)
            end = _clock()
            elapsed = end - start
            budget = _SAMPLING_BUDGET if len(map) == size else _RESIZED_BUDGET
            if sampling < 0 or scanned >= sampling * budget or classes != self.new_classes:
                shares, size, classes = self._forcing(map), len(map), self.new_classes
                scanned, sampling = 0.0, _clock() - end
            scanned += elapsed
            self._forced_scan(shares, elapsed)

        return scan

    def _forcing(self, map: dict[Any, Any]) -> list[tuple[ClassStats, float]]:
        """Each class with own predicates in ``map``, with its share of their objects."""
        counts: dict[type, int] = {}
        for obj in list(map.values()):
            if not _known(obj):
                cls = type(obj)
                if cls not in counts:
                    counts[cls] = 0
                    self._note_instance_predicates(obj)
                counts[cls] += 1
        total = sum(counts.values())
        return [(self.stats(cls), n / total) for cls, n in counts.items()]

    def _note_instance_predicates(self, obj: Any) -> None:
        """An object whose class is stock but that replaced ``readable``/``writable`` on itself."""
        replaced = {name for name in ("readable", "writable") if replaced_on_instance(obj, name)}
        if replaced:
            with self._lock:
                self.stats(type(obj)).instance_predicates |= replaced

    def _forced_scan(self, shares: list[tuple[ClassStats, float]], elapsed: float) -> None:
        with self._lock:
            if not shares:
                self.unattributed_scan_s += elapsed
            for stats, share in shares:
                stats.forced_scans += 1
                stats.forced_scan_s += elapsed * share

    # -- timed twins of _handlers' functions -----------------------------------------------

    def _read(self, obj: Any) -> None:
        kinds: tuple[str, ...]
        if getattr(obj, "accepting", False):
            kinds = _ACCEPT
        else:
            kinds = _READ_CONNECT if _connecting(obj) else _READ
        self._timed(obj, "handle_read_event", kinds, _handlers.read, obj)

    def _write(self, obj: Any) -> None:
        kinds = _WRITE_CONNECT if _connecting(obj) else _WRITE
        self._timed(obj, "handle_write_event", kinds, _handlers.write, obj)

    def _exception(self, obj: Any) -> None:
        self._timed(obj, "handle_expt_event", ("expt",), _handlers._exception, obj)

    def _readwrite(self, obj: Any, flags: int) -> None:
        kinds: list[str] = []
        methods = []
        if flags & POLLIN:
            kinds.append("accept" if getattr(obj, "accepting", False) else "read")
            methods.append("handle_read_event")
        if flags & POLLOUT:
            kinds.append("write")
            methods.append("handle_write_event")
        if flags & (POLLIN | POLLOUT) and kinds[0] != "accept" and _connecting(obj):
            kinds.append("connect")
        if flags & POLLPRI:
            kinds.append("expt")
            methods.append("handle_expt_event")
        method = "+".join(methods) or "handle_close"
        self._timed(obj, method, tuple(kinds), _handlers.readwrite, obj, flags)

    def _timed(self, obj: Any, method: str, kinds: tuple[str, ...], call: Any, *args: Any) -> None:
        local = self._local
        outer, local.current = local.current, obj
        start = _clock()
        try:
            call(*args)
        finally:
            elapsed = _clock() - start
            local.current = outer
            self._record(obj, method, kinds, elapsed)

    def _record(self, obj: Any, method: str, kinds: tuple[str, ...], elapsed: float) -> None:
        stats = self._stats.get(type(obj)) or self.stats(type(obj))
        local = self._local
        cycle = local.cycle
        if local.classes is not None:
            local.classes.add(stats)
        slow = self.slow_handler is not None and elapsed >= self.slow_handler
        with self._lock:
            events = stats.events
            for kind in kinds:
                events[kind] += 1
            stats.handler.add(elapsed)
            if slow:
                stats.slow += 1
                if elapsed >= stats.handler.max:
                    stats.slowest = method
        if slow:
            self._warn(stats.name, method, elapsed, cycle[1], cycle[2])

    def _warn(self, name: str, method: str, elapsed: float, others: int, in_map: int) -> None:
        """One warning per handler every :data:`WARNING_INTERVAL` seconds; the next one
        says how many were held back meanwhile."""
        now = time.monotonic()
        with self._lock:
            last, held = self._warned.get((name, method), (-math.inf, 0))
            if now - last < WARNING_INTERVAL:
                self._warned[(name, method)] = (last, held + 1)
                return
            self._warned[(name, method)] = (now, 0)
        more = f" ({held} more since the last warning)" if held else ""
        logger.warning(
            "slow handler: %s.%s took %.0f ms; %d other ready dispatcher(s) waited "
            "(%d other(s) in its map)%s",
            name,
            method,
            elapsed * 1000,
            max(others, 0),
            max(in_map, 0),
            more,
        )

    # -- the other hooks -------------------------------------------------------------------

    def error(self, obj: Any) -> None:
        """``obj.handle_error()`` is about to run for the exception being handled."""
        exc_type = sys.exc_info()[0]
        name = "?" if exc_type is None else exc_type.__qualname__
        stats = self.stats(type(obj))
        with self._lock:
            stats.events["error"] += 1
            stats.errors[name] = stats.errors.get(name, 0) + 1

    def channel(self, obj: Any, added: bool) -> None:
        """``obj`` entered (``added``) or left a map."""
        stats = self.stats(type(obj))
        key = id(obj)
        with self._lock:
            if added:
                if key not in stats.live:
                    if not stats.instances:
                        self.new_classes += 1  # scans sample their shares again at once
                    stats.live.add(key)
                    stats.instances += 1
                    stats.peak = max(stats.peak, len(stats.live))
            elif key in stats.live:
                stats.live.discard(key)
                if self._local.current is obj:
                    stats.events["close"] += 1

    # -- the report ------------------------------------------------------------------------

    def data(self) -> dict[str, Any]:
        """The report as the documented JSON object."""
        with self._lock:
            ranked = sorted(self._stats.values(), key=lambda s: (-s.slow, -s.cost, s.name))
            classes = [stats.data() for stats in ranked]
            first = None if not ranked else {"class": ranked[0].name, "reason": _reason(ranked)}
            return {
                "version": 1,
                "elapsed_s": _clock() - self.started,
                "cycles": self.cycles,
                "slow_handler_s": self.slow_handler,
                "forced_scans_unattributed_s": self.unattributed_scan_s,
                "migrate_first": first,
                "classes": classes,
            }


_READ, _READ_CONNECT, _ACCEPT = ("read",), ("read", "connect"), ("accept",)
_WRITE, _WRITE_CONNECT = ("write",), ("write", "connect")


def _connecting(obj: Any) -> bool:
    """Will this event complete (or fail) a connect?  As ``handle_*_event`` decide it."""
    return bool(getattr(obj, "connecting", False)) and not getattr(obj, "connected", True)


def _reason(ranked: list[ClassStats]) -> str:
    top = ranked[0]
    if top.slow:
        return (
            f"{top.slow} of its handler calls blocked the loop longer than the threshold "
            f"(longest {duration(top.handler.max)}, in {top.slowest})"
        )
    if top.forced_scan_s > top.handler.total:
        return (
            "its own readable()/writable() make every scan of its map a full one "
            f"({duration(top.forced_scan_s)} in {top.forced_scans} scans)"
        )
    if not top.cost:
        return "no handler of any class took measurable time yet"
    everything = sum(stats.cost for stats in ranked)
    return (
        f"it costs the loop the most: {duration(top.cost)} (handlers {duration(top.handler.total)}, "
        f"forced scans {duration(top.forced_scan_s)}), {100 * top.cost / everything:.0f} % of all classes' cost"
    )


# -- turning it on, and writing it at exit -------------------------------------------------

_collector: Collector | None = None
_target: str | None = None
_written = False
_enable_lock = threading.RLock()  # SIGTERM's handler may run while its thread holds it


def collector() -> Collector | None:
    """The running collector, if the report is on."""
    return _collector


def enable(file: str | os.PathLike[str] | None = None, *, slow_handler: float | None = DEFAULT_SLOW_HANDLER) -> None:
    """Turn the report on: written to ``file`` when the program ends (``None`` or ``"-"``:
    stderr; a name ending in ``.json``: JSON), and warn of handlers slower than
    ``slow_handler`` seconds (``None`` or 0: no warnings).  Called again, it changes
    the file and the threshold and keeps the counts.  Runs already going are measured
    from their next ``loop()`` call.  The report is also written on ``SIGTERM`` if its
    handler is ``SIG_DFL`` when this is first called from the main thread."""
    global _collector, _target
    threshold = slow_handler if slow_handler else None
    if threshold is not None and not threshold > 0:
        raise ValueError(f"slow_handler must be a positive number of seconds or None, not {slow_handler!r}")
    with _enable_lock:
        _target = None if file is None or os.fspath(file) == "-" else os.path.abspath(file)
        if _collector is not None:
            _collector.slow_handler = threshold
            return
        _collector = Collector(threshold)
        _handlers.error_hook = _collector.error
        _engine.channel_hook = _collector.channel
        _driver.instruments = _collector
        atexit.register(write_once)
        _catch_sigterm()


def enable_from_env() -> None:
    """:func:`enable` as ``ASYNCORE_ON_ASYNCIO_REPORT`` (a file, ``-``: stderr) and
    ``ASYNCORE_ON_ASYNCIO_SLOW_HANDLER`` (seconds, 0: off) ask; nothing if the first is unset."""
    target = os.environ.get(REPORT_ENV_VAR, "").strip()
    if not target or _collector is not None:
        return
    enable(target, slow_handler=slow_handler_from_env())


def slow_handler_from_env() -> float | None:
    text = os.environ.get(SLOW_HANDLER_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_SLOW_HANDLER
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"{SLOW_HANDLER_ENV_VAR}={text!r}: expected a number of seconds (0: off)")
    return seconds or None


def write_once() -> None:
    """Write the report (once: at exit or on SIGTERM, whichever comes first)."""
    global _written
    with _enable_lock:
        if _written or _collector is None:
            return
        _written = True
        data, target = _collector.data(), _target
    try:
        if target is None:
            sys.stderr.write(render_text(data))
            sys.stderr.flush()
            return
        with open(target, "w", encoding="utf-8") as out:
            _write(out, data, target.endswith(".json"))
    except Exception as exc:  # the program's own exit status and output come first
        sys.stderr.write(f"asyncore_on_asyncio: could not write the report to {target}: {exc}\n")


def _write(out: IO[str], data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        out.write(render_text(data))


def _catch_sigterm() -> None:
    """Write the report on SIGTERM, then die by it as before, if nothing else handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    write_once()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def disable() -> None:
    """Turn the report off and forget it (for tests); a SIGTERM handler of ours is undone."""
    global _collector, _target, _written
    with _enable_lock:
        _collector, _target, _written = None, None, False
        _handlers.error_hook = None
        _engine.channel_hook = None
        _driver.instruments = None
        atexit.unregister(write_once)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
