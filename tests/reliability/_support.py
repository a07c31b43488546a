"""Helpers shared by the reliability tests (not a test module)."""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from asyncore_on_asyncio import _engine

__all__ = ["collapse_runs", "read_available", "registrations", "wait_for_error"]

DEADLINE = 10.0
"""Seconds any single wait may take before the test fails."""


def registrations() -> int:
    """How many fds the calling thread's engine still has registered with its event loop."""
    return len(_engine.current_engine().registry)


def wait_for_error(sock: socket.socket, deadline: float = DEADLINE) -> None:
    """Block (outside any event loop) until the kernel reports POLLERR or POLLHUP on ``sock``:
    the peer's RST (or FIN on both halves) has been processed."""
    pollster = select.poll()
    pollster.register(sock, select.POLLERR | select.POLLHUP)
    end = time.monotonic() + deadline
    while True:
        events = pollster.poll(10)
        if any(flags & (select.POLLERR | select.POLLHUP) for _, flags in events):
            return
        if time.monotonic() > end:
            raise AssertionError(f"fd {sock.fileno()}: no POLLERR/POLLHUP within {deadline} s")


def read_available(sock: socket.socket, into: bytearray) -> bool:
    """Append whatever non-blocking ``sock`` holds now to ``into``; True once it saw EOF."""
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return False
        if not data:
            return True
        into += data


def collapse_runs(trace: list[tuple[Any, ...]], names: set[str]) -> list[tuple[Any, ...]]:
    """Replace each run of consecutive I/O events ``(role, name, ...)`` with ``name`` in
    ``names`` by one ``(role, name + "*")``: how a stream is cut into send()/recv() calls
    depends on the kernel's timing, the events around it do not."""
    out: list[tuple[Any, ...]] = []
    for event in trace:
        if len(event) >= 2 and event[1] in names:
            marker = (event[0], event[1] + "*")
            if not out or out[-1] != marker:
                out.append(marker)
        else:
            out.append(event)
    return out
