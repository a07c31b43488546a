"""Bridges between dispatchers and coroutines on the same event loop (the awaitables of a
dispatcher's connection and removal are :mod:`._waiters`').

* :func:`serve` drives a map inside a running event loop, as ``loop()`` does outside.
* :func:`spawn` starts a coroutine from a handler; its failure is not lost: it
  goes to a dispatcher's ``handle_error()`` or out of the running ``loop()``.
* :func:`detach`, :func:`to_streams` and :func:`to_protocol` hand a dispatcher's
  socket over to asyncio, the first step of migrating a handler.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _driver, _engine, asyncore

__all__ = [
    "detach",
    "serve",
    "spawn",
    "to_protocol",
    "to_streams",
    "wakeup",
]

T = TypeVar("T")
P = TypeVar("P", bound=asyncio.BaseProtocol)


def detach(dispatcher: Any) -> socket.socket:
    """Take ``dispatcher``'s socket away from it, open, and return it.

    The dispatcher leaves its map and the event loop (as by ``del_channel()``),
    its ``socket`` becomes ``None`` and it is no longer connected; no handler of
    it is called again.  The socket stays non-blocking.  Raises ValueError rather
    than lose data still buffered by ``dispatcher_with_send`` or ``async_chat``.
    """
    sock: socket.socket | None = dispatcher.socket
    if sock is None:
        raise ValueError(f"{dispatcher!r} has no socket to detach")
    buffered = _buffered(dispatcher)
    if buffered:
        raise ValueError(f"{dispatcher!r} still buffers {buffered}; flush or discard it before detaching")
    dispatcher.del_channel()
    dispatcher.socket = None
    dispatcher.connected = False
    dispatcher.connecting = False
    dispatcher.accepting = False
    return sock


def _buffered(dispatcher: Any) -> str:
    """Describe the data the asyncore/asynchat buffers of ``dispatcher`` still hold, if any."""
    held = []
    if getattr(dispatcher, "out_buffer", b""):
        held.append(f"{len(dispatcher.out_buffer)} unsent bytes (out_buffer)")
    if getattr(dispatcher, "producer_fifo", None):
        held.append(f"{len(dispatcher.producer_fifo)} unsent producer_fifo entries")
    if getattr(dispatcher, "ac_in_buffer", b""):
        held.append(f"{len(dispatcher.ac_in_buffer)} unprocessed received bytes (ac_in_buffer)")
    return " and ".join(held)


async def to_streams(dispatcher: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Detach ``dispatcher``'s connected socket and wrap it in asyncio streams.

    Keyword arguments go to :func:`asyncio.open_connection` (``limit``, ``ssl``...).
    """
    return await asyncio.open_connection(sock=detach(dispatcher), **kwargs)


async def to_protocol(
    dispatcher: Any, protocol_factory: Callable[[], P], **kwargs: Any
) -> tuple[asyncio.BaseTransport, P]:
    """Detach ``dispatcher``'s connected socket and give it to an asyncio Protocol.

    Keyword arguments go to ``loop.connect_accepted_socket()`` (``ssl``...).
    """
    loop = asyncio.get_running_loop()
    sock = detach(dispatcher)
    return await loop.connect_accepted_socket(protocol_factory, sock, **kwargs)


def wakeup(target: Any) -> None:
    """Tell a waiting ``loop()``/``serve()`` that ``target``'s ``readable()``/``writable()`` changed.

    ``target`` is a dispatcher or a map.  Our own API calls this for you (new and
    closed dispatchers, ``push()``, ``dispatcher_with_send.send()``); call it after
    changing state behind a custom ``readable()``/``writable()`` from a coroutine or
    another thread, or the change is seen only when the current wait ends (at the
    latest after ``timeout``).  Safe from any thread; cheap when nothing waits.
    """
    if isinstance(target, dict):
        _engine.map_changed(target)
    else:
        _engine.interest_changed(target)


async def serve(
    map: dict[int, Any] | None = None, timeout: float | None = 30.0, use_poll: bool = False
) -> None:
    """Drive ``map``'s dispatchers on the running event loop until the map is empty.

    The async counterpart of ``asyncore.loop()`` (``map=None``: ``asyncore.socket_map``):
    the same cycles, run on the running loop, so it keeps serving other tasks.  Several
    maps may be served at once.  Exceptions propagate as from ``loop()``.  When the task
    is cancelled, or ends by an exception, the map's fds are unregistered and its
    dispatchers are left open in the map (``asyncore.close_all(map)`` closes them).
    """
    if map is None:
        map = asyncore.socket_map  # read now: a program may have rebound it
    await _driver.serve(map, timeout, use_poll)


def spawn(coro: Coroutine[Any, Any, T], *, dispatcher: Any = None) -> asyncio.Task[T]:
    """Start ``coro`` as a task on the loop that serves dispatchers in this thread.

    If the task fails, the failure is delivered by the next cycle of a running
    ``loop()``/``serve()`` on that loop, in that cycle's frame: to
    ``dispatcher.handle_error()`` (called inside an ``except`` block, as for a
    handler's exception) or, without a dispatcher, raised out of ``loop()``.
    With no cycle running there, it goes to the loop's exception handler.
    Cancellation is not a failure.
    """
    engine = _engine.current_engine()
    task = engine.loop.create_task(coro)
    # The event loop keeps only weak references to tasks: keep this one alive until done,
    # as a handler typically drops the returned task.
    engine.tasks.add(task)

    def report(done: asyncio.Task[T]) -> None:
        engine.tasks.discard(done)
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            return
        if engine.drivers:
            engine.report_failure(exc, dispatcher)
        else:
            engine.loop.call_exception_handler(
                {
                    "message": "exception in a task started by asyncore_on_asyncio.spawn()",
                    "exception": exc,
                    "task": done,
                }
            )

    task.add_done_callback(report)
    return task
