"""What the engine of one event loop holds and has asked of the kernel: :func:`statistics`.

The readiness source counts its calls where it makes them (C integers in the compiled
core); this module only reads them, so asking costs nothing while nobody asks.  Tests
compare two snapshots instead of wrapping the source's private objects; a program can
log them to see what its dispatchers cost the kernel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from . import _engine
from ._readiness.loop_fds import LoopFdSource

__all__ = ["EngineStatistics", "statistics"]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """A snapshot of one event loop's engine; the call counts run from the source's creation.

    With the epoll source (Linux) the registration calls are ``epoll_ctl()`` calls on its
    private epoll; with the per-fd fallback (``loop-fds``) they are the event loop's
    ``add_reader``/``add_writer`` (``registers``) and ``remove_reader``/``remove_writer``
    (``unregisters``) calls, and ``modifies`` stays 0 (the fallback's private EPOLLPRI
    watch for urgent data is not counted).  Failed calls count: they were made.
    """

    source: Literal["epoll", "loop-fds"] | None
    """Which readiness source the loop has; ``None``: none yet (nothing registered
    there since the loop was made), and every count is 0."""
    records: int
    """Dispatcher fds held (one record each), for every map served on the loop."""
    registers: int
    """``EPOLL_CTL_ADD`` calls, or ``add_reader``/``add_writer`` calls."""
    modifies: int
    """``EPOLL_CTL_MOD`` calls."""
    unregisters: int
    """``EPOLL_CTL_DEL`` calls, or ``remove_reader``/``remove_writer`` calls."""
    polls: int
    """Zero-timeout asks for the readiness of every watched fd: ``epoll_wait()`` on the
    epoll (by a cycle, or by the loop's callback when no cycle waits), ``poll()`` of
    the fallback's fds (one per cycle)."""
    writer_polls: int
    """Epoll source: ``poll()`` calls asking whether writers not watched for writability
    can write (at most one per cycle; 0 with the fallback, whose one ``poll()`` asks)."""
    maps: int
    """Maps with a driver on the loop: served now, or served before and not emptied since."""
    waiting: int
    """Of those, how many have a ``loop()``/``serve()`` waiting inside the event loop now."""


def statistics(loop: asyncio.AbstractEventLoop | None = None) -> EngineStatistics:
    """A snapshot of the engine serving dispatchers on ``loop``.

    ``loop`` defaults to the running event loop, else this thread's engine loop (the one
    ``loop()`` runs on, :func:`get_event_loop`).  Asking makes nothing: a loop that has
    served no dispatcher gets ``source=None`` and zeros.  Call it from the loop's thread.
    """
    if loop is None:
        loop = asyncio._get_running_loop()
    if loop is None:
        engine = _engine.thread_engine_or_none()
    else:
        engine = _engine.engine_or_none(loop)
    source = None if engine is None else engine._source
    drivers = [] if engine is None else list(engine.drivers.values())
    waiting = sum(1 for driver in drivers if driver.waiting)
    if source is None:
        return EngineStatistics(None, 0, 0, 0, 0, 0, 0, len(drivers), waiting)
    return EngineStatistics(
        source="loop-fds" if isinstance(source, LoopFdSource) else "epoll",
        records=len(source),
        registers=source.registers,
        modifies=source.modifies,
        unregisters=source.unregisters,
        polls=source.polls,
        writer_polls=source.writer_polls,
        maps=len(drivers),
        waiting=waiting,
    )
