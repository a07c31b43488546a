"""Every argument of loop(), poll(), poll2() and readwrite(), judged as 3.11 judged it.

Each call runs on the frozen 3.11 module and on ours, over one map holding a
dispatcher whose socket is always writable: each cycle calls its ``handle_write()``
once, so the number of calls is the number of cycles.  The outcome compared is
(what was raised and its message, or "returned"; cycles run).
"""

from __future__ import annotations

import decimal
import fractions
import select
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from asyncore_on_asyncio._handlers import POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI

from ..helpers import socketpair
from .harness import frozen_modules, our_modules

Call = Callable[[ModuleType, dict[int, Any]], None]
NAN = float("nan")
INF = float("inf")


def outcome(module: ModuleType, call: Call, empty_map: bool = False) -> tuple[str, str, int]:
    mine, peer = socketpair()

    class Counter(module.dispatcher):  # type: ignore[name-defined, misc]
        cycles = 0

        def readable(self) -> bool:
            return False

        def handle_write(self) -> None:
            Counter.cycles += 1

    map: dict[int, Any] = {}
    counter = Counter(mine, map=map)
    try:
        call(module, {} if empty_map else map)
    except Exception as exc:
        return type(exc).__name__, str(exc), Counter.cycles
    finally:
        counter.close()
        peer.close()
    return "returned", "", Counter.cycles


def assert_as_311(call: Call, empty_map: bool = False) -> tuple[str, str, int]:
    expected = outcome(frozen_modules()[0], call, empty_map)
    assert outcome(our_modules()[0], call, empty_map) == expected
    return expected


# Counts that run at least one cycle (on an event loop, so on each loop kind), and counts
# that run none: 0 and below, or rejected before the first cycle (no event loop is made).
COUNTS: list[Any] = [
    1, 2, True, 1.5, 0.5, 2.0, 1e-9, decimal.Decimal("1.5"), fractions.Fraction(5, 2),
]  # fmt: skip
COUNTS_WITHOUT_A_CYCLE: list[Any] = [False, 0, -1, -0.5, NAN, -INF, "2", b"1", [1], 1 + 0j]


def _loop_with_count(count: Any, use_poll: bool) -> tuple[str, str, int]:
    def call(module: ModuleType, map: dict[int, Any]) -> None:
        module.loop(timeout=0, use_poll=use_poll, map=map, count=count)

    return assert_as_311(call)


@pytest.mark.parametrize("count", COUNTS, ids=repr)
def test_loop_count(count: Any, use_poll: bool) -> None:
    result = _loop_with_count(count, use_poll)
    assert result[2] > 0
    if count == 1.5:
        assert result == ("returned", "", 2)


@pytest.mark.loop_free
@pytest.mark.parametrize("count", COUNTS_WITHOUT_A_CYCLE, ids=repr)
def test_loop_count_without_a_cycle(count: Any, use_poll: bool) -> None:
    assert _loop_with_count(count, use_poll)[2] == 0


def test_loop_count_none_and_infinite_run_until_the_map_is_empty(use_poll: bool) -> None:
    for count in (None, INF, 1e300):

        def call(module: ModuleType, map: dict[int, Any], count: Any = count) -> None:
            # Empty the map from a handler after five cycles.
            (obj,) = map.values()
            original = type(obj).handle_write

            def handle_write(self: Any) -> None:
                original(self)
                if type(self).cycles == 5:
                    self.close()

            type(obj).handle_write = handle_write
            module.loop(timeout=0, use_poll=use_poll, map=map, count=count)

        assert assert_as_311(call) == ("returned", "", 5)


# Timeouts that select() or poll() accept (or that only one of them rejects: those cycles
# may run, on an event loop), and timeouts that both reject, before any cycle and without
# an event loop.
TIMEOUTS: list[Any] = [
    0, 0.0, -0.0, 0.001, True, None, -1, -1e-9, -0.0001, 2**31,
    decimal.Decimal("0"), decimal.Decimal("0.5"), fractions.Fraction(0),
]  # fmt: skip
TIMEOUTS_REJECTED_BY_BOTH: list[Any] = [
    NAN, INF, -INF, 1e300, 2**63, 10**10, "1", "0.5", b"1", [1], 1 + 0j,
]  # fmt: skip


