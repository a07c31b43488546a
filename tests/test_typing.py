"""Types a user can use: tests/typed/ is checked with ``mypy --strict``.

``sample_user_code.py`` (servers and clients on ``dispatcher``, ``dispatcher_with_send``
and ``async_chat``, with ``serve()`` and ``spawn()``) must type-check, and each line of
``rejected.py`` must be rejected with the error code of its ``# type: ignore[code]``:
``--warn-unused-ignores`` fails the check when one is not.  The sample also runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TYPED = REPO / "tests" / "typed"


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One mypy run per session (the check does not depend on the loop kind)."""
    cache = tmp_path_factory.mktemp("mypy-cache")
    # The package source comes first, whatever kind of install (editable or not) exists.
    env = {**os.environ, "MYPYPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores",
            "--cache-dir", str(cache), "--no-error-summary",
            str(TYPED / "sample_user_code.py"), str(TYPED / "rejected.py"),
        ],
        capture_output=True, text=True, timeout=240, cwd=REPO, env=env,
    )  # fmt: skip


@pytest.mark.loop_free
@pytest.mark.timeout(300)
def test_sample_passes_and_rejected_lines_are_rejected(
    mypy_run: subprocess.CompletedProcess[str],
) -> None:
    assert (mypy_run.returncode, mypy_run.stdout, mypy_run.stderr) == (0, "", "")


@pytest.mark.asyncio
async def test_sample_runs() -> None:
    spec = importlib.util.spec_from_file_location("sample_user_code", TYPED / "sample_user_code.py")
    assert spec is not None and spec.loader is not None
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    assert await sample.main() == b"HELLO\n"
