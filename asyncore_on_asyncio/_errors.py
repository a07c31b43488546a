"""Errno sets and the exceptions that must propagate out of ``loop()``.

asyncore's error contract: an exception raised by a handler is given to the
dispatcher's ``handle_error()``, except ``ExitNow``, ``KeyboardInterrupt`` and
``SystemExit``, which end the loop.  Socket errors whose errno is in
:data:`DISCONNECTED` mean "the peer is gone" and become ``handle_close()``.
"""

from __future__ import annotations

import errno
import os

__all__ = ["DISCONNECTED", "RERAISED", "ExitNow", "strerror"]

DISCONNECTED: frozenset[int] = frozenset(
    {
        errno.ECONNRESET,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EBADF,
    }
)
"""Errnos that asyncore treats as a closed connection rather than an error."""


class ExitNow(Exception):
    """Raise from a handler to leave ``loop()`` at once; it is never given to ``handle_error``."""

    __module__ = "asyncore"


RERAISED: tuple[type[BaseException], ...] = (ExitNow, KeyboardInterrupt, SystemExit)
"""Exceptions that propagate out of the loop instead of reaching ``handle_error``."""


def strerror(err: int) -> str:
    """Describe an errno the way asyncore did: ``os.strerror`` or the symbolic name."""
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return errno.errorcode.get(err, f"Unknown error {err}")
