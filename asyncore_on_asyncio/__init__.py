"""Python 3.11's asyncore and asynchat, running on an asyncio event loop.

``from asyncore_on_asyncio import asyncore, asynchat`` gives the complete 3.11 API
of both modules; :func:`install` makes plain ``import asyncore`` / ``import
asynchat`` give them too, and ``python -m asyncore_on_asyncio SCRIPT`` runs a
legacy program unchanged.  Dispatchers are served by an asyncio event loop (the
default loop or uvloop), so they can share it with coroutines: :func:`serve`
drives a map inside a running loop, :func:`spawn` starts a coroutine from a
handler, :func:`wakeup` tells a waiting loop that a custom ``writable()``
changed, and :func:`detach`, :func:`to_streams` and :func:`to_protocol` hand a
connection over to asyncio.  :func:`enable_report` (or the runner's ``--report``)
reports, when the program ends, which dispatcher classes ran and what they cost the
loop, and warns of slow handlers; :func:`statistics` tells what the engine of a loop
holds and how often it has called the kernel.

The engine runs on a compiled core (Cython) where the install could build one, and on
its pure-Python reference otherwise; :data:`CORE` says which (``"compiled"`` or
``"pure"``), and ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1`` in the environment forces the
pure one.  Importing this package has no other side effects.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FunctionType, ModuleType
from typing import Final, Literal

from . import _core

if _core.pure_forced():
    # Before any engine module is imported: this package's directories load sources only.
    _core.load_sources_only([__path__[0], os.path.join(__path__[0], "_readiness")])

from . import _report, asynchat, asyncore
from ._engine import close_event_loop, get_event_loop, set_loop_factory
from ._interop import detach, serve, spawn, to_protocol, to_streams, wakeup
from ._report import enable as enable_report
from ._statistics import EngineStatistics, statistics
from ._waiters import wait_closed, wait_connected

__version__ = "0.1.0"

CORE: Final[Literal["compiled", "pure"]] = _core.core_in_use()
"""Which engine core runs: ``"compiled"`` (Cython) or ``"pure"`` (the pure-Python reference)."""

__all__ = [
    "CORE",
    "EngineStatistics",
    "__version__",
    "asynchat",
    "asyncore",
    "close_event_loop",
    "detach",
    "enable_report",
    "get_event_loop",
    "install",
    "serve",
    "set_loop_factory",
    "spawn",
    "statistics",
    "to_protocol",
    "to_streams",
    "wait_closed",
    "wait_connected",
    "wakeup",
]


def install() -> None:
    """Make ``import asyncore`` and ``import asynchat`` give this package's modules.

    Idempotent.  It replaces any other copy (3.11's standard library, PyPI's
    ``standard-asyncore``...) for every later import, so call it before importing
    the program's modules (``python -m asyncore_on_asyncio`` does).  A module that
    imported the other copy before keeps it (``smtpd`` imported first would serve
    on the other copy's loop, not ours): install() then warns, naming those modules,
    with a RuntimeWarning.

    With ``ASYNCORE_ON_ASYNCIO_REPORT`` set it also turns the report on
    (:func:`enable_report`; ``ASYNCORE_ON_ASYNCIO_SLOW_HANDLER`` sets the threshold).
    """
    _report.enable_from_env()
    replaced = [
        module
        for name, ours in (("asyncore", asyncore), ("asynchat", asynchat))
        if (module := sys.modules.get(name)) is not None and module is not ours
    ]
    sys.modules["asyncore"] = asyncore
    sys.modules["asynchat"] = asynchat
    holders = _holders(replaced)
    if holders:
        copies = ", ".join(f"{m.__name__} ({getattr(m, '__file__', '?')})" for m in replaced)
        warnings.warn(
            f"install() came after {', '.join(holders)} imported another {copies}; "
            "they keep using it: call install() before importing them",
            RuntimeWarning,
            stacklevel=2,
        )


def _holders(replaced: list[ModuleType]) -> list[str]:
    """Names of the modules that hold one of ``replaced``, or a class or function of one."""
    if not replaced:
        return []
    held = {id(module) for module in replaced}
    for module in replaced:
        held.update(
            id(value)
            for value in vars(module).values()
            if isinstance(value, (type, FunctionType)) and value.__module__ == module.__name__
        )
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if module not in replaced
        and any(id(value) in held for value in getattr(module, "__dict__", {}).values())
    )
