"""``install()`` and ``python -m asyncore_on_asyncio SCRIPT``: legacy programs run unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import asynchat, asyncore

LEGACY = textwrap.dedent(
    """
    import sys
    import asyncore, asynchat
    import asyncore_on_asyncio
    assert asyncore is asyncore_on_asyncio.asyncore and asynchat is asyncore_on_asyncio.asynchat
    loop = asyncore_on_asyncio.get_event_loop()
    print("loop", type(loop).__module__.split(".")[0])
    print("argv", sys.argv)
    print("name", __name__)
    from sibling import VALUE
    print("sibling", VALUE)
    sys.exit(int(sys.argv[1]))
    """
)


def run_main(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    (tmp_path / "sibling.py").write_text("VALUE = 42\n")
    full_env = {k: v for k, v in os.environ.items() if k != "ASYNCORE_ON_ASYNCIO_LOOP"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "asyncore_on_asyncio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=full_env,
    )


def test_runs_script_as_main_with_argv_and_exit_status(tmp_path: Path) -> None:
    result = run_main(tmp_path, "legacy.py", "3", "--flag")
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "loop asyncio",
        "argv ['legacy.py', '3', '--flag']",
        "name __main__",
        "sibling 42",
    ]


@pytest.mark.parametrize("how", ["option", "env"])
def test_loop_choice(tmp_path: Path, how: str) -> None:
    if how == "option":
        result = run_main(tmp_path, "--loop", "uvloop", "legacy.py", "0")
    else:
        result = run_main(tmp_path, "legacy.py", "0", env={"ASYNCORE_ON_ASYNCIO_LOOP": "uvloop"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "loop uvloop"


def test_missing_uvloop_is_reported_before_the_script_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "uvloop.py").write_text("raise ImportError('uvloop is not installed here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    result = run_main(tmp_path, "--loop", "uvloop", "legacy.py", "0", env=env)
    assert result.returncode == 2
    assert "install it with: pip install uvloop " in result.stderr
    assert result.stdout == ""


def test_bad_loop_name_is_a_usage_error(tmp_path: Path) -> None:
    result = run_main(tmp_path, "--loop", "tokio", "legacy.py", "0")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_install_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "asyncore", raising=False)
    monkeypatch.delitem(sys.modules, "asynchat", raising=False)
    asyncore_on_asyncio.install()
    asyncore_on_asyncio.install()
    import asynchat as plain_asynchat
    import asyncore as plain_asyncore

    assert plain_asyncore is asyncore and plain_asynchat is asynchat


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, asyncore_on_asyncio; "
        "assert 'asyncore' not in sys.modules or sys.version_info < (3, 12); "
        "from asyncore_on_asyncio import _engine; assert not _engine._engines; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
