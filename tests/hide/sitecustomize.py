"""Run the tests on Linux as if ``select`` lacked epoll (macOS, the BSDs) or epoll and poll (Windows).

``ASYNCORE_TEST_HIDE`` names what to hide, comma-separated: ``epoll`` (macOS-like:
the engine takes its per-fd fallback source, as it must where there is no epoll, and urgent
data is not watched), ``epoll,poll`` (Windows-like readiness: that source collects with
``select()``, ``loop(use_poll=True)`` falls back to ``select()`` semantics and ``poll2()``
raises AttributeError, as 3.11's did there), and ``uvloop`` (``import uvloop`` fails, as on
Windows: the tests run on asyncio only).  Nothing else of those platforms is simulated:
the event loops still run on Linux (uvloop, where not hidden, keeps libuv's own epoll).

:func:`hide` deletes the attributes (and, with poll, the ``POLL*`` constants) from the
``select`` module.  ``selectors`` is left as it is when only epoll is hidden: its
``EpollSelector`` took ``select.epoll`` when it was defined and keeps working, so asyncio's
default loop keeps a selector that costs what is ready, as kqueue does on macOS.  With poll
hidden too, ``selectors`` loses ``EpollSelector`` and ``PollSelector`` and its
``DefaultSelector`` is ``SelectSelector``: asyncio's default loop selects, as on Windows.
It must run before ``asyncore_on_asyncio`` is imported (the package decides once, at
import, whether ``select.poll`` exists), and it refuses to run after.  Two callers:

* ``tests/__init__.py`` (:func:`hide_for_this_run`), which Python runs before
  ``tests/conftest.py`` or any test module, for the pytest process;
* this file, as ``sitecustomize``, for every Python subprocess a test starts:
  :func:`hide_for_this_run` puts this directory first on ``PYTHONPATH`` (and on
  ``sys.path``, which some tests pass on), and Python's ``site`` imports it at start-up.
  A ``sitecustomize`` that this one shadows is found further along the path and run after it.

``tests/test_platforms.py`` checks both, in the process and in a subprocess.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import select
import selectors
import sys

HIDE_ENV_VAR = "ASYNCORE_TEST_HIDE"
HIDEABLE = ("epoll", "poll", "uvloop")
HERE = os.path.dirname(os.path.abspath(__file__))


def hidden_names() -> tuple[str, ...]:
    """What ``ASYNCORE_TEST_HIDE`` asks to hide (ValueError for anything else)."""
    names = tuple(n.strip() for n in os.environ.get(HIDE_ENV_VAR, "").split(",") if n.strip())
    unknown = [n for n in names if n not in HIDEABLE]
    if unknown:
        raise ValueError(f"{HIDE_ENV_VAR}: cannot hide {unknown}; expected some of {HIDEABLE}")
    return names


def hide(names: tuple[str, ...]) -> None:
    """Delete ``select.<name>`` for each of ``names`` and what ``selectors`` built on them;
    make ``import uvloop`` fail if ``names`` has it."""
    if not names:
        return
    if "uvloop" in names:  # Windows has none: "import uvloop" fails
        if sys.modules.get("uvloop") is not None:
            raise RuntimeError(f"{HIDE_ENV_VAR}: uvloop was imported before it could be hidden")
        sys.modules["uvloop"] = None  # type: ignore[assignment]
    if "asyncore_on_asyncio" in sys.modules and any(hasattr(select, n) for n in names):
        raise RuntimeError(
            f"{HIDE_ENV_VAR}: asyncore_on_asyncio was imported before select.{names} could be "
            "hidden, so it would still use them"
        )
    # POLL* go with poll (Windows has none).  EPOLL* stay: selectors' EpollSelector reads
    # them when it selects, and the package reads none of them without select.epoll.
    prefix = "POLL" if "poll" in names else "-"
    for attr in list(vars(select)):
        if attr in names or attr.startswith(prefix):
            delattr(select, attr)
    if "poll" in names:  # Windows-like: asyncio's loop selects, as it does there
        selectors.__dict__.pop("EpollSelector", None)
        selectors.__dict__.pop("PollSelector", None)
        selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc, assignment]


def hide_for_this_run() -> tuple[str, ...]:
    """Hide what the variable names, here and in the Python subprocesses to come; return it."""
    names = hidden_names()
    hide(names)
    if names:
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if HERE not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([HERE, *filter(None, paths)])
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
    return names


def _run_shadowed_sitecustomize() -> None:
    path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # imported by site at start-up, not by the conftest
    hide(hidden_names())
    _run_shadowed_sitecustomize()
