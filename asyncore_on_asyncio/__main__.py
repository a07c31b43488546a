"""``python -m asyncore_on_asyncio [--loop asyncio|uvloop] SCRIPT [ARGS...]``.

Runs an unmodified legacy asyncore/asynchat program as ``__main__`` after
:func:`asyncore_on_asyncio.install`, with ``sys.argv`` and the exit status it
would have if run directly.  ``--loop`` overrides ``ASYNCORE_ON_ASYNCIO_LOOP``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys

from . import _engine, install


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m asyncore_on_asyncio",
        description="Run a legacy asyncore/asynchat program on asyncio.",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help=f"event loop to use (default: ${_engine.LOOP_ENV_VAR} or asyncio)",
    )
    parser.add_argument("script", help="path of the program to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    if options.loop is not None:
        os.environ[_engine.LOOP_ENV_VAR] = options.loop
    # Fail before the program starts if the chosen loop cannot be made.
    try:
        _engine.factory_from_env()
    except (RuntimeError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    install()
    sys.argv = [options.script, *options.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(options.script)))
    runpy.run_path(options.script, run_name="__main__")


if __name__ == "__main__":
    main()
