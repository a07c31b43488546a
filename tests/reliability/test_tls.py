"""Dispatchers whose socket is an ``ssl.SSLSocket``, differential against the frozen 3.11
asyncore: a non-blocking handshake driven by the handlers, an echo of many TLS records, a
STARTTLS-style swap of a plain dispatcher's socket for a TLS one and ``unwrap()`` back to
plain text, and plaintext left inside the TLS layer after a short ``recv()``.

asyncore knows nothing of TLS: the handlers call ``do_handshake()``, ``recv()``, ``send()``,
``unwrap()`` on ``self.socket`` themselves and catch ``SSLWantReadError`` /
``SSLWantWriteError`` (whose ``errno`` is an SSL error code, not EWOULDBLOCK, so
``dispatcher.recv()``/``send()`` would pass them to ``handle_error``); ``readable()`` and
``writable()`` steer the handshake by what OpenSSL last asked for. The certificates are
made at test time by ``trustme``; TLS 1.3 only, so record sizes are known.

Determinism: both TLS ends are dispatchers in one map (or the peer is a plain SSLSocket
driven between cycles). How many handshake steps each side needs, and how a stream is cut
into ``send()``/``recv()`` calls, depend on kernel timing; those events are not compared,
everything else (handshake completion order, protocol events, bytes, closes) is.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import trustme

from tests.differential.harness import Run, assert_same_behaviour, tracing

from ._support import registrations

USE_POLL = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])

RECORD = 16384
"""The largest TLS plaintext record; one ``SSLSocket.recv()`` never returns more."""

RECORD_OVERHEAD = 22
"""TLS 1.3 bytes around a record's plaintext: 5 header, 1 inner content type, 16 AEAD tag."""

HOSTNAME = "localhost"


class Contexts:
    """A server and a client context sharing a test CA made by trustme."""

    def __init__(self) -> None:
        ca = trustme.CA()
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for ctx in (self.server, self.client):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ca.issue_cert(HOSTNAME, "127.0.0.1").configure_cert(self.server)
        ca.configure_trust(self.client)

    def wrap(self, sock: Any, server_side: bool) -> ssl.SSLSocket:
        """Wrap a connected non-blocking socket; the handshake is left to the caller."""
        if server_side:
            return self.server.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return self.client.wrap_socket(
            sock, server_hostname=HOSTNAME, do_handshake_on_connect=False
        )


@pytest.fixture(scope="module")
def tls() -> Contexts:
    return Contexts()


Scenario = Callable[[ModuleType, ModuleType, Run], Any]


def named(name: str, scenario: Scenario) -> Scenario:
    scenario.__name__ = scenario.__qualname__ = name
    return scenario


