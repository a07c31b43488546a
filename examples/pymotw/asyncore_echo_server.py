"""PyMOTW's asyncore echo server and client, ported to Python 3 and run on asyncio.

Legacy-style script: it imports plain ``asyncore``. Run it unchanged on an asyncio event
loop with::

    python -m asyncore_on_asyncio examples/pymotw/asyncore_echo_server.py
    python -m asyncore_on_asyncio --loop uvloop examples/pymotw/asyncore_echo_server.py

``EchoServer`` accepts one connection and hands it to an ``EchoHandler``, which echoes
what it reads in 256-byte chunks. ``EchoClient`` sends ``lorem.txt`` (next to this file)
in 512-byte chunks and compares what comes back. All three live in one process and one
socket map. The verdict ``RECEIVED COPY OF MESSAGE`` goes to stdout (debug logging to
stderr); on a mismatch the script exits with status 1.

Fixes to the original, besides print() and bytes:

* ``EchoHandler.handle_write`` appended the unsent rest of a chunk to
  ``self.data.to_write`` -- an AttributeError on the first partial send. It is
  ``self.data_to_write``.
* ``EchoHandler`` closed as soon as its queue ran empty, which cuts the echo short
  whenever it catches up with the client before the client has sent everything (it only
  worked by luck of timing). Here the client half-closes its socket (``SHUT_WR``) after
  the last byte, and the handler closes once it has seen that end of file *and* written
  everything back.
"""

from __future__ import annotations

import asyncore
import logging
import socket
import sys
from pathlib import Path

LOREM = Path(__file__).with_name("lorem.txt")


class EchoServer(asyncore.dispatcher):
    """Receives connections and establishes handlers for each client."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.logger = logging.getLogger("EchoServer")
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.bind(address)
        self.address = self.socket.getsockname()
        self.logger.debug("binding to %s", self.address)
        self.listen(1)

    def handle_accept(self) -> None:
        # Called when a client connects to our socket.
        client_info = self.accept()
        if client_info is None:  # the client went away before we got to it
            return
        self.logger.debug("handle_accept() -> %s", client_info[1])
        EchoHandler(sock=client_info[0])
        # We only want to deal with one client at a time,
        # so close as soon as we set up the handler.
        # Normally you would not do this and the server
        # would run forever or until it received instructions
        # to stop.
        self.handle_close()

    def handle_close(self) -> None:
        self.logger.debug("handle_close()")
        self.close()


class EchoHandler(asyncore.dispatcher):
    """Handles echoing messages from a single client."""

    def __init__(self, sock: socket.socket, chunk_size: int = 256) -> None:
        self.chunk_size = chunk_size
        self.logger = logging.getLogger(f"EchoHandler{sock.getsockname()}")
        asyncore.dispatcher.__init__(self, sock=sock)
        self.data_to_write: list[bytes] = []
        self.peer_done = False  # the client has finished sending

    def readable(self) -> bool:
        # After end of file the socket stays readable forever; stop asking.
        return not self.peer_done

    def writable(self) -> bool:
        """We want to write if we have received data."""
        response = bool(self.data_to_write)
        self.logger.debug("writable() -> %s", response)
        return response

    def handle_write(self) -> None:
        """Write as much as possible of the oldest message we have received."""
        data = self.data_to_write.pop()
        sent = self.send(data[: self.chunk_size])
        if sent < len(data):
            remaining = data[sent:]
            self.data_to_write.append(remaining)  # the original said self.data.to_write
        self.logger.debug("handle_write() -> (%d) %r", sent, data[:sent][:40])
        if self.peer_done and not self.data_to_write:
            self.close()

    def handle_read(self) -> None:
        """Read an incoming message from the client and put it into our outgoing queue."""
        data = self.recv(self.chunk_size)
        self.logger.debug("handle_read() -> (%d) %r", len(data), data[:40])
        if data:
            self.data_to_write.insert(0, data)

    def handle_close(self) -> None:
        # recv() calls this at end of file, send()/recv() when the peer reset the
        # connection. Keep echoing what is queued after end of file; close at once if
        # nothing is queued or if this is the second call (the echo cannot be delivered).
        self.logger.debug("handle_close()")
        if self.peer_done or not self.data_to_write:
            self.close()
        self.peer_done = True


class EchoClient(asyncore.dispatcher):
    """Sends messages to the server and receives responses."""

    def __init__(self, host: str, port: int, message: bytes, chunk_size: int = 512) -> None:
        self.message = message
        self.to_send = message
        self.received_data: list[bytes] = []
        self.chunk_size = chunk_size
        self.copy_ok = False
        self.logger = logging.getLogger("EchoClient")
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.logger.debug("connecting to %s", (host, port))
        self.connect((host, port))

    def handle_connect(self) -> None:
        self.logger.debug("handle_connect()")

    def handle_close(self) -> None:
        self.logger.debug("handle_close()")
        self.close()
        received_message = b"".join(self.received_data)
        self.copy_ok = received_message == self.message
        if self.copy_ok:
            self.logger.debug("RECEIVED COPY OF MESSAGE")
        else:
            self.logger.debug("ERROR IN TRANSMISSION")
            self.logger.debug("EXPECTED %r", self.message)
            self.logger.debug("RECEIVED %r", received_message)

    def writable(self) -> bool:
        self.logger.debug("writable() -> %s", bool(self.to_send))
        return bool(self.to_send)

    def handle_write(self) -> None:
        sent = self.send(self.to_send[: self.chunk_size])
        self.logger.debug("handle_write() -> (%d) %r", sent, self.to_send[:sent][:40])
        self.to_send = self.to_send[sent:]
        if not self.to_send:
            # New in this port: tell the handler that the whole message is out.
            self.socket.shutdown(socket.SHUT_WR)

    def handle_read(self) -> None:
        data = self.recv(self.chunk_size)
        self.logger.debug("handle_read() -> (%d) %r", len(data), data[:40])
        self.received_data.append(data)


def main() -> int:
    logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    address = ("127.0.0.1", 0)  # let the kernel give us a port
    server = EchoServer(address)
    ip, port = server.address  # find out what port we were given
    message = LOREM.read_bytes()
    client = EchoClient(ip, port, message=message)
    asyncore.loop()
    received = sum(len(chunk) for chunk in client.received_data)
    print(f"sent {len(message)} bytes, received {received} bytes")
    if not client.copy_ok:
        print("ERROR IN TRANSMISSION")
        return 1
    print("RECEIVED COPY OF MESSAGE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
