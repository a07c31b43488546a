"""Beyond Linux: what macOS/BSD and Windows change, checked here on Linux.

* The event loop: on Windows the default factory makes a ``SelectorEventLoop`` (asyncio's
  default there, the ``ProactorEventLoop``, cannot ``add_reader``); a loop that cannot
  watch fds, simulated by a ``SelectorEventLoop`` whose ``add_reader``/``add_writer``
  raise ``NotImplementedError`` as the proactor's do, gets a clear error from ``loop()``
  and ``serve()``, with either readiness source.
* Readiness without ``select.poll`` (Windows): :class:`SelectPollster` answers as
  ``poll()`` would, from ``select()``, and the fallback source runs on it.
* ``file_dispatcher``/``file_wrapper`` exist only where ``os.name`` is "posix", as in 3.11.
* The simulation itself (``ASYNCORE_TEST_HIDE``, tests/hide/sitecustomize.py):
  in this process and in a subprocess, what it hides is gone, and the package sees it.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import asyncore_on_asyncio
import tests
from asyncore_on_asyncio import _driver, _engine, asyncore
from asyncore_on_asyncio._readiness import READINESS_ENV_VAR, loop_fds, make_source
from asyncore_on_asyncio._readiness.pollster import SelectPollster, new_pollster
from tests.helpers import run_until, socketpair
from tests.hide.sitecustomize import HIDE_ENV_VAR

REPO = Path(__file__).resolve().parent.parent
POLLIN, POLLPRI, POLLOUT, POLLNVAL = 0x001, 0x002, 0x004, 0x020  # Linux's values, ours too

# --------------------------------------------------------------------------- the event loop


class NoFdLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch fds, as Windows' ProactorEventLoop (AbstractEventLoop's methods)."""

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError

    def add_writer(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError


def _assert_explained(exc: BaseException) -> None:
    message = str(exc)
    assert isinstance(exc, NotImplementedError)
    assert "NoFdLoop" in message and "add_reader() is not implemented" in message
    assert "ProactorEventLoop" in message
    assert "set_loop_factory(asyncio.SelectorEventLoop)" in message
    assert isinstance(exc.__cause__, NotImplementedError)


@pytest.fixture(params=["default", "loop-fds"])
def readiness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each readiness source this platform has: epoll (where it exists) and loop-fds."""
    if request.param == "loop-fds":
        monkeypatch.setenv(READINESS_ENV_VAR, "loop-fds")
    return str(request.param)


def test_loop_on_a_loop_that_cannot_watch_fds_explains_cause_and_fix(readiness: str) -> None:
    asyncore_on_asyncio.set_loop_factory(NoFdLoop)
    m: dict[int, Any] = {}
    left, right = socketpair()
    d = asyncore.dispatcher(left, map=m)
    try:
        for _ in range(2):  # again: the failed registration is retried, not taken for done
            with pytest.raises(NotImplementedError) as info:
                asyncore.loop(timeout=0.01, map=m, count=1)
            _assert_explained(info.value)
    finally:
        d.close()
        right.close()
        asyncore_on_asyncio.close_event_loop()


def test_serve_on_a_running_loop_that_cannot_watch_fds_explains_cause_and_fix(readiness: str) -> None:
    m: dict[int, Any] = {}
    left, right = socketpair()
    d = asyncore.dispatcher(left, map=m)
    engines = _engine._engine_list
    try:
        with asyncio.Runner(loop_factory=NoFdLoop) as runner:
            with pytest.raises(NotImplementedError) as info:
                runner.run(asyncore_on_asyncio.serve(m))
        _assert_explained(info.value)
        assert _engine._engine_list == engines  # nothing kept of that loop
    finally:
        d.close()
        right.close()


@pytest.mark.loop_free
def test_default_factory_on_windows_makes_a_selector_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_engine.LOOP_ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    assert _engine.asyncio_factory() is asyncio.SelectorEventLoop
    assert _engine.factory_from_env() is asyncio.SelectorEventLoop
    monkeypatch.setenv(_engine.LOOP_ENV_VAR, "asyncio")
    assert _engine.factory_from_env() is asyncio.SelectorEventLoop
    with pytest.raises(RuntimeError, match="uvloop does not support Windows"):
        _engine.uvloop_factory()
    monkeypatch.setattr(sys, "platform", "linux")
    assert _engine.asyncio_factory() is asyncio.new_event_loop


# --------------------------------------------------------------------------- select() as poll()


def _poll_until(pollster: SelectPollster, fd: int, flag: int) -> dict[int, int]:
    """``pollster.poll()``'s answer once it has ``flag`` for ``fd`` (5 s at most)."""
    deadline = time.monotonic() + 5
    while not (got := dict(pollster.poll(50))).get(fd, 0) & flag:
        assert time.monotonic() < deadline, got
    return got


@pytest.mark.loop_free
def test_select_pollster_answers_as_poll_does() -> None:
    left, right = socketpair()
    try:
        pollster = SelectPollster()
        pollster.register(left.fileno(), POLLIN | POLLPRI | POLLOUT)
        pollster.register(right.fileno(), POLLIN | POLLPRI)
        assert dict(pollster.poll(0)) == {left.fileno(): POLLOUT}
        right.send(b"x", socket.MSG_OOB)  # urgent data alone: the exceptional set only
        assert _poll_until(pollster, left.fileno(), POLLPRI) == {left.fileno(): POLLOUT | POLLPRI}
        right.send(b"y")
        assert _poll_until(pollster, left.fileno(), POLLIN) == {left.fileno(): POLLOUT | POLLIN | POLLPRI}
        pollster.unregister(left.fileno())
        with pytest.raises(KeyError):
            pollster.unregister(left.fileno())
        assert pollster.poll(0) == []
    finally:
        left.close()
        right.close()


@pytest.mark.loop_free
def test_select_pollster_reports_a_closed_fd_as_invalid_and_still_the_others() -> None:
    left, right = socketpair()
    doomed, other = socketpair()
    try:
        pollster = SelectPollster()
        pollster.register(left.fileno(), POLLOUT)
        pollster.register(doomed.fileno(), POLLIN)
        fd = doomed.fileno()
        doomed.close()  # behind the pollster's back: select() alone would fail (EBADF)
        assert dict(pollster.poll(-1)) == {fd: POLLNVAL, left.fileno(): POLLOUT}
    finally:
        for sock in (left, right, doomed, other):
            sock.close()


@pytest.mark.loop_free
def test_select_pollster_with_nothing_to_wait_for_sleeps_the_timeout() -> None:
    started = time.monotonic()
    assert SelectPollster().poll(20) == []
    assert time.monotonic() - started >= 0.019


@pytest.mark.loop_free
def test_new_pollster_is_select_poll_where_it_exists() -> None:
    kind = type(new_pollster())
    assert (kind is SelectPollster) == (not hasattr(select, "poll"))


class _Echo(asyncore.dispatcher_with_send):
    closed = False

    def handle_read(self) -> None:
        self.send(self.recv(4096))

    def handle_close(self) -> None:
        self.closed = True
        self.close()


def test_fallback_source_on_select_serves_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-fd source collecting with select() (as on Windows): an echo, then a socket
    closed behind its dispatcher's back gets handle_close(), as with poll()."""
    monkeypatch.setenv(READINESS_ENV_VAR, "loop-fds")
    monkeypatch.setattr(loop_fds, "new_pollster", SelectPollster)
    m: dict[int, Any] = {}
    left, right = socketpair()
    echo = _Echo(left, map=m)
    try:
        right.sendall(b"ping")
        got = bytearray()

        def echoed() -> bool:
            try:
                got.extend(right.recv(4096))
            except BlockingIOError:
                pass
            return bytes(got) == b"ping"

        run_until(echoed, map=m)
        source = _engine.thread_engine().source
        assert isinstance(source, loop_fds.LoopFdSource)
        assert isinstance(source._pollster, SelectPollster)
        os.close(left.detach())  # closed behind its dispatcher's back: select() alone fails
        run_until(lambda: echo.closed, map=m)
        assert not m
    finally:
        if m:
            echo.close()
        right.close()


# --------------------------------------------------------------------------- the simulation


@pytest.mark.loop_free
def test_the_package_sees_what_this_run_hides() -> None:
    hidden = tests.HIDDEN_NAMES
    for name in hidden:
        assert not hasattr(select, name)
    assert _driver._HAS_POLL == asyncore._HAS_POLL == ("poll" not in hidden) == hasattr(select, "poll")


_CHILD = textwrap.dedent(
    """
    import asyncio, select, selectors, subprocess, sys
    import tests  # what pytest imports first
    import asyncore_on_asyncio
    from asyncore_on_asyncio import _driver
    from asyncore_on_asyncio._readiness import make_source
    from tests.hide.sitecustomize import hide
    loop = asyncio.SelectorEventLoop()
    try:
        source = make_source(loop, lambda: True)
        print(type(source).__name__, type(source._pollster).__name__, _driver._HAS_POLL)
        source.close()
    finally:
        loop.close()
    print(selectors.DefaultSelector.__name__, hasattr(selectors, "EpollSelector"))
    grandchild = "import select; print(hasattr(select, 'epoll'), hasattr(select, 'poll'))"
    print(subprocess.run([sys.executable, "-c", grandchild], capture_output=True, text=True).stdout.strip())
    select.epoll = object()
    try:
        hide(("epoll",))
    except RuntimeError as exc:
        print("refused:", "imported before" in str(exc))
    try:
        import uvloop
    except ImportError:
        print("no uvloop")
    else:
        print("uvloop")
    """
)


@pytest.mark.loop_free
@pytest.mark.parametrize(
    ("hide", "expected"),
    [
        ("epoll", ["LoopFdSource poll True", "EpollSelector True", "False True", "refused: True", "uvloop"]),
        (
            "epoll,poll,uvloop",
            ["LoopFdSource SelectPollster False", "SelectSelector False", "False False", "refused: True", "no uvloop"],
        ),
    ],
)
def test_hiding_applies_in_the_process_and_its_subprocesses(hide: str, expected: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (HIDE_ENV_VAR, READINESS_ENV_VAR, "PYTHONPATH")}
    env[HIDE_ENV_VAR] = hide
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == expected


@pytest.mark.loop_free
def test_hiding_something_unknown_is_refused() -> None:
    env = dict(os.environ, **{HIDE_ENV_VAR: "kqueue"})
    result = subprocess.run(
        [sys.executable, "-c", "import tests"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and "cannot hide ['kqueue']" in result.stderr


def test_make_source_follows_select(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(READINESS_ENV_VAR, raising=False)
    loop = asyncio.SelectorEventLoop()
    try:
        source = make_source(loop, lambda: True)
        try:
            assert isinstance(source, loop_fds.LoopFdSource) == (not hasattr(select, "epoll"))
        finally:
            source.close()
    finally:
        loop.close()


@pytest.mark.loop_free
@pytest.mark.parametrize(("os_name", "expected"), [("posix", "True True"), ("nt", "False False")])
def test_file_dispatcher_exists_where_3_11_had_it(os_name: str, expected: str) -> None:
    """3.11 defined file_wrapper and file_dispatcher only where os.name is "posix"."""
    child = (
        f"import asyncio, os; os.name = {os_name!r}\n"
        "from asyncore_on_asyncio import asyncore\n"
        "print(hasattr(asyncore, 'file_dispatcher'), hasattr(asyncore, 'file_wrapper'))"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
