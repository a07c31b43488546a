"""The installed package as a user's own tools see it, from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# mypy in a subprocess: no event loop, whatever the loop kind.
pytestmark = pytest.mark.loop_free

REPO = Path(__file__).resolve().parent.parent

# Under --strict, an unresolved import (import-not-found), a package without py.typed
# (import-untyped) and subclassing an Any base all fail: only real types pass.
USER_CODE = """\
from asyncore_on_asyncio import asynchat, asyncore


class Greeter(asynchat.async_chat):
    def found_terminator(self) -> None:
        self.push(b"hello\\r\\n")


def stop(d: asyncore.dispatcher) -> None:
    d.close()
"""


def test_mypy_finds_the_installed_package(tmp_path: Path) -> None:
    """A user's file type-checks against the installed package, also after the README's
    editable install (setuptools' editable finder hook is invisible to mypy)."""
    assert REPO not in tmp_path.parents
    (tmp_path / "user.py").write_text(USER_CODE)
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success:"), result.stdout
