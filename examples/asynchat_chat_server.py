"""A line-protocol chat room on asynchat, with two scripted asynchat clients.

Legacy-style script: it imports plain ``asyncore`` and ``asynchat``. Run it unchanged on
an asyncio event loop with::

    python -m asyncore_on_asyncio examples/asynchat_chat_server.py
    python -m asyncore_on_asyncio --loop uvloop examples/asynchat_chat_server.py

Protocol: CRLF-terminated lines. ``NICK name`` joins the room, ``SAY text`` speaks to the
others, ``WHO`` lists who is online, ``QUIT`` leaves (the server answers and closes the
connection with ``close_when_done()``). Server notices start with ``*``, messages from
others look like ``<nick> text``.

``ChatServer`` is an ``asyncore.dispatcher`` that accepts connections; each one gets a
``ChatSession`` (``asynchat.async_chat``). Two ``ScriptedClient`` objects, also
``async_chat``, play a scripted conversation: each answers the lines it receives from a
table of reactions, so the whole exchange is driven by the server's replies. Alice joins
first and invites Bob in once she is welcomed; when the room is empty again the server
closes its listening socket, the socket map runs empty and ``asyncore.loop()`` returns.

Each side records what it saw; the records are printed at the end (printing as things
happen would interleave the two clients differently from run to run).
"""

from __future__ import annotations

import asynchat
import asyncore
import socket
import sys
from typing import Callable, Union

Action = Union[str, Callable[[], object]]  # a line to send, or something to do


class ChatServer(asyncore.dispatcher):
    def __init__(self, address: tuple[str, int]) -> None:
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(address)
        self.listen(5)
        self.members: list[ChatSession] = []
        self.transcript: list[str] = []

    def handle_accepted(self, sock: socket.socket, addr: object) -> None:
        ChatSession(self, sock)

    def broadcast(self, line: str, exclude: ChatSession | None = None) -> None:
        for member in self.members:
            if member is not exclude:
                member.send_line(line)

    def join(self, session: ChatSession) -> None:
        self.members.append(session)
        session.send_line(f"* welcome {session.nick}, {len(self.members)} online")
        self.broadcast(f"* {session.nick} joined", exclude=session)

    def leave(self, session: ChatSession) -> None:
        if session not in self.members:
            return
        self.members.remove(session)
        self.broadcast(f"* {session.nick} left")
        if not self.members:
            self.transcript.append("room is empty, closing the listening socket")
            self.close()


class ChatSession(asynchat.async_chat):
    """One connected client, as seen by the server."""

    def __init__(self, server: ChatServer, sock: socket.socket) -> None:
        asynchat.async_chat.__init__(self, sock)
        self.server = server
        self.nick: str | None = None
        self.ibuffer: list[bytes] = []
        self.set_terminator(b"\r\n")

    def send_line(self, line: str) -> None:
        self.push(line.encode("utf-8") + b"\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self.ibuffer.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.ibuffer).decode("utf-8")
        self.ibuffer = []
        self.server.transcript.append(f"{self.nick or '(new)'}: {line}")
        command, _, argument = line.partition(" ")
        method = getattr(self, "do_" + command.upper(), None)
        if method is None:
            self.send_line(f"* unknown command {command!r}")
        elif self.nick is None and command.upper() != "NICK":
            self.send_line("* say NICK first")
        else:
            method(argument)

    def do_NICK(self, nick: str) -> None:
        if self.nick is not None:
            self.send_line(f"* you are {self.nick} already")
            return
        self.nick = nick
        self.server.join(self)

    def do_SAY(self, text: str) -> None:
        self.server.broadcast(f"<{self.nick}> {text}", exclude=self)

    def do_WHO(self, _: str) -> None:
        names = ", ".join(str(member.nick) for member in self.server.members)
        self.send_line(f"* online: {names}")

    def do_QUIT(self, _: str) -> None:
        self.send_line(f"* bye {self.nick}")
        self.close_when_done()
        self.server.leave(self)

    def handle_close(self) -> None:
        # The client went away without QUIT (or close_when_done() has finished).
        self.server.leave(self)
        self.close()


class ScriptedClient(asynchat.async_chat):
    """Joins as ``nick`` and reacts to the lines it receives as ``reactions`` says."""

    def __init__(
        self, nick: str, address: tuple[str, int], reactions: dict[str, list[Action]]
    ) -> None:
        asynchat.async_chat.__init__(self)
        self.nick = nick
        self.reactions = reactions
        self.ibuffer: list[bytes] = []
        self.transcript: list[str] = []
        self.set_terminator(b"\r\n")
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect(address)

    def send_line(self, line: str) -> None:
        self.transcript.append(f"-> {line}")
        self.push(line.encode("utf-8") + b"\r\n")

    def handle_connect(self) -> None:
        self.send_line(f"NICK {self.nick}")

    def collect_incoming_data(self, data: bytes) -> None:
        self.ibuffer.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.ibuffer).decode("utf-8")
        self.ibuffer = []
        self.transcript.append(f"<- {line}")
        for action in self.reactions.pop(line, []):
            if isinstance(action, str):
                self.send_line(action)
            else:
                action()

    def handle_close(self) -> None:
        self.transcript.append("connection closed by the server")
        self.close()


def main() -> int:
    server = ChatServer(("127.0.0.1", 0))
    address = server.socket.getsockname()
    clients: list[ScriptedClient] = []

    def bob_joins() -> None:
        clients.append(
            ScriptedClient(
                "bob",
                address,
                {
                    "<alice> hi bob": ["SAY hello alice", "WHO"],
                    "* online: alice, bob": ["QUIT"],
                },
            )
        )

    clients.append(
        ScriptedClient(
            "alice",
            address,
            {
                "* welcome alice, 1 online": [bob_joins],
                "* bob joined": ["SAY hi bob"],
                "* bob left": ["QUIT"],
            },
        )
    )
    asyncore.loop()

    print("--- the server saw ---")
    for line in server.transcript:
        print(line)
    for client in clients:
        print(f"--- {client.nick} saw ---")
        for line in client.transcript:
            print(line)
    unused = [(c.nick, line) for c in clients for line in c.reactions]
    if unused:
        print(f"script not played to the end: {unused}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
