"""An exception in every kind of handler, differential against the frozen 3.11 asyncore.

The default ``handle_error()`` logs the exception and closes the dispatcher; afterwards the
map is empty, the engine holds no registration for it, and ``loop()`` serves a new
dispatcher in the same map. When ``handle_close()`` itself keeps raising, the exception
escapes ``handle_error()`` and ``loop()``, as in 3.11; closing the dispatcher by hand then
leaves the engine clean too.

Each scenario runs on both implementations in both ``use_poll`` modes; traces, results and
stdout (the handle_error line, normalised) must be identical.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from asyncore_on_asyncio import asyncore as our_asyncore
from tests.differential.harness import Run, assert_same_behaviour, tracing

from ._support import read_available, registrations, wait_for_error


class Boom(Exception):
    pass


def serve_again(ac: ModuleType, run: Run) -> None:
    """A new echo dispatcher in the same map is served: the loop still works."""

    class Echo(ac.dispatcher_with_send):  # type: ignore[misc]
        def handle_read(self) -> None:
            data = self.recv(100)
            if data:
                self.send(data)

        def handle_close(self) -> None:
            self.close()

    mine, peer = run.tcp_pair()
    Echo(mine, run.map)
    peer.sendall(b"ping")
    got = bytearray()
    run.run_until(lambda: not read_available(peer, got) and len(got) >= 4, "echo of ping")
    run.record("again", bytes(got))
    peer.close()
    run.run_until(lambda: not run.map, "echo dispatcher closed")


Fault = Callable[[ModuleType, Run, type], Any]


def fault_read(ac: ModuleType, run: Run, traced: type) -> Any:
    class Reader(traced):  # type: ignore[misc, valid-type]
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "handle_read", self.recv(10))
            raise Boom("in handle_read")

    mine, peer = run.tcp_pair()
    Reader(mine, run.map)
    peer.sendall(b"data")
    run.wait_pending(mine, 4)
    run.step()


def fault_write(ac: ModuleType, run: Run, traced: type) -> Any:
    class Writer(traced):  # type: ignore[misc, valid-type]
        def readable(self) -> bool:
            return False

        def handle_write(self) -> None:
            run.record(self.role, "handle_write", self.send(b"out"))
            raise Boom("in handle_write")

    mine, _ = run.tcp_pair()
    Writer(mine, run.map)
    run.wait_ready(mine, writable=True)
    run.step()


def fault_connect(ac: ModuleType, run: Run, traced: type) -> Any:
    class Client(traced):  # type: ignore[misc, valid-type]
        def handle_connect(self) -> None:
            run.record(self.role, "handle_connect")
            raise Boom("in handle_connect")

    lsock = run.listener()
    client = Client(map=run.map)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(lsock.getsockname())
    run.wait_ready(client.socket, writable=True)
    run.step()
    run.record("client", client.connected, client.connecting)


def _server(ac: ModuleType, run: Run, cls: type) -> Any:
    server = cls(map=run.map)
    server.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    run.keep(socket.create_connection(server.socket.getsockname(), timeout=10))
    run.wait_ready(server.socket, readable=True)
    run.step()
    return server


def fault_accept(ac: ModuleType, run: Run, traced: type) -> Any:
    class Server(traced):  # type: ignore[misc, valid-type]
        def handle_accept(self) -> None:
            run.record(self.role, "handle_accept")
            raise Boom("in handle_accept")

    _server(ac, run, Server)


def fault_accepted(ac: ModuleType, run: Run, traced: type) -> Any:
    class Server(traced):  # type: ignore[misc, valid-type]
        def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
            run.record(self.role, "handle_accepted")
            run.keep(sock)
            raise Boom("in handle_accepted")

    _server(ac, run, Server)


def fault_expt(ac: ModuleType, run: Run, traced: type) -> Any:
    class Urgent(traced):  # type: ignore[misc, valid-type]
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "handle_read", self.recv(10))

        def handle_expt(self) -> None:
            run.record(self.role, "handle_expt")
            raise Boom("in handle_expt")

    mine, peer = run.tcp_pair()
    Urgent(mine, run.map)
    peer.send(b"!", socket.MSG_OOB)
    _, _, x = select.select([], [], [mine], 10)  # select's exceptional set
    assert x, "urgent data did not arrive"
    run.step()


def fault_close_once(ac: ModuleType, run: Run, traced: type) -> Any:
    """handle_close raises the first time (from recv() at EOF); handle_error's own call to
    handle_close then closes."""

    class Closer(traced):  # type: ignore[misc, valid-type]
        calls = 0

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "handle_read", self.recv(10))

        def handle_close(self) -> None:
            self.calls += 1
            run.record(self.role, "handle_close", self.calls)
            if self.calls == 1:
                raise Boom("in handle_close")
            self.close()

    mine, peer = run.tcp_pair()
    Closer(mine, run.map)
    peer.shutdown(socket.SHUT_WR)
    run.wait_ready(mine, readable=True)
    run.step()


def fault_close_on_hangup(ac: ModuleType, run: Run, traced: type) -> Any:
    """The peer resets a dispatcher that only wants to write: poll() reports POLLHUP|POLLERR
    and readwrite() calls handle_close directly, which raises once (select() only ever
    reports it writable: the scenario then closes it by hand)."""

    class Closer(traced):  # type: ignore[misc, valid-type]
        calls = 0

        def readable(self) -> bool:
            return False

        def handle_write(self) -> None:
            run.record(self.role, "handle_write")

        def handle_close(self) -> None:
            self.calls += 1
            run.record(self.role, "handle_close", self.calls)
            if self.calls == 1:
                raise Boom("in handle_close")
            self.close()

    mine, peer = run.tcp_pair()
    closer = Closer(mine, run.map)
    run.reset(peer)
    wait_for_error(mine)
    run.step()
    if run.map:
        run.record("closing by hand")
        closer.close()


def fault_close_always(ac: ModuleType, run: Run, traced: type) -> Any:
    """handle_close always raises: handle_error's call to it raises out of loop()."""

    class Closer(traced):  # type: ignore[misc, valid-type]
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            run.record(self.role, "handle_read", self.recv(10))

        def handle_close(self) -> None:
            run.record(self.role, "handle_close")
            raise Boom("in handle_close, always")

    mine, peer = run.tcp_pair()
    closer = Closer(mine, run.map)
    peer.shutdown(socket.SHUT_WR)
    run.wait_ready(mine, readable=True)
    try:
        run.step()
    except Boom as exc:
        run.record("loop raised", str(exc))
    run.record("left in map", len(run.map))
    ac.dispatcher.close(closer)


