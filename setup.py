"""The build's one dynamic part: the compiled engine core (see build_support/core_build.py).

Everything else is in pyproject.toml.  A compile that fails leaves the pure-Python
engine installed, with one line saying so; it never fails the install.  Either every
compiled module is built or none is: the compiled modules share C types.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "build_support"))

from core_build import extensions, say  # noqa: E402


class BuildCoreOrFallBack(build_ext):
    """``build_ext`` that drops every compiled module if one of them fails to build."""

    def build_extensions(self) -> None:
        try:
            super().build_extensions()
        except Exception as exc:  # the compiler's error was printed above; the install goes on
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []
            say(f"building the pure-Python engine (compiling the core failed: {exc})")


setup(ext_modules=extensions(ROOT), cmdclass={"build_ext": BuildCoreOrFallBack})
