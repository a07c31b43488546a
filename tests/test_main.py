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


@pytest.mark.loop_free
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


@pytest.mark.loop_free
@pytest.mark.parametrize("how", ["option", "env"])
def test_loop_choice(tmp_path: Path, how: str) -> None:
    if how == "option":
        result = run_main(tmp_path, "--loop", "uvloop", "legacy.py", "0")
    else:
        result = run_main(tmp_path, "legacy.py", "0", env={"ASYNCORE_ON_ASYNCIO_LOOP": "uvloop"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "loop uvloop"


@pytest.mark.loop_free
def test_missing_uvloop_is_reported_before_the_script_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "uvloop.py").write_text("raise ImportError('uvloop is not installed here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    result = run_main(tmp_path, "--loop", "uvloop", "legacy.py", "0", env=env)
    assert result.returncode == 2
    assert "install it with: pip install uvloop " in result.stderr
    assert result.stdout == ""


@pytest.mark.loop_free
def test_bad_loop_name_is_a_usage_error(tmp_path: Path) -> None:
    result = run_main(tmp_path, "--loop", "tokio", "legacy.py", "0")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.loop_free
def test_install_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "asyncore", raising=False)
    monkeypatch.delitem(sys.modules, "asynchat", raising=False)
    asyncore_on_asyncio.install()
    asyncore_on_asyncio.install()
    import asynchat as plain_asynchat
    import asyncore as plain_asyncore

    assert plain_asyncore is asyncore and plain_asynchat is asynchat


@pytest.mark.loop_free
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


@pytest.mark.loop_free
def test_version_names_the_core_in_use(tmp_path: Path) -> None:
    result = run_main(tmp_path, "--version")
    core = {"compiled": "compiled core", "pure": "pure-Python core"}[asyncore_on_asyncio.CORE]
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"asyncore_on_asyncio {asyncore_on_asyncio.__version__} ({core})\n",
        "",
    )


@pytest.mark.loop_free
def test_version_says_pure_when_the_pure_engine_is_forced(tmp_path: Path) -> None:
    result = run_main(tmp_path, "--version", env={"ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS": "1"})
    assert (result.returncode, result.stdout) == (
        0,
        f"asyncore_on_asyncio {asyncore_on_asyncio.__version__} (pure-Python core)\n",
    )


@pytest.mark.loop_free
def test_runs_module_as_python_m_does(tmp_path: Path) -> None:
    """``-m MODULE`` ends our options; argv[0] is the module's file, sys.path[0] the cwd."""
    package = tmp_path / "legacy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text(LEGACY)
    (tmp_path / "sibling.py").write_text("VALUE = 42\n")
    result = run_main(tmp_path, "--loop", "uvloop", "-m", "legacy_pkg.tool", "4", "--loop", "-m")
    assert result.returncode == 4, result.stderr
    assert result.stdout.splitlines() == [
        "loop uvloop",
        f"argv [{str(package / 'tool.py')!r}, '4', '--loop', '-m']",
        "name __main__",
        "sibling 42",
    ]
    # Run as a package: its __main__.
    (package / "__main__.py").write_text("import sys; print('main', sys.argv)\n")
    result = run_main(tmp_path, "-mlegacy_pkg", "x")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"main [{str(package / '__main__.py')!r}, 'x']\n"


@pytest.mark.loop_free
def test_package_that_is_only_an_init_runs_it(tmp_path: Path) -> None:
    """How PyPI's standard-smtpd packages 3.11's smtpd module: ``-m`` runs its __init__."""
    package = tmp_path / "onlyinit"
    package.mkdir()
    (package / "__init__.py").write_text("import sys; print(__name__, sys.argv)\n")
    result = run_main(tmp_path, "-m", "onlyinit", "-n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"__main__ [{str(package / '__init__.py')!r}, '-n']\n"


@pytest.mark.loop_free
@pytest.mark.parametrize(
    ("args", "status", "stderr"),
    [
        (
            ["missing.py", "1"],
            2,
            "python -m asyncore_on_asyncio: can't open file '{tmp}/missing.py': "
            "[Errno 2] No such file or directory\n",
        ),
        (["-m", "no_such_module"], 1, "python -m asyncore_on_asyncio: No module named no_such_module\n"),
        (
            ["-m", "pkg_without_main"],
            1,
            "python -m asyncore_on_asyncio: No module named pkg_without_main.__main__; "
            "'pkg_without_main' is a package and cannot be directly executed\n",
        ),
    ],
    ids=["missing-script", "missing-module", "package-without-main"],
)
def test_what_cannot_run_is_one_line_as_python_says(
    tmp_path: Path, args: list[str], status: int, stderr: str
) -> None:
    package = tmp_path / "pkg_without_main"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "other.py").write_text("")
    result = run_main(tmp_path, *args)
    assert (result.returncode, result.stdout, result.stderr) == (
        status,
        "",
        stderr.format(tmp=tmp_path),
    )


@pytest.mark.loop_free
def test_script_or_module_is_required(tmp_path: Path) -> None:
    for args in ([], ["--loop", "asyncio"], ["-m"]):
        result = run_main(tmp_path, *args)
        assert result.returncode == 2
        assert result.stderr.startswith("usage: python -m asyncore_on_asyncio ")
        assert result.stdout == ""


DEBUG_LOGGING = textwrap.dedent(
    """
    import logging, socket
    import asyncore
    logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    logging.getLogger("legacy").debug("before")
    a, b = socket.socketpair()
    channel = asyncore.dispatcher(a)
    asyncore.loop(timeout=0, count=1)
    channel.close()
    b.close()
    logging.getLogger("asyncio").debug("asyncio's logger still logs")
    logging.getLogger("legacy").debug("after")
    """
)


def test_debug_log_reads_as_on_311(tmp_path: Path, loop_kind: str) -> None:
    """asyncio's "Using selector: ..." record, logged when the engine loop is made, is
    dropped; nothing else from asyncio's logger is."""
    (tmp_path / "debug_logging.py").write_text(DEBUG_LOGGING)
    result = run_main(tmp_path, "--loop", loop_kind, "debug_logging.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "legacy: before",
        "asyncio: asyncio's logger still logs",
        "legacy: after",
    ]
