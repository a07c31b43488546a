"""asyncore_on_asyncio.statistics(): what the engine of a loop holds and asked of the kernel.

The suite's counting tests (tests/test_readiness.py, tests/test_loop.py) read it; these
check the snapshot itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import EngineStatistics, asyncore
from tests import helpers
from tests.helpers import socketpair

EXPECTED_SOURCE = "loop-fds" if helpers.fallback_source_forced() else "epoll"


class Reader(asyncore.dispatcher):
    """Wants to read only: idle until its peer sends."""

    def writable(self) -> bool:
        return False


@pytest.mark.loop_free
def test_asking_makes_no_loop() -> None:
    """With no engine loop in this thread and no loop running: nothing, and nothing made."""
    stats = asyncore_on_asyncio.statistics()
    assert stats == EngineStatistics(None, 0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.records = 1  # type: ignore[misc]


def test_counts_a_dispatchers_registration_cycles_and_removal() -> None:
    m: dict[int, Any] = {}
    client, server = socketpair()
    d = Reader(server, m)
    try:
        asyncore.loop(timeout=0, map=m, count=1)
        before = asyncore_on_asyncio.statistics()
        assert before.source == EXPECTED_SOURCE
        assert (before.records, before.maps, before.waiting) == (1, 1, 0)
        assert before.registers >= 1  # the dispatcher's fd is watched for reading
        asyncore.loop(timeout=0, map=m, count=5)
        after = asyncore_on_asyncio.statistics()
        assert helpers.registration_calls(before, after) == (0, 0, 0)
        assert after.polls - before.polls == 5  # one poll per cycle
        d.close()
        closed = asyncore_on_asyncio.statistics()
        assert helpers.registration_calls(after, closed) == (0, 0, 1)
        assert closed.records == 0
    finally:
        d.close()
        client.close()


def test_of_a_given_loop() -> None:
    """``statistics(loop)`` reads that loop's engine; a loop with none gets zeros."""
    m: dict[int, Any] = {}
    client, server = socketpair()
    d = Reader(server, m)
    other = asyncio.new_event_loop()
    try:
        asyncore.loop(timeout=0, map=m, count=1)
        assert asyncore_on_asyncio.statistics(asyncore_on_asyncio.get_event_loop()).records == 1
        assert asyncore_on_asyncio.statistics(other).source is None
    finally:
        other.close()
        d.close()
        client.close()


@pytest.mark.asyncio
async def test_a_waiting_serve_is_counted() -> None:
    """Inside a running loop the default is that loop: a serve() waiting there, its one
    dispatcher registered, counts."""
    m: dict[int, Any] = {}
    client, server = socketpair()
    Reader(server, m)
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    try:
        async with asyncio.timeout(5):
            while (stats := asyncore_on_asyncio.statistics()).records != 1:
                await asyncio.sleep(0)
        assert (stats.source, stats.maps, stats.waiting) == (EXPECTED_SOURCE, 1, 1)
    finally:
        asyncore.close_all(m)
        await asyncio.wait_for(serving, 5)
        client.close()
