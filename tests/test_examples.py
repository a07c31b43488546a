"""Every script in ``examples/`` runs, as a subprocess, on both event loops.

Legacy-style examples (plain ``import asyncore`` / ``import asynchat``) are run the way
their docstrings say: ``python -m asyncore_on_asyncio --loop KIND script.py``. The others
import ``asyncore_on_asyncio`` and get the loop kind from ``ASYNCORE_ON_ASYNCIO_LOOP``
(``coexistence.py`` from its ``--loop`` argument). Each run uses ``-X dev -W error`` and a
temporary working directory, must exit 0 within ``RUN_TIMEOUT`` seconds, must print the
expected result, and must leave nothing alarming on stderr (a traceback, an unraisable
exception, a ResourceWarning, a task that was never awaited...).

The migration steps must all print the same transcript: the wire behaviour of the
program does not change while it is migrated. Legacy examples also run on the reference
asyncore (Python 3.11's own, or the ``pyasyncore`` copy), where they must print the same.

``test_every_example_is_covered`` fails when a script is added to ``examples/`` without
being added to ``ALL_EXAMPLES`` (and so to a test) here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
RUN_TIMEOUT = 30.0  # seconds; every example finishes in about one

LOOP_ENV_VAR = "ASYNCORE_ON_ASYNCIO_LOOP"

# Signs on stderr that something went wrong even though the exit status is 0.
ALARMS = (
    "Traceback (most recent call last)",
    "Exception ignored",
    "Exception in callback",
    "ResourceWarning",
    "was never retrieved",
    "was never awaited",
    "Task was destroyed",
    "uncaptured python exception",
)


@dataclass(frozen=True)
class Example:
    path: str  # relative to examples/
    legacy: bool  # imports plain asyncore/asynchat; run it via python -m asyncore_on_asyncio


HTTP_CLIENT = Example("pymotw/asyncore_http_client.py", legacy=True)
ECHO_SERVER = Example("pymotw/asyncore_echo_server.py", legacy=True)
HOST_LOOP = Example("pymotw/asyncore_loop.py", legacy=True)
FILE_DISPATCHER = Example("pymotw/asyncore_file_dispatcher.py", legacy=True)
CHAT_SERVER = Example("asynchat_chat_server.py", legacy=True)
COEXISTENCE = Example("coexistence.py", legacy=False)
MIGRATION_STEPS = (
    Example("migration/step0_unchanged/echo_app.py", legacy=True),
    Example("migration/step1_import_swap/echo_app.py", legacy=False),
    Example("migration/step2_asyncio_owns_loop/echo_app.py", legacy=False),
    Example("migration/step3_handler_on_streams/echo_app.py", legacy=False),
    Example("migration/step3_handler_on_streams/echo_app_protocol.py", legacy=False),
    Example("migration/step4_pure_asyncio/echo_app.py", legacy=False),
)
PURE_ASYNCIO = MIGRATION_STEPS[-1]
# Steps that run their own asyncio.Runner report its loop on stderr ("event loop: uvloop").
REPORTS_LOOP = frozenset(MIGRATION_STEPS[2:])

ALL_EXAMPLES = (
    HTTP_CLIENT,
    ECHO_SERVER,
    HOST_LOOP,
    FILE_DISPATCHER,
    CHAT_SERVER,
    COEXISTENCE,
    *MIGRATION_STEPS,
)
LEGACY_EXAMPLES = tuple(example for example in ALL_EXAMPLES if example.legacy)


# --------------------------------------------------------------------------- running


def _env(loop_kind: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(LOOP_ENV_VAR, None)
    env.pop("PYTHONWARNINGS", None)
    if loop_kind is not None:
        env[LOOP_ENV_VAR] = loop_kind
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in examples/pymotw
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    report = f"{' '.join(argv)}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"exit status {result.returncode}: {report}"
    alarms = [alarm for alarm in ALARMS if alarm in result.stderr or alarm in result.stdout]
    assert not alarms, f"{alarms} in the output of {report}"
    return result


def run_example(
    example: Example, loop_kind: str, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``example`` on ``loop_kind`` the way its docstring says."""
    script = str(EXAMPLES / example.path)
    python = [sys.executable, "-X", "dev", "-W", "error"]
    if example.legacy:
        argv = [*python, "-m", "asyncore_on_asyncio", "--loop", loop_kind, script, *args]
        return _run(argv, _env(None), cwd)
    return _run([*python, script, *args], _env(loop_kind), cwd)


