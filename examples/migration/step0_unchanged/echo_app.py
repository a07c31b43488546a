"""Migration step 0: legacy asyncore/asynchat code, run unchanged on asyncio.

Run with::

    python -m asyncore_on_asyncio examples/migration/step0_unchanged/echo_app.py
    python -m asyncore_on_asyncio --loop uvloop examples/migration/step0_unchanged/echo_app.py

(or call ``asyncore_on_asyncio.install()`` before the first ``import asyncore``).

The program -- the same at every step of ``examples/migration/`` -- is a line echo
server plus a scripted client talking to it in one process. The server greets, echoes
each line, answers ``QUIT`` with ``bye`` and closes; after its one client it stops
listening, the socket map runs empty and the program ends. Every step prints the same
transcript on stdout.

This file is a typical pre-3.12 program: nothing in it knows about asyncio, and it runs on
Python 3.11's own asyncore as well.
"""

from __future__ import annotations

import asynchat
import asyncore
import socket

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


class ScriptedClient(asynchat.async_chat):
    """Sends the next line of ``script`` each time the server says something."""

    def __init__(self, address: tuple[str, int], script: list[str]) -> None:
        asynchat.async_chat.__init__(self)
        self.script = list(script)
        self.buffer: list[bytes] = []
        self.set_terminator(b"\n")
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def collect_incoming_data(self, data: bytes) -> None:
        self.buffer.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.buffer).decode()
        self.buffer = []
        print(f"client <- {line!r}")
        if self.script:
            request = self.script.pop(0)
            print(f"client -> {request!r}")
            self.push(request.encode() + b"\n")

    def handle_close(self) -> None:
        print("client: server closed the connection")
        self.close()


def main() -> None:
    server = EchoServer()
    ScriptedClient(server.socket.getsockname(), SCRIPT)
    asyncore.loop()
    print("done")


if __name__ == "__main__":
    main()
