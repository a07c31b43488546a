"""Run one scripted scenario on Python 3.11's asyncore and on ours, and compare.

Theory of operation
-------------------
A *scenario* is a plain function ``scenario(asyncore_mod, asynchat_mod, run)``.  It
builds its dispatcher subclasses from the modules it is given (class factories inside
the function), so the very same code runs once on the frozen stdlib copy (PyPI
``pyasyncore``/``pyasynchat``, loaded under private names) and once on
``asyncore_on_asyncio``.  Every callback of interest appends an event to
``run.trace``; whatever the scenario returns (typically the bytes a plain peer
received) is compared too, and so is everything written to stdout and stderr
(asyncore's ``log_info`` prints to the one, ``log`` to the other), after
:func:`normalise_output`.

Determinism is the scenario's job, and the rules are:

* Only the dispatchers under test live in the map, in a private ``run.map``.  Their
  peers are plain sockets (or pipe ends) driven by the scenario between loop
  cycles, never dispatchers racing each other.
* Before a cycle that must see some data, wait for the *kernel* to hold it
  (:meth:`Run.wait_pending` asks FIONREAD, :meth:`Run.wait_ready` runs ``select``
  on the fd outside the map), then run exactly one cycle (:meth:`Run.step`).
* A cycle in which nothing happens adds nothing to the trace, so waiting loops
  (:meth:`Run.run_until`) may spin any number of times.
* A scenario whose trace legitimately depends on timing (several dispatchers in one
  map exchanging a stream) passes a ``normalise`` function to
  :func:`assert_same_behaviour`, and says in a comment what it throws away.

``readable()``/``writable()`` calls are not traced, except where a scenario counts
them on purpose: how often a loop consults them is only fixed for 3.11 in the
idle-loop scenario.

``DIFFERENTIAL_SELF_CHECK=1 pytest tests/differential`` compares 3.11 with itself:
the check that a new scenario is deterministic, whatever state our engine is in.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import difflib
import fcntl
import io
import os
import pprint
import re
import select
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tests.helpers import listener, load_frozen, socketpair

__all__ = [
    "DEADLINE",
    "STEP_TIMEOUT",
    "Outcome",
    "Run",
    "assert_same_behaviour",
    "frozen_modules",
    "normalise_output",
    "our_modules",
    "run_scenario",
    "tracing",
]

Modules = tuple[ModuleType, ModuleType]
Scenario = Callable[[Any, Any, "Run"], Any]

DEADLINE = 10.0
"""Seconds any single wait in a scenario may take before the scenario fails."""

STEP_TIMEOUT = 2.0
"""``loop(timeout=...)`` for one cycle that is known to have an event ready."""

SPIN_TIMEOUT = 0.02
"""``loop(timeout=...)`` for the cycles of :meth:`Run.run_until`."""

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------- modules


_frozen: Modules | None = None


def frozen_modules() -> Modules:
    """The frozen 3.11 ``(asyncore, asynchat)`` pair."""
    global _frozen
    if _frozen is None:
        _frozen = load_frozen()
    return _frozen


def our_modules() -> Modules:
    """``asyncore_on_asyncio``'s ``(asyncore, asynchat)`` pair.

    With ``DIFFERENTIAL_SELF_CHECK=1`` in the environment, 3.11's pair instead: every
    test then compares 3.11 with itself, which proves the scenarios deterministic
    independently of our engine.
    """
    if os.environ.get("DIFFERENTIAL_SELF_CHECK"):
        return frozen_modules()
    from asyncore_on_asyncio import asynchat, asyncore

    return asyncore, asynchat


# --------------------------------------------------------------------------- the run


def _pending(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def _fileno(obj: Any) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


class Run:
    """A scenario's private map, its trace, and its plain (non-dispatcher) resources."""

    def __init__(self, asyncore_mod: ModuleType, use_poll: bool) -> None:
        self.asyncore = asyncore_mod
        self.use_poll = use_poll
        self.map: dict[int, Any] = {}
        self.trace: list[tuple[Any, ...]] = []
        self._sockets: list[socket.socket] = []
        self._fds: list[int] = []

    # -- tracing and stepping

    def record(self, *event: Any) -> None:
        self.trace.append(event)

    def step(self, count: int = 1, timeout: float = STEP_TIMEOUT) -> None:
        """Run ``count`` cycles of the module's ``loop()`` on this run's map."""
        self.asyncore.loop(timeout=timeout, use_poll=self.use_poll, map=self.map, count=count)

    def run_until(
        self, predicate: Callable[[], bool], what: str, deadline: float = DEADLINE
    ) -> None:
        """Run single cycles until ``predicate()`` holds; fail after ``deadline`` seconds."""
        end = time.monotonic() + deadline
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for: {what}; trace so far: {self.trace}")
            self.step(timeout=SPIN_TIMEOUT)

    # -- waiting for the kernel, outside the map

    def wait_pending(self, obj: Any, nbytes: int, deadline: float = DEADLINE) -> None:
        """Wait until at least ``nbytes`` can be read from ``obj`` (socket, fd, file_wrapper)."""
        fd = _fileno(obj)
        end = time.monotonic() + deadline
        while _pending(fd) < nbytes:
            if time.monotonic() > end:
                raise AssertionError(f"fd {fd}: {_pending(fd)} bytes pending, wanted {nbytes}")
            select.select([fd], [], [], 0.01)
            time.sleep(0.001)

    def wait_ready(
        self,
        obj: Any,
        *,
        readable: bool = False,
        writable: bool = False,
        deadline: float = DEADLINE,
    ) -> None:
        """``select()`` on one fd, outside the map, until it is ready as asked."""
        fd = _fileno(obj)
        r, w, _ = select.select([fd] if readable else [], [fd] if writable else [], [], deadline)
        if (readable and not r) or (writable and not w):
            raise AssertionError(f"fd {fd} not ready (readable={readable}, writable={writable})")

    # -- plain resources, closed by the harness

    def keep(self, sock: socket.socket) -> socket.socket:
        self._sockets.append(sock)
        return sock

    def keep_fd(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close_fd(self, fd: int) -> None:
        """Close a kept fd now (and forget it: its number may be reused at once)."""
        self._fds.remove(fd)
        os.close(fd)

    def listener(self, backlog: int = 128) -> socket.socket:
        """A plain, blocking, listening TCP socket on 127.0.0.1."""
        return self.keep(listener(backlog))

    def tcp_pair(self) -> tuple[socket.socket, socket.socket]:
        """Two connected non-blocking TCP sockets on loopback: ``(for_the_dispatcher, peer)``."""
        mine, peer = socketpair()
        return self.keep(mine), self.keep(peer)

    def reset(self, sock: socket.socket) -> None:
        """Close ``sock`` abortively: SO_LINGER 0 makes the kernel send RST."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def read_all(self, sock: socket.socket, deadline: float = DEADLINE) -> bytes:
        """Read a plain socket to EOF."""
        sock.settimeout(deadline)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def read_exactly(self, sock: socket.socket, n: int, deadline: float = DEADLINE) -> bytes:
        sock.settimeout(deadline)
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        """Close whatever the scenario left open: the map's dispatchers, plain sockets, fds."""
        with contextlib.suppress(Exception):  # a failed scenario's half-built dispatcher;
            # conftest's fd check still reports anything this leaves open.
            self.asyncore.close_all(map=self.map, ignore_all=True)
        self.map.clear()
        for sock in self._sockets:
            sock.close()
        for fd in self._fds:
            os.close(fd)


def tracing(base: Any, run: Run) -> Any:
    """A subclass of ``base`` that records the callbacks every scenario cares about.

    The subclass's ``role`` class attribute names the object in the trace.  Each
    method records, then does what ``base`` does; ``handle_error`` records the type
    of the exception being handled, as ``sys.exc_info()`` gives it.
    """

    class Traced(base):  # type: ignore[misc]
        role = "?"

        def handle_connect(self) -> None:
            run.record(self.role, "handle_connect")
            super().handle_connect()

        def handle_accept(self) -> None:
            run.record(self.role, "handle_accept")
            super().handle_accept()

        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            run.record(self.role, "handle_accepted")
            super().handle_accepted(sock, addr)

        def handle_close(self) -> None:
            run.record(self.role, "handle_close")
            super().handle_close()

        def handle_expt(self) -> None:
            run.record(self.role, "handle_expt")
            super().handle_expt()

        def handle_error(self) -> None:
            t = sys.exc_info()[0]
            run.record(self.role, "handle_error", t.__name__ if t else None)
            super().handle_error()

    return Traced


# --------------------------------------------------------------------------- comparing


_TB_FRAME = re.compile(r"\[([^|\]\[]*)\|([^|\]\[]*)\|(\d+)\]")


def normalise_output(text: str) -> str:
    """Make stdout of two runs comparable.

    * object addresses (``at 0x7f..``) and ephemeral ports vary from run to run;
    * a compact traceback (``[file|function|line] ...``) keeps only the frames of
      the scenario itself, with the file's base name: frames inside asyncore are
      implementation detail (3.11 catches in ``read()``, ours somewhere else);
      the scenario's own frames, line numbers included, must be the same.
    """
    text = re.sub(r"0x[0-9a-fA-F]+", "0x?", text)
    text = re.sub(r"failed for object at [0-9a-fA-F]+", "failed for object at ?", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"\('127\.0\.0\.1', \d+\)", "('127.0.0.1', PORT)", text)

    def frame(m: re.Match[str]) -> str:
        path, function, line = m.groups()
        if os.path.dirname(os.path.abspath(path)) != HERE:
            return ""
        return f"[{os.path.basename(path)}|{function}|{line}]"

    text = _TB_FRAME.sub(frame, text)
    return re.sub(r" +(?=[ )\]\n])", "", text)


@dataclasses.dataclass
class Outcome:
    """All that is compared between the two runs of a scenario."""

    trace: Any
    result: Any
    stdout: str
    stderr: str
    map_left: int


def run_scenario(modules: Modules, scenario: Scenario, use_poll: bool) -> Outcome:
    """Run ``scenario`` once on ``modules``; always leaves nothing open."""
    asyncore_mod, asynchat_mod = modules
    run = Run(asyncore_mod, use_poll)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = scenario(asyncore_mod, asynchat_mod, run)
        map_left = len(run.map)
    finally:
        run.close()
    return Outcome(
        run.trace,
        result,
        normalise_output(out.getvalue()),
        normalise_output(err.getvalue()),
        map_left,
    )


def assert_same_behaviour(
    scenario: Scenario,
    use_poll: bool,
    normalise: Callable[[list[tuple[Any, ...]]], Any] | None = None,
) -> Outcome:
    """Run ``scenario`` on 3.11's modules then on ours; fail unless the outcomes match.

    ``normalise`` maps a raw trace to what is compared, for scenarios whose exact
    interleaving depends on kernel timing.  Returns 3.11's outcome (normalised) so
    a test can also check that the scenario did what it meant to.
    """
    expected = run_scenario(frozen_modules(), scenario, use_poll)
    actual = run_scenario(our_modules(), scenario, use_poll)
    if normalise is not None:
        expected.trace = normalise(expected.trace)
        actual.trace = normalise(actual.trace)
    if actual != expected:
        raise AssertionError(
            f"asyncore_on_asyncio differs from 3.11 in {scenario.__name__}"
            f" (use_poll={use_poll}):\n{describe_difference(expected, actual)}"
        )
    return expected


def describe_difference(expected: Outcome, actual: Outcome) -> str:
    """A unified diff (3.11 then ours) of each field that differs.

    This module is not a test module, so pytest does not rewrite its asserts."""
    parts = []
    for field in dataclasses.fields(Outcome):
        want, got = getattr(expected, field.name), getattr(actual, field.name)
        if want == got:
            continue
        if isinstance(want, str) and isinstance(got, str):
            want_lines, got_lines = want.splitlines(), got.splitlines()
        else:
            want_lines, got_lines = _lines(want), _lines(got)
        diff = difflib.unified_diff(want_lines, got_lines, "3.11", "ours", lineterm="", n=5)
        parts.append(f"--- {field.name} ---\n" + "\n".join(diff))
    return "\n".join(parts)


def _lines(value: Any) -> list[str]:
    if isinstance(value, list):  # a trace: one event a line
        return [repr(item) for item in value]
    return pprint.pformat(value, width=100).splitlines()
