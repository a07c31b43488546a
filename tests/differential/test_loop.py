"""Differential tests of loop() itself: errors in handlers, ExitNow, count and timeout.

One dispatcher at a time has an event, so the order of callbacks is fixed.
"""

from __future__ import annotations

import errno
import socket
import sys
import time
from typing import Any

import pytest

from .harness import STEP_TIMEOUT, Run, assert_same_behaviour, tracing

# --------------------------------------------------------------------------- handle_error


def scenario_handler_raises(ac: Any, ach: Any, run: Run) -> Any:
    """Exceptions in handle_read, handle_write and handle_connect reach the default
    handle_error, which prints a compact traceback via log_info and closes; and with
    ``ignore_log_types`` emptied, the default handlers' warnings are printed too."""
    traced: Any = tracing(ac.dispatcher, run)

    class Boom(traced):  # type: ignore[misc]
        role = "boom"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            data = self.recv(100)
            run.record(self.role, "read", len(data))
            raise ValueError(f"boom after {len(data)} bytes")

    class BadRepr(traced):  # type: ignore[misc]
        role = "bad_repr"

        def __repr__(self) -> str:
            raise RuntimeError("no repr today")

        def readable(self) -> bool:
            return False

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")
            raise KeyError("w")

    class Connector(traced):  # type: ignore[misc]
        role = "connector"

        def handle_connect(self) -> None:
            run.record(self.role, "handle_connect")
            raise TypeError("refusing to be connected")

    class Defaults(traced):  # type: ignore[misc]
        role = "defaults"
        ignore_log_types: frozenset[str] = frozenset()

    mine, peer = run.tcp_pair()
    Boom(mine, run.map)
    peer.sendall(b"xyz")
    run.wait_pending(mine, 3)
    run.step()
    run.record("map", len(run.map))

    mine, peer = run.tcp_pair()
    BadRepr(mine, run.map)
    run.step()
    run.record("map", len(run.map))

    lsock = run.listener()
    connector = Connector(map=run.map)
    connector.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    connector.connect(lsock.getsockname())
    run.keep(lsock.accept()[0])
    run.wait_ready(connector.socket, writable=True)
    run.step()
    run.record("map", len(run.map))

    mine, peer = run.tcp_pair()
    defaults = Defaults(mine, run.map)
    peer.sendall(b"unread")
    run.wait_pending(mine, 6)
    run.step()  # readable and writable in one cycle: read, then write
    defaults.handle_expt()
    defaults.handle_connect()
    given, other = socket.socketpair()
    defaults.handle_accepted(given, None)  # closes the socket it is given
    other.close()
    defaults.log("a hit")  # to stderr
    defaults.log_info("plain info")
    defaults.handle_close()
    return len(run.map)


def test_handler_raises(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_handler_raises, use_poll)
    assert outcome.trace[:4] == [
        ("boom", "read", 3),
        ("boom", "handle_error", "ValueError"),
        ("boom", "handle_close"),
        ("map", 0),
    ]
    assert "<__repr__(self) failed for object at ?>" in outcome.stdout
    assert "[test_loop.py|handle_read|" in outcome.stdout
    assert "warning: unhandled read event\nwarning: unhandled write event\n" in outcome.stdout
    assert outcome.stderr == "log: a hit\n"


# --------------------------------------------------------------------------- ExitNow


