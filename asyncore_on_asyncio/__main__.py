"""``python -m asyncore_on_asyncio [--loop L] [--report[=FILE]] [--slow-handler S] (SCRIPT | -m MODULE) [ARGS...]``.

Runs an unmodified legacy asyncore/asynchat program as ``__main__`` after
:func:`asyncore_on_asyncio.install`, as ``python SCRIPT`` or ``python -m MODULE``
would run it: the same ``sys.argv``, ``sys.path[0]`` and exit status.

* ``SCRIPT``: ``sys.argv[0]`` is SCRIPT as given; its directory is ``sys.path[0]``.
  A script that cannot be opened gives one line on stderr and exit status 2.
* ``-m MODULE``: ends our options, as it ends python's.  ``sys.argv[0]`` is the
  module's file; ``sys.path[0]`` stays the current directory.  A package runs its
  ``__main__``.  One difference, for the stdlib modules PyPI republishes as
  packages (``standard-smtpd``'s ``smtpd``): a package that holds nothing but its
  ``__init__`` runs that as ``__main__``, as 3.11 ran the module.

``--loop`` overrides ``ASYNCORE_ON_ASYNCIO_LOOP``; ``--version`` prints the version and
the engine core in use (``compiled core`` or ``pure-Python core``).
``--report`` writes the handler report (:mod:`._report`) to stderr when the program
ends, ``--report=FILE`` to FILE (JSON if it ends in ``.json``; the ``=`` is required,
so that a script name is never taken for the file); ``--slow-handler SECONDS`` sets
the slow-handler warning threshold (default 0.1, 0: no warnings).  They override
``ASYNCORE_ON_ASYNCIO_REPORT`` and ``ASYNCORE_ON_ASYNCIO_SLOW_HANDLER``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pkgutil
import runpy
import sys
from typing import NoReturn

from . import CORE, __version__, _engine, _report, install

PROG = "python -m asyncore_on_asyncio"
_CORE_NAMES = {"compiled": "compiled core", "pure": "pure-Python core"}


_WITH_VALUE = ("--loop", "--slow-handler")


def _split_module(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Split ``argv`` at ``-m``: (our options, [MODULE, *ARGS]), or (argv, None) without one."""
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "-m":
            return argv[:index], argv[index + 1 :]
        if token.startswith("-m"):  # -mMODULE, as python accepts
            return argv[:index], [token[2:], *argv[index + 1 :]]
        if token == "--" or not token.startswith("-"):
            break
        index += 2 if token in _WITH_VALUE else 1
    return argv, None


def _bare_report(ours: list[str]) -> list[str]:
    """``--report`` among our options (not the program's) becomes ``--report=-``."""
    result = list(ours)
    index = 0
    while index < len(result):
        token = result[index]
        if token == "--" or not token.startswith("-"):
            break
        if token == "--report":
            result[index] = "--report=-"
        index += 2 if token in _WITH_VALUE else 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=(
            f"{PROG} [-h] [--version] [--loop {{asyncio,uvloop}}] [--report[=FILE]] "
            "[--slow-handler SECONDS] (SCRIPT | -m MODULE) [ARGS ...]"
        ),
        description="Run a legacy asyncore/asynchat program on asyncio.",
    )
    parser.add_argument("--version", action="version", version=f"asyncore_on_asyncio {__version__} ({_CORE_NAMES[CORE]})")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help=f"event loop to use (default: ${_engine.LOOP_ENV_VAR} or asyncio)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="at exit, write which dispatcher classes ran and what they cost to stderr, "
        f"or to FILE with --report=FILE (JSON if FILE ends in .json; default: ${_report.REPORT_ENV_VAR})",
    )
    parser.add_argument(
        "--slow-handler",
        metavar="SECONDS",
        type=float,
        help="warn of handlers running longer than this "
        f"(default: ${_report.SLOW_HANDLER_ENV_VAR} or {_report.DEFAULT_SLOW_HANDLER}; 0: off)",
    )
    parser.add_argument("-m", metavar="MODULE", dest="module", help="run a module, as python -m does")
    parser.add_argument("script", nargs="?", help="path of the program to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def _fail(status: int, message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.exit(status)


def _run_script(script: str, args: list[str]) -> None:
    try:
        with open(script, "rb"):
            pass
    except IsADirectoryError:
        pass  # a directory with a __main__.py: run_path() runs it, as python does
    except OSError as exc:
        _fail(2, f"can't open file {os.path.abspath(script)!r}: [Errno {exc.errno}] {exc.strerror}")
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


def _run_module(name: str, args: list[str]) -> None:
    try:
        spec = importlib.util.find_spec(name)
    except ImportError as exc:  # a parent package is missing
        _fail(1, str(exc))
    if spec is None:
        _fail(1, f"No module named {name}")
    sys.argv = [name, *args]  # runpy sets argv[0] to the module's file while it runs
    locations = spec.submodule_search_locations
    if locations is not None:
        # pkgutil lists a package's modules without importing the package.
        modules = [info.name for info in pkgutil.iter_modules(locations)]
        if not modules and spec.origin is not None:
            runpy.run_path(spec.origin, run_name="__main__")
            return
        if "__main__" not in modules:
            _fail(1, f"No module named {name}.__main__; {name!r} is a package and cannot be directly executed")
    runpy.run_module(name, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    ours, module = _split_module(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    options = parser.parse_args(_bare_report(ours))
    if module == []:
        parser.error("argument -m: expected one argument")
    if module is None and options.script is None:
        parser.error("the following arguments are required: SCRIPT or -m MODULE")
    if options.loop is not None:
        os.environ[_engine.LOOP_ENV_VAR] = options.loop
    # Fail before the program starts if the chosen loop cannot be made.
    try:
        _engine.factory_from_env()
    except (RuntimeError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        _start_report(options.report, options.slow_handler)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    install()
    if module is not None:
        _run_module(module[0], module[1:])
    else:
        _run_script(options.script, options.args)


def _start_report(target: str | None, slow_handler: float | None) -> None:
    """Turn the report on as the options (else the environment) ask."""
    if target is None:
        target = os.environ.get(_report.REPORT_ENV_VAR, "").strip() or None
    if slow_handler is None:
        slow_handler = _report.slow_handler_from_env()
    elif slow_handler < 0:
        raise ValueError(f"--slow-handler {slow_handler}: expected a number of seconds (0: off)")
    if target is not None:
        _report.enable(target, slow_handler=slow_handler or None)


if __name__ == "__main__":
    main()
