"""Migration step 3, Protocol flavour: each connection moves to an ``asyncio.Protocol``.

Run with::

    python examples/migration/step3_handler_on_streams/echo_app_protocol.py
    ASYNCORE_ON_ASYNCIO_LOOP=uvloop \\
        python examples/migration/step3_handler_on_streams/echo_app_protocol.py

The same step as ``echo_app.py`` next to this file, but the handler becomes an
``asyncio.Protocol`` instead of a coroutine: ``connection_made`` / ``data_received`` /
``connection_lost`` map one to one onto a dispatcher's ``__init__`` / ``handle_read`` /
``handle_close``, which makes this the smaller rewrite for callback-heavy handlers.
``to_protocol(dispatcher, protocol_factory)`` takes the dispatcher out of asyncore's
socket map and returns ``(transport, protocol)``, like ``loop.connect_accepted_socket()``.

Same transcript as step 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Callable, cast

from asyncore_on_asyncio import asyncore, serve, spawn, to_protocol

GREETING = "welcome to the echo server"
SCRIPT = ["hello", "asyncore on asyncio", "QUIT"]


class EchoServer(asyncore.dispatcher):
    def __init__(self) -> None:
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(5)
        print("server: listening")

    def handle_accepted(self, sock: socket.socket, addr: object) -> None:
        print("server: accepted a connection")
        connection = asyncore.dispatcher(sock)  # where EchoHandler(sock, self) used to be
        # this demo serves one client, then stops: the protocol closes us when it is done
        spawn(to_protocol(connection, lambda: EchoProtocol(self.close)), dispatcher=self)


class EchoProtocol(asyncio.Protocol):
    """What EchoHandler did, as an asyncio protocol."""

    def __init__(self, on_connection_lost: Callable[[], object]) -> None:
        self.on_connection_lost = on_connection_lost
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport
        self.transport.write(GREETING.encode() + b"\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.transport.is_closing() and b"\n" in self.buffer:
            raw, _, rest = bytes(self.buffer).partition(b"\n")
            self.buffer[:] = rest
            line = raw.decode()
            if line == "QUIT":
                print("server: got 'QUIT', saying goodbye")
                self.transport.write(b"bye\n")
                self.transport.close()  # after the buffered data is sent
            else:
                print(f"server: got {line!r}")
                self.transport.write(line.encode() + b"\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_connection_lost()


async def scripted_client(address: tuple[str, int], script: list[str]) -> None:
    """Sends the next line of ``script`` each time the server says something."""
    script = list(script)
    reader, writer = await asyncio.open_connection(*address)
    while (data := await reader.readline()).endswith(b"\n"):
        print(f"client <- {data.decode()[:-1]!r}")
        if script:
            request = script.pop(0)
            print(f"client -> {request!r}")
            writer.write(request.encode() + b"\n")
            await writer.drain()
    print("client: server closed the connection")
    writer.close()
    await writer.wait_closed()


async def main() -> None:
    server = EchoServer()
    serving = asyncio.create_task(serve())  # drives asyncore.socket_map on this loop
    await scripted_client(server.socket.getsockname(), SCRIPT)
    await serving  # returns once the socket map is empty
    print("done")


def new_event_loop() -> asyncio.AbstractEventLoop:
    # The test suite runs every example on both loops; your program would simply call
    # asyncio.run(main()), or uvloop.run(main()).
    if os.environ.get("ASYNCORE_ON_ASYNCIO_LOOP") == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        print(f"event loop: {type(runner.get_loop()).__module__}", file=sys.stderr)
        runner.run(main())
