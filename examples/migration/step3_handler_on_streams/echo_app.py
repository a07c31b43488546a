"""Migration step 3: the listener stays a dispatcher; each connection moves to asyncio streams.

Run with::

    python examples/migration/step3_handler_on_streams/echo_app.py
    ASYNCORE_ON_ASYNCIO_LOOP=uvloop python examples/migration/step3_handler_on_streams/echo_app.py

Changes from step 2: the per-connection handler (``EchoHandler``, an ``async_chat``)
is rewritten as a coroutine, ``echo_session(reader, writer)``. ``EchoServer`` is still a
legacy dispatcher -- imagine it carries option parsing, access control, statistics you
are not ready to touch -- and ``handle_accepted`` hands every accepted connection over:
it wraps the socket in a dispatcher as before, then ``to_streams()`` takes that
dispatcher out of asyncore's socket map (without closing the socket) and returns an
asyncio ``(StreamReader, StreamWriter)`` pair on it. ``spawn()`` runs the session on the
engine's loop; if it raised, ``EchoServer.handle_error()`` would be called, as for any
exception in a handler.

``echo_app_protocol.py`` next to this file does the same with ``to_protocol()`` and an
``asyncio.Protocol``, the callback-style equivalent of a dispatcher.

Same transcript as step 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from asyncore_on_asyncio import asyncore, serve, spawn, to_streams

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
        spawn(self.handle_connection(connection), dispatcher=self)

    async def handle_connection(self, connection: asyncore.dispatcher) -> None:
        reader, writer = await to_streams(connection)
        await echo_session(reader, writer)
        self.close()  # this demo serves one client, then stops


async def echo_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """What EchoHandler did, as a coroutine."""
    writer.write(GREETING.encode() + b"\n")
    while (data := await reader.readline()).endswith(b"\n"):
        line = data.decode()[:-1]
        if line == "QUIT":
            print("server: got 'QUIT', saying goodbye")
            writer.write(b"bye\n")
            break
        print(f"server: got {line!r}")
        writer.write(line.encode() + b"\n")
        await writer.drain()
    writer.close()
    await writer.wait_closed()


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