def scenario_exit_now(ac: Any, ach: Any, run: Run) -> Any:
    """ExitNow, SystemExit and KeyboardInterrupt raised by a handler leave loop(); the
    dispatcher stays in the map and a later loop() carries on."""

    class Reader(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "reader"
        reads = 0

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            data = self.recv(3)
            self.reads += 1
            run.record(self.role, "read", data)
            if self.reads == 1:
                raise ac.ExitNow("first")
            if self.reads == 2:
                raise SystemExit(2)
            if self.reads == 3:
                raise KeyboardInterrupt

    mine, peer = run.tcp_pair()
    Reader(mine, run.map)
    peer.sendall(b"abcdefghijkl")
    run.wait_pending(mine, 12)
    for expected in (ac.ExitNow, SystemExit, KeyboardInterrupt):
        try:
            # Bounded, so that an engine swallowing the exception fails fast.
            ac.loop(timeout=0.01, use_poll=run.use_poll, map=run.map, count=100)
        except expected as exc:
            run.record("raised", type(exc).__name__, exc.args, len(run.map))
    run.step()
    peer.close()
    run.run_until(lambda: not run.map, "reader closed")
    return len(run.map)


def test_exit_now(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_exit_now, use_poll)
    assert outcome.trace == [
        ("reader", "read", b"abc"),
        ("raised", "ExitNow", ("first",), 1),
        ("reader", "read", b"def"),
        ("raised", "SystemExit", (2,), 1),
        ("reader", "read", b"ghi"),
        ("raised", "KeyboardInterrupt", (), 1),
        ("reader", "read", b"jkl"),
        ("reader", "handle_close"),
        ("reader", "read", b""),
    ]


# --------------------------------------------------------------------------- idle loops


def scenario_idle_counts(ac: Any, ach: Any, run: Run) -> Any:
    """loop(count=N) on a map where nothing happens: N cycles, each consulting
    readable()/writable() once per dispatcher, each waiting about ``timeout``.

    Exact timing is not compared, only a lower bound that no busy loop meets."""

    class Counting(ac.dispatcher):  # type: ignore[misc]
        def __init__(self, sock: socket.socket, want_read: bool) -> None:
            super().__init__(sock, run.map)
            self.want_read = want_read
            self.r = self.w = 0

        def readable(self) -> bool:
            self.r += 1
            return self.want_read

        def writable(self) -> bool:
            self.w += 1
            return False

    def loop(count: int, timeout: float = 0.02) -> tuple[Any, bool]:
        start = time.monotonic()
        result = ac.loop(timeout=timeout, use_poll=run.use_poll, map=run.map, count=count)
        return result, time.monotonic() - start >= 0.9 * count * timeout

    def counts() -> list[tuple[int, int]]:
        return [(d.r, d.w) for d in dispatchers]

    mine, _peer = run.tcp_pair()
    dispatchers = [Counting(mine, want_read=True)]
    run.record("one waiting to read", loop(5), counts())
    mine, _peer = run.tcp_pair()
    dispatchers.append(Counting(mine, want_read=False))
    run.record("and one wanting nothing", loop(3), counts())
    dispatchers[0].want_read = False
    run.record("both wanting nothing", loop(4), counts())
    run.record("count=0", loop(0), counts())
    for d in dispatchers:
        d.close()
    run.record("empty map", loop(3, timeout=5.0)[0], counts())
    return None


def test_idle_counts(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_idle_counts, use_poll)
    assert outcome.trace == [
        ("one waiting to read", (None, True), [(5, 5)]),
        ("and one wanting nothing", (None, True), [(8, 8), (3, 3)]),
        ("both wanting nothing", (None, True), [(12, 12), (7, 7)]),
        ("count=0", (None, True), [(12, 12), (7, 7)]),
        ("empty map", None, [(12, 12), (7, 7)]),
    ]


# --------------------------------------------------------------------------- one busy cycle


def scenario_same_cycle(ac: Any, ach: Any, run: Run) -> Any:
    """Several dispatchers ready in one cycle.  3.11 dispatches them in map order (select:
    every read, then every write, then every priority event; poll: all of one object's
    events, then the next object's).  A dispatcher closed by another's handler earlier in
    the cycle gets nothing; one created during the cycle waits for the next cycle."""
    traced: Any = tracing(ac.dispatcher, run)
    peers: dict[str, socket.socket] = {}
    made: dict[str, Any] = {}

    class Chan(traced):  # type: ignore[misc]
        def __init__(self, role: str, mine: socket.socket) -> None:
            super().__init__(mine, run.map)
            self.role = role
            self.want_write = role != "f"
            made[role] = self

        def writable(self) -> bool:
            return bool(self.want_write)

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(100))
            if self.role == "a":
                made["c"].close()  # c is ready too, and later in the map
                run.record("a closed c")

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")
            self.want_write = False
            if self.role == "b":
                Chan("f", sockets["f"])  # its socket has been readable since before the cycle
                run.record("b made f")

    sockets: dict[str, socket.socket] = {}
    for role in "abcdef":
        sockets[role], peers[role] = run.tcp_pair()
        peers[role].sendall(role.encode() * 2)
        run.wait_pending(sockets[role], 2)
    for role in "abcde":
        Chan(role, sockets[role])
    run.step()
    run.record("cycle 2")
    run.step()
    run.record("map", sorted(obj.role for obj in run.map.values()))
    for role in "abdef":
        peers[role].close()
        run.wait_ready(sockets[role], readable=True)
    run.record("cycle 3")
    run.step()
    return len(run.map)


def test_same_cycle(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_same_cycle, use_poll)
    assert outcome.result == 0
    assert ("c", "read", b"cc") not in outcome.trace


