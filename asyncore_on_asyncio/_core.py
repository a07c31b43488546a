"""Which engine core runs: the compiled modules (Cython) where they were built, else pure Python.

The engine modules listed in :data:`COMPILED_MODULES` are each one ``.py`` file, the
reference, plus a ``.pxd`` that types it; a build with a C compiler turns each into an
extension module beside its ``.py`` (``build_support/core_build.py``), which Python's
import system then prefers.  ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS`` set (non-empty, not
``0``) when the package is first imported makes the package's directories load source
modules only, so the pure engine runs even where compiled modules exist (gevent's
``GEVENT_PURE_PYTHON``, aiohttp's ``AIOHTTP_NO_EXTENSIONS``).  :data:`CORE` in the
package says which one is in use.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Final, Literal

__all__ = ["COMPILED_MODULES", "NO_EXTENSIONS_ENV_VAR", "core_in_use", "load_sources_only", "pure_forced"]

NO_EXTENSIONS_ENV_VAR: Final = "ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS"

COMPILED_MODULES: Final = (
    "asyncore_on_asyncio._classflags",
    "asyncore_on_asyncio._dispatch",
    "asyncore_on_asyncio._driver",
    "asyncore_on_asyncio._readiness",
    "asyncore_on_asyncio._readiness.epoll",
    "asyncore_on_asyncio._scan",
)
"""The modules a build compiles (the ones with a ``.pxd``; a test keeps the two in step)."""


def pure_forced() -> bool:
    """Is the pure-Python engine asked for (``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS``)?"""
    return os.environ.get(NO_EXTENSIONS_ENV_VAR, "").strip() not in ("", "0")


def load_sources_only(directories: Iterable[str]) -> None:
    """Make imports from ``directories`` (the package's own) find ``.py`` modules only.

    Their finders in ``sys.path_importer_cache`` are replaced by ones that know only
    source files; nothing else is changed.  Called before any engine module is imported.
    """
    loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
    for directory in directories:
        sys.path_importer_cache[directory] = importlib.machinery.FileFinder(directory, loader)


def _compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def core_in_use() -> Literal["compiled", "pure"]:
    """``"compiled"`` if every module of :data:`COMPILED_MODULES` is an extension module.

    A partly compiled engine cannot load (the compiled modules share C types), so the
    modules are all compiled or all pure.
    """
    for name in COMPILED_MODULES:
        __import__(name)
    return "compiled" if all(_compiled(sys.modules[name]) for name in COMPILED_MODULES) else "pure"