def without_steps(trace: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Drop the events whose number depends on kernel timing."""
    return [event for event in trace if event[1] not in ("hs-step", "io")]


def handshaking(base: Any, run: Run) -> Any:
    """A traced ``base`` whose handlers first complete a non-blocking TLS handshake on
    ``self.socket`` (an SSLSocket), then call ``tls_read()`` / ``tls_write()``.

    ``start_handshake()`` (re)starts it; a client side sets ``hs_want_write`` first, since
    it speaks first (its ClientHello goes out from ``handle_write``)."""

    class Handshaking(tracing(base, run)):  # type: ignore[misc]
        handshaking = False
        hs_want_write = False
        hs_steps = 0

        def start_handshake(self, client: bool) -> None:
            self.handshaking = True
            self.hs_want_write = client

        def readable(self) -> bool:
            return True

        def writable(self) -> bool:
            if self.handshaking:
                return self.hs_want_write
            return self.tls_writable()

        def handle_read(self) -> None:
            if self.handshaking:
                self.handshake_step()
            else:
                self.tls_read()

        def handle_write(self) -> None:
            if self.handshaking:
                self.handshake_step()
            else:
                self.tls_write()

        def handshake_step(self) -> None:
            self.hs_steps += 1
            try:
                self.socket.do_handshake()
            except ssl.SSLWantReadError:
                self.hs_want_write = False
                run.record(self.role, "hs-step")
            except ssl.SSLWantWriteError:
                self.hs_want_write = True
                run.record(self.role, "hs-step")
            else:
                self.handshaking = self.hs_want_write = False
                run.record(self.role, "handshake", self.socket.version())
                self.handshake_done()

        def handshake_done(self) -> None:
            pass

        # -- TLS data, after the handshake

        def tls_writable(self) -> bool:
            return False

        def tls_read(self) -> None:
            pass

        def tls_write(self) -> None:
            pass

        def tls_recv(self, size: int) -> bytes | None:
            """Up to ``size`` bytes, plus whatever the TLS layer still holds (``pending()``):
            no event would announce that. None if no whole record is there yet; b"" at EOF
            (or the peer's close_notify)."""
            try:
                data = self.socket.recv(size)
            except ssl.SSLWantReadError:  # a partial record, or a post-handshake message
                return None
            if len(data) > RECORD:
                run.record(self.role, "recv larger than a record", len(data))
            chunks = [data]
            while self.socket.pending():
                chunks.append(self.socket.recv(self.socket.pending()))
            return b"".join(chunks)

        def tls_send(self, chunk: bytes) -> int:
            """Send ``chunk`` whole (OpenSSL writes all of it or nothing): its length, or 0
            if OpenSSL asked to be called again with the same bytes."""
            try:
                return int(self.socket.send(chunk))
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return 0

    return Handshaking


# --------------------------------------------------------------------------- echo


ECHO_PAYLOAD = bytes(range(256)) * 4096
"""1 MiB: 64 full TLS records at least."""

SEND_CHUNK = 48 * 1024
"""What one send() passes to OpenSSL: three records."""


def echo_scenario(tls: Contexts) -> Scenario:
    def scenario(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
        base = handshaking(ac.dispatcher, run)

        class EchoServer(base):  # type: ignore[misc, valid-type]
            role = "server"
            recvs = 0

            def __init__(self, sock: Any, map: dict[int, Any]) -> None:
                super().__init__(sock, map)
                self.out = bytearray()
                self.chunk = b""  # being sent: repeated as is after a WantWrite

            def tls_read(self) -> None:
                data = self.tls_recv(RECORD)
                if data is None:
                    return
                if not data:
                    self.handle_close()
                    return
                self.recvs += 1
                run.record(self.role, "io")
                self.out += data

            def tls_writable(self) -> bool:
                return bool(self.chunk or self.out)

            def tls_write(self) -> None:
                if not self.chunk:
                    self.chunk = bytes(self.out[:SEND_CHUNK])
                    del self.out[:SEND_CHUNK]
                if self.tls_send(self.chunk):
                    self.chunk = b""
                run.record(self.role, "io")

        class EchoClient(base):  # type: ignore[misc, valid-type]
            role = "client"

            def __init__(self, sock: Any, map: dict[int, Any]) -> None:
                super().__init__(sock, map)
                self.start_handshake(client=True)
                self.sent = 0
                self.got = bytearray()

            def tls_writable(self) -> bool:
                return self.sent < len(ECHO_PAYLOAD)

            def tls_write(self) -> None:
                chunk = ECHO_PAYLOAD[self.sent : self.sent + SEND_CHUNK]
                self.sent += self.tls_send(chunk)
                run.record(self.role, "io")

            def tls_read(self) -> None:
                data = self.tls_recv(RECORD)
                if not data:  # None: session tickets only; b"": unexpected EOF
                    if data is not None:
                        self.handle_close()
                    return
                run.record(self.role, "io")
                self.got += data
                if len(self.got) >= len(ECHO_PAYLOAD):
                    run.record(self.role, "echoed", len(self.got))
                    self.close()

        mine, peer = run.tcp_pair()
        server = EchoServer(tls.wrap(mine, server_side=True), run.map)
        server.start_handshake(client=False)
        client = EchoClient(tls.wrap(peer, server_side=False), run.map)
        run.run_until(lambda: not run.map, "echo finished and both sides closed")
        return (
            bytes(client.got) == ECHO_PAYLOAD,
            server.recvs >= len(ECHO_PAYLOAD) // RECORD,
            client.hs_steps > 1 and server.hs_steps > 1,
        )

    return named("scenario_tls_echo", scenario)


@USE_POLL
def test_handshake_and_echo_of_many_records(tls: Contexts, use_poll: bool) -> None:
    """Both ends are dispatchers doing their handshake in handle_read/handle_write (steered by
    readable()/writable()), then 1 MiB goes to the server and back, never more than one
    record per recv(); the client closes and the server sees EOF."""
    outcome = assert_same_behaviour(echo_scenario(tls), use_poll, normalise=without_steps)
    assert outcome.trace == [
        ("client", "handshake", "TLSv1.3"),
        ("server", "handshake", "TLSv1.3"),
        ("client", "echoed", len(ECHO_PAYLOAD)),
        ("server", "handle_close"),
    ]
    assert outcome.result == (True, True, True)
    assert registrations() == 0


# --------------------------------------------------------------------------- STARTTLS


def starttls_scenario(tls: Contexts) -> Scenario:
    """Plain text, STARTTLS swaps both sockets for TLS ones (the dispatcher's fd stays the
    same, its socket object changes), a line over TLS, ``unwrap()`` on both sides (close_notify
    each way), a line in plain text again over the same connection, then the client closes."""

    def scenario(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
        base = handshaking(ac.dispatcher, run)

        class Side(base):  # type: ignore[misc, valid-type]
            """Line-oriented in every phase: plain -> handshake -> tls -> plain."""

            server_side = False

            def __init__(self, sock: Any, map: dict[int, Any]) -> None:
                super().__init__(sock, map)
                self.phase = "plain"
                self.inbuf = b""
                self.out = b""
                self.fds: list[int] = [self.socket.fileno()]

            def swap_to_tls(self) -> None:
                self.del_channel()
                self.set_socket(tls.wrap(self.socket, server_side=self.server_side))
                self.fds.append(self.socket.fileno())
                run.record(self.role, "swapped", type(self.socket).__name__)
                self.phase = "handshake"
                self.start_handshake(client=not self.server_side)

            def handshake_done(self) -> None:
                self.phase = "tls"
                self.tls_started()

            def tls_started(self) -> None:
                pass

            def readable(self) -> bool:
                return True

            def writable(self) -> bool:
                if self.phase == "plain":
                    return bool(self.out)
                return super().writable()

            def tls_writable(self) -> bool:
                return bool(self.out)

            def handle_read(self) -> None:
                if self.phase == "plain":
                    data = self.recv(1)  # one byte: never read past the switch to TLS
                    if data:
                        self.feed(data)
                else:
                    super().handle_read()

            def handle_write(self) -> None:
                if self.phase == "plain":
                    self.out = self.out[self.send(self.out) :]
                else:
                    super().handle_write()

            def tls_read(self) -> None:
                data = self.tls_recv(RECORD)
                if data is None:
                    return
                if not data:
                    self.close_notify_received()
                    return
                self.feed(data)

            def tls_write(self) -> None:
                if self.tls_send(self.out):
                    self.out = b""

            def feed(self, data: bytes) -> None:
                self.inbuf += data
                while b"\n" in self.inbuf:
                    line, self.inbuf = self.inbuf.split(b"\n", 1)
                    run.record(self.role, "line", self.phase, line)
                    self.found_line(line)

            def found_line(self, line: bytes) -> None:
                pass

            def close_notify_received(self) -> None:
                pass

            def finish_unwrap(self) -> bool:
                try:
                    self.socket.unwrap()
                except ssl.SSLWantReadError:
                    return False
                self.phase = "plain"
                self.handshaking = False
                run.record(self.role, "unwrapped", type(self.socket).__name__)
                return True

        class Server(Side):
            role = "server"
            server_side = True

            def found_line(self, line: bytes) -> None:
                if line == b"STARTTLS":
                    assert self.send(b"OK\n") == 3  # plain text, before the swap
                    self.swap_to_tls()
                else:
                    self.out += line.upper() + b"\n"

            def close_notify_received(self) -> None:
                assert self.finish_unwrap(), "the client's close_notify is already here"

        class Client(Side):
            role = "client"

            def __init__(self, sock: Any, map: dict[int, Any]) -> None:
                super().__init__(sock, map)
                self.out = b"STARTTLS\n"
                self.unwrapping = False

            def tls_started(self) -> None:
                self.out = b"secret over tls\n"

            def found_line(self, line: bytes) -> None:
                if line == b"OK":
                    self.swap_to_tls()
                elif self.phase == "tls":
                    self.unwrapping = True
                    if not self.finish_unwrap():  # close_notify sent, waiting for the reply
                        run.record(self.role, "close_notify sent")
                        self.handshaking = True  # handle_read -> handshake_step -> unwrap
                else:
                    self.close()

            def handshake_step(self) -> None:
                if self.unwrapping:
                    if self.finish_unwrap():
                        self.unwrapping = False
                        self.out = b"plain again\n"
                    return
                super().handshake_step()

        mine, peer = run.tcp_pair()
        server = Server(mine, run.map)
        client = Client(peer, run.map)
        run.run_until(lambda: len(run.map) < 2, "client closed")
        run.run_until(lambda: not run.map, "server closed")
        return server.fds, client.fds

    return named("scenario_starttls", scenario)


@USE_POLL
def test_starttls_swap_and_unwrap(tls: Contexts, use_poll: bool) -> None:
    outcome = assert_same_behaviour(starttls_scenario(tls), use_poll, normalise=without_steps)
    assert outcome.trace == [
        ("server", "line", "plain", b"STARTTLS"),
        ("server", "swapped", "SSLSocket"),
        ("client", "line", "plain", b"OK"),
        ("client", "swapped", "SSLSocket"),
        ("client", "handshake", "TLSv1.3"),
        ("server", "handshake", "TLSv1.3"),
        ("server", "line", "tls", b"secret over tls"),
        ("client", "line", "tls", b"SECRET OVER TLS"),
        ("client", "close_notify sent"),
        ("server", "unwrapped", "SSLSocket"),
        ("client", "unwrapped", "SSLSocket"),
        ("server", "line", "plain", b"plain again"),
        ("client", "line", "plain", b"PLAIN AGAIN"),
        ("server", "handle_close"),
    ]
    server_fds, client_fds = outcome.result
    assert server_fds[0] == server_fds[1] and client_fds[0] == client_fds[1]  # same fd
    assert registrations() == 0


# --------------------------------------------------------------------------- pending()


SMALL_READ = 1024


def pending_scenario(tls: Contexts, drain_pending: bool) -> Scenario:
    def scenario(ac: ModuleType, ach: ModuleType, run: Run) -> Any:
        base = handshaking(ac.dispatcher, run)

        class Reader(base):  # type: ignore[misc, valid-type]
            role = "reader"

            def tls_read(self) -> None:
                try:
                    data = self.socket.recv(SMALL_READ)
                except ssl.SSLWantReadError:
                    return
                got = len(data)
                if drain_pending:
                    while self.socket.pending():
                        got += len(self.socket.recv(self.socket.pending()))
                run.record(self.role, "read", got, self.socket.pending())

        mine, plain_peer = run.tcp_pair()
        reader = Reader(tls.wrap(mine, server_side=True), run.map)
        reader.start_handshake(client=False)
        peer = run.keep(tls.wrap(plain_peer, server_side=False))
        peer_done = False

        def handshakes_done() -> bool:
            nonlocal peer_done
            if not peer_done:
                try:
                    peer.do_handshake()
                    peer_done = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            return peer_done and not reader.handshaking

        run.run_until(handshakes_done, "both handshakes done")
        assert peer.send(b"r" * RECORD) == RECORD  # one full record
        run.wait_pending(reader.socket, RECORD + RECORD_OVERHEAD)
        run.step()
        run.step(count=3, timeout=0.05)  # idle: the rest of the record raises no event
        run.record("after 3 idle cycles", reader.socket.pending())
        assert peer.send(b"n" * 10) == 10  # a new record makes the fd readable again
        run.wait_pending(reader.socket, 10 + RECORD_OVERHEAD)
        run.step()
        return None

    return named(f"scenario_pending_drain_{drain_pending}", scenario)


@USE_POLL
def test_pending_data_does_not_make_the_fd_readable(tls: Contexts, use_poll: bool) -> None:
    """A handler that reads 1 KiB of a 16 KiB record leaves 15 KiB decrypted inside the
    SSLSocket (``pending()``). Exactly as with 3.11's ``select()``/``poll()``, data sitting in
    SSL's buffer does not make the fd readable: the loop only watches the kernel socket,
    which is now empty, so idle cycles deliver nothing, and the next read event comes only
    when a new record arrives (and then still returns the old record's bytes first)."""
    outcome = assert_same_behaviour(
        pending_scenario(tls, drain_pending=False), use_poll, normalise=without_steps
    )
    assert outcome.trace == [
        ("reader", "handshake", "TLSv1.3"),
        ("reader", "read", SMALL_READ, RECORD - SMALL_READ),
        ("after 3 idle cycles", RECORD - SMALL_READ),
        ("reader", "read", SMALL_READ, RECORD - 2 * SMALL_READ),
    ]


@USE_POLL
def test_reading_while_pending_gets_everything(tls: Contexts, use_poll: bool) -> None:
    """The fix for the above: the handler loops ``while self.socket.pending()``."""
    outcome = assert_same_behaviour(
        pending_scenario(tls, drain_pending=True), use_poll, normalise=without_steps
    )
    assert outcome.trace == [
        ("reader", "handshake", "TLSv1.3"),
        ("reader", "read", RECORD, 0),
        ("after 3 idle cycles", 0),
        ("reader", "read", 10, 0),
    ]
    assert registrations() == 0
