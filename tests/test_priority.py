"""Urgent (out-of-band) TCP data reaches handle_expt, as select()'s exceptional set did."""

from __future__ import annotations

import select
import socket
import time
from types import ModuleType
from typing import Any

import pytest

from asyncore_on_asyncio import asyncore
from tests import helpers
from tests.helpers import load_frozen, socketpair

pytestmark = pytest.mark.skipif(
    not hasattr(select, "epoll"), reason="urgent data is watched with epoll (Linux only)"
)


def urgent_scenario(module: ModuleType, use_poll: bool) -> list[Any]:
    """Normal data, then an urgent byte, then normal data; returns the callback trace."""
    a, b = socketpair()
    trace: list[Any] = []

    class Receiver(module.dispatcher):  # type: ignore[name-defined,misc]
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            trace.append(("read", self.recv(100)))

        def handle_expt(self) -> None:
            trace.append(("expt", self.socket.recv(1, socket.MSG_OOB)))

    m: dict[int, Any] = {}
    d = Receiver(a, map=m)
    try:
        for payload, flags in ((b"one", 0), (b"!", socket.MSG_OOB), (b"two", 0)):
            b.send(payload, flags)
            deadline = time.monotonic() + 5
            before = len(trace)
            while len(trace) == before and time.monotonic() < deadline:
                module.loop(timeout=0.05, use_poll=use_poll, map=m, count=1)
        # Give any spurious extra event a chance to show up.
        module.loop(timeout=0.05, use_poll=use_poll, map=m, count=3)
    finally:
        d.close()
        b.close()
    return trace


@pytest.mark.parametrize("use_poll", [False, True])
def test_urgent_data_calls_handle_expt(use_poll: bool) -> None:
    trace = urgent_scenario(asyncore, use_poll)
    assert ("expt", b"!") in trace
    assert [t for t in trace if t[0] == "read"] == [("read", b"one"), ("read", b"two")]


@pytest.mark.parametrize("use_poll", [False, True])
def test_urgent_data_trace_matches_stdlib(use_poll: bool) -> None:
    frozen, _ = load_frozen()
    assert urgent_scenario(asyncore, use_poll) == urgent_scenario(frozen, use_poll)


def test_unhandled_urgent_data_warns_like_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = socketpair()

    class Plain(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(100)

    m: dict[int, Any] = {}
    d = Plain(a, map=m)
    d.ignore_log_types = frozenset()
    b.send(b"!", socket.MSG_OOB)
    out = ""
    deadline = time.monotonic() + 5
    while "priority" not in out and time.monotonic() < deadline:
        asyncore.loop(timeout=0.05, map=m, count=1)
        out += capsys.readouterr().out
    d.close()
    b.close()
    assert "warning: unhandled incoming priority event" in out


def _expt_handler(self: Any) -> None:
    self.socket.recv(1, socket.MSG_OOB)


@pytest.mark.parametrize(
    ("setup", "watched"),
    [
        ("stock", False),
        ("class handle_expt", True),
        ("class handle_expt_event", True),
        ("class log_info", True),
        ("instance handle_expt", True),
        ("instance ignore_log_types", True),
    ],
)
def test_urgent_data_is_watched_only_where_observable(setup: str, watched: bool) -> None:
    """A dispatcher whose urgent-data handling is 3.11's silent default is not woken for it.

    3.11 calls handle_expt(), which logs a warning that ignore_log_types drops: nothing
    observable, so the fd is not watched for urgent data (one epoll registration less
    per connection).  Any override makes it observable, and the fd is watched.
    """
    namespace: dict[str, Any] = {"writable": lambda self: False}
    if setup.startswith("class "):
        name = setup.split()[1]
        namespace[name] = _expt_handler if name != "log_info" else lambda self, message, type="info": None
    cls = type("Receiver", (asyncore.dispatcher,), namespace)
    a, b = socketpair()
    m: dict[int, Any] = {}
    d = cls(a, map=m)
    if setup == "instance handle_expt":
        d.handle_expt = lambda: None
    elif setup == "instance ignore_log_types":
        d.ignore_log_types = frozenset()
    try:
        asyncore.loop(timeout=0.01, map=m, count=1)
        held = helpers.watched(a.fileno())
        assert held is not None and held[0] is d and "read" in held[1]
        assert ("urgent" in held[1]) is watched
    finally:
        d.close()
        b.close()