def scenario_priority_data(ac: Any, ach: Any, run: Run) -> Any:
    """TCP urgent data: select() lists the fd as exceptional, poll() says POLLPRI; both
    reach handle_expt_event() and then handle_expt()."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            try:
                run.record(self.role, "read", self.recv(100))
            except BlockingIOError:
                run.record(self.role, "read", "EAGAIN")

        def handle_expt(self) -> None:
            run.record(self.role, "handle_expt", self.socket.recv(1, socket.MSG_OOB))

    mine, peer = run.tcp_pair()
    Chan(mine, run.map)
    peer.send(b"ab")
    peer.send(b"!", socket.MSG_OOB)
    run.wait_pending(mine, 2)
    run.wait_ready(mine, readable=True)
    run.step()
    run.record("cycle 2")
    peer.close()
    run.wait_ready(mine, readable=True)
    run.run_until(lambda: not run.map, "chan closed")
    return len(run.map)


def test_priority_data(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_priority_data, use_poll)
    assert ("chan", "handle_expt", b"!") in outcome.trace


# --------------------------------------------------------------------------- close_all


def scenario_close_all(ac: Any, ach: Any, run: Run) -> Any:
    """close_all() closes in map order; EBADF from close() is ignored, other errors
    propagate unless ignore_all (and then the map is not cleared)."""
    failures = {"ebadf": OSError(errno.EBADF, "bad"), "eperm": OSError(errno.EPERM, "no")}
    failures["value"] = ValueError("odd")  # type: ignore[assignment]

    class Chan(ac.dispatcher):  # type: ignore[misc]
        def __init__(self, role: str) -> None:
            super().__init__(run.tcp_pair()[0], run.map)
            self.role = role

        def close(self) -> None:
            run.record(self.role, "close")
            super().close()
            failure = failures.get(self.role)
            if failure is not None:
                raise failure

    for role in ("plain", "ebadf", "eperm", "value"):
        Chan(role)
    for ignore_all in (False, True):
        try:
            ac.close_all(map=run.map, ignore_all=ignore_all)
        except Exception as exc:
            run.record("raised", type(exc).__name__, str(exc), len(run.map))
        else:
            run.record("returned", len(run.map))
    return len(run.map)


@pytest.mark.loop_free
def test_close_all(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_close_all, use_poll)
    assert outcome.trace[-1] == ("returned", 0)


# --------------------------------------------------------------------------- escaping errors


def scenario_escaping_errors(ac: Any, ach: Any, run: Run) -> Any:
    """Exceptions 3.11 does not catch: from readable()/writable() (asked outside any
    handler) and from handle_error() itself.  They leave loop(); the next loop() works."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"
        fail_in: str | None = None

        def readable(self) -> bool:
            if self.fail_in == "readable":
                self.fail_in = None
                raise RuntimeError("readable failed")
            return True

        def writable(self) -> bool:
            if self.fail_in == "writable":
                self.fail_in = None
                raise RuntimeError("writable failed")
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(2))
            if self.fail_in == "handle_read":
                self.fail_in = "handle_error"
                raise LookupError("read failed")

        def handle_error(self) -> None:
            run.record(self.role, "handle_error", type(sys.exc_info()[1]).__name__)
            if self.fail_in == "handle_error":
                self.fail_in = None
                raise ZeroDivisionError("handle_error failed")
            super().handle_error()

    mine, peer = run.tcp_pair()
    chan = Chan(mine, run.map)
    peer.sendall(b"aabbccdd")
    run.wait_pending(mine, 8)
    for where in ("readable", "writable", "handle_read"):
        chan.fail_in = where
        try:
            run.step()
        except Exception as exc:
            run.record("raised", type(exc).__name__, str(exc), len(run.map))
        else:
            run.record("returned")
    run.step()
    peer.close()
    run.run_until(lambda: not run.map, "chan closed")
    return len(run.map)


def test_escaping_errors(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_escaping_errors, use_poll)
    assert ("raised", "RuntimeError", "readable failed", 1) in outcome.trace
    assert ("raised", "ZeroDivisionError", "handle_error failed", 1) in outcome.trace