def run_on_reference(example: Example, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a legacy example directly, on the reference asyncore/asynchat."""
    assert example.legacy
    argv = [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning"]
    return _run([*argv, str(EXAMPLES / example.path)], _env(None), cwd)


# --------------------------------------------------------------------------- expectations

PAGE_SIZES = {"small.html": 1_000, "large.html": 120_000}  # PAGES in asyncore_http_client.py


def downloads(stdout: str) -> dict[str, int]:
    """``{page: size}`` from the ``URL got N bytes`` lines."""
    found = re.findall(r"^http://127\.0\.0\.1:\d+/(\S+) got (\d+) bytes$", stdout, re.MULTILINE)
    return {page: int(size) for page, size in found}


def expected_file_reads() -> list[int]:
    size = (EXAMPLES / "pymotw" / "lorem.txt").stat().st_size
    reads = [256] * (size // 256)
    if size % 256:
        reads.append(size % 256)
    return [*reads, 0]  # recv() returns b"" at end of file, after handle_close()


CHAT_TRANSCRIPT = """\
--- the server saw ---
(new): NICK alice
(new): NICK bob
alice: SAY hi bob
bob: SAY hello alice
bob: WHO
bob: QUIT
alice: QUIT
room is empty, closing the listening socket
--- alice saw ---
-> NICK alice
<- * welcome alice, 1 online
<- * bob joined
-> SAY hi bob
<- <bob> hello alice
<- * bob left
-> QUIT
<- * bye alice
connection closed by the server
--- bob saw ---
-> NICK bob
<- * welcome bob, 2 online
<- <alice> hi bob
-> SAY hello alice
-> WHO
<- * online: alice, bob
-> QUIT
<- * bye bob
connection closed by the server
"""

COEXISTENCE_TRANSCRIPT = """\
client -> ECHO hello
client <- hello
client -> DEFINE asyncore, ECHO meanwhile (in one write)
client <- meanwhile
client <- asyncore = a callback event loop, removed from the standard library in 3.12
client -> FAIL
server: handle_error() got LookupError('the backend is down'); closing the connection
client: server closed the connection
legacy client: connected to the dictionary service
legacy client <- asyncio = the standard library's event loop since 3.4
an asyncio task kept ticking meanwhile: True
done
"""

MIGRATION_TRANSCRIPT = """\
server: listening
server: accepted a connection
client <- 'welcome to the echo server'
client -> 'hello'
server: got 'hello'
client <- 'hello'
client -> 'asyncore on asyncio'
server: got 'asyncore on asyncio'
client <- 'asyncore on asyncio'
client -> 'QUIT'
server: got 'QUIT', saying goodbye
client <- 'bye'
client: server closed the connection
done
"""


def _id(example: Example) -> str:
    return example.path.replace("/", ":")


# --------------------------------------------------------------------------- the examples


def test_http_client(loop_kind: str, tmp_path: Path) -> None:
    result = run_example(HTTP_CLIENT, loop_kind, tmp_path)
    assert downloads(result.stdout) == PAGE_SIZES
    assert "LOOP DONE" in result.stderr  # the debug trace goes to stderr


def test_echo_server(loop_kind: str, tmp_path: Path) -> None:
    result = run_example(ECHO_SERVER, loop_kind, tmp_path)
    size = (EXAMPLES / "pymotw" / "lorem.txt").stat().st_size
    assert result.stdout.splitlines() == [
        f"sent {size} bytes, received {size} bytes",
        "RECEIVED COPY OF MESSAGE",
    ]


def test_host_loop_steps_asyncore(loop_kind: str, tmp_path: Path) -> None:
    result = run_example(HOST_LOOP, loop_kind, tmp_path)
    assert downloads(result.stdout) == PAGE_SIZES
    match = re.search(r"asyncore\.loop\(timeout=1, count=1\) (\d+) times", result.stdout)
    assert match is not None, result.stdout
    # At least: connect, send, read, end of file; and one pass returns as soon as it has
    # dispatched (a few dozen passes for 121 kB), not after waiting out its timeout.
    assert 4 <= int(match.group(1)) <= 500
    assert "loop_counter=1" in result.stderr


def test_file_dispatcher(loop_kind: str, tmp_path: Path) -> None:
    result = run_example(FILE_DISPATCHER, loop_kind, tmp_path)
    reads = [int(n) for n in re.findall(r"^READ: \((\d+)\)", result.stdout, re.MULTILINE)]
    assert reads == expected_file_reads()
    assert result.stdout.endswith("contents match\n")


def test_asynchat_chat_server(loop_kind: str, tmp_path: Path) -> None:
    result = run_example(CHAT_SERVER, loop_kind, tmp_path)
    assert result.stdout == CHAT_TRANSCRIPT


@pytest.mark.parametrize("selected_by", ["argument", "environment"])
def test_coexistence(loop_kind: str, tmp_path: Path, selected_by: str) -> None:
    if selected_by == "argument":
        argv = [sys.executable, "-X", "dev", "-W", "error", str(EXAMPLES / COEXISTENCE.path)]
        result = _run([*argv, "--loop", loop_kind], _env(None), tmp_path)
    else:
        result = run_example(COEXISTENCE, loop_kind, tmp_path)
    loop_line, refusal, rest = result.stdout.split("\n", 2)
    if loop_kind == "uvloop":
        assert loop_line == "event loop: uvloop"
    else:
        assert loop_line.startswith("event loop: asyncio.")  # asyncio.unix_events
    assert refusal.startswith("asyncore.loop() inside a running loop -> RuntimeError: ")
    assert "serve" in refusal
    assert rest == COEXISTENCE_TRANSCRIPT


@pytest.mark.parametrize("example", MIGRATION_STEPS, ids=_id)
def test_migration_step(example: Example, loop_kind: str, tmp_path: Path) -> None:
    """Every step prints the same transcript: the wire behaviour does not change."""
    result = run_example(example, loop_kind, tmp_path)
    assert result.stdout == MIGRATION_TRANSCRIPT
    if example in REPORTS_LOOP:
        assert f"event loop: {loop_kind}" in result.stderr


@pytest.mark.parametrize("example", LEGACY_EXAMPLES, ids=_id)
def test_legacy_example_on_reference_asyncore(
    example: Example, loop_kind: str, tmp_path: Path
) -> None:
    """On either loop, legacy examples print what they print on 3.11's own asyncore."""
    reference = run_on_reference(example, tmp_path).stdout
    ours = run_example(example, loop_kind, tmp_path).stdout
    if example in (HTTP_CLIENT, HOST_LOOP):  # ports and pass counts differ from run to run
        assert downloads(reference) == downloads(ours) == PAGE_SIZES
    else:
        assert reference == ours


# --------------------------------------------------------------------------- the files


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.loop_free
def test_every_example_is_covered() -> None:
    on_disk = {
        path.relative_to(EXAMPLES).as_posix()
        for path in EXAMPLES.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk == {example.path for example in ALL_EXAMPLES}, (
        "add new examples to ALL_EXAMPLES and to a test; drop deleted ones"
    )


@pytest.mark.loop_free
@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=_id)
def test_example_is_what_its_test_assumes(example: Example) -> None:
    path = EXAMPLES / example.path
    imported = _imported_modules(path)
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    if example.legacy:
        assert imported & {"asyncore", "asynchat"}, "a legacy example imports plain asyncore"
        assert "asyncore_on_asyncio" not in imported
        assert "python -m asyncore_on_asyncio" in docstring, "say how to run it"
    else:
        assert not imported & {"asyncore", "asynchat"}
    if example == PURE_ASYNCIO:
        assert not imported & {"asyncore", "asynchat", "asyncore_on_asyncio"}
    assert "__main__" in path.read_text(encoding="utf-8"), "an example is a runnable script"
