"""``loop()``/``poll()``/``poll2()`` arguments, judged as 3.11 judged them.

In 3.11 nothing checked these arguments: ``select.select()``, ``select.poll()``
and the ``while map and count > 0`` of ``loop()`` did, with their own exceptions.
The engine takes only a ``timeout`` in seconds (``None``: no limit) and a number of
cycles (``None``: until the map is empty); these functions turn the user's values
into those, or raise what 3.11 raised for them.  They are annotated with the types
the public functions declare; the checks are for the values untyped callers pass.

* ``select()``'s timeout is judged by ``select.select()`` itself: it parses its
  timeout before it reads its lists, so a list holding an object whose ``fileno()``
  raises stops it right after the check, without a system call.  Every message is
  the running interpreter's own (they differ between versions).
* ``poll()``'s timeout is what 3.11's ``poll2()`` computed, ``int(timeout * 1000)``
  milliseconds (even for an empty map), then range-checked as ``poll.poll()`` does
  (for a map with objects); a negative value means no limit (so ``poll2(timeout=-1)``
  waits forever, as in 3.11).
"""

from __future__ import annotations

import math
import select

__all__ = ["PLAIN_LIMIT", "cycles", "poll_milliseconds", "poll_seconds", "select_timeout"]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # poll()'s C int of milliseconds
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1  # CPython's time type: int64 nanoseconds


class _Checked(Exception):
    """Raised by :class:`_StopHere` once ``select()`` has accepted its timeout."""


class _StopHere:
    def fileno(self) -> int:
        raise _Checked


def _judge_by_select(timeout: float | None) -> None:
    """Raise what ``select.select(..., timeout)`` raises for ``timeout``, if anything."""
    try:
        select.select([_StopHere()], [], [], timeout)
    except _Checked:
        pass


PLAIN_LIMIT = 1e9
"""Seconds below which a non-negative int or float timeout is one ``select()`` accepts."""


def select_timeout(timeout: float | None) -> float | None:
    """``timeout`` for a ``select()``-style cycle, in seconds, or what ``select()`` raised."""
    if timeout is None:
        return None
    if type(timeout) in (float, int) and 0 <= timeout < PLAIN_LIMIT:
        return float(timeout)  # the common case, decided without asking select()
    _judge_by_select(timeout)
    return float(timeout)


def poll_milliseconds(timeout: float | None) -> int | None:
    """What 3.11's ``poll2()`` computed first, for any map: ``int(timeout * 1000)``."""
    return None if timeout is None else int(timeout * 1000)


def poll_seconds(milliseconds: int | None) -> float | None:
    """The timeout of a ``poll()``-style cycle, or what ``poll.poll(milliseconds)`` raised."""
    if milliseconds is None:
        return None
    if not _NS_MIN <= milliseconds * 1_000_000 <= _NS_MAX:
        _judge_by_select(milliseconds)  # poll() raises the same "timestamp too large" error
    if not _INT_MIN <= milliseconds <= _INT_MAX:
        raise OverflowError("timeout is too large")
    return None if milliseconds < 0 else milliseconds / 1000


def cycles(count: float | None) -> int | None:
    """How many cycles 3.11's ``loop()`` ran for ``count`` (``None``: until the map is empty).

    3.11 ran ``while map and count > 0: ...; count = count - 1``: ``count=1.5`` runs
    two cycles, ``0`` or a negative count none, ``float('inf')`` never stops, and a
    count that cannot be compared with 0 raises that comparison's TypeError.
    """
    if count is None:
        return None
    if not count > 0:
        return 0
    if isinstance(count, int):
        return int(count)
    if count - 1 == count:
        return None  # infinite, or too large to count down: 3.11 never stopped
    return math.ceil(count)
