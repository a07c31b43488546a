"""The engine core: compiled where the install built it, pure Python otherwise or when forced.

``asyncore_on_asyncio.CORE`` names the core in use; ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS``
forces the pure one at run time and, at build time, makes a pure wheel; a compile that
fails gives a working pure install with one line saying why.  The builds run on a copy
of the sources in a temporary directory, with this environment's setuptools and Cython.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio._core import COMPILED_MODULES, NO_EXTENSIONS_ENV_VAR

pytestmark = pytest.mark.loop_free

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "asyncore_on_asyncio"
INSTALLED = Path(asyncore_on_asyncio.__file__).parent
needs_sources = pytest.mark.skipif(
    not SOURCES.is_dir(), reason="the package's sources are not beside the tests (an installed wheel is tested)"
)
once_per_interpreter = pytest.mark.skipif(
    bool(os.environ.get(NO_EXTENSIONS_ENV_VAR) or os.environ.get("ASYNCORE_ON_ASYNCIO_READINESS")),
    reason="a build does not depend on the core or readiness source forced at run time: "
    "the run with neither variable set builds",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@needs_sources
def test_the_compiled_modules_are_the_ones_with_a_pxd() -> None:
    """A ``.pxd`` beside a ``.py`` types that module; one alone only declares C functions."""
    typed = [p for p in SOURCES.rglob("*.pxd") if p.with_suffix(".py").exists()]
    assert sorted(_module_name(p) for p in typed) == sorted(COMPILED_MODULES)


def test_core_names_what_is_loaded() -> None:
    extension = [
        isinstance(sys.modules[name].__loader__, importlib.machinery.ExtensionFileLoader)
        for name in COMPILED_MODULES
    ]
    assert extension == [asyncore_on_asyncio.CORE == "compiled"] * len(COMPILED_MODULES)


def _core_of_a_new_process(env_value: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != NO_EXTENSIONS_ENV_VAR}
    if env_value is not None:
        env[NO_EXTENSIONS_ENV_VAR] = env_value
    code = (
        "import sys, asyncore_on_asyncio as a; from asyncore_on_asyncio._core import COMPILED_MODULES as M; "
        "print(a.CORE, *sorted({sys.modules[m].__file__.rsplit('.', 1)[1] for m in M}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_variable_forces_the_pure_engine(value: str) -> None:
    assert _core_of_a_new_process(value) == ["pure", "py"]


@pytest.mark.parametrize("value", [None, "", "0"])
def test_without_the_variable_the_installed_core_runs(value: str | None) -> None:
    expected = ["compiled", "so"] if _compiled_modules_installed() else ["pure", "py"]
    assert _core_of_a_new_process(value) == expected


def _compiled_modules_installed() -> bool:
    """Is there an extension module for this interpreter beside each compiled module's source?"""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in COMPILED_MODULES:
        path = INSTALLED.joinpath(*name.split(".")[1:])
        if path.is_dir():
            path = path / "__init__"
        if not path.with_suffix(suffix).exists():
            return False
    return True


# -- builds -------------------------------------------------------------------------------

_BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE")


def _source_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in _BUILD_FILES:
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__")
    shutil.copytree(REPO / "build_support", src / "build_support", ignore=ignore)
    shutil.copytree(SOURCES, src / "asyncore_on_asyncio", ignore=ignore)
    return src


def _build_wheel(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    pytest.importorskip("setuptools", reason="the test extra installs setuptools for the builds")
    src = _source_copy(tmp_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps",
         "--no-cache-dir", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    return result, [wheel.name, *zipfile.ZipFile(wheel).namelist()]


@needs_sources
@once_per_interpreter
@pytest.mark.timeout(600)
def test_the_variable_at_build_time_makes_a_pure_wheel(tmp_path: Path) -> None:
    result, (name, *files) = _build_wheel(tmp_path, **{NO_EXTENSIONS_ENV_VAR: "1"})
    assert name.endswith("-py3-none-any.whl")
    assert not [f for f in files if f.endswith((".so", ".c", ".pxd"))]
    assert "asyncore_on_asyncio/_scan.py" in files
    assert f"building the pure-Python engine ({NO_EXTENSIONS_ENV_VAR} is set)" in result.stdout + result.stderr


@needs_sources
@once_per_interpreter
@pytest.mark.timeout(600)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the core is compiled on Linux only")
def test_a_compile_that_fails_installs_the_pure_engine(tmp_path: Path) -> None:
    pytest.importorskip("Cython", reason="the test extra installs Cython for the builds")
    result, (_, *files) = _build_wheel(tmp_path, CC="false", LDSHARED="false")
    assert not [f for f in files if f.endswith(".so")]
    assert "asyncore_on_asyncio/_scan.py" in files
    output = result.stdout + result.stderr
    assert "asyncore-on-asyncio: building the pure-Python engine (compiling the core failed" in output