def _loop_with_timeout(timeout: Any, use_poll: bool) -> tuple[str, str, int]:
    def call(module: ModuleType, map: dict[int, Any]) -> None:
        module.loop(timeout=timeout, use_poll=use_poll, map=map, count=1)

    return assert_as_311(call)


def _poll_with_timeout(timeout: Any, function: str) -> tuple[str, str, int]:
    def call(module: ModuleType, map: dict[int, Any]) -> None:
        getattr(module, function)(timeout, map)

    return assert_as_311(call)


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
def test_loop_timeout(timeout: Any, use_poll: bool) -> None:
    _loop_with_timeout(timeout, use_poll)


@pytest.mark.loop_free
@pytest.mark.parametrize("timeout", TIMEOUTS_REJECTED_BY_BOTH, ids=repr)
def test_loop_timeout_rejected(timeout: Any, use_poll: bool) -> None:
    raised, _, cycles = _loop_with_timeout(timeout, use_poll)
    assert (raised != "returned", cycles) == (True, 0)


@pytest.mark.parametrize("timeout", TIMEOUTS, ids=repr)
@pytest.mark.parametrize("function", ["poll", "poll2", "poll3"])
def test_poll_timeout(timeout: Any, function: str) -> None:
    _poll_with_timeout(timeout, function)


@pytest.mark.loop_free
@pytest.mark.parametrize("timeout", TIMEOUTS_REJECTED_BY_BOTH, ids=repr)
@pytest.mark.parametrize("function", ["poll", "poll2", "poll3"])
def test_poll_timeout_rejected(timeout: Any, function: str) -> None:
    raised, _, cycles = _poll_with_timeout(timeout, function)
    assert (raised != "returned", cycles) == (True, 0)


@pytest.mark.loop_free
@pytest.mark.parametrize("timeout", [NAN, INF, -1, "1", "0.5", [1], None], ids=repr)
def test_empty_map_judges_only_what_311_judged(timeout: Any, use_poll: bool) -> None:
    """An empty map: loop() and poll() return at once; poll2() still computed
    ``int(timeout * 1000)`` (NaN and infinity raise, ``"1"`` is repeated 1000 times)."""
    for call in (
        lambda module, map: module.loop(timeout, use_poll, map),
        lambda module, map: module.loop(timeout, use_poll, map, "not a count"),
        lambda module, map: module.poll(timeout, map),
        lambda module, map: module.poll2(timeout, map),
    ):
        assert assert_as_311(call, empty_map=True)[2] == 0
    poll2 = assert_as_311(lambda module, map: module.poll2(timeout, map), empty_map=True)
    if timeout is NAN:
        assert poll2[:2] == ("ValueError", "cannot convert float NaN to integer")


class Recorder:
    """Duck-typed as readwrite() needs it; records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def handle_read_event(self) -> None:
        self.calls.append("read")

    def handle_write_event(self) -> None:
        self.calls.append("write")

    def handle_expt_event(self) -> None:
        self.calls.append("expt")

    def handle_close(self) -> None:
        self.calls.append("close")

    def handle_error(self) -> None:
        self.calls.append("error")


FLAGS: list[Any] = [
    0, POLLIN, POLLOUT | POLLPRI, POLLHUP, POLLNVAL | POLLIN,
    -1, True, 1.5, None, "1", decimal.Decimal(1),
]  # fmt: skip


@pytest.mark.loop_free
@pytest.mark.skipif(
    not hasattr(select, "POLLIN"),
    reason="no select.POLL* (Windows): 3.11's readwrite() failed on select.POLLIN there, "
    "so every call went to handle_error(); ours dispatches (MIGRATION.md)",
)
@pytest.mark.parametrize("flags", FLAGS, ids=repr)
def test_readwrite_flags(flags: Any) -> None:
    """A ``flags`` that does not support ``&`` is a handler failure: handle_error()."""
    results = []
    for module in (frozen_modules()[0], our_modules()[0]):
        obj = Recorder()
        module.readwrite(obj, flags)
        results.append(obj.calls)
    assert results[0] == results[1]