def scenario_key_without_fd(ac: Any, ach: Any, run: Run) -> Any:
    """A 3.11-era mistake: del_channel() then add_channel() files the dispatcher under
    ``None`` (del_channel() forgot its fd).  loop() raises TypeError, as select() and
    poll() did on such a key; once the entry is gone the next loop() serves the map."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(8))

    mine, peer = run.tcp_pair()
    good = Chan(mine, run.map)
    other, _ = run.tcp_pair()
    lost = Chan(other, run.map)
    lost.role = "lost"
    lost.del_channel()
    lost.add_channel()
    run.record("keys", sorted(map(repr, run.map)))
    for _ in range(2):
        try:
            run.step()
        except Exception as exc:
            run.record("raised", type(exc).__name__, len(run.map))
        else:
            run.record("returned")
    del run.map[None]
    peer.sendall(b"abc")
    run.wait_pending(mine, 3)
    run.step()
    good.close()
    return sorted(run.map)


def test_key_without_fd(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_key_without_fd, use_poll)
    assert outcome.trace.count(("raised", "TypeError", 2)) == 2
    assert ("chan", "read", b"abc") in outcome.trace


def scenario_idle_key_without_fd(ac: Any, ach: Any, run: Run) -> Any:
    """The same ``None`` key under a dispatcher that wants nothing: 3.11 never handed it to
    select()/poll(), so neither loop() nor a loop() nested in a handler raises."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"
        wants = True

        def readable(self) -> bool:
            return self.wants

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(8))
            ac.loop(timeout=0, use_poll=run.use_poll, map=run.map, count=1)
            run.record(self.role, "nested loop returned")

    mine, peer = run.tcp_pair()
    good = Chan(mine, run.map)
    other, _ = run.tcp_pair()
    idle = Chan(other, run.map)
    idle.role, idle.wants = "idle", False
    idle.del_channel()
    idle.add_channel()
    peer.sendall(b"abc")
    run.wait_pending(mine, 3)
    run.step()
    del run.map[None]
    good.close()
    return sorted(run.map)


def test_idle_key_without_fd(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_idle_key_without_fd, use_poll)
    assert ("chan", "nested loop returned") in outcome.trace


# --------------------------------------------------------------------------- interest


def scenario_interest_changes(ac: Any, ach: Any, run: Run) -> Any:
    """readable()/writable() are asked every cycle: data waiting on a dispatcher that
    is not readable is not delivered, and is once it becomes readable; likewise a
    writable socket only gets handle_write while writable() says so."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"
        want_read = False
        want_write = False

        def readable(self) -> bool:
            return self.want_read

        def writable(self) -> bool:
            return self.want_write

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(100))

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")

    mine, peer = run.tcp_pair()
    chan = Chan(mine, run.map)
    peer.sendall(b"data")
    run.wait_pending(mine, 4)
    for want_read, want_write in [(False, False), (False, True), (True, False), (True, True)]:
        chan.want_read, chan.want_write = want_read, want_write
        run.record("cycle", want_read, want_write)
        run.step(timeout=0.05)
    chan.want_write = False
    peer.sendall(b"more")
    run.wait_pending(mine, 4)
    chan.want_read = False
    run.step(timeout=0.05)
    chan.want_read = True
    run.record("readable again")
    run.step(timeout=0.05)
    chan.close()
    return None


def test_interest_changes(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_interest_changes, use_poll)
    assert outcome.trace == [
        ("cycle", False, False),
        ("cycle", False, True),
        ("chan", "handle_write"),
        ("cycle", True, False),
        ("chan", "read", b"data"),
        ("cycle", True, True),
        ("chan", "handle_write"),
        ("readable again",),
        ("chan", "read", b"more"),
    ]


# --------------------------------------------------------------------------- default map


def scenario_default_map(ac: Any, ach: Any, run: Run) -> Any:
    """Dispatchers made without ``map=`` join the module's ``socket_map``, and loop()
    without ``map=`` runs it (until it is empty, with count=None)."""

    class Chan(tracing(ac.dispatcher, run)):  # type: ignore[misc]
        role = "chan"

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "read", self.recv(100))

    assert not ac.socket_map
    mine, peer = run.tcp_pair()
    chan = Chan(mine)
    run.record("in socket_map", list(ac.socket_map.values()) == [chan], chan._map is ac.socket_map)
    peer.sendall(b"hi")
    run.wait_pending(mine, 2)
    ac.loop(timeout=STEP_TIMEOUT, use_poll=run.use_poll, count=1)
    peer.close()
    try:
        ac.loop(timeout=0.05, use_poll=run.use_poll)
    finally:
        ac.close_all()
    return len(ac.socket_map)


def test_default_map(use_poll: bool) -> None:
    outcome = assert_same_behaviour(scenario_default_map, use_poll)
    assert outcome.trace[-2:] == [("chan", "handle_close"), ("chan", "read", b"")]
