"""asyncore's error contract: handle_error, ExitNow, KeyboardInterrupt, SystemExit, and
exceptions from predicates; afterwards the map and the engine are consistent."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from asyncore_on_asyncio import asyncore
from tests import helpers
from tests.helpers import run_until, socketpair


class Boom(Exception):
    pass


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socketpair()
    yield a, b
    a.close()
    b.close()


def make_reader(raise_: BaseException | None, trace: list[str]) -> type[asyncore.dispatcher]:
    class Reader(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            trace.append("read")
            self.recv(100)
            if raise_ is not None:
                raise raise_

        def handle_close(self) -> None:
            trace.append("close")
            self.close()

    return Reader


def registrations() -> int:
    return helpers.registrations()


def test_default_handle_error_prints_and_closes(
    pair: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    trace: list[str] = []
    m: dict[int, Any] = {}
    make_reader(Boom("bad data"), trace)(a.dup(), map=m)
    b.send(b"x")
    run_until(lambda: not m, map=m)
    assert trace == ["read", "close"]
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel <")
    assert "(<class 'tests.test_errors.Boom'>:bad data [" in out
    assert "|handle_read|" in out
    assert registrations() == 0


def test_handle_error_runs_inside_except_block(pair: tuple[socket.socket, socket.socket]) -> None:
    """A bare ``raise`` in a user's handle_error re-raises the handler's exception out of loop()."""
    a, b = pair
    seen: list[Any] = []

    class Reraiser(make_reader(Boom("x"), [])):  # type: ignore[misc]
        def handle_error(self) -> None:
            seen.append(sys.exc_info()[0])
            raise

    m: dict[int, Any] = {}
    d = Reraiser(a, map=m)
    b.send(b"x")
    with pytest.raises(Boom):
        asyncore.loop(timeout=2, map=m)
    assert seen == [Boom]
    assert m == {a.fileno(): d}
    # The engine is consistent: the loop runs again and serves the dispatcher.
    b.send(b"y")
    with pytest.raises(Boom):
        asyncore.loop(timeout=2, map=m)
    d.del_channel()
    assert registrations() == 0


@pytest.mark.parametrize("exc", [asyncore.ExitNow("stop"), KeyboardInterrupt(), SystemExit(3)])
@pytest.mark.parametrize("use_poll", [False, True])
def test_reraised_exceptions_propagate(
    pair: tuple[socket.socket, socket.socket], exc: BaseException, use_poll: bool
) -> None:
    a, b = pair
    trace: list[str] = []
    m: dict[int, Any] = {}
    d = make_reader(exc, trace)(a, map=m)
    b.send(b"x")
    with pytest.raises(type(exc)):
        asyncore.loop(timeout=2, use_poll=use_poll, map=m)
    assert trace == ["read"]  # not handle_error, not closed
    assert m == {a.fileno(): d}
    # loop() can run again: new data is served.
    b.send(b"y")
    with pytest.raises(type(exc)):
        asyncore.loop(timeout=2, use_poll=use_poll, map=m)
    assert trace == ["read", "read"]
    d.del_channel()


@pytest.mark.parametrize("predicate", ["readable", "writable"])
def test_predicate_exception_propagates(pair: tuple[socket.socket, socket.socket], predicate: str) -> None:
    a, _ = pair

    class Broken(asyncore.dispatcher):
        pass

    def fail(self: Any) -> bool:
        raise Boom(predicate)

    setattr(Broken, predicate, fail)
    m: dict[int, Any] = {}
    ok = make_reader(None, [])(a.dup(), map=m)
    asyncore.loop(timeout=0, map=m, count=1)
    before = registrations()
    broken = Broken(a, map=m)
    with pytest.raises(Boom, match=predicate):
        asyncore.loop(timeout=0, map=m, count=1)
    assert registrations() == before  # nothing half-applied
    broken.del_channel()
    asyncore.loop(timeout=0, map=m, count=1)
    ok.close()
    assert registrations() == 0


def test_exception_in_handle_error_propagates(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair

    class Worse(make_reader(Boom("first"), [])):  # type: ignore[misc]
        def handle_error(self) -> None:
            raise ValueError("second")

    m: dict[int, Any] = {}
    d = Worse(a, map=m)
    b.send(b"x")
    with pytest.raises(ValueError, match="second") as info:
        asyncore.loop(timeout=2, map=m)
    assert isinstance(info.value.__context__, Boom)
    d.del_channel()


def test_repr_failure_in_handle_error(
    pair: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair

    class BadRepr(make_reader(Boom("x"), [])):  # type: ignore[misc]
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    m: dict[int, Any] = {}
    BadRepr(a, map=m)
    b.send(b"x")
    run_until(lambda: not m, map=m)
    assert "<__repr__(self) failed for object at " in capsys.readouterr().out


def test_real_sigint_during_loop(pair: tuple[socket.socket, socket.socket]) -> None:
    """A real SIGINT while loop() waits raises KeyboardInterrupt; the loop can run again."""
    a, b = pair
    trace: list[str] = []
    m: dict[int, Any] = {}
    d = make_reader(None, trace)(a, map=m)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncore.loop(timeout=5, map=m)
    finally:
        timer.join()
    b.send(b"x")
    run_until(lambda: trace == ["read"], map=m)
    d.close()
    assert registrations() == 0


@pytest.mark.loop_free
def test_compact_traceback() -> None:
    def inner() -> None:
        raise Boom("deep")

    try:
        inner()
    except Boom:
        (file, function, line), t, v, info = asyncore.compact_traceback()
    assert function == "inner" and file == __file__ and line.isdigit()
    assert t is Boom and str(v) == "deep"
    assert info.count("[") == 2 and "|test_compact_traceback|" in info
    with pytest.raises(AssertionError, match="traceback does not exist"):
        asyncore.compact_traceback()


def test_close_all(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    m: dict[int, Any] = {}
    d1 = make_reader(None, [])(a, map=m)
    d2 = make_reader(None, [])(b.dup(), map=m)
    asyncore.loop(timeout=0, map=m, count=1)
    asyncore.close_all(m)
    assert m == {}
    assert d1.socket.fileno() == -1 and d2.socket.fileno() == -1
    assert registrations() == 0

    class Stubborn:
        def close(self) -> None:
            raise ValueError("no")

    m2: dict[int, Any] = {1: Stubborn()}
    with pytest.raises(ValueError):
        asyncore.close_all(m2)
    asyncore.close_all(m2, ignore_all=True)
    assert m2 == {}
