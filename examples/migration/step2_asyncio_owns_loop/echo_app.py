"""Migration step 2: asyncio owns the event loop; new code is written as coroutines.

Run with::

    python examples/migration/step2_asyncio_owns_loop/echo_app.py
    ASYNCORE_ON_ASYNCIO_LOOP=uvloop python examples/migration/step2_asyncio_owns_loop/echo_app.py

Changes from step 1:

* ``asyncore.loop()`` becomes ``await serve()`` inside ``asyncio.run(main())``: the
  program now starts like any asyncio program, and dispatchers and coroutines share one
  event loop. ``serve()`` returns when the socket map is empty, like ``loop()`` did.
* The client -- "new code" here -- is rewritten as a coroutine on asyncio streams.
  The server classes are untouched legacy dispatchers.

Same transcript as step 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from asyncore_on_asyncio import asynchat, asyncore, serve

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
        EchoHandler(sock, self)


class EchoHandler(asynchat.async_chat):
    def __init__(self, sock: socket.socket, server: EchoServer) -> None:
        asynchat.async_chat.__init__(self, sock)
        self.server = server
        self.buffer: list[bytes] = []
        self.set_terminator(b"\n")
        self.push(GREETING.encode() + b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.buffer.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.buffer).decode()
        self.buffer = []
        if line == "QUIT":
            print("server: got 'QUIT', saying goodbye")
            self.push(b"bye\n")
            self.close_when_done()
        else:
            print(f"server: got {line!r}")
            self.push(line.encode() + b"\n")

    def handle_close(self) -> None:
        self.close()
        self.server.close()  # this demo serves one client, then stops


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
