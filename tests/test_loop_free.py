"""The ``loop_free`` marker of tests/conftest.py, seen from a small inner pytest session.

The inner session runs in a subprocess, in a temporary directory holding a copy of this
suite's conftest.py and pyproject.toml, so that it is configured exactly as the suite is
(strict markers, warnings as errors, the same guards) and cannot disturb this session's
own guards. It runs once for the module; each test checks what it reported (JUnit XML).

The inner session makes event loops of both kinds, but whatever kind this test is given
does not change what it does: the tests here are loop-free themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.loop_free

REPO = Path(__file__).resolve().parent.parent
MESSAGE = "is marked loop_free but made an event loop"
REMEDY = "remove the marker"

SCENARIOS = '''
import asyncio
import contextlib
import socket
import threading

import pytest
import uvloop

import asyncore_on_asyncio
from asyncore_on_asyncio import asyncore

HELD = []


def test_unmarked():
    pass


@pytest.mark.loop_free
def test_marked():
    pass


@pytest.mark.loop_free
@pytest.mark.parametrize("n", [1, 2])
def test_marked_parametrised(n):
    pass


@pytest.mark.loop_free
class TestMarkedClass:
    def test_method(self):
        pass


async def _nothing():
    pass


def _engine_loop():
    a, b = socket.socketpair()
    try:
        channel = asyncore.dispatcher(a)
        try:
            asyncore.loop(timeout=0, count=1)
        finally:
            channel.close()
    finally:
        b.close()


def _run(run):
    coro = _nothing()
    try:
        run(coro)
    finally:
        coro.close()  # never awaited: no RuntimeWarning


WAYS = {
    "asyncio.new_event_loop": lambda: asyncio.new_event_loop(),
    "asyncio.run": lambda: _run(asyncio.run),
    "asyncio.SelectorEventLoop": lambda: asyncio.SelectorEventLoop(),
    "uvloop.new_event_loop": lambda: uvloop.new_event_loop(),
    "uvloop.Loop": lambda: uvloop.Loop(),
    # What uvloop.run() does (itself it would leave its wrapper coroutine unawaited).
    "runner-with-uvloop-factory": lambda: _run(asyncio.Runner(loop_factory=uvloop.Loop).run),
    "engine.get_event_loop": lambda: asyncore_on_asyncio.get_event_loop(),
    "asyncore.loop": _engine_loop,
    "engine-default-factory": lambda: (
        asyncore_on_asyncio.set_loop_factory(None),
        asyncore_on_asyncio.get_event_loop(),
    ),
}


@pytest.mark.loop_free
@pytest.mark.parametrize("way", WAYS)
def test_makes_a_loop(way):
    WAYS[way]()


@pytest.mark.loop_free
def test_swallows_the_error():
    with contextlib.suppress(Exception):
        asyncio.new_event_loop()


@pytest.mark.loop_free
def test_makes_a_loop_in_a_thread():
    def target():
        with contextlib.suppress(Exception):
            uvloop.new_event_loop()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


@pytest.mark.loop_free
def test_leaks_an_fd():
    HELD.append(socket.socket())


@pytest.mark.loop_free
def test_asks_for_loop_kind(loop_kind):
    pass


@pytest.fixture
def kind_dependent(loop_kind):
    return loop_kind


@pytest.mark.loop_free
def test_fixture_asks_for_loop_kind(kind_dependent):
    pass


@pytest.mark.loop_free
@pytest.mark.asyncio
async def test_async():
    pass


@pytest.mark.parametrize("n", [pytest.param(1, marks=pytest.mark.loop_free)])
def test_with_a_loop_free_parameter(n):
    pass


def test_zz_unmarked_tests_make_loops_again(loop_kind):
    """After all of the above, nothing is left patched."""
    while HELD:
        HELD.pop().close()
    asyncio.new_event_loop().close()
    uvloop.new_event_loop().close()
    asyncio.run(_nothing())
    uvloop.run(_nothing())
    _engine_loop()
    assert type(asyncore_on_asyncio.get_event_loop()).__module__.split(".")[0] == loop_kind
'''

WAYS = (
    "asyncio.new_event_loop",
    "asyncio.run",
    "asyncio.SelectorEventLoop",
    "uvloop.new_event_loop",
    "uvloop.Loop",
    "runner-with-uvloop-factory",
    "engine.get_event_loop",
    "asyncore.loop",
    "engine-default-factory",
)

MODULE_MARKED = """
import pytest

pytestmark = pytest.mark.loop_free


def test_one():
    pass


def test_two():
    pass
