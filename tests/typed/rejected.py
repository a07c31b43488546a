"""Lines ``mypy --strict`` must reject, each silenced by the error code it must give.

tests/test_typing.py checks this file with ``--warn-unused-ignores``: if mypy stops
rejecting a line, its ignore comment is unused and the check fails.  Never run.
"""

from __future__ import annotations

import socket

from asyncore_on_asyncio import asynchat, asyncore, serve


def rejected(sock: socket.socket, chat: asynchat.async_chat) -> None:
    asyncore.dispatcher("not a socket")  # type: ignore[arg-type]
    asyncore.dispatcher(sock, map={"fd": None})  # type: ignore[dict-item]
    asyncore.dispatcher_with_send(map=[])  # type: ignore[arg-type]
    asyncore.loop(timeout="1")  # type: ignore[arg-type]
    asyncore.loop(count="2")  # type: ignore[arg-type]
    asyncore.poll(map=1)  # type: ignore[arg-type]
    asyncore.close_all(map={1: 2}, ignore_all="yes")  # type: ignore[arg-type]

    d = asyncore.dispatcher(sock)
    d.socket.no_such_method()  # type: ignore[attr-defined]
    d.send("text")  # type: ignore[arg-type]
    d.bind(80)  # type: ignore[arg-type]
    d.accept()[0]  # type: ignore[index]
    text: str = d.recv(10)  # type: ignore[assignment]
    print(text)
    d.set_socket(3)  # type: ignore[arg-type]

    chat.push("text")  # type: ignore[arg-type]
    chat.set_terminator(1.5)  # type: ignore[arg-type]
    asynchat.simple_producer("text")  # type: ignore[arg-type]

    asyncore.file_dispatcher("0")  # type: ignore[arg-type]
    serve(map=[]).close()  # type: ignore[arg-type]


class BadHandler(asyncore.dispatcher):
    def handle_accepted(self, sock: int, addr: object) -> None:  # type: ignore[override]
        del sock, addr
