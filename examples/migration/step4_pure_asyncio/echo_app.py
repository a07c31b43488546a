"""Migration step 4: pure asyncio, no dependency on asyncore_on_asyncio.

Run with::

    python examples/migration/step4_pure_asyncio/echo_app.py
    ASYNCORE_ON_ASYNCIO_LOOP=uvloop python examples/migration/step4_pure_asyncio/echo_app.py

Changes from step 3: the listening dispatcher becomes ``asyncio.start_server()`` and the
last import of ``asyncore_on_asyncio`` goes. ``echo_session`` and ``scripted_client``
are unchanged from step 3. (The environment variable above is read by this file's own
``new_event_loop()``, which only exists so the test suite can run it on both loops.)

Same transcript as step 0.
"""

from __future__ import annotations

import asyncio
import os
import sys

GREETING = "welcome to the echo server"
SCRIPT = ["hello", "asyncore on asyncio", "QUIT"]


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
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        print("server: accepted a connection")
        await echo_session(reader, writer)
        server.close()  # this demo serves one client, then stops

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    print("server: listening")
    await scripted_client(server.sockets[0].getsockname(), SCRIPT)
    await server.wait_closed()
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
