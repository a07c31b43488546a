"""Suite-wide fixtures: every test that touches an event loop runs once per event-loop
kind, and every test is checked for lost loop exceptions, leftover dispatchers and leaked
file descriptors.

Loop kinds
    Every test is collected twice, with ids ``[asyncio]`` and ``[uvloop]``, unless it is
    marked ``loop_free`` (below); where uvloop is not installed (Windows: it does not
    exist there) once, with id ``[asyncio]``.  The asyncio loop is the engine's default
    (``asyncio_factory()``: a ``SelectorEventLoop`` on Windows).
    * Plain tests are parametrised through the autouse fixture ``loop_kind``
      (``pytest_generate_tests`` below does the parametrising, so that async tests are
      not parametrised a second time).
    * Async tests (``@pytest.mark.asyncio``) are parametrised by pytest-asyncio itself,
      from the ``pytest_asyncio_loop_factories`` hook below; their event loop is made by
      the same factory. ``loop_kind`` reads which one it got. One kind only:
      ``@pytest.mark.asyncio(loop_factories=["uvloop"])``.
    In both cases ``asyncore_on_asyncio.set_loop_factory`` gets that kind's factory, so
    any loop the engine makes for the test is of that kind too.

Loop-free tests
    A test that never makes or runs an event loop (API surface, packaging, argument
    parsing...) is marked ``@pytest.mark.loop_free`` (or its class, or its module through
    ``pytestmark``) and collected once, without a loop-kind id; the guards below still
    apply. The marker is checked, not trusted: while such a test runs, the engine's loop
    factory, ``asyncio.new_event_loop``, ``uvloop.new_event_loop`` and the constructors
    of both kinds of loop (``asyncio.BaseEventLoop``, ``uvloop.Loop``) raise
    ``LoopFreeViolation``, and any attempt, even one the test swallowed or made in
    another thread, fails the test at teardown: "marked loop_free but made an event
    loop; remove the marker". A loop-free test may not ask for ``loop_kind`` (itself or
    through a fixture), and an async test cannot be loop-free. A test whose subprocess
    runs on the loop kind under test (``--loop``, ``ASYNCORE_ON_ASYNCIO_LOOP``) is not
    loop-free: it takes ``loop_kind``; one whose subprocess ignores the kind is.

Every loop made by those factories runs in debug mode and has a recording exception
handler; a test fails if anything reached it (asyncio logs and swallows exceptions
raised in reader/writer callbacks, so without this a bug would pass silently). A test
that provokes handler calls on purpose takes the ``loop_exceptions`` fixture, checks
the list, and clears it.

The engine core
    The suite runs on whichever core ``asyncore_on_asyncio.CORE`` names (the compiled one
    where an install built it; ``ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1`` forces the pure
    one), and says which in its header.  A compiled module older than its ``.py`` or
    ``.pxd`` (an edit not rebuilt with ``pip install -e .``) stops the session at once:
    the tests would otherwise test the old code.

Teardown order (reverse of setup): ``close_event_loop()`` and ``set_loop_factory(None)``
(for a loop-free test: the patches undone, then "made no loop?") -> socket map empty? ->
no new fds? -> no handler calls? The fd check is exact per test,
so a fixture must not keep an fd open across tests (async loops are function-scoped:
``asyncio_default_*_loop_scope = "function"`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import contextlib
import gc
import inspect
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import asyncore_on_asyncio
from asyncore_on_asyncio._core import COMPILED_MODULES
from asyncore_on_asyncio._engine import asyncio_factory

try:
    import uvloop
except ImportError:  # Windows: uvloop does not exist there; every test runs on asyncio only
    uvloop = None  # type: ignore[assignment]

LOOP_KINDS = ("asyncio", "uvloop") if uvloop is not None else ("asyncio",)

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


# The engine's default (asyncio.new_event_loop; a SelectorEventLoop on Windows), wrapped
# here, not passed as None, so that its loops get the recording handler.
LOOP_FACTORIES: Mapping[str, LoopFactory] = {
    "asyncio": _monitored(asyncio_factory(), "asyncio"),
    **({"uvloop": _monitored(uvloop.new_event_loop, "uvloop")} if uvloop is not None else {}),
}


# --------------------------------------------------------------------------- parametrising

LOOP_FREE = "loop_free"  # the marker (registered in pyproject.toml)
NO_LOOP_KIND = "none"  # what loop_kind is for a loop-free test (which may not ask for it)


def pytest_report_header(config: pytest.Config) -> str:
    return f"asyncore_on_asyncio core: {asyncore_on_asyncio.CORE}"


def _stale_compiled_modules() -> list[str]:
    """Compiled engine modules older than the ``.py`` or ``.pxd`` they were built from, in a
    source tree built in place (a ``.pxd`` beside them: an installed wheel has none, and
    its files' times are those of the unpacking)."""
    if asyncore_on_asyncio.CORE != "compiled":
        return []
    stale = []
    for name in COMPILED_MODULES:
        built = Path(sys.modules[name].__file__ or "")
        base = built.parent / built.name.split(".")[0]
        sources = [base.with_suffix(".py"), base.with_suffix(".pxd")]
        if sources[1].exists() and any(src.stat().st_mtime > built.stat().st_mtime for src in sources):
            stale.append(str(built))
    return stale


def pytest_configure(config: pytest.Config) -> None:
    stale = _stale_compiled_modules()
    if stale:
        pytest.exit(
            f"compiled engine modules older than their sources: {', '.join(stale)}; rebuild them "
            "with: pip install -e . (or run with ASYNCORE_ON_ASYNCIO_NO_EXTENSIONS=1)",
            returncode=4,
        )
    # libuv opens a process-wide signal pipe with its first loop and keeps it open; open
    # it now, so that the per-test fd check does not take it for a leak.
    for make_loop in LOOP_FACTORIES.values():
        make_loop().close()
    # A session started as a background job of a non-interactive shell (or under nohup-style
    # wrappers) inherits SIGINT ignored, and Python keeps it so: the tests that interrupt a
    # loop, in this process or in a child, would wait for a signal that never comes.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    if "loop_kind" not in metafunc.fixturenames or _parametrised_by_pytest_asyncio(metafunc):
        return
    if metafunc.definition.get_closest_marker(LOOP_FREE) is not None:
        return  # collected once; loop_kind() forbids event loops while it runs
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
    """fd -> what it is: /proc/self/fd (Linux), else /dev/fd with each fd's identity
    (macOS, the BSDs); nothing where neither exists (Windows: no fd check there)."""
    fds = {}
    if os.path.isdir("/proc/self/fd"):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the fd listdir itself used, gone by now
                fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    elif os.path.isdir("/dev/fd"):
        for name in os.listdir("/dev/fd"):
            with contextlib.suppress(OSError):  # likewise
                st = os.fstat(int(name))
                fds[int(name)] = f"dev {st.st_dev} inode {st.st_ino} mode {st.st_mode:o}"
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
    """``"asyncio"`` or ``"uvloop"``: the kind of event loop this test runs on.

    For a test marked ``loop_free``: no kind (``NO_LOOP_KIND``), and no event loop may
    be made until it ends."""
    if request.node.get_closest_marker(LOOP_FREE) is not None:
        misuse = _loop_free_misuse(request.node)
        if misuse:
            pytest.fail(f"{request.node.nodeid} is marked loop_free, but {misuse}", pytrace=False)
        yield from _forbid_event_loops(request.node)
        return
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


# --------------------------------------------------------------------------- loop-free tests


def _forbid_uvloop(
    patch: pytest.MonkeyPatch, refuse_new: LoopFactory, violation: Callable[[str], LoopFreeViolation]
) -> None:
    uvloop_init = uvloop.Loop.__init__

    def refuse_uvloop_loop(self: Any) -> None:
        uvloop_init(self)
        self.close()
        raise violation("uvloop.Loop()")

    patch.setattr(uvloop, "new_event_loop", refuse_new)
    patch.setattr(uvloop.Loop, "__init__", refuse_uvloop_loop)


class LoopFreeViolation(RuntimeError):
    """Raised where a test marked loop_free makes an event loop."""


# Set when a violation was already reported by the setup or call phase (the exception
# reached pytest), so that teardown does not report it a second time.
_violation_reported = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(LoopFreeViolation):
        item.stash[_violation_reported] = True
    return report


def _loop_free_misuse(item: pytest.Item) -> str | None:
    """Why ``item`` cannot be loop-free, or None."""
    if pytest_asyncio.is_async_test(item):
        return "it is an async test: pytest-asyncio runs it on an event loop of each kind"
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "loop_kind" in callspec.params:
        # pytest.param(..., marks=...): the loop kinds were given before that mark applied.
        return "the marker is on a parameter set: mark the test function, its class or module"
    # The test's own arguments, and what each fixture it uses asks for (pytest keeps
    # both in the item's fixture info; without it only the guard below applies).
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    askers = ["the test"] if "loop_kind" in info.argnames else []
    for name, defs in info.name2fixturedefs.items():
        if name != "loop_kind" and defs and "loop_kind" in defs[-1].argnames:
            askers.append(f"fixture {name!r}")
    if askers:
        return (
            f"{' and '.join(askers)} asks for loop_kind: a test that depends on the loop "
            "kind (a subprocess given --loop or ASYNCORE_ON_ASYNCIO_LOOP, say) runs on both "
            "kinds; remove the marker"
        )
    return None


def _forbid_event_loops(item: pytest.Item) -> Iterator[str]:
    """The body of ``loop_kind`` for a loop-free test: every way to make an event loop
    raises LoopFreeViolation and is recorded, and teardown fails the test if one was
    tried (whether or not the test let the exception through)."""
    attempts: list[str] = []
    lock = threading.Lock()

    def violation(how: str) -> LoopFreeViolation:
        where = "".join(traceback.format_stack(limit=8)[:-2])
        thread = threading.current_thread().name
        with lock:
            attempts.append(f"{how} (in thread {thread}), called from:\n{where}")
        return LoopFreeViolation(
            f"{item.nodeid} is marked loop_free but made an event loop ({how}); remove the marker"
        )

    def forbidden(how: str) -> LoopFactory:
        def refuse() -> asyncio.AbstractEventLoop:
            raise violation(how)

        refuse.__name__ = refuse.__qualname__ = "loop_free_refuses_event_loops"
        return refuse

    base_init = asyncio.base_events.BaseEventLoop.__init__

    def refuse_asyncio_loop(self: asyncio.base_events.BaseEventLoop) -> None:
        base_init(self)
        # Closed before it is abandoned, so that its __del__ warns about nothing; the
        # selector subclass never gets to make its selector and self-pipe.
        asyncio.base_events.BaseEventLoop.close(self)
        raise violation(f"{type(self).__name__}()")

    asyncore_on_asyncio.set_loop_factory(forbidden("asyncore_on_asyncio's loop factory"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            refuse_new_asyncio_loop = forbidden("asyncio.new_event_loop()")
            # asyncio.Runner (asyncio.run) calls it as asyncio.events.new_event_loop.
            patch.setattr(asyncio, "new_event_loop", refuse_new_asyncio_loop)
            patch.setattr(asyncio.events, "new_event_loop", refuse_new_asyncio_loop)
            patch.setattr(asyncio.base_events.BaseEventLoop, "__init__", refuse_asyncio_loop)
            if uvloop is not None:
                _forbid_uvloop(patch, forbidden("uvloop.new_event_loop()"), violation)
            yield NO_LOOP_KIND
    finally:
        try:
            asyncore_on_asyncio.close_event_loop()
        finally:
            asyncore_on_asyncio.set_loop_factory(None)
    if attempts and not item.stash.get(_violation_reported, False):
        pytest.fail(
            f"{item.nodeid} is marked loop_free but made an event loop; remove the marker\n\n"
            + "\n".join(attempts),
            pytrace=False,
        )
