"""Ordinary user code, type-checked with ``mypy --strict`` by tests/test_typing.py.

Not a test module (pytest does not collect it); it also runs: an echo server
(``dispatcher`` + ``async_chat``) and a client (``dispatcher_with_send``) served by
``serve()`` inside ``asyncio.run()``, with a coroutine started by ``spawn()``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from asyncore_on_asyncio import asynchat, asyncore, serve, spawn


class EchoHandler(asynchat.async_chat):
    def __init__(self, sock: socket.socket, map: dict[int, asyncore.dispatcher]) -> None:
        super().__init__(sock, map)
        self.lines: list[bytes] = []
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.lines.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.lines)
        self.lines.clear()
        spawn(self.answer(line), dispatcher=self)

    async def answer(self, line: bytes) -> None:
        await asyncio.sleep(0)
        self.push(line.upper() + b"\n")
        self.close_when_done()


class EchoServer(asyncore.dispatcher):
    def __init__(self, map: dict[int, asyncore.dispatcher]) -> None:
        super().__init__(map=map)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(5)

    def port(self) -> int:
        # getsockname() returns Any in typeshed, so name the type (a bare return is no-any-return).
        port: int = self.socket.getsockname()[1]
        return port

    def handle_accept(self) -> None:
        pair = self.accept()
        if pair is not None:
            sock, addr = pair
            print("accepted from", addr, "on fd", sock.fileno())
            EchoHandler(sock, self._map)


class Client(asyncore.dispatcher_with_send):
    def __init__(self, port: int, map: dict[int, asyncore.dispatcher]) -> None:
        super().__init__(map=map)
        self.received = b""
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(("127.0.0.1", port))

    def handle_connect(self) -> None:
        self.send(b"hello\n")

    def handle_read(self) -> None:
        self.received += self.recv(1024)

    def handle_close(self) -> None:
        self.close()


class Probe(asyncore.dispatcher):
    """A raw dispatcher that writes to its socket itself."""

    def writable(self) -> bool:
        return False

    def poke(self) -> int:
        sent: int = self.socket.send(b"x")
        return sent

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        sock.close()


async def main() -> bytes:
    server_map: dict[int, asyncore.dispatcher] = {}
    client_map: dict[int, asyncore.dispatcher] = {}
    server = EchoServer(server_map)
    client = Client(server.port(), client_map)
    serving = asyncio.create_task(serve(server_map))
    await serve(client_map, timeout=5.0)  # returns when the client has closed
    server.close()
    await serving
    return client.received


if __name__ == "__main__":
    print(asyncio.run(main()).decode().strip())
