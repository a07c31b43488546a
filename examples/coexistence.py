"""Dispatchers and coroutines on one event loop.

Run with::

    python examples/coexistence.py
    python examples/coexistence.py --loop uvloop

(``--loop`` defaults to ``$ASYNCORE_ON_ASYNCIO_LOOP``, else ``asyncio``.)

``asyncio.run(main())``-style: asyncio owns the loop, and inside it

* a legacy line server (``CommandServer``, an ``asyncore.dispatcher``, with one
  ``asynchat.async_chat`` handler per connection) is driven by ``await serve(map)``,
  while an asyncio streams client talks to it;
* the handler answers ``DEFINE word`` by ``spawn()``-ing a coroutine that asks a pure
  asyncio service (``asyncio.start_server``) and pushes the answer to its peer later --
  meanwhile it keeps serving: an ``ECHO`` sent after the ``DEFINE`` is answered first;
* ``FAIL`` spawns a coroutine that raises: the exception reaches the handler's
  ``handle_error()`` (which by default, as in 3.11, reports it and closes the channel);
* a legacy client dispatcher in a second map, served concurrently, talks to the asyncio
  service; a coroutine awaits it with ``wait_connected()`` and ``wait_closed()``;
* a plain asyncio task keeps ticking the whole time;
* calling the blocking ``asyncore.loop()`` here is refused with a RuntimeError that
  points to ``serve()``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Callable

from asyncore_on_asyncio import asynchat, asyncore, serve, spawn, wait_closed, wait_connected

DEFINITIONS = {
    "asyncore": "a callback event loop, removed from the standard library in 3.12",
    "asyncio": "the standard library's event loop since 3.4",
}


# -- new code: a pure asyncio service --------------------------------------------------------


async def dictionary_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request per connection: ``DEFINE word`` -> ``word = definition``, a bit later."""
    request = (await reader.readline()).decode().strip()
    word = request.partition(" ")[2]
    await asyncio.sleep(0.05)  # a slow backend
    writer.write(f"{word} = {DEFINITIONS.get(word, '(unknown)')}\r\n".encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def define(address: tuple[str, int], word: str) -> str:
    """Ask the dictionary service; the kind of coroutine a legacy handler may now call."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"DEFINE {word}\r\n".encode())
    answer = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return answer.decode().strip()


# -- legacy code: a line server on asyncore/asynchat -----------------------------------------


class CommandServer(asyncore.dispatcher):
    def __init__(self, map: dict[int, asyncore.dispatcher], dictionary: tuple[str, int]) -> None:
        asyncore.dispatcher.__init__(self, map=map)
        self.dictionary = dictionary
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(5)

    def handle_accepted(self, sock: socket.socket, addr: object) -> None:
        CommandHandler(sock, self._map, self.dictionary)


class CommandHandler(asynchat.async_chat):
    """``ECHO text`` answers at once; ``DEFINE word`` and ``FAIL`` start coroutines."""

    def __init__(
        self,
        sock: socket.socket,
        map: dict[int, asyncore.dispatcher],
        dictionary: tuple[str, int],
    ) -> None:
        asynchat.async_chat.__init__(self, sock, map=map)
        self.dictionary = dictionary
        self.ibuffer: list[bytes] = []
        self.set_terminator(b"\r\n")

    def send_line(self, line: str) -> None:
        self.push(line.encode() + b"\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.ibuffer.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.ibuffer).decode()
        self.ibuffer = []
        command, _, argument = line.partition(" ")
        if command == "ECHO":
            self.send_line(argument)
        elif command == "DEFINE":
            spawn(self.answer_define(argument), dispatcher=self)
        elif command == "FAIL":
            spawn(self.fail(), dispatcher=self)
        else:
            self.send_line(f"unknown command {command!r}")

    async def answer_define(self, word: str) -> None:
        self.send_line(await define(self.dictionary, word))  # push() from a coroutine

    async def fail(self) -> None:
        await asyncio.sleep(0)
        raise LookupError("the backend is down")

    def handle_error(self) -> None:
        # 3.11's default prints a compact traceback and closes the channel; this one
        # prints a single line instead. It runs inside an ``except`` block, as in 3.11.
        exc = sys.exc_info()[1]
        print(f"server: handle_error() got {exc!r}; closing the connection")
        self.close()


class DictionaryClient(asyncore.dispatcher_with_send):
    """A legacy client: sends one request on connect, collects the answer until EOF."""

    def __init__(
        self, address: tuple[str, int], word: str, map: dict[int, asyncore.dispatcher]
    ) -> None:
        asyncore.dispatcher_with_send.__init__(self, map=map)
        self.word = word
        self.answer = b""
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def handle_connect(self) -> None:
        self.send(f"DEFINE {self.word}\r\n".encode())

    def handle_read(self) -> None:
        self.answer += self.recv(1024)

    def handle_close(self) -> None:
        self.close()


# -- main -----------------------------------------------------------------------------------


async def ticker(ticks: list[float]) -> None:
    while True:
        await asyncio.sleep(0.005)
        ticks.append(asyncio.get_running_loop().time())


async def streams_client(address: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*address)

    async def receive() -> None:
        line = await reader.readline()
        if line:
            print(f"client <- {line.decode().strip()}")
        else:
            print("client: server closed the connection")

    print("client -> ECHO hello")
    writer.write(b"ECHO hello\r\n")
    await receive()
    print("client -> DEFINE asyncore, ECHO meanwhile (in one write)")
    writer.write(b"DEFINE asyncore\r\nECHO meanwhile\r\n")
    await receive()  # the ECHO: the handler did not wait for the DEFINE's coroutine
    await receive()  # the DEFINE, pushed when the coroutine got its answer
    print("client -> FAIL")
    writer.write(b"FAIL\r\n")
    await receive()  # end of file: handle_error() closed the connection
    writer.close()
    await writer.wait_closed()


async def main() -> int:
    print(f"event loop: {type(asyncio.get_running_loop()).__module__}")
    ticks: list[float] = []
    ticking = asyncio.create_task(ticker(ticks))

    service = await asyncio.start_server(dictionary_service, "127.0.0.1", 0)
    service_address = service.sockets[0].getsockname()[:2]

    server_map: dict[int, asyncore.dispatcher] = {}
    server = CommandServer(server_map, service_address)
    serving = asyncio.create_task(serve(server_map))  # returns when server_map is empty

    try:
        asyncore.loop(map=server_map)
    except RuntimeError as exc:
        print(f"asyncore.loop() inside a running loop -> RuntimeError: {exc}")

    # An asyncio streams client talking to the legacy server.
    await streams_client(server.socket.getsockname())

    # A legacy client in a second map, served concurrently, talking to the asyncio service.
    client_map: dict[int, asyncore.dispatcher] = {}
    client = DictionaryClient(service_address, "asyncio", client_map)
    serving_clients = asyncio.create_task(serve(client_map))
    await wait_connected(client)
    print("legacy client: connected to the dictionary service")
    await wait_closed(client)
    print(f"legacy client <- {client.answer.decode().strip()}")
    await serving_clients

    server.close()  # the map is empty now, so serve(server_map) returns
    await serving
    service.close()
    await service.wait_closed()
    ticking.cancel()
    print(f"an asyncio task kept ticking meanwhile: {len(ticks) > 0}")
    print("done")
    return 0


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            sys.exit(
                "--loop uvloop: uvloop is not installed; pip install uvloop"
            )
        return uvloop.new_event_loop
    return None  # asyncio's default


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=os.environ.get("ASYNCORE_ON_ASYNCIO_LOOP", "asyncio"),
        help="event loop to run on (default: $ASYNCORE_ON_ASYNCIO_LOOP or asyncio)",
    )
    args = parser.parse_args(argv)
    # asyncio.run(main()) on Python 3.12+ also takes loop_factory=...; Runner works on 3.11.
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(cli())
