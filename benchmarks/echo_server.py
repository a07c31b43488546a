"""One echo server variant, in its own process: ``echo_server.py VARIANT HANDLER PORTFILE``.

VARIANT is where the server runs:

- ``pyasyncore-select`` / ``pyasyncore-poll``: the frozen 3.11 modules from PyPI
  (``pyasyncore``/``pyasynchat``; on 3.11 the standard library's own), ``use_poll`` off/on;
- ``ours-asyncio`` / ``ours-uvloop``: this project's modules on the default loop / uvloop;
- ``ours-uvloop-coalesce``: the same on uvloop with ``async_chat.coalesce_pushes`` on (the
  opt-in that sends the replies of one read in one ``send()``; ``plain`` is unaffected);
- ``native-asyncio`` / ``native-uvloop``: an ``asyncio.Protocol`` rewrite on either loop.

HANDLER is the handler flavour: ``chat`` (``async_chat`` line echo, terminator ``b"\\n"``) or
``plain`` (a ``dispatcher`` with its own ``bytearray`` and ``writable() = bool(buffer)``).
The asyncore variants run the *same* handler source (:func:`make_handlers`); the native
rewrite of ``chat`` echoes line by line, of ``plain`` echoes whatever arrives.

The server binds 127.0.0.1 on a free port, writes the port to PORTFILE, pins itself to one
CPU (``--cpu``) when it can, and serves until SIGTERM, on which it prints its CPU time as
one JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import sys
import time
from typing import Any

VARIANTS = (
    "pyasyncore-select",
    "pyasyncore-poll",
    "ours-asyncio",
    "ours-uvloop",
    "ours-uvloop-coalesce",
    "native-asyncio",
    "native-uvloop",
)
HANDLERS = ("chat", "plain")
BACKLOG = 1024


def make_handlers(asyncore: Any, asynchat: Any) -> dict[str, type]:
    """The asyncore-style handlers, written once and run on either implementation."""

    class ChatEcho(asynchat.async_chat):
        def __init__(self, sock, map=None):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.ibuffer = []

        def collect_incoming_data(self, data):
            self.ibuffer.append(data)

        def found_terminator(self):
            line = b"".join(self.ibuffer)
            self.ibuffer = []
            self.push(line + b"\n")

        def handle_close(self):
            self.close()

    class PlainEcho(asyncore.dispatcher):
        def __init__(self, sock, map=None):
            asyncore.dispatcher.__init__(self, sock, map=map)
            self.buffer = bytearray()

        def writable(self):
            return bool(self.buffer)

        def handle_read(self):
            self.buffer += self.recv(65536)

        def handle_write(self):
            sent = self.send(self.buffer)
            del self.buffer[:sent]

        def handle_close(self):
            self.close()

    class EchoServer(asyncore.dispatcher):
        def __init__(self, handler, map=None):
            asyncore.dispatcher.__init__(self, map=map)
            self.handler = handler
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(BACKLOG)

        def handle_accepted(self, sock, addr):
            # The native variants get TCP_NODELAY from asyncio; give it to all, so that
            # no variant pays Nagle/delayed-ACK stalls the others do not.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.handler(sock, map=self._map)

    return {"chat": ChatEcho, "plain": PlainEcho, "server": EchoServer}


def _serve_asyncore(variant: str, handler: str, portfile: str) -> None:
    if variant.startswith("pyasyncore"):
        import asynchat
        import asyncore

        if getattr(asyncore, "__name__", "") != "asyncore" or "asyncore_on_asyncio" in getattr(
            asyncore, "__file__", ""
        ):
            raise SystemExit("import asyncore did not give the frozen pyasyncore module")
    else:
        import asyncore_on_asyncio
        from asyncore_on_asyncio import asynchat, asyncore

        # Reads ASYNCORE_ON_ASYNCIO_REPORT (run.py's "+report" variants), where install() does.
        asyncore_on_asyncio.install()

        if variant.startswith("ours-uvloop"):
            import uvloop

            asyncore_on_asyncio.set_loop_factory(uvloop.new_event_loop)
        else:
            asyncore_on_asyncio.set_loop_factory(asyncio.new_event_loop)
        # The opt-in of async_chat that sends the replies of one read together.
        asynchat.async_chat.coalesce_pushes = variant.endswith("-coalesce")

    classes = make_handlers(asyncore, asynchat)
    server = classes["server"](classes[handler])
    _write_port(portfile, server.socket.getsockname()[1])
    asyncore.loop(timeout=30.0, use_poll=(variant == "pyasyncore-poll"))


class LineEcho(asyncio.Protocol):
    """Native rewrite of the ``chat`` handler: every complete line is echoed."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.pending = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if lines:
            self.transport.writelines([line + b"\n" for line in lines])

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class RawEcho(LineEcho):
    """Native rewrite of the ``plain`` handler: whatever arrives goes back."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _serve_native(variant: str, handler: str, portfile: str) -> None:
    if variant == "native-uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    protocol = LineEcho if handler == "chat" else RawEcho
    server = loop.run_until_complete(loop.create_server(protocol, "127.0.0.1", 0, backlog=BACKLOG))
    _write_port(portfile, server.sockets[0].getsockname()[1])
    loop.run_forever()


def _write_port(portfile: str, port: int) -> None:
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, portfile)


def _on_sigterm(signum: int, frame: Any) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "pid": os.getpid(),
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
        "wall_s": time.monotonic() - _STARTED,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


_STARTED = time.monotonic()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("handler", choices=HANDLERS)
    parser.add_argument("portfile")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU if possible")
    args = parser.parse_args(argv)

    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError as exc:  # CPU not in our cpuset: run unpinned, say so
            print(f"echo_server: cannot pin to CPU {args.cpu}: {exc}", file=sys.stderr)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, _on_sigterm)

    if args.variant.startswith("native"):
        _serve_native(args.variant, args.handler, args.portfile)
    else:
        _serve_asyncore(args.variant, args.handler, args.portfile)


if __name__ == "__main__":
    main()
