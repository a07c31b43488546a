"""Coroutines awaiting a dispatcher's connection or its removal from its map.

:mod:`.asyncore` reports both events here (:func:`dispatcher_connected`,
:func:`dispatcher_removed`); :func:`wait_connected` and :func:`wait_closed` are the
public awaitables.  Waiters are kept here, keyed weakly by dispatcher, so no attribute
is added to user subclasses.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

__all__ = ["dispatcher_connected", "dispatcher_removed", "wait_closed", "wait_connected"]

_connected_waiters: weakref.WeakKeyDictionary[Any, list[asyncio.Future[None]]] = weakref.WeakKeyDictionary()
_closed_waiters: weakref.WeakKeyDictionary[Any, list[asyncio.Future[None]]] = weakref.WeakKeyDictionary()

used = False
"""Has any coroutine waited here?  Until one has, :mod:`.asyncore` reports nothing (the
reports cost a call per connection and per close)."""


def _wake(table: weakref.WeakKeyDictionary[Any, list[asyncio.Future[None]]], obj: Any) -> None:
    if not table:
        return
    for waiter in table.pop(obj, ()):
        if not waiter.done():
            waiter.get_loop().call_soon_threadsafe(_set_done, waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def dispatcher_connected(obj: Any) -> None:
    """Called by ``handle_connect_event`` once ``obj`` is connected."""
    _wake(_connected_waiters, obj)


def dispatcher_removed(obj: Any) -> None:
    """Called by ``del_channel``: ``obj`` left its map."""
    _wake(_closed_waiters, obj)
    if _connected_waiters and obj in _connected_waiters:
        for waiter in _connected_waiters.pop(obj):
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_fail_not_connected, waiter, obj)


def _fail_not_connected(waiter: asyncio.Future[None], obj: Any) -> None:
    if not waiter.done():
        waiter.set_exception(ConnectionError(f"{obj!r} was closed before it connected"))


async def _wait(table: weakref.WeakKeyDictionary[Any, list[asyncio.Future[None]]], obj: Any) -> None:
    global used
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    used = True
    table.setdefault(obj, []).append(waiter)
    await waiter


async def wait_connected(dispatcher: Any) -> None:
    """Wait until ``dispatcher`` has connected (after its ``handle_connect()``).

    Returns at once if it is connected already; raises ConnectionError if it
    leaves its map first.  Something must be serving its map meanwhile.
    """
    if dispatcher.connected:
        return
    if dispatcher._fileno is None or dispatcher._fileno not in dispatcher._map:
        raise ConnectionError(f"{dispatcher!r} is not in a map; it cannot connect")
    await _wait(_connected_waiters, dispatcher)


async def wait_closed(dispatcher: Any) -> None:
    """Wait until ``dispatcher`` has left its map (``close()`` or ``del_channel()``)."""
    if dispatcher._fileno is None or dispatcher._map.get(dispatcher._fileno) is not dispatcher:
        return
    await _wait(_closed_waiters, dispatcher)
