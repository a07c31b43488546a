"""Dispatchers and coroutines on one event loop: serve(), spawn(), the awaitables and the
hand-over of a connection to asyncio streams or a Protocol."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import asyncore_on_asyncio
from asyncore_on_asyncio import asynchat, asyncore
from tests import helpers

pytestmark = pytest.mark.asyncio


class EchoHandler(asyncore.dispatcher_with_send):
    def handle_read(self) -> None:
        data = self.recv(4096)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class EchoServer(asyncore.dispatcher):
    def __init__(self, map: dict[int, Any], handler: type[asyncore.dispatcher] = EchoHandler) -> None:
        super().__init__(map=map)
        self.handler = handler
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.port: int = self.socket.getsockname()[1]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.handler(sock, map=self._map)


def registrations() -> int:
    return helpers.registrations()


async def test_legacy_server_asyncio_client() -> None:
    m: dict[int, Any] = {}
    server = EchoServer(m)
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for line in (b"hello\n", b"x" * 100_000 + b"\n"):
        writer.write(line)
        assert await asyncio.wait_for(reader.readexactly(len(line)), 5) == line
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(serving, 5)  # the handler closes on EOF, then the map is empty
    assert m == {} and registrations() == 0


async def test_asyncio_server_legacy_client() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    aserver = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = aserver.sockets[0].getsockname()[1]
    received: list[bytes] = []

    class Client(asyncore.dispatcher_with_send):
        def handle_connect(self) -> None:
            self.send(b"ping\n")

        def handle_read(self) -> None:
            received.append(self.recv(100))

        def handle_close(self) -> None:
            self.close()

    m: dict[int, Any] = {}
    client = Client(map=m)
    client.create_socket()
    client.connect(("127.0.0.1", port))
    await asyncio.wait_for(asyncore_on_asyncio.serve(m, timeout=30), 5)
    assert b"".join(received) == b"PING\n"
    aserver.close()
    await aserver.wait_closed()


async def test_handler_spawns_coroutine_and_pushes_result() -> None:
    class Chat(asynchat.async_chat):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            self.buffer: list[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.buffer.append(data)

        def found_terminator(self) -> None:
            n = int(b"".join(self.buffer))
            self.buffer.clear()
            asyncore_on_asyncio.spawn(self.answer(n), dispatcher=self)

        async def answer(self, n: int) -> None:
            await asyncio.sleep(0.01)  # some slow asyncio work
            self.push(b"%d\n" % (n * n))

    m: dict[int, Any] = {}
    server = EchoServer(m, handler=Chat)  # type: ignore[arg-type]
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"7\n12\n")
    # The push happens in a task while serve() waits with a 30 s timeout: it must not wait.
    assert await asyncio.wait_for(reader.readline(), 5) == b"49\n"
    assert await asyncio.wait_for(reader.readline(), 5) == b"144\n"
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(serving, 5)
    assert m == {}


async def test_spawned_failure_goes_to_handle_error(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = socket.socketpair()

    class Handler(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(10)
            asyncore_on_asyncio.spawn(self.fail(), dispatcher=self)

        async def fail(self) -> None:
            raise LookupError("from the coroutine")

    m: dict[int, Any] = {}
    Handler(a, map=m)
    b.send(b"x")
    await asyncio.wait_for(asyncore_on_asyncio.serve(m, timeout=30), 5)
    out = capsys.readouterr().out
    assert "uncaptured python exception" in out and "LookupError" in out
    assert m == {}
    b.close()


async def test_spawned_failure_without_dispatcher_propagates() -> None:
    a, b = socket.socketpair()

    class Handler(asyncore.dispatcher):
        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            self.recv(10)
            asyncore_on_asyncio.spawn(self.fail())

        async def fail(self) -> None:
            raise LookupError("nobody handles me")

    m: dict[int, Any] = {}
    d = Handler(a, map=m)
    b.send(b"x")
    with pytest.raises(LookupError, match="nobody handles me"):
        await asyncio.wait_for(asyncore_on_asyncio.serve(m, timeout=30), 5)
    assert registrations() == 0
    d.close()
    b.close()


async def test_cancelling_serve_unregisters_and_leaves_dispatchers_open() -> None:
    m: dict[int, Any] = {}
    server = EchoServer(m)
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"a\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"a\n"
    assert registrations() == 2
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert registrations() == 0
    assert len(m) == 2 and all(d.socket.fileno() >= 0 for d in m.values())
    # Serving again resumes where it stopped.
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    writer.write(b"b\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"b\n"
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    asyncore.close_all(m)
    writer.close()
    await writer.wait_closed()
    assert registrations() == 0


async def test_two_maps_served_at_once() -> None:
    maps: list[dict[int, Any]] = [{}, {}]
    servers = [EchoServer(m) for m in maps]
    tasks = [asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30)) for m in maps]
    for server in servers:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"%d\n" % server.port)
        assert await asyncio.wait_for(reader.readline(), 5) == b"%d\n" % server.port
        writer.close()
        await writer.wait_closed()
        server.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert maps == [{}, {}]


async def test_serving_one_map_twice_is_an_error() -> None:
    m: dict[int, Any] = {}
    server = EchoServer(m)
    first = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already being served"):
        await asyncore_on_asyncio.serve(m)
    server.close()
    await asyncio.wait_for(first, 5)


async def test_blocking_loop_inside_running_loop_is_a_clear_error() -> None:
    m: dict[int, Any] = {}
    server = EchoServer(m)
    with pytest.raises(RuntimeError, match=r"await asyncore_on_asyncio\.serve"):
        asyncore.loop(timeout=0, map=m, count=1)
    server.close()


async def test_wait_connected_and_wait_closed() -> None:
    m: dict[int, Any] = {}
    server = EchoServer(m)

    class Client(asyncore.dispatcher):
        def handle_connect(self) -> None:
            pass

        def writable(self) -> bool:
            return not self.connected

        def handle_read(self) -> None:
            self.recv(10)

    client = Client(map=m)
    client.create_socket()
    client.connect(("127.0.0.1", server.port))
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    await asyncio.wait_for(asyncore_on_asyncio.wait_connected(client), 5)
    assert client.connected
    await asyncore_on_asyncio.wait_connected(client)  # already connected: returns at once
    closed = asyncio.create_task(asyncore_on_asyncio.wait_closed(client))
    await asyncio.sleep(0)
    assert not closed.done()
    client.close()
    await asyncio.wait_for(closed, 5)
    server.close()
    await asyncio.wait_for(serving, 5)


async def test_wait_connected_fails_when_closed_first() -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()

    class Client(asyncore.dispatcher):
        def handle_error(self) -> None:
            self.close()

    m: dict[int, Any] = {}
    client = Client(map=m)
    client.create_socket()
    client.connect(("127.0.0.1", port))
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    with pytest.raises(ConnectionError, match="closed before it connected"):
        await asyncio.wait_for(asyncore_on_asyncio.wait_connected(client), 5)
    await asyncio.wait_for(serving, 5)


async def test_hand_over_to_streams() -> None:
    """Migration step: the server stays a dispatcher, each connection moves to streams."""
    m: dict[int, Any] = {}
    tasks: list[asyncio.Task[None]] = []

    async def stream_echo(dispatcher: asyncore.dispatcher) -> None:
        reader, writer = await asyncore_on_asyncio.to_streams(dispatcher)
        line = await reader.readline()
        writer.write(b"streams:" + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    class Handler(asyncore.dispatcher):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map=map)
            tasks.append(asyncio.ensure_future(stream_echo(self)))

    server = EchoServer(m, handler=Handler)  # type: ignore[arg-type]
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"hi\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"streams:hi\n"
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(m) == 1  # only the listening server is left
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(serving, 5)


async def test_hand_over_to_protocol() -> None:
    m: dict[int, Any] = {}
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handovers: list[asyncio.Future[Any]] = []

    class Upper(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(None)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())  # type: ignore[attr-defined]
            done.set_result(data)

    class Handler(asyncore.dispatcher):
        def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
            super().__init__(sock, map=map)
            handovers.append(asyncio.ensure_future(asyncore_on_asyncio.to_protocol(self, Upper)))

    server = EchoServer(m, handler=Handler)  # type: ignore[arg-type]
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=30))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"abc")
    assert await asyncio.wait_for(reader.readexactly(3), 5) == b"ABC"
    assert await done == b"abc"
    await asyncio.gather(*handovers)
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(serving, 5)
    await asyncio.wait_for(lost, 5)  # the protocol saw EOF and its transport closed


async def test_detach_errors() -> None:
    d = asyncore.dispatcher(map={})
    with pytest.raises(ValueError, match="no socket"):
        asyncore_on_asyncio.detach(d)


class PendingWriter(asyncore.dispatcher):
    """A custom buffer behind writable(), changed by a coroutine."""

    def __init__(self, sock: socket.socket, map: dict[int, Any]) -> None:
        super().__init__(sock, map=map)
        self.pending = b""
        self.asked = 0
        self.written: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def readable(self) -> bool:
        self.asked += 1
        return True

    def writable(self) -> bool:
        return bool(self.pending)

    def handle_read(self) -> None:
        self.recv(100)

    def handle_write(self) -> None:
        sent = self.send(self.pending)
        self.pending = self.pending[sent:]
        if not self.pending and not self.written.done():
            self.written.set_result(asyncio.get_running_loop().time())


@pytest.mark.parametrize("call_wakeup", [True, False])
async def test_custom_writable_changed_by_coroutine(call_wakeup: bool) -> None:
    """With wakeup() the change is used at once; without, when the wait's timeout ends."""
    a, b = socket.socketpair()
    m: dict[int, Any] = {}
    d = PendingWriter(a, m)
    timeout = 0.5
    serving = asyncio.create_task(asyncore_on_asyncio.serve(m, timeout=timeout))
    for _ in range(100):  # until serve() has scanned once: it waits from then on
        if d.asked:
            break
        await asyncio.sleep(0)
    assert d.asked == 1
    loop = asyncio.get_running_loop()
    changed_at = loop.time()
    d.pending = b"late data"
    if call_wakeup:
        asyncore_on_asyncio.wakeup(d)
    written_at = await asyncio.wait_for(d.written, 5)
    delay = written_at - changed_at
    if call_wakeup:
        assert delay < timeout / 2, delay
    else:
        assert timeout / 2 < delay < timeout * 3, delay
    assert b.recv(100) == b"late data"
    d.close()
    await asyncio.wait_for(serving, 5)
    b.close()


