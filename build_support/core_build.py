"""What the build compiles: the engine modules that have a ``.pxd`` beside them, with Cython.

Used by ``setup.py`` (the extension modules and a ``build_ext`` that falls back) and by
``backend.py`` (whether Cython is a build requirement).  The compiled core is built when

* ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS`` is unset, empty or ``0`` (set: a pure wheel),
* the interpreter is CPython (the modules use its C API), and
* the platform has epoll (Linux): the compiled modules are the epoll path's.

Anything else, or a compile that fails, gives the pure-Python engine and one line saying
why; the install itself does not fail.  Each ``.py`` stays the reference: the compiled
module is the same source, typed by its ``.pxd`` (Cython's "pure Python mode").
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

NO_EXTENSIONS_ENV_VAR = "ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS"
CYTHON_REQUIREMENT = "Cython>=3.1"
PACKAGE = "asyncore_on_asyncio"

COMPILER_DIRECTIVES = {
    "language_level": 3,
    # Types come from the .pxd files only: the annotations are for mypy and the reader.
    "annotation_typing": False,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
}


def say(message: str) -> None:
    print(f"asyncore-on-asyncio: {message}", file=sys.stderr, flush=True)


def no_extensions_requested() -> bool:
    return os.environ.get(NO_EXTENSIONS_ENV_VAR, "").strip() not in ("", "0")


def why_not_compiled() -> str | None:
    """Why the compiled core cannot be built here, or ``None`` if it can be tried."""
    if no_extensions_requested():
        return f"{NO_EXTENSIONS_ENV_VAR} is set"
    if platform.python_implementation() != "CPython":
        return f"{platform.python_implementation()} is not CPython"
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no epoll (the compiled modules are the epoll path's)"
    return None


def compiled_sources(root: Path) -> list[Path]:
    """The package's modules that have a ``.pxd`` beside them, sorted."""
    package = root / PACKAGE
    return sorted(pxd.with_suffix(".py") for pxd in package.rglob("*.pxd") if pxd.with_suffix(".py").exists())


def extensions(root: Path) -> list[Any]:
    """The extension modules to build, or ``[]`` (with one line saying why) for the pure engine."""
    reason = why_not_compiled()
    if reason is not None:
        say(f"building the pure-Python engine ({reason})")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        say(f"building the pure-Python engine (Cython is not installed; {CYTHON_REQUIREMENT} compiles the core)")
        return []
    sources = [str(path.relative_to(root)) for path in compiled_sources(root)]
    try:
        return list(cythonize(sources, compiler_directives=COMPILER_DIRECTIVES, quiet=True))
    except Exception as exc:  # a Cython error: the pure engine is still a working install
        say(f"building the pure-Python engine (Cython failed: {exc})")
        return []
