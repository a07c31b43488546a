"""Urgent (out-of-band) TCP data reaches handle_expt, as select()'s exceptional set did."""

from __future__ import annotations

import select
import socket
import time
from types import ModuleType
from typing import Any

import pytest

from asyncore_on_asyncio import asyncore
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