"""


@dataclass
class Outcome:
    outcome: str  # "passed", "failed" (the test), "error" (setup or teardown), "failed+error"
    text: str  # the failure and error reports


def _outcome(case: ET.Element) -> Outcome:
    found = {word: case.find(tag) for tag, word in (("failure", "failed"), ("error", "error"))}
    reports = {word: element for word, element in found.items() if element is not None}
    if case.find("skipped") is not None:
        return Outcome("skipped", "")
    if not reports:
        return Outcome("passed", "")
    text = "\n".join(f"{e.get('message', '')}\n{e.text or ''}" for e in reports.values())
    return Outcome("+".join(reports), text)


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """{test id as ``module::name[params]``: its outcome} of the inner session."""
    root = tmp_path_factory.mktemp("loop_free")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    tests = root / "inner"
    tests.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_scenarios.py").write_text(textwrap.dedent(SCENARIOS))
    (tests / "test_module_marked.py").write_text(MODULE_MARKED)
    report = root / "report.xml"
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
            f"--junitxml={report}", "inner",
        ],
        cwd=root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # some tests fail
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        module, _, cls = case.get("classname", "").removeprefix("inner.").partition(".")
        name = f"{cls}.{case.get('name')}" if cls else case.get("name")
        outcomes[f"{module}::{name}"] = _outcome(case)
    return outcomes


def test_a_loop_free_test_is_collected_once(inner: dict[str, Outcome]) -> None:
    for test in (
        "test_scenarios::test_marked",
        "test_scenarios::test_marked_parametrised[1]",
        "test_scenarios::test_marked_parametrised[2]",
        "test_scenarios::TestMarkedClass.test_method",
        "test_module_marked::test_one",
        "test_module_marked::test_two",
    ):
        assert inner[test].outcome == "passed", (test, inner[test])
    # ...and no [asyncio]/[uvloop] twins of theirs were collected.
    prefixes = (
        "test_scenarios::test_marked",
        "test_scenarios::TestMarkedClass",
        "test_module_marked::",
    )
    twins = [t for t in inner if t.startswith(prefixes) and ("asyncio" in t or "uvloop" in t)]
    assert not twins


def test_an_unmarked_test_is_collected_once_per_loop_kind(inner: dict[str, Outcome]) -> None:
    assert [t for t in inner if t.startswith("test_scenarios::test_unmarked")] == [
        "test_scenarios::test_unmarked[asyncio]",
        "test_scenarios::test_unmarked[uvloop]",
    ]
    assert {inner[t].outcome for t in inner if t.startswith("test_scenarios::test_unmarked")} == {
        "passed"
    }


def test_the_inner_session_ran_every_scenario(inner: dict[str, Outcome]) -> None:
    expected = {
        "test_scenarios::test_unmarked[asyncio]",
        "test_scenarios::test_unmarked[uvloop]",
        "test_scenarios::test_marked",
        "test_scenarios::test_marked_parametrised[1]",
        "test_scenarios::test_marked_parametrised[2]",
        "test_scenarios::TestMarkedClass.test_method",
        *(f"test_scenarios::test_makes_a_loop[{way}]" for way in WAYS),
        "test_scenarios::test_swallows_the_error",
        "test_scenarios::test_makes_a_loop_in_a_thread",
        "test_scenarios::test_leaks_an_fd",
        "test_scenarios::test_asks_for_loop_kind",
        "test_scenarios::test_fixture_asks_for_loop_kind",
        "test_scenarios::test_async[asyncio]",
        "test_scenarios::test_async[uvloop]",
        "test_scenarios::test_with_a_loop_free_parameter[asyncio-1]",
        "test_scenarios::test_with_a_loop_free_parameter[uvloop-1]",
        "test_scenarios::test_zz_unmarked_tests_make_loops_again[asyncio]",
        "test_scenarios::test_zz_unmarked_tests_make_loops_again[uvloop]",
        "test_module_marked::test_one",
        "test_module_marked::test_two",
    }
    assert set(inner) == expected


@pytest.mark.parametrize("way", WAYS)
def test_a_loop_free_test_that_makes_a_loop_fails(inner: dict[str, Outcome], way: str) -> None:
    """However the loop is made, the test fails (once: not again at teardown) and says so."""
    test = f"test_scenarios::test_makes_a_loop[{way}]"
    result = inner[test]
    assert result.outcome == "failed", result
    assert f"inner/test_scenarios.py::test_makes_a_loop[{way}] {MESSAGE}" in result.text
    assert REMEDY in result.text
    assert "LoopFreeViolation" in result.text


@pytest.mark.parametrize("test", ["test_swallows_the_error", "test_makes_a_loop_in_a_thread"])
def test_a_swallowed_attempt_fails_at_teardown(inner: dict[str, Outcome], test: str) -> None:
    result = inner[f"test_scenarios::{test}"]
    assert result.outcome == "error", result
    assert f"inner/test_scenarios.py::{test} {MESSAGE}; {REMEDY}" in result.text
    assert "new_event_loop()" in result.text  # how, and where from


def test_a_loop_free_test_keeps_the_other_guards(inner: dict[str, Outcome]) -> None:
    result = inner["test_scenarios::test_leaks_an_fd"]
    assert result.outcome == "error", result
    assert "file descriptors leaked" in result.text


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ("test_asks_for_loop_kind", "the test asks for loop_kind"),
        ("test_fixture_asks_for_loop_kind", "fixture 'kind_dependent' asks for loop_kind"),
        ("test_async[asyncio]", "it is an async test"),
        ("test_async[uvloop]", "it is an async test"),
        ("test_with_a_loop_free_parameter[asyncio-1]", "the marker is on a parameter set"),
        ("test_with_a_loop_free_parameter[uvloop-1]", "the marker is on a parameter set"),
    ],
)
def test_a_test_that_needs_a_loop_kind_cannot_be_loop_free(
    inner: dict[str, Outcome], test: str, reason: str
) -> None:
    result = inner[f"test_scenarios::{test}"]
    assert result.outcome == "error", result
    assert f"is marked loop_free, but {reason}" in result.text


def test_nothing_stays_patched(inner: dict[str, Outcome]) -> None:
    for kind in ("asyncio", "uvloop"):
        result = inner[f"test_scenarios::test_zz_unmarked_tests_make_loops_again[{kind}]"]
        assert result.outcome == "passed", result
