"""Suite-wide fixtures: every test runs once per event-loop kind, and is checked for
lost loop exceptions, leftover dispatchers and leaked file descriptors.

Loop kinds
    Every test is collected twice, with ids ``[asyncio]`` and ``[uvloop]``.
    * Plain tests are parametrised through the autouse fixture ``loop_kind``
      (``pytest_generate_tests`` below does the parametrising, so that async tests are
      not parametrised a second time).
    * Async tests (``@pytest.mark.asyncio``) are parametrised by pytest-asyncio itself,
      from the ``pytest_asyncio_loop_factories`` hook below; their event loop is made by
      the same factory. ``loop_kind`` reads which one it got. One kind only:
      ``@pytest.mark.asyncio(loop_factories=["uvloop"])``.
    In both cases ``asyncore_on_asyncio.set_loop_factory`` gets that kind's factory, so
    any loop the engine makes for the test is of that kind too.

Every loop made by those factories runs in debug mode and has a recording exception
handler; a test fails if anything reached it (asyncio logs and swallows exceptions
raised in reader/writer callbacks, so without this a bug would pass silently). A test
that provokes handler calls on purpose takes the ``loop_exceptions`` fixture, checks
the list, and clears it.

Teardown order (reverse of setup): ``close_event_loop()`` and ``set_loop_factory(None)``
-> socket map empty? -> no new fds? -> no handler calls? The fd check is exact per test,
so a fixture must not keep an fd open across tests (async loops are function-scoped:
``asyncio_default_*_loop_scope = "function"`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
import uvloop

import asyncore_on_asyncio

LOOP_KINDS = ("asyncio", "uvloop")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Contexts passed to the exception handler of any loop made by LOOP_FACTORIES.
_handler_calls: list[dict[str, Any]] = []


def _record_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _handler_calls.append(context)
    loop.default_exception_handler(context)  # also log it, for the captured-log report


def _monitored(make_loop: LoopFactory, kind: str) -> LoopFactory:
    def factory() -> asyncio.AbstractEventLoop:
        loop = make_loop()
        loop.set_debug(True)
        loop.set_exception_handler(_record_exception)
        return loop

    factory.__name__ = factory.__qualname__ = f"{kind}_loop_factory"
    return factory


# asyncio.new_event_loop is what the engine uses by default too (set_loop_factory(None));
# it is wrapped here, not passed as None, so that its loops get the recording handler.
LOOP_FACTORIES: Mapping[str, LoopFactory] = {
    "asyncio": _monitored(asyncio.new_event_loop, "asyncio"),
    "uvloop": _monitored(uvloop.new_event_loop, "uvloop"),
}


# --------------------------------------------------------------------------- parametrising


def pytest_configure(config: pytest.Config) -> None:
    # libuv opens a process-wide signal pipe with its first loop and keeps it open; open
    # it now, so that the per-test fd check does not take it for a leak.
    for make_loop in (asyncio.new_event_loop, uvloop.new_event_loop):
        make_loop().close()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """pytest-asyncio hook: run every async test once on each loop kind."""
    return LOOP_FACTORIES


def _parametrised_by_pytest_asyncio(metafunc: pytest.Metafunc) -> bool:
    # In strict mode pytest-asyncio runs exactly the coroutine tests marked asyncio
    # (the mark may come from a class or a module's pytestmark).
    return (
        inspect.iscoroutinefunction(metafunc.function)
        and metafunc.definition.get_closest_marker("asyncio") is not None
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loop_kind" in metafunc.fixturenames and not _parametrised_by_pytest_asyncio(metafunc):
        metafunc.parametrize("loop_kind", LOOP_KINDS, indirect=True)


def _kind_of_async_test(request: pytest.FixtureRequest) -> str:
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    for kind, factory in LOOP_FACTORIES.items():
        if any(value is factory for value in params):
            return kind
    raise pytest.UsageError(f"{request.node.nodeid}: pytest-asyncio gave it no loop factory")


# --------------------------------------------------------------------------- guards


@pytest.fixture
def loop_exceptions() -> Iterator[list[dict[str, Any]]]:
    """Contexts that reached a test loop's exception handler. At teardown it must be
    empty; a test expecting calls asserts on them and then clears the list."""
    _handler_calls.clear()
    yield _handler_calls
    gc.collect()  # "Task was destroyed but it is pending" and friends arrive here
    calls = list(_handler_calls)
    _handler_calls.clear()
    if calls:
        report = "\n\n".join(_format_context(c) for c in calls)
        pytest.fail(
            f"{len(calls)} call(s) reached the loop's exception handler:\n\n{report}",
            pytrace=False,
        )


def _format_context(context: Mapping[str, Any]) -> str:
    lines = [str(context.get("message", "<no message>"))]
    for key, value in context.items():
        if key not in ("message", "exception", "source_traceback"):  # the log shows that
            lines.append(f"  {key}: {value!r}")
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        lines.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return "\n".join(lines)


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself used, gone by now
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def _socket_maps() -> Iterator[tuple[str, dict[int, Any]]]:
    yield "asyncore_on_asyncio.asyncore.socket_map", asyncore_on_asyncio.asyncore.socket_map
    frozen = sys.modules.get("_frozen_asyncore")  # tests.helpers.load_frozen()
    if frozen is not None:
        yield "_frozen_asyncore.socket_map", frozen.socket_map


def _close_quietly(obj: Any) -> None:
    sock = getattr(obj, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed, or a half-dead file_wrapper
            sock.close()


@pytest.fixture
def _leak_guard(loop_exceptions: list[dict[str, Any]]) -> Iterator[None]:
    """At teardown (after the engine loop is closed): socket maps are empty, and no fd
    opened during the test is still open."""
    with warnings.catch_warnings():
        # Objects an earlier (failed) test leaked, freed only now: that test was already
        # reported; don't blame this one.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    before = _open_fds()
    yield
    problems = []
    for name, socket_map in _socket_maps():
        if socket_map:
            problems.append(f"{name} not empty: {socket_map!r}")
            leftovers = list(socket_map.values())
            socket_map.clear()  # so one failure does not cascade into the next tests
            for obj in leftovers:
                _close_quietly(obj)
    gc.collect()
    after = _open_fds()
    leaked = sorted(fd for fd, target in after.items() if before.get(fd) != target)
    if leaked:
        problems.append(
            "file descriptors leaked:\n" + "\n".join(f"  fd {fd} -> {after[fd]}" for fd in leaked)
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def loop_kind(request: pytest.FixtureRequest, _leak_guard: None) -> Iterator[str]:
    """``"asyncio"`` or ``"uvloop"``: the kind of event loop this test runs on."""
    if pytest_asyncio.is_async_test(request.node):
        if hasattr(request, "param"):
            raise pytest.UsageError("async test parametrised twice by loop kind")
        kind = _kind_of_async_test(request)
    else:
        kind = request.param
    asyncore_on_asyncio.set_loop_factory(LOOP_FACTORIES[kind])
    try:
        yield kind
    finally:
        try:
            asyncore_on_asyncio.close_event_loop()
        finally:
            asyncore_on_asyncio.set_loop_factory(None)