async def test_detach_refuses_to_lose_buffered_data() -> None:
    a, b = socket.socketpair()
    m: dict[int, Any] = {}
    d = asyncore.dispatcher_with_send(a, map=m)
    d.out_buffer = b"unsent"
    with pytest.raises(ValueError, match="6 unsent bytes"):
        asyncore_on_asyncio.detach(d)
    assert m == {a.fileno(): d}
    d.out_buffer = b""
    sock = asyncore_on_asyncio.detach(d)
    assert sock is a and m == {} and d.socket is None and not d.connected
    sock.close()
    b.close()


async def test_spawned_task_is_kept_alive_without_a_reference() -> None:
    """The loop holds tasks only weakly; spawn() keeps its task until it is done, so a
    coroutine waiting on a future that nothing else references is not collected."""
    import gc
    import weakref

    waiting: weakref.WeakSet[asyncio.Future[str]] = weakref.WeakSet()
    results: list[str] = []

    async def wait_for_signal() -> None:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting.add(future)
        results.append(await future)

    asyncore_on_asyncio.spawn(wait_for_signal())  # the returned task is dropped
    await asyncio.sleep(0)
    gc.collect()
    assert len(waiting) == 1, "the spawned task was garbage-collected while pending"
    for future in list(waiting):
        future.set_result("signalled")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert results == ["signalled"]
