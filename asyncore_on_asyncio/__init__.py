"""Python 3.11's asyncore and asynchat, running on an asyncio event loop.

``from asyncore_on_asyncio import asyncore, asynchat`` gives the complete 3.11 API
of both modules; :func:`install` makes plain ``import asyncore`` / ``import
asynchat`` give them too, and ``python -m asyncore_on_asyncio SCRIPT`` runs a
legacy program unchanged.  Dispatchers are served by an asyncio event loop (the
default loop or uvloop), so they can share it with coroutines: :func:`serve`
drives a map inside a running loop, :func:`spawn` starts a coroutine from a
handler, :func:`wakeup` tells a waiting loop that a custom ``writable()``
changed, and :func:`detach`, :func:`to_streams` and :func:`to_protocol` hand a
connection over to asyncio.  Importing this package has no side effects.
"""

from __future__ import annotations

import sys

from . import asynchat, asyncore
from ._driver import serve
from ._engine import close_event_loop, get_event_loop, set_loop_factory
from ._interop import (
    detach,
    spawn,
    to_protocol,
    to_streams,
    wait_closed,
    wait_connected,
    wakeup,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "asynchat",
    "asyncore",
    "close_event_loop",
    "detach",
    "get_event_loop",
    "install",
    "serve",
    "set_loop_factory",
    "spawn",
    "to_protocol",
    "to_streams",
    "wait_closed",
    "wait_connected",
    "wakeup",
]


def install() -> None:
    """Make ``import asyncore`` and ``import asynchat`` give this package's modules.

    Idempotent.  On Python 3.11 it replaces the standard library's modules, also
    if they were imported already (modules that did ``from asyncore import X``
    before keep their old X).
    """
    sys.modules["asyncore"] = asyncore
    sys.modules["asynchat"] = asynchat