FAULTS: dict[str, Fault] = {
    "handle_read": fault_read,
    "handle_write": fault_write,
    "handle_connect": fault_connect,
    "handle_accept": fault_accept,
    "handle_accepted": fault_accepted,
    "handle_expt": fault_expt,
    "handle_close-once": fault_close_once,
    "handle_close-on-hangup": fault_close_on_hangup,
    "handle_close-always": fault_close_always,
}


def make_scenario(name: str, probes: list[tuple[str, int]]) -> Any:
    fault = FAULTS[name]

    def scenario(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
        traced = tracing(ac.dispatcher, run)
        traced.role = "d"

        def probe(when: str) -> None:
            if ac is our_asyncore:  # the engine's state only exists on our side
                probes.append((when, registrations()))

        fault(ac, run, traced)
        run.record("map after fault", len(run.map))
        probe("after fault")
        serve_again(ac, run)
        probe("after serving again")
        return len(run.map)

    scenario.__name__ = f"scenario_{name}"
    return scenario


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_exception_in_handler(name: str, use_poll: bool) -> None:
    probes: list[tuple[str, int]] = []
    outcome = assert_same_behaviour(make_scenario(name, probes), use_poll)
    assert probes == [("after fault", 0), ("after serving again", 0)]
    assert ("map after fault", 0) in outcome.trace
    assert ("again", b"ping") in outcome.trace
    assert outcome.result == 0
    errors = [e for e in outcome.trace if e[1:2] == ("handle_error",)]
    if name == "handle_close-on-hangup" and not use_poll:
        assert errors == []  # select() never reports the hangup to a write-only dispatcher
    else:
        assert errors == [("d", "handle_error", "Boom")]
        assert "error: uncaptured python exception, closing channel" in outcome.stdout
        assert f"Boom'>:in {name.split('-')[0]}" in outcome.stdout
    if name == "handle_close-always":
        assert ("loop raised", "in handle_close, always") in outcome.trace
        assert ("left in map", 1) in outcome.trace
