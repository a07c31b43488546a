"""Helpers shared by the reliability tests (not a test module)."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import helpers

__all__ = [
    "collapse_runs",
    "fd_limit",
    "read_available",
    "registrations",
    "sender",
    "vm_rss_kib",
    "wait_for_error",
]

DEADLINE = 10.0
"""Seconds any single wait may take before the test fails."""


def registrations() -> int:
    """How many fds the calling thread's engine still has registered with its event loop."""
    return helpers.registrations()


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


@contextlib.contextmanager
def fd_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit for the duration, then restore it.
    Fails the test, saying why, if even the hard limit is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target < needed:
        pytest.fail(
            f"this test needs {needed} file descriptors, but RLIMIT_NOFILE's hard limit is"
            f" {hard}; raise it (ulimit -Hn, or LimitNOFILE= for a service)",
            pytrace=False,
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def vm_rss_kib() -> int:
    """This process's resident set size (VmRSS in /proc/self/status), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def sender(sock: socket.socket, data: bytes, chunk: int = 1 << 16) -> Callable[[], bool]:
    """A pump for run_until predicates: each call writes as much of ``data`` as non-blocking
    ``sock`` takes now; returns True once all of it is written."""
    view = memoryview(data)
    sent = 0

    def pump() -> bool:
        nonlocal sent
        while sent < len(view):
            try:
                sent += sock.send(view[sent : sent + chunk])
            except BlockingIOError:
                return False
        return True

    return pump
